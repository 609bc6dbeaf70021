"""How findings name people, programs and places in their titles."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detectors.access import Access

__all__ = ["mib", "who"]


def who(access: Access) -> str:
    """``alice (python3 on gpu-012)``, or ``alice as root (dd on gpu-012)`` through sudo."""
    person = access.user if access.user == access.account else f"{access.user} as {access.account}"
    program = access.program or "an unknown program"
    return f"{person} ({program} on {access.host or 'an unknown host'})"


def mib(size: float) -> str:
    """Bytes for people: ``3.2 GiB``, ``512 MiB``, ``106 KiB``, ``300 bytes``."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.0f} KiB"
    return f"{size:.0f} bytes"
