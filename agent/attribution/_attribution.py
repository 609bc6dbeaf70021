"""Answer "who did this?" for a pid seen in a sensor event, and say how sure the answer is.

`Attributor.attribute` reads the live process from ``/proc`` when it is still there and is
the same process (it started no later than the event), and otherwise takes the snapshot
the exec cache made while the process lived. The cache is fed a little after the kernel's
events (by `ExecWatcher`, in another process), so for a process that has gone, or goes
while being read, it first waits (``await_exit``, briefly) until the cache has heard of
that exit: then the exec snapshot is there if one was taken. It never guesses: when
neither source knows, the attribution is `AttributionQuality.UNKNOWN` and its ``reason``
says why.

Times are ``time.monotonic()`` seconds. Pass the time the event happened or, when that is
not known, the time the sensor read it (an upper bound: the access happened before).
Process start times have clock-tick resolution (10 ms), so a pid reused within a tick or
two of the event cannot be told apart; with pids allocated sequentially that needs the
whole pid space to wrap in that time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.attribution._process_info import ProcessInfo, ReadQuality
from agent.attribution._procfs import (
    DEFAULT_MAX_DEPTH,
    PROC,
    UserNameLookup,
    clock_ticks_per_second,
    lookup_user_name,
    read_process,
    start_time_to_monotonic,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent.attribution._exec_cache import CachedProcess, ExecCache

__all__ = ["Attribution", "AttributionQuality", "Attributor"]


class AttributionQuality(enum.Enum):
    """How an attribution was made, best first."""

    FULL = "full"
    """Read from the live process, which started before the event."""
    FROM_CACHE = "from_cache"
    """The process has exited; its identity comes from the snapshot taken at exec."""
    PARTIAL = "partial"
    """Some identity is known (e.g. the uid) but not who ran what; see ``reason``."""
    UNKNOWN = "unknown"
    """Nothing trustworthy is known about the process; ``process`` may hold the pid only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribution:
    """The identity behind a pid at a moment, with how it was obtained."""

    pid: int
    at_time: float
    quality: AttributionQuality
    process: ProcessInfo | None
    reason: str
    """Why the quality is what it is, for an investigator reading the event."""


class Attributor:
    """Combine live ``/proc`` with an exec cache to attribute pids from sensor events.

    Args:
        cache: the exec cache fed by the proc connector, or ``None`` when the connector
            is unavailable (then an exited process is UNKNOWN).
        no_cache_reason: why there is no cache, repeated in UNKNOWN attributions.
        proc_root: where procfs is mounted.
        max_depth: the most ancestors read for a live process.
        user_name: maps a uid to its name.
        await_exit: waits until ``cache`` records the exit of the latest process with a
            pid, returning whether it did (`ExecWatcher.wait_for_exit` with a timeout);
            ``None`` when the cache is filled synchronously or not at all.
    """

    def __init__(
        self,
        *,
        cache: ExecCache | None,
        no_cache_reason: str = "no exec cache (proc connector unavailable)",
        proc_root: Path = PROC,
        max_depth: int = DEFAULT_MAX_DEPTH,
        user_name: UserNameLookup = lookup_user_name,
        await_exit: Callable[[int], bool] | None = None,
    ) -> None:
        self._cache = cache
        self._await_exit = await_exit
        self._no_cache_reason = no_cache_reason
        self._proc_root = proc_root
        self._max_depth = max_depth
        self._user_name = user_name

    def attribute(self, pid: int, at_time: float) -> Attribution:
        """Attribute ``pid`` as it was at ``at_time`` (``time.monotonic()`` seconds).

        Never raises for a process that is gone; the quality and reason say what is known.
        """
        tick = 1 / clock_ticks_per_second()
        live = read_process(
            pid, proc_root=self._proc_root, max_depth=self._max_depth, user_name=self._user_name
        )
        if live.read_quality is ReadQuality.ABSENT:
            self._settle(pid)
            return self._from_cache(pid, at_time, tick, live_note="the process has exited")
        if (
            live.start_time is not None
            and start_time_to_monotonic(live.start_time) > at_time + tick
        ):
            return self._from_cache(
                pid, at_time, tick, live_note="the pid now belongs to a process started later"
            )
        if live.read_quality is ReadQuality.VANISHED:
            cached = self._cache_entry(live, at_time, tick)
            if (cached is None or not cached.info.identified) and self._settle(pid):
                cached = self._cache_entry(live, at_time, tick)
            if cached is not None and cached.info.identified:
                return self._cached(pid, at_time, cached, "the process exited while being read")
            quality = (
                AttributionQuality.PARTIAL if live.uid is not None else AttributionQuality.UNKNOWN
            )
            return Attribution(
                pid=pid,
                at_time=at_time,
                quality=quality,
                process=live,
                reason="the process exited while being read and no exec snapshot was cached; "
                f"missing {_names(live.unread)}",
            )
        if live.identified:
            reason = "live process" + (
                f"; unreadable: {_names(live.unread)}" if live.unread else ""
            )
            return Attribution(
                pid=pid,
                at_time=at_time,
                quality=AttributionQuality.FULL,
                process=live,
                reason=reason,
            )
        return Attribution(
            pid=pid,
            at_time=at_time,
            quality=AttributionQuality.PARTIAL
            if live.uid is not None
            else AttributionQuality.UNKNOWN,
            process=live,
            reason=f"live process, but unreadable: {_names(live.unread)}",
        )

    def _settle(self, pid: int) -> bool:
        """Wait until the cache has heard that ``pid`` exited; whether it has."""
        return self._cache is not None and self._await_exit is not None and self._await_exit(pid)

    def _cache_entry(self, live: ProcessInfo, at_time: float, tick: float) -> CachedProcess | None:
        if self._cache is None:
            return None
        if live.start_time is not None:
            return self._cache.exact(live.pid, live.start_time)
        return self._cache.find(live.pid, at_time, tolerance_s=tick)

    def _from_cache(self, pid: int, at_time: float, tick: float, *, live_note: str) -> Attribution:
        if self._cache is None:
            return Attribution(
                pid=pid,
                at_time=at_time,
                quality=AttributionQuality.UNKNOWN,
                process=None,
                reason=f"{live_note}; {self._no_cache_reason}",
            )
        cached = self._cache.find(pid, at_time, tolerance_s=tick)
        if cached is None:
            return Attribution(
                pid=pid,
                at_time=at_time,
                quality=AttributionQuality.UNKNOWN,
                process=None,
                reason=f"{live_note}; the exec cache has no entry for this pid "
                "(exited before the listener saw it, expired, or evicted)",
            )
        return self._cached(pid, at_time, cached, live_note)

    @staticmethod
    def _cached(pid: int, at_time: float, cached: CachedProcess, live_note: str) -> Attribution:
        info = cached.info
        source = cached.source.value
        if info.identified:
            return Attribution(
                pid=pid,
                at_time=at_time,
                quality=AttributionQuality.FROM_CACHE,
                process=info,
                reason=f"{live_note}; identity from the {source} snapshot",
            )
        return Attribution(
            pid=pid,
            at_time=at_time,
            quality=AttributionQuality.PARTIAL
            if info.uid is not None
            else AttributionQuality.UNKNOWN,
            process=info,
            reason=f"{live_note}; the {source} snapshot lacks {_names(info.unread)} "
            "(the process exited before it could be read)",
        )


def _names(fields: frozenset[str]) -> str:
    return ", ".join(sorted(fields)) or "nothing"
