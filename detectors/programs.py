"""Weights read by a program that lives where nobody installs programs.

Jobs and tools run from system or environment directories (``/usr/bin``, a virtual
environment, a container image). A binary in a world-writable directory (``/tmp``,
``/var/tmp``, ``/dev/shm``) was dropped there moments ago by whoever ran it: an intruder's
tool, or an insider's that would not survive a review. Reading weights with one is HIGH.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from detectors._text import who
from detectors.finding import Finding, finding_for
from weightwarden.events import Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context

__all__ = ["DROPPED_PROGRAM_RULE", "WRITABLE_DIRECTORIES", "ProgramRule"]

DROPPED_PROGRAM_RULE: Final = "weightwarden.rule.dropped_program"
WRITABLE_DIRECTORIES: Final = ("/tmp/", "/var/tmp/", "/dev/shm/")  # noqa: S108 -- where dropped binaries live, not temp files we make
_REASON: Final = (
    "The program that read the weights runs from a world-writable directory, where no "
    "installed tool or job lives: it was put there by whoever ran it."
)


class ProgramRule:
    """A weights read by a program run from a world-writable directory (HIGH, 75)."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def __call__(self, access: Access) -> list[Finding]:
        """The finding a read raises when its program was dropped in a writable directory."""
        exe = access.exe
        if exe is None or not exe.startswith(WRITABLE_DIRECTORIES):
            return []
        if not access.path or not self._context.is_weights(access.path):
            return []
        return [
            finding_for(
                access,
                rule=DROPPED_PROGRAM_RULE,
                name="dropped program",
                severity=Severity.HIGH,
                score=75.0,
                title=f"{who(access)} read {access.path} with {exe}",
                reason=_REASON,
            )
        ]
