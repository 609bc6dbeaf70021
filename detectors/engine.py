"""One detection run: every rule and model over a time-ordered stream of accesses.

:func:`detect` takes the accesses (oldest first), the :class:`~detectors.context.Context`
(policy, grants, suppressions) and the ids of events to keep out of baselines, and returns
the findings and their daily roll-up. It is a pure function: the same inputs give the same
result; models are fitted on the spot and never persisted.

Order of work: a pass over the events to learn each asset's size; one pass through every
rule (each keeps its own explicit state: sessions for egress, windows for bulk reads, what
each entity has used for first-seen) while the user-day features accumulate. Rules that
judge an access once (authorisation, bulk read, off-hours, first-seen) see the open of
each session, not its progress and close reports; then the
robust z-scores and the isolation forests over the feature rows; suppressions; the roll-up.
Events before ``report_from`` teach the baselines but raise nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from detectors.access import AccessKind
from detectors.authorization import AuthorizationRules
from detectors.baseline import robust_z_findings
from detectors.bulk_read import BulkReadRule, asset_bytes
from detectors.egress import EgressRule
from detectors.features import DayFeatures
from detectors.integrity import IntegrityRules
from detectors.isolation import forest_findings
from detectors.links import ReadLinks
from detectors.novelty import FirstSeenRule
from detectors.off_hours import OffHoursRule
from detectors.programs import ProgramRule
from detectors.risk import roll_up
from detectors.staging import StagingRules

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from detectors.access import Access
    from detectors.context import Context
    from detectors.finding import Finding
    from detectors.risk import DailyRisk

    Rule: TypeAlias = Callable[[Access], list[Finding]]

__all__ = ["Detection", "detect"]

_LATER_PHASES: Final = frozenset({"close", "progress"})
"""Session phases after the open: rules judged once per access session skip them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """What a run found.

    Attributes:
        findings: Every finding that was not suppressed, by time.
        risks: The daily roll-up, riskiest first.
        entities: How many distinct entities the events name.
        events: How many accesses were examined.
        suppressed: How many findings a suppression silenced.
    """

    findings: tuple[Finding, ...]
    risks: tuple[DailyRisk, ...]
    entities: int
    events: int
    suppressed: int


def detect(
    accesses: Sequence[Access],
    context: Context,
    *,
    excluded: Collection[str] = frozenset(),
    report_from: int | None = None,
    models: bool = True,
) -> Detection:
    """Run every detector over ``accesses`` (sorted by time; sorted here if not).

    Args:
        accesses: The events, oldest first.
        context: Policy, grants and suppressions.
        excluded: Event ids kept out of the baselines (false-positive evidence).
        report_from: Only findings at or after this time (ms) are returned.
        models: Run the statistical and learning detectors (off: rules only).
    """
    if any(a.time > b.time for a, b in itertools.pairwise(accesses)):
        accesses = sorted(accesses, key=lambda access: access.time)
    links = ReadLinks(context)
    features = DayFeatures(context, links, excluded)
    found, entities = _run_rules(accesses, context, links, features)
    if models:
        rows = features.rows()
        found.extend(robust_z_findings(rows, context.role))
        found.extend(forest_findings(rows, context.role))
    if report_from is not None:
        found = [finding for finding in found if finding.time >= report_from]
    kept = [
        finding
        for finding in found
        if not context.suppressed(
            rule=finding.rule,
            user=finding.entity,
            host=finding.host,
            program=finding.program,
            path=finding.path,
            time=finding.time,
        )
    ]
    kept.sort(key=lambda finding: finding.time)
    return Detection(
        findings=tuple(kept),
        risks=tuple(roll_up(kept)),
        entities=entities,
        events=len(accesses),
        suppressed=len(found) - len(kept),
    )


def _run_rules(
    accesses: Sequence[Access], context: Context, links: ReadLinks, features: DayFeatures
) -> tuple[list[Finding], int]:
    """Every rule over the stream (features accumulate on the way); findings, entities."""
    integrity = IntegrityRules(context)
    egress = EgressRule(context, links)
    staging = StagingRules(context)
    first_seen = FirstSeenRule(context)
    per_session = (
        AuthorizationRules(context),
        ProgramRule(context),
        BulkReadRule(context, asset_bytes(context, accesses)),
        OffHoursRule(context),
        first_seen,
    )
    by_kind: dict[AccessKind, tuple[Rule, ...]] = {
        AccessKind.READ: (integrity,),
        AccessKind.WRITE: (integrity, staging),
        AccessKind.RENAME: (integrity, staging),
        AccessKind.DELETE: (integrity,),
        AccessKind.CONNECT: (egress,),
    }
    found: list[Finding] = []
    entities: set[str] = set()
    for access in accesses:
        entities.add(access.user)
        first_seen.appear(access.user, access.time)
        if access.kind is AccessKind.READ:
            links.observe(access)
        features(access)
        for rule in by_kind.get(access.kind, ()):
            if result := rule(access):
                found.extend(result)
        if access.kind is AccessKind.READ and (
            access.session is None or access.phase not in _LATER_PHASES
        ):
            for rule in per_session:
                if result := rule(access):
                    found.extend(result)
    return found, len(entities)
