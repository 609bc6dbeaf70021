"""What a detector concludes: a :class:`Finding`, explained, with its evidence by event id.

A finding is about one entity (the person or service account whose credentials were used)
on one UTC day. The daily roll-up (:mod:`detectors.risk`) merges an entity's findings of a
day into one ranked alert, so an analyst reads one item per person and day, not one per
event.

Scores are on one scale for every detector, 0 to 100: what a finding adds to its entity's
risk for the day. Rules score by what they saw (a canary touch is 100, an off-hours read
10); models score by how far the day lies from the entity's own history and its peers'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from weightwarden.events import AnalyticType

if TYPE_CHECKING:
    from detectors.access import Access
    from weightwarden.events import Contribution, Severity

__all__ = ["DAY_MS", "Finding", "day_of", "finding_for"]

DAY_MS: Final = 86_400_000


def day_of(time: int) -> int:
    """The UTC day (days since the epoch) of a time in milliseconds."""
    return time // DAY_MS


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One detector's conclusion about one entity.

    Attributes:
        rule: The analytic uid (``weightwarden.rule.canary_touch``, ``weightwarden.ml.z``).
        name: The analytic's name, for people.
        kind: Rule, statistical or learning.
        entity: The user the finding is about.
        time: When the behaviour happened (the first evidence event), ms since the epoch.
        severity: How bad it is on its own.
        score: What it adds to the entity's daily risk, 0 to 100.
        title: One line.
        reason: Why it fired, in sentences: the rule's text, or what the model compared.
        contributions: For models: the features that mattered, typical against actual.
        evidence: Ids of the events it rests on, oldest first.
        host: The host, if one.
        program: The program, if one.
        path: The file, if one.
    """

    rule: str
    name: str
    kind: AnalyticType
    entity: str
    time: int
    severity: Severity
    score: float
    title: str
    reason: str
    contributions: tuple[Contribution, ...] = ()
    evidence: tuple[str, ...] = ()
    host: str | None = None
    program: str | None = None
    path: str | None = None


def finding_for(
    access: Access,
    *,
    rule: str,
    name: str,
    severity: Severity,
    score: float,
    title: str,
    reason: str,
    kind: AnalyticType = AnalyticType.RULE,
) -> Finding:
    """A finding about one access: its user, time, host, program and file; its id as evidence."""
    return Finding(
        rule=rule,
        name=name,
        kind=kind,
        entity=access.user,
        time=access.time,
        severity=severity,
        score=score,
        title=title,
        reason=reason,
        evidence=(access.uid,),
        host=access.host,
        program=access.program,
        path=access.path,
    )
