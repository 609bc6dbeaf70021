"""``weightwarden detect``: run every rule and model over the stored record, raise alerts.

Reads the events of ``[--since, --until)`` (default: the last day) and the 28 days before
(what normal looked like), the grants and suppressions the collector keeps and the policy
(``--policy``, else ``[detection] policy`` in ``collector.toml``). A missing or invalid
policy stops the run (exit 78): detection fails closed. ``--no-policy`` runs without one,
on purpose: the rules that need a policy (unauthorised principal, grants, team hours)
stay silent and says so.

Alerts are the riskiest entity-days within ``--budget`` (alerts a day per 1,000 entities,
default 5) plus every CRITICAL one; ``weightwarden alerts list`` shows them. Running it again
over the same period raises nothing twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.cli._common import (
    add_policy_option,
    add_store_options,
    now_ms,
    open_from_args,
    parse_since,
    policy_from_args,
    severity_name,
    table,
    utc,
)
from collector.detection import DEFAULT_BUDGET, run_detection
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    import argparse

    from policies import Policy

__all__ = ["add_judging_options", "budget_value", "policy_or_none", "register"]

_WIDTHS = (12, 10, 6, 10, 16, 0)


def budget_value(text: str) -> float:
    """``--budget``: a positive number of alerts a day per 1,000 entities."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1000:  # noqa: PLR2004 -- more than one alert per entity a day is no budget
        raise UsageError(
            f"--budget {text!r}: expected alerts a day per 1,000 entities, more than 0 and "
            "at most 1000, e.g. 5"
        )
    return value


def add_judging_options(parser: argparse.ArgumentParser, *, policy_help: str | None = None) -> None:
    """``--policy FILE`` / ``--no-policy``."""
    if policy_help is None:
        add_policy_option(parser)
    else:
        parser.add_argument("--policy", type=Path, metavar="FILE", help=policy_help)
    parser.add_argument(
        "--no-policy",
        action="store_true",
        help="run without a policy: authorisation, grant and team-hours rules stay silent",
    )


def policy_or_none(args: argparse.Namespace) -> Policy | None:
    """The policy the arguments name, None for ``--no-policy``.

    Raises:
        UsageError: Both ``--policy`` and ``--no-policy``.
        ConfigError: No policy named, or it is invalid (detection fails closed).
    """
    if args.no_policy:
        if args.policy is not None:
            raise UsageError("--policy and --no-policy contradict each other: pass one")
        return None
    return policy_from_args(args)


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``detect``."""
    parser = sub.add_parser(
        "detect",
        help="run the detectors over stored events and raise alerts",
        description=(
            "Run every rule and model over the stored events of a period and raise the "
            "riskiest entity-days as alerts, within the analysts' budget."
        ),
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        default="1d",
        help="start: ISO-8601 (UTC if no offset) or a duration ago (default: 1d)",
    )
    parser.add_argument(
        "--until", metavar="TIME", help="end (exclusive): ISO-8601 or a duration ago (default: now)"
    )
    parser.add_argument(
        "--budget",
        default=str(DEFAULT_BUDGET),
        metavar="N",
        help=f"alerts a day per 1,000 entities (default: {DEFAULT_BUDGET:g})",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_judging_options(parser)
    add_store_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    now = now_ms()
    since = parse_since(args.since, now)
    until = parse_since(args.until, now) if args.until else now
    if until <= since:
        raise UsageError(f"--until ({utc(until)}) must be after --since ({utc(since)})")
    budget = budget_value(args.budget)
    policy = policy_or_none(args)
    store = open_from_args(args)
    try:
        run = run_detection(store, policy, since=since, until=until, now=now, budget=budget)
    finally:
        store.close()
    detection = run.detection
    if args.format == "json":
        json.dump(
            {
                "since": since,
                "until": until,
                "policy": policy is not None,
                "events": detection.events,
                "entities": detection.entities,
                "findings": len(detection.findings),
                "suppressed": detection.suppressed,
                "risky_days": len(detection.risks),
                "daily_budget": run.daily_budget,
                "alerts": [alert.id for alert in run.alerts],
                "new_alerts": run.new_alerts,
                "updated_alerts": run.updated_alerts,
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
        return 0
    if policy is None:
        print("no policy: authorisation, grant and team-hours rules were not run")
    if not detection.events:
        print(
            "no stored events in this period or the 28 days before it: check --since and "
            "--until (weightwarden collector export shows what the record holds)"
        )
    print(
        f"{utc(since)} to {utc(until)}: {detection.events} events from {detection.entities} "
        f"entities (with 28 days of history); {len(detection.findings)} findings, "
        f"{detection.suppressed} suppressed; {len(detection.risks)} risky entity-days; "
        f"{len(run.alerts)} alerts ({run.daily_budget} a day within budget), "
        f"{run.new_alerts} new"
        + (f", {run.updated_alerts} updated with new evidence" if run.updated_alerts else "")
        + (
            f"; {run.already_alerted} already raised by other alerts citing the same events"
            if run.already_alerted
            else ""
        )
    )
    rows = [("ALERT", "SEVERITY", "RISK", "DAY", "ENTITY", "TITLE")]
    for alert, risk in zip(run.alerts, run.alerted, strict=True):
        rows.append(
            (
                alert.id[:12],
                severity_name(alert.severity_id).lower(),
                f"{risk.score:.0f}",
                utc(risk.day * 86_400_000)[:10],
                risk.entity,
                alert.title,
            )
        )
    if len(rows) > 1:
        sys.stdout.writelines(table(rows, _WIDTHS))
    return 0
