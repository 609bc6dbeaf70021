"""Rules that need no baseline: a canary touched, sealed weights changed.

Both fire on a single event and score at the top of the scale: no legitimate job opens a
decoy, and sealed checkpoints are never rewritten in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from detectors._text import who
from detectors.finding import Finding, finding_for
from weightwarden.events import Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context

__all__ = ["CANARY_RULE", "SEAL_RULE", "IntegrityRules"]

CANARY_RULE: Final = "weightwarden.rule.canary_touch"
SEAL_RULE: Final = "weightwarden.rule.seal_tampered"

_CANARY_REASON: Final = (
    "A canary is a decoy weights file that no legitimate job uses: any open, read or change "
    "of it is treated as an intrusion."
)
_SEAL_REASON: Final = (
    "The file's content no longer matches the signed seal made when the checkpoint was "
    "finished; sealed weights are never rewritten in place."
)
_UNVERIFIED_SEVERITY: Final = Severity.HIGH


class IntegrityRules:
    """Canary touch (CRITICAL, 100); sealed weights changed (CRITICAL, 100; unverified HIGH)."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def __call__(self, access: Access) -> list[Finding]:
        """The findings one event raises (usually none)."""
        found = []
        if access.path and (access.canary or self._context.is_canary(access.path)):
            found.append(
                finding_for(
                    access,
                    rule=CANARY_RULE,
                    name="canary touched",
                    severity=Severity.CRITICAL,
                    score=100.0,
                    title=f"Canary {access.path} touched by {who(access)}",
                    reason=_CANARY_REASON,
                )
            )
        tampered = access.seal == "tampered" or (
            access.seal == "unverified" and access.severity >= _UNVERIFIED_SEVERITY
        )
        if tampered:
            found.append(
                finding_for(
                    access,
                    rule=SEAL_RULE,
                    name="seal violated",
                    severity=Severity.CRITICAL if access.seal == "tampered" else Severity.HIGH,
                    score=100.0 if access.seal == "tampered" else 90.0,
                    title=f"Sealed weights {access.path} changed by {who(access)}",
                    reason=_SEAL_REASON,
                )
            )
        return found
