"""Weights written where they should not be: copies outside approved roots, staging.

The agent marks a written file whose content equals a sealed file with ``copy_source``.
A copy is fine inside the source asset's ``approved_roots`` (another checkpoint folder, a
conversion scratch); anywhere else it is how weights leave. Staging is the sharper case:
a copy, or any weights-named file, written to a RAM disk or removable media
(``thresholds.staging_paths``), the last step before carrying data out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from detectors._text import who
from detectors.access import AccessKind
from detectors.finding import finding_for
from policies import Thresholds, matches
from weightwarden.events import Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context
    from detectors.finding import Finding

__all__ = ["COPY_RULE", "STAGING_RULE", "StagingRules"]

COPY_RULE: Final = "weightwarden.rule.copy_outside_roots"
STAGING_RULE: Final = "weightwarden.rule.staging"

_COPY_REASON: Final = (
    "The file written has the content of sealed weights, and its folder is not one of the "
    "asset's approved roots: copies outside them are how weights leave."
)
_STAGING_REASON: Final = (
    "Weights were written to a RAM disk or removable media, where no job keeps checkpoints: "
    "staging is the step before carrying data out."
)
_REMOVABLE: Final = ("/media/", "/run/media/", "/mnt/usb")
_WRITES: Final = (AccessKind.WRITE, AccessKind.RENAME)


class StagingRules:
    """Copy outside approved roots (HIGH, 70); staging (HIGH 80; removable CRITICAL 95)."""

    def __init__(self, context: Context) -> None:
        self._context = context
        policy = context.policy
        self._staging = (policy.thresholds if policy else Thresholds()).staging_paths

    def __call__(self, access: Access) -> list[Finding]:
        """The findings one write raises."""
        if access.kind not in _WRITES or not access.path:
            return []
        path = access.path
        source = access.copy_source
        weights = source is not None or self._context.is_weights(path)
        if weights and matches(path, self._staging):
            removable = path.startswith(_REMOVABLE)
            what = f"a copy of {source}" if source else "a weights file"
            return [
                finding_for(
                    access,
                    rule=STAGING_RULE,
                    name="weights staged",
                    severity=Severity.CRITICAL if removable else Severity.HIGH,
                    score=95.0 if removable else 80.0,
                    title=f"{who(access)} wrote {what} to {path}",
                    reason=_STAGING_REASON,
                )
            ]
        if source is None:
            return []
        if self._context.approved_copy(source, path):
            return []
        return [
            finding_for(
                access,
                rule=COPY_RULE,
                name="weights copied outside approved roots",
                severity=Severity.HIGH,
                score=70.0,
                title=f"{who(access)} copied {source} to {path}",
                reason=_COPY_REASON,
            )
        ]
