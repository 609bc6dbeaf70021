"""Bulk reads: one reader takes a large share of an asset's checkpoints in a short window.

Training loads one checkpoint; a thief takes the set. The rule sums the sizes of the
distinct files of one asset a reader opened within ``thresholds.bulk_read_window_minutes``
and fires when they reach ``thresholds.bulk_read_fraction`` of the asset's bytes and span at
least two checkpoint folders. The asset's bytes are what the record shows of it (every
distinct file of the asset seen in the run, :func:`asset_bytes`), so the rule needs no
inventory.

A reader that bulk-read the same asset on two earlier days (a backup, a nightly eval sweep)
is doing its job: the finding stays, scored low and saying it is routine.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from detectors._text import mib, who
from detectors.access import AccessKind
from detectors.finding import Finding, day_of
from policies import Thresholds
from weightwarden.events import AnalyticType, Severity

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from detectors.access import Access
    from detectors.context import Context

__all__ = ["BULK_RULE", "BulkReadRule", "asset_bytes"]

BULK_RULE: Final = "weightwarden.rule.bulk_read"

_MINUTE_MS: Final = 60_000
_ROUTINE_DAYS: Final = 2
_MAX_EVIDENCE: Final = 50


def asset_bytes(context: Context, accesses: Iterable[Access]) -> dict[str, int]:
    """Bytes of each asset: the sizes of its distinct files seen in ``accesses``."""
    sizes: dict[str, dict[str, int]] = {}
    for access in accesses:
        if access.kind is not AccessKind.READ or not access.size or not access.path:
            continue
        asset = context.asset_key(access.path)
        if asset is not None:
            files = sizes.setdefault(asset, {})
            if access.size > files.get(access.path, 0):
                files[access.path] = access.size
    return {asset: sum(files.values()) for asset, files in sizes.items()}


class _Window:
    """One reader's reads of one asset within the window: distinct files and their bytes."""

    __slots__ = ("bytes", "counts", "fired_until", "reads", "sizes")

    def __init__(self) -> None:
        self.reads: deque[tuple[int, str, str]] = deque()
        self.counts: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.bytes = 0
        self.fired_until = 0

    def add(self, time: int, path: str, size: int, uid: str, horizon: int) -> None:
        while self.reads and self.reads[0][0] < horizon:
            _, old, _ = self.reads.popleft()
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
                self.bytes -= self.sizes.pop(old)
        self.reads.append((time, path, uid))
        if path in self.counts:
            self.counts[path] += 1
            if size > self.sizes[path]:
                self.bytes += size - self.sizes[path]
                self.sizes[path] = size
        else:
            self.counts[path] = 1
            self.sizes[path] = size
            self.bytes += size

    def folders(self) -> int:
        return len({path.rpartition("/")[0] for path in self.counts})


class BulkReadRule:
    """A large share of an asset read in one window (MEDIUM 45; routine: LOW 10)."""

    def __init__(self, context: Context, sizes: Mapping[str, int]) -> None:
        self._context = context
        thresholds = context.policy.thresholds if context.policy else Thresholds()
        self._fraction = thresholds.bulk_read_fraction
        self._window = thresholds.bulk_read_window_minutes * _MINUTE_MS
        self._sizes = sizes
        self._windows: dict[tuple[str, str], _Window] = {}
        self._days: dict[tuple[str, str], set[int]] = {}

    def __call__(self, access: Access) -> list[Finding]:
        """The finding a read raises when it completes a bulk read."""
        if access.kind is not AccessKind.READ or not access.path or not access.size:
            return []
        asset = self._context.asset_key(access.path)
        total = self._sizes.get(asset, 0) if asset is not None else 0
        if asset is None or total <= 0:
            return []
        key = (access.user, asset)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        window.add(access.time, access.path, access.size, access.uid, access.time - self._window)
        share = window.bytes / total
        if share < self._fraction or access.time < window.fired_until or window.folders() < 2:  # noqa: PLR2004 -- a set is at least two checkpoints
            return []
        window.fired_until = access.time + self._window
        days = self._days.setdefault(key, set())
        today = day_of(access.time)
        routine = len(days - {today}) >= _ROUTINE_DAYS
        days.add(today)
        evidence = tuple(dict.fromkeys(uid for _, _, uid in window.reads))[-_MAX_EVIDENCE:]
        reason = (
            f"Read {len(window.counts)} files of {asset} ({mib(window.bytes)}, {share:.0%} of "
            f"the asset's {mib(total)}) within {self._window // _MINUTE_MS} minutes, across "
            f"{window.folders()} checkpoints; a training job loads one checkpoint."
        )
        if routine:
            reason += f" Routine: this reader bulk-read {asset} on {len(days) - 1} earlier days."
        return [
            Finding(
                rule=BULK_RULE,
                name="bulk read",
                kind=AnalyticType.RULE,
                entity=access.user,
                time=window.reads[0][0],
                severity=Severity.LOW if routine else Severity.MEDIUM,
                score=10.0 if routine else 45.0,
                title=f"{who(access)} read {share:.0%} of {asset} in one window",
                reason=reason,
                evidence=evidence,
                host=access.host,
                program=access.program,
                path=access.path,
            )
        ]
