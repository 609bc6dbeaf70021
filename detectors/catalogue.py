"""Every analytic uid the detectors raise: what a suppression may name.

A suppression of a rule that does not exist silences nothing, silently; the collector checks
policy suppressions against :data:`RULE_UIDS` when it loads a policy.
"""

from __future__ import annotations

from typing import Final

from detectors.agent_signals import (
    AGENT_FINDING_RULE,
    AGENT_HEALTH_RULE,
    CANARY_RULE,
    COPY_RULE,
    SEAL_RULE,
)
from detectors.authorization import GRANT_RULE, PRINCIPAL_RULE, SERVICE_RULE
from detectors.baseline import Z_RULE
from detectors.bulk_read import BULK_RULE
from detectors.egress import EGRESS_RULE
from detectors.isolation import FOREST_RULE
from detectors.novelty import FIRST_SEEN_RULE
from detectors.off_hours import OFF_HOURS_RULE
from detectors.programs import DROPPED_PROGRAM_RULE
from detectors.staging import COPY_RULE as COPY_OUTSIDE_ROOTS_RULE
from detectors.staging import STAGING_RULE

__all__ = ["RULE_UIDS"]

RULE_UIDS: Final = frozenset(
    {
        AGENT_FINDING_RULE,
        AGENT_HEALTH_RULE,
        CANARY_RULE,
        COPY_RULE,
        SEAL_RULE,
        GRANT_RULE,
        PRINCIPAL_RULE,
        SERVICE_RULE,
        Z_RULE,
        BULK_RULE,
        EGRESS_RULE,
        FOREST_RULE,
        FIRST_SEEN_RULE,
        OFF_HOURS_RULE,
        DROPPED_PROGRAM_RULE,
        COPY_OUTSIDE_ROOTS_RULE,
        STAGING_RULE,
    }
)
"""The analytic uid of every rule and model (integrity findings about the record itself are
the collector's and are never suppressed)."""
