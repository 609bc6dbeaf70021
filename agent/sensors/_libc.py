"""The C library both sensors call through ctypes, and its one error convention."""

from __future__ import annotations

import ctypes
import os

__all__ = ["LIBC", "check"]

LIBC = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> int:
    """Return ``result``, or raise ``OSError`` with errno when a libc call returned < 0."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result
