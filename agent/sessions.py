"""Access sessions: one per open … close of a weights file by one process.

fanotify reports opens and closes per (pid, file), not per descriptor, so a session is
keyed by (pid, path) and a process that opens the same file twice holds two sessions,
closed last-in first-out. How much was read is sampled while the session is open (the
descriptor's position from fdinfo for ``read`` calls, the mapping's Rss from smaps for
``mmap``) and once more at close if the process is still alive; the largest value seen
wins. A reader that exits between samples leaves ``bytes_read`` unknown rather than
guessed. A session held longer than the progress interval yields a progress event each
interval (a serving job mapping its weights for days); one whose process has gone without
a close being seen (lost in an overflow) is ended instead, with :meth:`SessionTracker.discard`.

The tracker is pure: times are passed in (milliseconds), nothing reads ``/proc`` here.
It is bounded: past ``max_sessions`` the oldest session is evicted and counted.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weightwarden.events import Actor

__all__ = ["Session", "SessionTracker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One process's hold on one file."""

    uid: str
    pid: int
    path: str
    opened_at: int
    size: int | None
    actor: Actor
    bytes_read: int | None = None
    mmap_bytes: int | None = None
    last_progress_at: int = 0

    @property
    def fraction_read(self) -> float | None:
        """Share of the file read (by read calls or mapped), capped at 1."""
        seen = max(self.bytes_read or 0, self.mmap_bytes or 0)
        if self.size is None or (self.bytes_read is None and self.mmap_bytes is None):
            return None
        if self.size == 0:
            return 1.0
        return min(1.0, seen / self.size)


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class SessionTracker:
    """Open sessions by (pid, path), bounded, with progress scheduling."""

    def __init__(self, *, agent_id: str, progress_interval_ms: int, max_sessions: int) -> None:
        """Start empty.

        Raises:
            ValueError: ``max_sessions`` below 1 (there would be no room for any session)
                or ``progress_interval_ms`` not positive (a progress event every tick).
        """
        if max_sessions < 1 or progress_interval_ms <= 0:
            msg = "a SessionTracker needs max_sessions >= 1 and progress_interval_ms > 0"
            raise ValueError(msg)
        self._prefix = agent_id
        self._interval = progress_interval_ms
        self._max = max_sessions
        self._counter = itertools.count(1)
        self._open: OrderedDict[str, Session] = OrderedDict()
        self._by_key: dict[tuple[int, str], list[str]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def open(self, *, pid: int, path: str, now: int, size: int | None, actor: Actor) -> Session:
        """Start a session; evict (and count) the oldest if the tracker is full."""
        if len(self._open) >= self._max:
            oldest = next(iter(self._open.values()))
            self._forget(oldest)
            self.evicted += 1
        uid = f"{self._prefix}:{now}:{next(self._counter)}"
        session = Session(
            uid=uid, pid=pid, path=path, opened_at=now, size=size, actor=actor, last_progress_at=now
        )
        self._open[uid] = session
        self._by_key.setdefault((pid, path), []).append(uid)
        return session

    def observe(self, uid: str, *, bytes_read: int | None, mmap_bytes: int | None) -> None:
        """Record a usage sample; the largest value seen is kept."""
        s = self._open.get(uid)
        if s is not None:
            self._open[uid] = replace(
                s,
                bytes_read=_max(s.bytes_read, bytes_read),
                mmap_bytes=_max(s.mmap_bytes, mmap_bytes),
            )

    def close(self, *, pid: int, path: str) -> Session | None:
        """End the newest session of (pid, path); None if no open was seen (say so upstream)."""
        uids = self._by_key.get((pid, path))
        if not uids:
            return None
        session = self._open[uids[-1]]
        self._forget(session)
        return session

    def discard(self, uid: str) -> Session | None:
        """End the session ``uid`` (its process is gone and its close was never seen)."""
        session = self._open.get(uid)
        if session is not None:
            self._forget(session)
        return session

    def open_sessions(self) -> list[Session]:
        """Every open session, oldest first (for sampling)."""
        return list(self._open.values())

    def for_pid(self, pid: int) -> list[Session]:
        """Open sessions of one process."""
        return [s for s in self._open.values() if s.pid == pid]

    def due_progress(self, now: int) -> list[Session]:
        """Sessions whose progress interval has elapsed; marks them as reported at ``now``."""
        due = [s for s in self._open.values() if now - s.last_progress_at >= self._interval]
        for s in due:
            self._open[s.uid] = replace(s, last_progress_at=now)
        return [self._open[s.uid] for s in due]

    def _forget(self, session: Session) -> None:
        del self._open[session.uid]
        key = (session.pid, session.path)
        uids = self._by_key[key]
        uids.remove(session.uid)
        if not uids:
            del self._by_key[key]
