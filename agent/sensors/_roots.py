"""The weight roots a sensor covers, and the path test every event goes through."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["WeightRoots", "unescape_mount_point"]

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape_mount_point(field: str) -> str:
    r"""Undo the octal escapes (``\040`` for a space) of a /proc/PID/mountinfo path field."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


class WeightRoots:
    """Absolute, symlink-free directories whose files a sensor reports.

    Paths are compared as strings, after the kernel has resolved them (readlink of a
    descriptor), so a root is stored with its symlinks resolved too.
    """

    __slots__ = ("_exact", "_prefixes", "paths")

    def __init__(self, roots: Iterable[Path]) -> None:
        """Resolve and check each root.

        Raises:
            UsageError: No root given, or a root is relative, missing or not a directory.
        """
        resolved: list[Path] = []
        for root in roots:
            if not root.is_absolute():
                raise UsageError(f"weight root {root} is relative; give an absolute path")
            try:
                real = root.resolve(strict=True)
            except OSError as exc:
                raise UsageError(
                    f"weight root {root} cannot be resolved ({exc.strerror}); create it or "
                    "fix the configured roots"
                ) from exc
            if not real.is_dir():
                raise UsageError(f"weight root {root} is not a directory")
            if real not in resolved:
                resolved.append(real)
        if not resolved:
            raise UsageError("no weight roots given; a sensor needs at least one directory")
        self.paths: tuple[Path, ...] = tuple(resolved)
        self._exact = frozenset(str(p) for p in resolved)
        self._prefixes = tuple(str(p).rstrip("/") + "/" for p in resolved)

    def contains(self, path: str) -> bool:
        """True if ``path`` (absolute, resolved) is a root or lies under one."""
        return path in self._exact or path.startswith(self._prefixes)

    def mount_points_below(self, mountinfo: str) -> tuple[str, ...]:
        """Mount points at or under a root, from the text of /proc/self/mountinfo.

        A filesystem mounted inside a root is a different filesystem, so a sensor that marks
        filesystems must mark it too.
        """
        found: list[str] = []
        for line in mountinfo.splitlines():
            fields = line.split(" ")
            if len(fields) < 5:  # noqa: PLR2004 - id, parent, dev, root, mount point
                continue
            point = unescape_mount_point(fields[4])
            if self.contains(point) and point not in found:
                found.append(point)
        return tuple(found)
