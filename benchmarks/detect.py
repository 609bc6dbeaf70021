"""Insider-threat detection on simulated organisations: speed and recall within budget.

For each seed (none of which the test suite uses):

1. ``weightwarden simulate --users U --weeks W --seed S`` writes the events, the labels and
   the organisation's policy (timed, but not part of the detection figure).
2. ``weightwarden eval --json`` reads the events and runs every rule and model; its
   ``detect_seconds`` (reading and parsing the file included, process start-up not) is the
   detection figure, printed with events per second. Then the recall per scenario at 5 and
   10 alerts a day per 1,000 entities (same day, within 7 days), precision and AUC-PR.

With ``--store``, the first seed's events are also imported into a fresh SQLite collector
(``weightwarden collector import``, with the organisation's grants stored beside them) and
``weightwarden detect`` runs over the whole period from the store, the path a deployment
takes; both are timed end to end (process start-up included).

With ``--hourly H`` as well, a copy of that imported collector is then run the way
``systemd/weightwarden-detect.timer`` runs a deployment: ``detect --since`` 24 hours before
``--until`` every H hours of the last ``--hourly-days`` days, as if the clock stood there,
and the alerts each day ends up with are counted against the day's budget (CRITICAL alerts
are outside the budget by design and counted apart).

The totals line adds up incidents over all seeds, against the issue's targets: same-day
recall 100 % for canary, tamper and unapproved access; >= 95 % same-day for loud
exfiltration (personal cloud, remote host); >= 80 % within 7 days for low-and-slow;
>= 60 % for the admin's new tool and masquerade; all at 5 alerts a day per 1,000 entities;
detection over 1,000,000 events in <= 30 s.

Usage::

    .venv/bin/python benchmarks/detect.py [--users 1000] [--weeks 4] [--seeds 101,202,303]
        [--store [--hourly H] [--hourly-days D]] [--dir DIR] [--keep]

The machine's load average is printed at the start and the end: compare runs made under
similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = {
    "canary_touch": ("same_day", 1.0),
    "tamper_sealed": ("same_day", 1.0),
    "unapproved_access": ("same_day", 1.0),
    "exfil_personal_cloud": ("same_day", 0.95),
    "exfil_remote_host": ("same_day", 0.95),
    "low_and_slow": ("within_week", 0.8),
    "admin_new_tool": ("within_week", 0.6),
    "masquerade": ("within_week", 0.6),
}


def weightwarden(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the installed command next to this interpreter; it must exit 0."""
    script = Path(sys.executable).with_name("weightwarden")
    proc = subprocess.run(
        [str(script), *map(str, args)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"weightwarden {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(part: int, whole: int) -> str:
    """``part / whole`` as a percentage, or ``-``."""
    return f"{100 * part / whole:.0f}%" if whole else "-"


def report(seed: int, result: dict[str, object]) -> None:
    """One seed's figures."""
    events = int(result["events"])  # type: ignore[call-overload]
    seconds = float(result["detect_seconds"])  # type: ignore[arg-type]
    print(
        f"seed {seed}: {events:,} events, {result['entities']} entities: detection "
        f"{seconds:.1f} s = {events / seconds:,.0f} events/s; AUC-PR {result['auc_pr']}"
    )
    for budget in result["budgets"]:  # type: ignore[attr-defined]
        print(
            f"  budget {budget['budget']:g}/1,000/day ({budget['alerts_per_day']} a day): "
            f"{budget['alerts']} alerts, precision {pct(budget['true_alerts'], budget['alerts'])}"
        )
        cells = [
            f"{s['scenario']} {s['same_day']}/{s['within_week']}/{s['incidents']}"
            + (f" twins {s['twins_flagged']}/{s['twins']}" if s["twins_flagged"] else "")
            for s in budget["scenarios"]
        ]
        print("    same-day/7-day/n: " + "; ".join(cells))


def totals(results: list[dict[str, object]]) -> None:
    """Incidents caught over every seed, at the 5-a-day budget, against the targets."""
    sums: dict[str, dict[str, int]] = {}
    for result in results:
        budget = result["budgets"][0]  # type: ignore[index]
        for s in budget["scenarios"]:
            row = sums.setdefault(s["scenario"], {"same_day": 0, "within_week": 0, "n": 0})
            row["same_day"] += s["same_day"]
            row["within_week"] += s["within_week"]
            row["n"] += s["incidents"]
    print("\nall seeds, budget 5 a day per 1,000 entities:")
    for scenario, row in sorted(sums.items()):
        line = (
            f"  {scenario:26} same day {pct(row['same_day'], row['n']):>5}   "
            f"7 days {pct(row['within_week'], row['n']):>5}   of {row['n']}"
        )
        if scenario in TARGETS:
            measure, goal = TARGETS[scenario]
            met = row[measure] >= goal * row["n"]
            line += (
                f"   target {measure.replace('_', ' ')} >= {goal:.0%}: {'met' if met else 'MISSED'}"
            )
        print(line)


def keep_grants(collector: Path, labels: dict[str, object]) -> None:
    """Store the organisation's grants (the labels list them) in the collector.

    As the collector would keep them had they been made with ``weightwarden access grant``
    at the time.
    """
    from collector.config import load_settings  # noqa: PLC0415 -- the benchmark's own setup
    from collector.store import open_store  # noqa: PLC0415
    from policies import Grant  # noqa: PLC0415

    grants: list[dict[str, Any]] = labels.get("grants") or []  # type: ignore[assignment]
    store = open_store(load_settings(collector).db)
    try:
        for index, item in enumerate(grants):
            store.add_grant(
                Grant(
                    id=item.get("id") or f"label-grant-{index}",
                    user=item["user"],
                    asset=item["asset"],
                    approver=item["approver"],
                    reason=item.get("reason") or "simulated",
                    created_at=item["created_at"],
                    until=item["until"],
                )
            )
    finally:
        store.close()


def store_path(
    directory: Path,
    events: Path,
    labels: dict[str, object],
    policy: Path,
    *,
    hourly_h: int | None = None,
    hourly_days: int = 3,
) -> None:
    """Import into a fresh SQLite collector and run ``detect`` over the period, timed."""
    collector = directory / "collector"
    weightwarden("collector", "init", "--dir", collector)
    started = time.perf_counter()
    weightwarden("collector", "import", events, "--format", "ocsf", "--dir", collector)
    imported = time.perf_counter() - started
    keep_grants(collector, labels)
    if hourly_h is not None:
        shutil.copytree(collector, directory / "collector-hourly")
    started = time.perf_counter()
    start, end = int(str(labels["start"])), int(str(labels["end"]))
    result = detect(collector, policy, since=start, until=end + 1000)
    detected = time.perf_counter() - started
    print(
        f"store path: import {imported:.1f} s; detect over {result['events']:,} stored events "
        f"{detected:.1f} s end to end = {result['events'] / detected:,.0f} events/s; "
        f"{len(result['alerts'])} alerts ({result['daily_budget']} a day)"
    )
    if hourly_h is not None:
        hourly(directory / "collector-hourly", labels, policy, hourly_h, hourly_days)


_CRITICAL = 5
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


def iso(ms: int) -> str:
    """A UTC time as ``detect`` reads it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000))


def detect(collector: Path, policy: Path, *, since: int, until: int) -> dict[str, Any]:
    """``weightwarden detect --format json`` over ``[since, until)`` (ms), its answer."""
    out = weightwarden(
        "detect",
        *("--dir", collector, "--policy", policy, "--since", iso(since), "--until", iso(until)),
        *("--format", "json"),
    )
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def hourly(
    collector: Path, labels: dict[str, object], policy: Path, step_h: int, days: int
) -> None:
    """Run ``detect`` as the hourly timer would over the last days; count each day's alerts."""
    end = int(str(labels["end"])) + 1
    first_day = end // _DAY_MS - days + 1
    budget = 0
    runs = 0
    started = time.perf_counter()
    for now in range(
        first_day * _DAY_MS + step_h * _HOUR_MS, end + step_h * _HOUR_MS, step_h * _HOUR_MS
    ):
        until = min(now, end)
        budget = detect(collector, policy, since=until - _DAY_MS, until=until)["daily_budget"]
        runs += 1
    listed = weightwarden("alerts", "list", "--dir", collector, "--format", "ocsf").stdout
    per_day: dict[int, list[int]] = {}
    for line in listed.splitlines():
        finding = json.loads(line)
        title = finding["finding_info"]["title"]
        if " risk " not in title[:20]:  # an ingest-time alert from the import, not detection
            continue
        day = finding["time"] // _DAY_MS
        per_day.setdefault(day, []).append(finding["severity_id"])
    print(
        f"hourly: {runs} runs of detect --since 24h, every {step_h} h over the last {days} days "
        f"({time.perf_counter() - started:.0f} s); budget {budget} a day"
    )
    for day in range(first_day - 1, (end - 1) // _DAY_MS + 1):
        severities = per_day.get(day, [])
        critical = sum(s >= _CRITICAL for s in severities)
        within = len(severities) - critical
        verdict = "within budget" if within <= budget else f"OVER budget by {within - budget}"
        print(f"  {iso(day * _DAY_MS)[:10]}: {within} alerts + {critical} CRITICAL: {verdict}")


def main() -> None:
    """Simulate, detect, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument("--seeds", default="101,202,303")
    parser.add_argument("--store", action="store_true", help="also time import + detect")
    parser.add_argument(
        "--hourly", type=int, metavar="H", help="with --store: also run detect every H hours"
    )
    parser.add_argument("--hourly-days", type=int, default=3, metavar="D")
    parser.add_argument("--dir", type=Path, help="work here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="ww-detect-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load()}")
    results = []
    try:
        for index, seed in enumerate(int(s) for s in args.seeds.split(",")):
            events = directory / f"events-{seed}.jsonl"
            labels = directory / f"labels-{seed}.json"
            started = time.perf_counter()
            weightwarden(
                "simulate",
                "--users",
                args.users,
                "--weeks",
                args.weeks,
                "--seed",
                seed,
                "--out",
                events,
                "--labels",
                labels,
            )
            print(f"seed {seed}: simulated in {time.perf_counter() - started:.1f} s")
            result = json.loads(
                weightwarden("eval", "--events", events, "--labels", labels, "--json").stdout
            )
            results.append(result)
            report(seed, result)
            if args.store and index == 0:
                doc = json.loads(labels.read_text())
                store_path(
                    directory,
                    events,
                    doc,
                    labels.parent / doc["policy"],
                    hourly_h=args.hourly,
                    hourly_days=args.hourly_days,
                )
            if not args.keep:
                events.unlink()
        totals(results)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
