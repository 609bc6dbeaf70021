"""Scoring detection against labelled incidents: what ``weightwarden eval`` reports.

A labels file (``weightwarden simulate`` writes one; format ``weightwarden.labels/1``)
lists incidents: a scenario, whether it is malicious or the benign twin of one, the entity,
when it started, and the ids of its events. An alert *hits* an incident when one of its
evidence events is one of the incident's.

For each budget (alerts a day per 1,000 entities), the alerts an analyst team would read
are each day's riskiest entity-days (:func:`detectors.risk.within_budget`). Per scenario:

* **recall same day**: share of malicious incidents hit by an alert of the UTC day they
  started; **within 7 days**: of that day or the six after; **ever**: by any alert;
* **time to detect**: median hours from the incident's start to the first hitting alert's
  evidence time (at least 0);
* **twins flagged**: share of benign twins hit (false alarms on look-alikes).

Overall: **precision** (share of the alerts read that hit a malicious incident) and
**AUC-PR** (average precision of every entity-day ranked by risk, against whether it hits a
malicious incident; budget-free).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from detectors.finding import DAY_MS, day_of
from detectors.risk import per_day, within_budget
from policies import Grant
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from detectors.engine import Detection
    from detectors.risk import DailyRisk

__all__ = [
    "BUDGETS",
    "Evaluation",
    "Incident",
    "Labels",
    "ScenarioScore",
    "evaluate",
    "parse_labels",
]

BUDGETS: Final = (5.0, 10.0)
LABELS_FORMAT: Final = "weightwarden.labels/1"
_WEEK_DAYS: Final = 7
_HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """One labelled incident (malicious, or the benign twin of one)."""

    id: str
    scenario: str
    malicious: bool
    entity: str
    start: int
    end: int
    events: frozenset[str]
    twin_of: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Labels:
    """A labels file: the incidents, the entity count, the org's policy and grants."""

    incidents: tuple[Incident, ...]
    entities: int | None
    start: int | None
    end: int | None
    policy: str | None
    grants: tuple[Grant, ...]


def _field(obj: Mapping[str, object], key: str, kind: type, where: str) -> object:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise UsageError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r:.40}")
    return value


def parse_labels(text: str, source: str) -> Labels:
    """Parse a labels file.

    Raises:
        UsageError: Not JSON, not format ``weightwarden.labels/1``, or a malformed incident.
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{source}: not JSON ({exc}); pass the file simulate --labels wrote"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != LABELS_FORMAT:
        raise UsageError(f"{source}: not a labels file (expected format {LABELS_FORMAT!r})")
    raw = doc.get("incidents")
    if not isinstance(raw, list):
        raise UsageError(f"{source}: 'incidents' must be a list")
    incidents = []
    for index, item in enumerate(raw):
        where = f"{source}: incidents[{index}]"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: must be an object")
        events = _field(item, "events", list, where)
        assert isinstance(events, list)  # noqa: S101 -- narrowed by _field
        incidents.append(
            Incident(
                id=str(_field(item, "id", str, where)),
                scenario=str(_field(item, "scenario", str, where)),
                malicious=bool(_field(item, "malicious", bool, where)),
                entity=str(_field(item, "entity", str, where)),
                start=int(_field(item, "start", int, where)),  # type: ignore[call-overload]
                end=int(_field(item, "end", int, where)),  # type: ignore[call-overload]
                events=frozenset(str(uid) for uid in events),
                twin_of=item.get("twin_of") if isinstance(item.get("twin_of"), str) else None,
            )
        )
    grants = []
    for index, item in enumerate(doc.get("grants") or []):
        where = f"{source}: grants[{index}]"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: must be an object")
        grants.append(
            Grant(
                id=str(item.get("id") or f"label-grant-{index}"),
                user=str(_field(item, "user", str, where)),
                asset=str(_field(item, "asset", str, where)),
                approver=str(_field(item, "approver", str, where)),
                reason=str(item.get("reason") or ""),
                created_at=int(_field(item, "created_at", int, where)),  # type: ignore[call-overload]
                until=int(_field(item, "until", int, where)),  # type: ignore[call-overload]
            )
        )
    entities = doc.get("entities")
    policy = doc.get("policy")
    return Labels(
        incidents=tuple(incidents),
        entities=entities if isinstance(entities, int) and entities > 0 else None,
        start=doc.get("start") if isinstance(doc.get("start"), int) else None,
        end=doc.get("end") if isinstance(doc.get("end"), int) else None,
        policy=policy if isinstance(policy, str) else None,
        grants=tuple(grants),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioScore:
    """How one scenario fared at one budget."""

    scenario: str
    incidents: int
    same_day: int
    within_week: int
    ever: int
    median_hours_to_detect: float | None
    twins: int
    twins_flagged: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetScore:
    """Every scenario and the overall precision at one budget."""

    budget: float
    alerts_per_day: int
    alerts: int
    true_alerts: int
    scenarios: tuple[ScenarioScore, ...]

    @property
    def precision(self) -> float:
        """Share of the alerts read that hit a malicious incident."""
        return self.true_alerts / self.alerts if self.alerts else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """The whole report."""

    entities: int
    events: int
    days: int
    auc_pr: float
    budgets: tuple[BudgetScore, ...]


def _hits(risk: DailyRisk, by_event: Mapping[str, list[Incident]]) -> set[str]:
    return {
        incident.id
        for finding in risk.findings
        for uid in finding.evidence
        for incident in by_event.get(uid, ())
    }


def _average_precision(ranked: Sequence[bool]) -> float:
    positives = sum(ranked)
    if not positives:
        return 0.0
    hits = 0
    total = 0.0
    for rank, positive in enumerate(ranked, start=1):
        if positive:
            hits += 1
            total += hits / rank
    return total / positives


def evaluate(
    detection: Detection, labels: Labels, *, budgets: Sequence[float] = BUDGETS
) -> Evaluation:
    """Score a detection run against the labels."""
    by_event: dict[str, list[Incident]] = {}
    for incident in labels.incidents:
        for uid in incident.events:
            by_event.setdefault(uid, []).append(incident)
    hits = {id(risk): _hits(risk, by_event) for risk in detection.risks}
    malicious = {i.id for i in labels.incidents if i.malicious}
    entities = labels.entities or detection.entities
    ranked = [bool(hits[id(risk)] & malicious) for risk in detection.risks]
    scores = []
    for budget in budgets:
        daily = per_day(budget, entities)
        read = within_budget(detection.risks, daily=daily)
        first: dict[str, DailyRisk] = {}
        days: dict[str, set[int]] = {}
        for risk in read:
            for incident_id in hits[id(risk)]:
                days.setdefault(incident_id, set()).add(risk.day)
                if incident_id not in first or risk.time < first[incident_id].time:
                    first[incident_id] = risk
        scenarios = []
        for scenario in sorted({i.scenario for i in labels.incidents}):
            members = [i for i in labels.incidents if i.scenario == scenario]
            bad = [i for i in members if i.malicious]
            twins = [i for i in members if not i.malicious]
            same = week = ever = 0
            delays = []
            for incident in bad:
                start = day_of(incident.start)
                seen = days.get(incident.id, set())
                same += start in seen
                week += any(start <= d < start + _WEEK_DAYS for d in seen)
                ever += bool(seen)
                if incident.id in first:
                    delays.append(max(0, first[incident.id].time - incident.start) / _HOUR_MS)
            scenarios.append(
                ScenarioScore(
                    scenario=scenario,
                    incidents=len(bad),
                    same_day=same,
                    within_week=week,
                    ever=ever,
                    median_hours_to_detect=round(statistics.median(delays), 2) if delays else None,
                    twins=len(twins),
                    twins_flagged=sum(bool(days.get(i.id)) for i in twins),
                )
            )
        scores.append(
            BudgetScore(
                budget=budget,
                alerts_per_day=daily,
                alerts=len(read),
                true_alerts=sum(bool(hits[id(risk)] & malicious) for risk in read),
                scenarios=tuple(scenarios),
            )
        )
    span = (
        (labels.end - labels.start + DAY_MS - 1) // DAY_MS
        if labels.start is not None and labels.end is not None
        else len({risk.day for risk in detection.risks})
    )
    return Evaluation(
        entities=entities,
        events=detection.events,
        days=span,
        auc_pr=round(_average_precision(ranked), 4),
        budgets=tuple(scores),
    )
