"""The daily risk roll-up: one ranked item per entity and day, cut to the analysts' budget.

Analysts read perhaps five alerts a day per thousand people. :func:`roll_up` merges every
finding of an entity's UTC day into one :class:`DailyRisk`: findings of one rule become one
(highest score, evidence of all), and the day's risk is the best finding's score plus half
the next one's, a quarter of the third's, and so on, so that several independent signals
on one day outrank any one of them, while a hundred reads outside hours stay one signal.
:func:`within_budget` keeps each day's top items for a budget, and never an item below
:data:`MIN_ALERT_RISK`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from detectors.finding import Finding, day_of
from weightwarden.events import Severity

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["MIN_ALERT_RISK", "REPEAT_DAYS", "DailyRisk", "per_day", "roll_up", "within_budget"]

MIN_ALERT_RISK: Final = 40.0
"""An entity-day below this risk is never an alert, budget or not: weak signals alone (a read
out of hours, a first read from a new GPU node) are context for a case, not a case."""
_DECAY: Final = 0.5
REPEAT_DAYS: Final = 6
"""How long an alerted entity and leading rule stay an open case (see within_budget)."""
_REPEAT_WEIGHT: Final = 0.5
_MAX_EVIDENCE: Final = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyRisk:
    """One entity's findings of one UTC day, ranked by risk.

    Attributes:
        entity: The user.
        day: Days since the epoch.
        score: The day's risk (see the module doc); the ranking key.
        severity: The most severe finding's severity.
        time: The earliest finding's time (when the day became risky).
        findings: One finding per rule, highest score first.
        evidence: Ids of every evidence event, oldest finding first (capped at 500).
    """

    entity: str
    day: int
    score: float
    severity: Severity
    time: int
    findings: tuple[Finding, ...]
    evidence: tuple[str, ...]


def _merge(findings: Sequence[Finding]) -> Finding:
    best = max(findings, key=lambda f: (f.score, -f.time))
    if len(findings) == 1:
        return best
    evidence = tuple(dict.fromkeys(uid for f in findings for uid in f.evidence))
    return replace(
        best,
        time=min(f.time for f in findings),
        severity=max(f.severity for f in findings),
        title=f"{best.title} (+{len(findings) - 1} more)",
        evidence=evidence[:_MAX_EVIDENCE],
    )


def roll_up(findings: Iterable[Finding]) -> list[DailyRisk]:
    """Every entity-day with a finding, riskiest first."""
    days: dict[tuple[str, int], dict[str, list[Finding]]] = {}
    for finding in findings:
        rules = days.setdefault((finding.entity, day_of(finding.time)), {})
        rules.setdefault(finding.rule, []).append(finding)
    risks = []
    for (entity, day), rules in days.items():
        merged = sorted(
            (_merge(group) for group in rules.values()), key=lambda f: (-f.score, f.time)
        )
        score = sum(f.score * _DECAY**rank for rank, f in enumerate(merged))
        evidence = tuple(
            dict.fromkeys(uid for f in sorted(merged, key=lambda f: f.time) for uid in f.evidence)
        )
        risks.append(
            DailyRisk(
                entity=entity,
                day=day,
                score=round(score, 3),
                severity=max(f.severity for f in merged),
                time=min(f.time for f in merged),
                findings=tuple(merged),
                evidence=evidence[:_MAX_EVIDENCE],
            )
        )
    risks.sort(key=lambda r: (-r.score, -r.severity, r.day, r.entity))
    return risks


def per_day(alerts_per_thousand: float, entities: int) -> int:
    """How many alerts a day a budget of N per 1,000 entities allows (at least one)."""
    return max(1, math.floor(alerts_per_thousand * entities / 1000 + 0.5))


def within_budget(
    risks: Iterable[DailyRisk],
    *,
    daily: int,
    minimum: float = MIN_ALERT_RISK,
    earlier: Mapping[tuple[str, int], str] | None = None,
) -> list[DailyRisk]:
    """The ``daily`` riskiest items of each day at or above ``minimum``, riskiest first.

    CRITICAL items (a canary touched, sealed weights changed, weights on removable media)
    come first whatever their score: each is an intrusion on its own. Days are taken in
    order. An entity alerted in the :data:`REPEAT_DAYS` before for the
    same leading rule is an open case, not a new one: its day ranks at half its risk, so
    one ongoing incident does not take the budget from new ones every day (it still makes
    the cut on a quiet day, and any new kind of evidence ranks in full).

    ``earlier`` maps (entity, day) to the leading rule of alerts raised by earlier runs
    (an hourly run sees the day that the run an hour ago alerted on). Those open cases
    count as such, and an item already alerted is kept and holds its slot: an alert once
    raised is not taken back, and later runs of a day fill only the slots left, so a day
    never gets more than ``daily`` alerts however often detection runs.
    """
    earlier = earlier or {}
    by_day: dict[int, list[DailyRisk]] = {}
    for risk in risks:
        if risk.score >= minimum or (risk.entity, risk.day) in earlier:
            by_day.setdefault(risk.day, []).append(risk)
    alerted: dict[tuple[str, str], set[int]] = {}
    for (entity, day), rule in earlier.items():
        alerted.setdefault((entity, rule), set()).add(day)
    kept = []
    for day in sorted(by_day):

        def rank(risk: DailyRisk, day: int = day) -> tuple[bool, bool, float, int, str]:
            days = alerted.get((risk.entity, risk.findings[0].rule), set())
            repeat = any(day - back in days for back in range(1, REPEAT_DAYS + 1))
            score = risk.score * _REPEAT_WEIGHT if repeat else risk.score
            return (
                (risk.entity, day) not in earlier,
                risk.severity < Severity.CRITICAL,
                -score,
                -risk.severity,
                risk.entity,
            )

        chosen = sorted(by_day[day], key=rank)[:daily]
        for risk in chosen:
            alerted.setdefault((risk.entity, risk.findings[0].rule), set()).add(day)
        kept.extend(chosen)
    kept.sort(key=lambda r: (-r.score, -r.severity, r.day, r.entity))
    return kept
