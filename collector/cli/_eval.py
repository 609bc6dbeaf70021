"""``weightwarden eval``: detection scored against labelled incidents.

Reads the events (OCSF JSON lines, as ``weightwarden simulate`` or ``collector export``
write them) and the labels (``simulate --labels``), runs the detectors under the policy the
labels name (or ``--policy``; ``--no-policy`` for none) with the grants the labels list, and
reports per scenario the recall at budgets of 5 and 10 alerts a day per 1,000 entities
(same day, within 7 days, ever), the median time to detect and the benign twins flagged;
overall precision at each budget, AUC-PR and the time detection took.

By default the events are read straight from the file into the detectors. ``--db URL``
imports them into that store first, exactly as ``collector import`` does (checks
included), and detects from the store, the path ``weightwarden detect`` takes; it is
slower (every event is validated, canonicalised and stored).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.cli._common import now_ms
from collector.cli._detect import add_judging_options, policy_or_none
from collector.cli._transfer import import_file
from collector.detection import accesses_from_lines, paused_gc, run_detection
from collector.evaluation import Evaluation, evaluate, parse_labels
from collector.policy_file import load_policy
from detectors.context import Context
from detectors.engine import detect
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from collector.evaluation import Labels
    from detectors.engine import Detection
    from policies import Policy

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``eval``."""
    parser = sub.add_parser(
        "eval",
        help="score detection against labelled incidents (simulate's output)",
        description=(
            "Detect over EVENTS and report, per labelled scenario, recall at 5 and 10 alerts "
            "a day per 1,000 entities, time to detect, twins flagged, precision and AUC-PR."
        ),
    )
    parser.add_argument("--events", type=Path, required=True, metavar="EVENTS")
    parser.add_argument("--labels", type=Path, required=True, metavar="LABELS")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument(
        "--db", metavar="URL", help="import into this store first and detect from it"
    )
    add_judging_options(
        parser, policy_help="the policy to judge by (default: the one the labels file names)"
    )
    parser.set_defaults(func=_run, dir=None)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _stream(path: Path) -> Iterator[bytes]:
    """The file's lines, as bytes.

    Raises:
        UsageError: The file cannot be read.
    """
    try:
        with path.open("rb") as stream:
            yield from stream
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _policy(args: argparse.Namespace, labels: Labels) -> Policy | None:
    if args.no_policy or args.policy is not None or labels.policy is None:
        if not args.no_policy and args.policy is None:
            raise UsageError(
                f"{args.labels} names no policy: pass --policy FILE, or --no-policy to run "
                "without one"
            )
        return policy_or_none(args)
    named = Path(labels.policy)
    return load_policy(named if named.is_absolute() else args.labels.parent / named)


def _from_file(args: argparse.Namespace, labels: Labels, policy: Policy | None) -> Detection:
    with paused_gc():
        accesses = accesses_from_lines(_stream(args.events), strict_source=str(args.events))
        if not accesses:
            raise UsageError(f"{args.events}: no file, process or network activity to detect over")
        labelled = {uid for incident in labels.incidents for uid in incident.events}
        if labelled and labelled.isdisjoint(access.uid for access in accesses):
            raise UsageError(
                f"none of the {len(labelled)} events {args.labels} labels is in {args.events}: "
                "pass the events and labels one simulate run wrote"
            )
        return detect(accesses, Context(policy=policy, grants=labels.grants))


def _from_store(args: argparse.Namespace, labels: Labels, policy: Policy | None) -> Detection:
    from collector.store import open_store  # noqa: PLC0415 -- only with --db

    store = open_store(args.db)
    try:
        import_file(store, str(args.events), f"import:{args.events.name}")
        start = labels.start if labels.start is not None else 0
        end = labels.end + 1 if labels.end is not None else now_ms()
        run = run_detection(
            store,
            policy,
            since=start,
            until=end,
            now=now_ms(),
            grants=(*labels.grants, *store.grants()),
        )
    finally:
        store.close()
    return run.detection


def _run(args: argparse.Namespace) -> int:
    labels = parse_labels(_read(args.labels), str(args.labels))
    policy = _policy(args, labels)
    started = time.perf_counter()
    detection = (_from_store if args.db else _from_file)(args, labels, policy)
    seconds = time.perf_counter() - started
    evaluation = evaluate(detection, labels)
    if args.json:
        out = asdict(evaluation)
        out["detect_seconds"] = round(seconds, 2)
        out["policy"] = policy is not None
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print(evaluation, seconds, policy_used=policy is not None)
    return 0


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def _print(evaluation: Evaluation, seconds: float, *, policy_used: bool) -> None:
    print(
        f"{evaluation.events} events, {evaluation.entities} entities, {evaluation.days} days; "
        f"detection took {seconds:.1f} s; AUC-PR {evaluation.auc_pr:.3f}"
        + ("" if policy_used else " (no policy)")
    )
    for budget in evaluation.budgets:
        print(
            f"\nbudget {budget.budget:g} a day per 1,000 entities = {budget.alerts_per_day} a "
            f"day: {budget.alerts} alerts, precision {budget.precision:.1%}"
        )
        print(
            f"  {'scenario':28} {'n':>3}  {'same day':>8}  {'7 days':>7}  {'ever':>6}  "
            f"{'median h':>8}  {'twins flagged':>13}"
        )
        for s in budget.scenarios:
            hours = "-" if s.median_hours_to_detect is None else f"{s.median_hours_to_detect:.1f}"
            print(
                f"  {s.scenario:28} {s.incidents:>3}  {_pct(s.same_day, s.incidents):>8}  "
                f"{_pct(s.within_week, s.incidents):>7}  {_pct(s.ever, s.incidents):>6}  "
                f"{hours:>8}  {s.twins_flagged:>6} of {s.twins:<4}"
            )
