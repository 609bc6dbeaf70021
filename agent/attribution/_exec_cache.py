"""A bounded cache of process snapshots that outlives the processes.

A ``cat`` can exit before its fanotify event is read, taking its exe and user with it
(DESIGN.md decision 3). The proc connector listener snapshots every process at exec and
puts it here; when the process exits the entry is kept for a grace period, so the event
can still be attributed.

Entries are keyed by ``(pid, start time)``: a pid reused by a later process is a different
key. Start times are ``/proc/PID/stat`` clock ticks; two keys whose start times are within
one tick are treated as the same process (a fork stub estimates the start from the
event's timestamp, the exec snapshot reads the exact value).

The cache is bounded: when full, the least recently updated entry is evicted and counted;
an exited entry evicted before its grace period ended is counted separately, because that
is attribution lost. Exited entries whose grace period has passed are expired (counted,
not an error). All methods are thread-safe.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.attribution._process_info import ProcessInfo

__all__ = ["SAME_START_TICKS", "CachedProcess", "ExecCache", "ExecCacheStats", "SnapshotSource"]

SAME_START_TICKS = 1
"""Start times (clock ticks) at most this far apart belong to the same process."""
_Key = tuple[int, int]


class SnapshotSource(enum.Enum):
    """What made the cache take a snapshot."""

    SCAN = "scan"
    """Found running when the listener started or resynchronised after an overrun."""
    FORK = "fork"
    """A fork with no exec yet: the child's identity inherited from its parent's entry."""
    EXEC = "exec"
    """Read from ``/proc`` when the exec notification arrived."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedProcess:
    """One process as the cache remembers it."""

    info: ProcessInfo
    start_ticks: int
    """Start time in clock ticks after boot (exact from stat, or estimated from an event)."""
    started_at: float
    """Start time on the cache's clock (``time.monotonic()`` seconds)."""
    seen_at: float
    """When the snapshot was taken, on the cache's clock."""
    exited_at: float | None = None
    source: SnapshotSource


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecCacheStats:
    """Counters of an `ExecCache`; all but ``entries`` only grow."""

    entries: int
    inserted: int
    evicted: int
    """Entries pushed out because the cache was full."""
    evicted_in_grace: int
    """Of ``evicted``, exited entries still inside their grace period: attribution lost."""
    expired: int
    """Exited entries dropped after their grace period, as designed."""


class ExecCache:
    """A thread-safe LRU of `CachedProcess` keyed by (pid, start time), with exit grace.

    Args:
        max_entries: the bound; the least recently updated entry is evicted beyond it.
        grace_s: how long an exited process stays attributable.
        clock: the monotonic clock exit times and expiry are measured on.
    """

    def __init__(
        self,
        *,
        max_entries: int = 16384,
        grace_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if grace_s < 0:
            raise ValueError("grace_s must not be negative")
        self._max_entries = max_entries
        self._grace_s = grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, CachedProcess] = OrderedDict()
        self._by_pid: dict[int, list[_Key]] = {}
        self._exits: deque[tuple[float, _Key]] = deque()
        self._inserted = 0
        self._evicted = 0
        self._evicted_in_grace = 0
        self._expired = 0

    @property
    def grace_s(self) -> float:
        """How long an exited process stays attributable, in seconds."""
        return self._grace_s

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, entry: CachedProcess) -> None:
        """Insert or replace the entry for this process (same pid, start within a tick).

        Replacing keeps an exit already recorded, so a late snapshot cannot resurrect an
        exited process.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            key = (entry.info.pid, entry.start_ticks)
            old_key = self._same_process(key)
            if old_key is not None:
                old = self._remove(old_key)
                if old.exited_at is not None and entry.exited_at is None:
                    entry = replace(entry, exited_at=old.exited_at)
                    self._exits.append((old.exited_at, key))
            self._insert(key, entry)
            self._inserted += 1
            self._evict(now)

    def mark_exited(self, pid: int, at: float) -> CachedProcess | None:
        """Record that the running process ``pid`` exited at ``at``; its grace starts then.

        Returns:
            The updated entry, or ``None`` when no running entry for ``pid`` is cached.
        """
        with self._lock:
            self._expire(self._clock())
            running = [k for k in self._by_pid.get(pid, ()) if self._entries[k].exited_at is None]
            if not running:
                return None
            key = max(running, key=lambda k: self._entries[k].started_at)
            entry = replace(self._entries[key], exited_at=at)
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._exits.append((at, key))
            return entry

    def update(self, pid: int, change: Callable[[ProcessInfo], ProcessInfo]) -> bool:
        """Apply ``change`` to the snapshot of the running process ``pid`` (e.g. a uid change).

        Returns:
            Whether a running entry for ``pid`` was found.
        """
        with self._lock:
            running = [k for k in self._by_pid.get(pid, ()) if self._entries[k].exited_at is None]
            if not running:
                return False
            key = max(running, key=lambda k: self._entries[k].started_at)
            entry = self._entries[key]
            self._entries[key] = replace(entry, info=change(entry.info))
            self._entries.move_to_end(key)
            return True

    def latest(self, pid: int) -> CachedProcess | None:
        """Return the most recently started cached process with this pid, if any."""
        with self._lock:
            self._expire(self._clock())
            keys = self._by_pid.get(pid)
            if not keys:
                return None
            return max((self._entries[k] for k in keys), key=lambda e: e.started_at)

    def exact(self, pid: int, start_ticks: int) -> CachedProcess | None:
        """Return the cached entry for exactly this process (start within one tick)."""
        with self._lock:
            self._expire(self._clock())
            key = self._same_process((pid, start_ticks))
            return self._entries[key] if key is not None else None

    def find(self, pid: int, at_time: float, *, tolerance_s: float = 0.0) -> CachedProcess | None:
        """Return the process that held ``pid`` at ``at_time`` (the cache's clock).

        That is the latest-started entry that started no later than ``at_time +
        tolerance_s``. An entry is not rejected for having exited before ``at_time``:
        callers pass the time they *read* an event, which is after the access itself.
        """
        with self._lock:
            self._expire(self._clock())
            candidates = [
                self._entries[k]
                for k in self._by_pid.get(pid, ())
                if self._entries[k].started_at <= at_time + tolerance_s
            ]
            return max(candidates, key=lambda e: e.started_at) if candidates else None

    def stats(self) -> ExecCacheStats:
        """Return the current counters."""
        with self._lock:
            self._expire(self._clock())
            return ExecCacheStats(
                entries=len(self._entries),
                inserted=self._inserted,
                evicted=self._evicted,
                evicted_in_grace=self._evicted_in_grace,
                expired=self._expired,
            )

    # --- internals; the lock is held ----------------------------------------------------

    def _same_process(self, key: _Key) -> _Key | None:
        pid, ticks = key
        for other in self._by_pid.get(pid, ()):
            if abs(other[1] - ticks) <= SAME_START_TICKS:
                return other
        return None

    def _insert(self, key: _Key, entry: CachedProcess) -> None:
        self._entries[key] = entry
        self._by_pid.setdefault(key[0], []).append(key)

    def _remove(self, key: _Key) -> CachedProcess:
        entry = self._entries.pop(key)
        keys = self._by_pid[key[0]]
        keys.remove(key)
        if not keys:
            del self._by_pid[key[0]]
        return entry

    def _evict(self, now: float) -> None:
        while len(self._entries) > self._max_entries:
            key = next(iter(self._entries))
            entry = self._remove(key)
            self._evicted += 1
            if entry.exited_at is not None and entry.exited_at + self._grace_s > now:
                self._evicted_in_grace += 1

    def _expire(self, now: float) -> None:
        while self._exits and self._exits[0][0] + self._grace_s <= now:
            exited_at, key = self._exits.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.exited_at == exited_at:
                self._remove(key)
                self._expired += 1
