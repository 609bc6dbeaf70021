"""Batch detection over the stored record: ``weightwarden detect`` and ``weightwarden eval``.

:func:`run_detection` reads the events of a period (and :data:`HISTORY` before it, so the
baselines and first-seen state know what normal was), the access grants and suppressions
the collector keeps, and the evidence of alerts dispositioned false positive (kept out of
the baselines); runs :func:`detectors.engine.detect` under the policy; and turns the daily
roll-up into alerts: each day's riskiest entity-days within the analysts' budget (N per
1,000 entities a day), plus every CRITICAL one whatever the budget, because a canary touch
must never wait for tomorrow's quota. An entity-day whose every evidence event a stored
alert already cites (the canary alert ingest raised the moment it arrived) is not raised
again.

An alert's id is derived from its entity and day, so running detection twice over the same
period raises nothing twice. A later run that finds more about an entity-day already alerted
(new evidence, or a higher severity: the hourly run at 01:00 saw the first reads, the one at
15:00 the egress) brings that alert up to date unless it is resolved; its triage state is
kept. Scores that merely drift as the baselines move do not touch a stored alert.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import orjson

from collector.alerts import alert_from_finding
from detectors.access import access_from_ocsf
from detectors.context import Context
from detectors.engine import detect
from detectors.finding import DAY_MS
from detectors.risk import REPEAT_DAYS, per_day, within_budget
from weightwarden.errors import UsageError
from weightwarden.events import (
    Analytic,
    DetectionFinding,
    Explanation,
    Severity,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from collector.store import Alert, Store
    from detectors.access import Access
    from detectors.engine import Detection
    from detectors.risk import DailyRisk
    from policies import Grant, Policy, Suppression

__all__ = [
    "DEFAULT_BUDGET",
    "HISTORY",
    "DetectionRun",
    "accesses_from_lines",
    "alert_for",
    "alerted_days",
    "paused_gc",
    "run_detection",
]

DEFAULT_BUDGET: Final = 5.0
"""Alerts a day per 1,000 entities an analyst team reads."""
HISTORY: Final = 28 * DAY_MS
"""How far before the period detection reads to learn what is normal."""
_MAX_EVIDENCE: Final = 200
_MAX_FINDINGS_SHOWN: Final = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionRun:
    """A detection run's outcome.

    Attributes:
        detection: Findings and the daily roll-up.
        alerted: The entity-days raised as alerts (within budget, plus every CRITICAL one).
        alerts: Their alerts, in the same order.
        new_alerts: How many of them were not stored before.
        updated_alerts: How many stored, unresolved alerts gained evidence or severity.
        daily_budget: Alerts a day the budget allowed.
        already_alerted: Entity-days not raised because stored alerts (ingest's canary,
            seal and copy alerts) already cite every one of their evidence events.
    """

    detection: Detection
    alerted: tuple[DailyRisk, ...]
    alerts: tuple[Alert, ...]
    new_alerts: int
    updated_alerts: int
    daily_budget: int
    already_alerted: int = 0


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while detection builds millions of values.

    None of them forms a cycle, but the collector would traverse them all again and again as
    they are allocated: reading a million events took three times as long with it running.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def accesses_from_lines(
    lines: Iterable[str | bytes], *, strict_source: str | None = None
) -> list[Access]:
    """The accesses in OCSF JSON lines; lines that are not events detection reads are skipped.

    Args:
        lines: The JSON lines (blank lines are skipped).
        strict_source: When given, a line that is not a JSON object is an error naming
            ``strict_source`` and the line's number, instead of being skipped.

    Raises:
        UsageError: ``strict_source`` is given and a line is not a JSON object.
    """
    accesses = []
    for number, line in enumerate(lines, start=1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if strict_source is not None and line.strip():
                raise UsageError(f"{strict_source}:{number}: not a JSON object: {exc}") from None
            continue
        if isinstance(obj, dict):
            if (access := access_from_ocsf(obj)) is not None:
                accesses.append(access)
        elif strict_source is not None:
            raise UsageError(f"{strict_source}:{number}: not a JSON object")
    return accesses


def _excluded(stored: Iterable[Alert]) -> set[str]:
    """Evidence of alerts dispositioned false positive: kept out of the baselines."""
    return {
        uid for alert in stored if alert.disposition == "false_positive" for uid in alert.evidence
    }


def _grew(old: Alert, new: Alert) -> bool:
    """Whether a run's alert knows more than the stored one: new evidence, higher severity."""
    return new.severity_id > old.severity_id or not set(old.evidence).issuperset(new.evidence)


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).date().isoformat()


def _alert_id(entity: str, day: int) -> str:
    """The id of the alert for one entity's UTC day (days since the epoch)."""
    key = "\x1f".join(("weightwarden.risk.daily", entity, str(day)))
    return "ww-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _earlier_alerts(detection: Detection, by_id: Mapping[str, Alert]) -> dict[tuple[str, int], str]:
    """(entity, day) to leading rule of the stored alerts on the run's entities' recent days.

    Covers the period's days and the :data:`~detectors.risk.REPEAT_DAYS` before, so an
    alert an earlier run raised holds its slot and is an open case (see ``within_budget``).
    """
    if not detection.risks:
        return {}
    days = [risk.day for risk in detection.risks]
    span = range(min(days) - REPEAT_DAYS, max(days) + 1)
    earlier = {}
    for entity in {risk.entity for risk in detection.risks}:
        for day in span:
            if (alert := by_id.get(_alert_id(entity, day))) is not None:
                earlier[entity, day] = alert.rule
    return earlier


def alert_for(risk: DailyRisk, *, now: int) -> Alert:
    """The alert for one entity-day: the top finding's rule, every finding explained."""
    top = risk.findings[0]
    finding_uid = _alert_id(risk.entity, risk.day)
    lines = [
        f"- {f.name} (score {f.score:.0f}): {f.title}. {f.reason}"
        for f in risk.findings[:_MAX_FINDINGS_SHOWN]
    ]
    if len(risk.findings) > _MAX_FINDINGS_SHOWN:
        lines.append(f"- ... and {len(risk.findings) - _MAX_FINDINGS_SHOWN} more findings")
    contributions = next((f.contributions for f in risk.findings if f.contributions), ())
    extra = f" (+{len(risk.findings) - 1} more signals)" if len(risk.findings) > 1 else ""
    finding = DetectionFinding(
        uid=finding_uid,
        time=risk.time,
        severity=risk.severity,
        finding_uid=finding_uid,
        title=f"{_day(risk.day)} risk {risk.score:.0f}: {top.title}{extra}",
        analytic=Analytic(name=top.name, kind=top.kind, uid=top.rule),
        description=(
            f"{risk.entity} on {_day(risk.day)}: daily risk {risk.score:.1f} from "
            f"{len(risk.findings)} signal(s).\n" + "\n".join(lines)
        ),
        evidence_uids=risk.evidence[:_MAX_EVIDENCE],
        explanation=Explanation(rule=top.reason, contributions=contributions),
    )
    return alert_from_finding(finding, agent_id=None, now=now)


def alerted_days(
    detection: Detection,
    *,
    budget: float,
    earlier: Mapping[tuple[str, int], str] | None = None,
) -> tuple[list[DailyRisk], int]:
    """The entity-days a run raises and the daily budget they were cut to.

    ``earlier``: the alerts earlier runs raised (see :func:`_earlier_alerts`).
    """
    daily = per_day(budget, detection.entities)
    chosen = within_budget(detection.risks, daily=daily, earlier=earlier)
    taken = {(risk.entity, risk.day) for risk in chosen}
    chosen += [
        risk
        for risk in detection.risks
        if risk.severity >= Severity.CRITICAL and (risk.entity, risk.day) not in taken
    ]
    return chosen, daily


def run_detection(
    store: Store,
    policy: Policy | None,
    *,
    since: int,
    until: int,
    now: int,
    budget: float = DEFAULT_BUDGET,
    grants: Sequence[Grant] | None = None,
    suppressions: Sequence[Suppression] | None = None,
) -> DetectionRun:
    """Detect over ``[since, until)`` and store the alerts.

    The period starts at the beginning of the UTC day ``since`` falls in: alerts and the
    budget are per day, so a run that starts mid-day judges the whole of that day.

    Args:
        store: The record.
        policy: The policy, or None to run without one (authorisation rules stay silent).
        since: Start of the period, ms since the epoch.
        until: End of the period (exclusive).
        now: The time alerts are created at.
        budget: Alerts a day per 1,000 entities.
        grants: Grants to judge by; default: the ones the store keeps.
        suppressions: Suppressions beyond the policy's; default: the ones the store keeps.
    """
    context = Context(
        policy=policy,
        grants=tuple(store.grants() if grants is None else grants),
        suppressions=tuple(store.suppressions() if suppressions is None else suppressions),
    )
    stored = store.alerts()
    known = {alert.id: alert for alert in stored}
    with paused_gc():
        accesses = accesses_from_lines(store.payloads(since=since - HISTORY, until=until))
        # Alerts and their budget are per UTC day: judge the whole of the day ``since`` falls
        # in, so this run sees what earlier runs of that day alerted on.
        day_start = since - since % DAY_MS
        detection = detect(accesses, context, excluded=_excluded(stored), report_from=day_start)
    chosen, daily = alerted_days(
        detection, budget=budget, earlier=_earlier_alerts(detection, known)
    )
    raised = [(risk, alert_for(risk, now=now)) for risk in chosen]
    ours = {alert.id for _, alert in raised}
    cited = {uid for alert in stored if alert.id not in ours for uid in alert.evidence}
    kept = [(risk, alert) for risk, alert in raised if not cited.issuperset(risk.evidence)]
    fresh = [risk for risk, _ in kept]
    alerts = [alert for _, alert in kept]
    grown = [alert for alert in alerts if (old := known.get(alert.id)) and _grew(old, alert)]
    store.add_alerts(alerts)
    return DetectionRun(
        detection=detection,
        alerted=tuple(fresh),
        alerts=tuple(alerts),
        new_alerts=sum(alert.id not in known for alert in alerts),
        updated_alerts=store.refresh_alerts(grown, now=now),
        daily_budget=daily,
        already_alerted=len(chosen) - len(fresh),
    )
