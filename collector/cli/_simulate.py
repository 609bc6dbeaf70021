"""``weightwarden simulate``: a labelled ML organisation as OCSF events, for benchmarking.

``simulate --users N --weeks W --seed S --out EVENTS --labels LABELS [--policy POLICY]
[--start YYYY-MM-DD]`` writes EVENTS (OCSF JSON lines in time order, readable by
``weightwarden collector import EVENTS --format ocsf``), LABELS (the incidents and benign
twins, ``weightwarden.labels/1``, see :mod:`collector.simulation`) and POLICY (the
organisation's policy, default ``<labels stem>.policy.toml`` beside LABELS). The same
arguments always give byte-identical files. Bad arguments are one line on stderr, exit 2.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.simulation import (
    DEFAULT_START,
    MIN_USERS,
    SimulationSpec,
    default_policy_path,
    write_simulation,
)
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``simulate``."""
    parser = sub.add_parser(
        "simulate",
        help="generate a labelled ML organisation's events (a detection benchmark)",
        description=(
            "Simulate an ML organisation (researchers, engineers, infra admins on call, "
            "contractors, training, eval, backup and pipeline service accounts) as OCSF "
            "events, with insider incidents and their benign twins labelled. Deterministic: "
            "the same arguments give byte-identical files."
        ),
    )
    parser.add_argument(
        "--users", type=int, required=True, metavar="N", help=f"people (>= {MIN_USERS})"
    )
    parser.add_argument("--weeks", type=int, required=True, metavar="W", help="weeks (>= 1)")
    parser.add_argument("--seed", type=int, required=True, metavar="S", help="random seed")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="EVENTS", help="OCSF JSON-lines file to write"
    )
    parser.add_argument(
        "--labels", type=Path, required=True, metavar="LABELS", help="labels JSON file to write"
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="POLICY",
        help="policy TOML file to write (default: <labels stem>.policy.toml beside LABELS)",
    )
    parser.add_argument(
        "--start",
        metavar="YYYY-MM-DD",
        default=DEFAULT_START.isoformat(),
        help=f"first day, UTC (default {DEFAULT_START.isoformat()}, a Monday)",
    )
    parser.set_defaults(func=_run)


def _start(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        msg = f"--start: expected a date YYYY-MM-DD, got {text!r}"
        raise UsageError(msg) from None


def _run(args: argparse.Namespace) -> int:
    spec = SimulationSpec(
        users=args.users, weeks=args.weeks, seed=args.seed, start=_start(args.start)
    )
    policy = args.policy or default_policy_path(args.labels)
    result = write_simulation(spec, events=args.out, labels=args.labels, policy=policy)
    malicious = sum(1 for incident in result.incidents if incident.malicious)
    print(
        f"wrote {result.events} events ({result.entities} entities) to {args.out}; "
        f"{malicious} incidents and {len(result.incidents) - malicious} benign twins "
        f"to {args.labels}; the organisation's policy to {policy}",
        file=sys.stdout,
    )
    return 0
