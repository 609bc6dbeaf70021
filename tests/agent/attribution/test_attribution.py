from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

import agent.attribution
from agent.attribution import (
    AttributionQuality,
    Attributor,
    CachedProcess,
    ExecCache,
    ProcessInfo,
    SnapshotSource,
    read_process,
)

if TYPE_CHECKING:
    from collections.abc import Callable

NOBODY = 65534


def _snapshot_into(cache: ExecCache, info: ProcessInfo) -> None:
    """Put a real snapshot into the cache, as the listener does at exec."""
    assert info.start_time is not None
    cache.put(
        CachedProcess(
            info=info,
            start_ticks=info.start_time,
            started_at=time.monotonic() - 1,
            seen_at=time.monotonic(),
            source=SnapshotSource.EXEC,
        )
    )


def test_public_api_is_pinned() -> None:
    """The package exports exactly this surface."""
    assert sorted(agent.attribution.__all__) == [
        "Ancestor",
        "Attribution",
        "AttributionQuality",
        "Attributor",
        "CachedProcess",
        "CgroupIdentity",
        "ConnectorProbe",
        "ConnectorStats",
        "ExecCache",
        "ExecCacheStats",
        "ExecWatcher",
        "IoCounters",
        "ListenerPriority",
        "ProcConnector",
        "ProcEvent",
        "ProcEventKind",
        "ProcessInfo",
        "ReadQuality",
        "RelayStats",
        "SnapshotSource",
        "SshOrigin",
        "WatcherStats",
        "holders",
        "mapped_rss",
        "open_files",
        "parse_cgroup",
        "parse_cmdline",
        "parse_environ",
        "parse_loginuid",
        "parse_proc_events",
        "parse_ssh_origin",
        "parse_stat",
        "parse_status",
        "probe_proc_connector",
        "read_io",
        "read_parents",
        "read_position",
        "read_process",
    ]
    for name in agent.attribution.__all__:
        assert getattr(agent.attribution, name) is not None


@pytest.mark.usefixtures("as_root")
def test_live_process_is_fully_attributed(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """A running process is attributed FULL from /proc, without any cache."""
    child = subprocess.Popen(["sleep", "60"], user=NOBODY, group=NOBODY)
    spawn.append(child)
    wait_exec(child.pid, "sleep")

    attribution = Attributor(cache=None).attribute(child.pid, time.monotonic())

    assert attribution.quality is AttributionQuality.FULL
    assert attribution.process is not None
    assert attribution.process.uid == NOBODY
    assert attribution.process.exe == os.path.realpath(shutil.which("sleep") or "sleep")
    assert attribution.reason.startswith("live process")


def test_exited_process_without_cache_is_unknown_and_says_why() -> None:
    """With no exec cache, an exited process is UNKNOWN; the reason names the gap."""
    child = subprocess.Popen(["true"])
    child.wait()

    attribution = Attributor(cache=None, no_cache_reason="proc connector: EPERM").attribute(
        child.pid, time.monotonic()
    )

    assert attribution.quality is AttributionQuality.UNKNOWN
    assert attribution.process is None
    assert "exited" in attribution.reason
    assert "proc connector: EPERM" in attribution.reason


def test_exited_process_missing_from_cache_is_unknown() -> None:
    """A cache that never saw the process cannot attribute it, and says so."""
    child = subprocess.Popen(["true"])
    child.wait()

    attribution = Attributor(cache=ExecCache()).attribute(child.pid, time.monotonic())

    assert attribution.quality is AttributionQuality.UNKNOWN
    assert "no entry" in attribution.reason


def _sleeping(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> subprocess.Popen[bytes]:
    """A ``sleep 60`` child that has exec'd."""
    child = subprocess.Popen(["sleep", "60"])
    spawn.append(child)
    wait_exec(child.pid, "sleep")
    return child


def _end(child: subprocess.Popen[bytes], *, reap: bool) -> None:
    """Kill ``child``: reaped (gone from /proc), or left a zombie (exe and cmdline gone)."""
    child.kill()
    if reap:
        child.wait()
        return
    deadline = time.monotonic() + 10
    while read_process(child.pid, with_parents=False).state != "Z":
        assert time.monotonic() < deadline, "child did not become a zombie"
        time.sleep(0.01)


SLEEP = os.path.realpath(shutil.which("sleep") or "sleep")


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_exited_process_is_attributed_from_its_cached_snapshot(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None], reap: bool
) -> None:
    """A snapshot taken while the process lived attributes it after exit: FROM_CACHE."""
    child = _sleeping(spawn, wait_exec)
    cache = ExecCache()
    _snapshot_into(cache, read_process(child.pid))
    _end(child, reap=reap)
    cache.mark_exited(child.pid, time.monotonic())

    attribution = Attributor(cache=cache).attribute(child.pid, time.monotonic())

    assert attribution.quality is AttributionQuality.FROM_CACHE
    assert attribution.process is not None
    assert (attribution.process.exe, attribution.process.cmdline) == (SLEEP, ("sleep", "60"))


def _late_snapshot(
    cache: ExecCache, snapshot: ProcessInfo, asked: list[int]
) -> Callable[[int], bool]:
    """An ``await_exit`` that delivers snapshot and exit only when asked: a trailing watcher."""

    def await_exit(pid: int) -> bool:
        asked.append(pid)
        _snapshot_into(cache, snapshot)
        cache.mark_exited(pid, time.monotonic())
        return True

    return await_exit


@pytest.mark.parametrize("reap", [True, False], ids=["gone-before-the-read", "gone-mid-read"])
def test_a_gone_process_waits_for_the_watchers_trailing_snapshot(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None], reap: bool
) -> None:
    """Gone (reaped, or a zombie whose exe is gone) before the cache was told: wait, FROM_CACHE."""
    child = _sleeping(spawn, wait_exec)
    snapshot = read_process(child.pid)
    _end(child, reap=reap)
    cache = ExecCache()
    asked: list[int] = []

    attribution = Attributor(
        cache=cache, await_exit=_late_snapshot(cache, snapshot, asked)
    ).attribute(child.pid, time.monotonic())

    assert asked == [child.pid]
    assert attribution.quality is AttributionQuality.FROM_CACHE
    assert attribution.process is not None
    assert (attribution.process.exe, attribution.process.cmdline) == (SLEEP, ("sleep", "60"))


def test_a_live_process_is_not_kept_waiting_for_its_exit(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """``await_exit`` is only for gone processes: a running one is read at once."""
    child = _sleeping(spawn, wait_exec)
    asked: list[int] = []

    attribution = Attributor(
        cache=ExecCache(), await_exit=lambda pid: asked.append(pid) is None
    ).attribute(child.pid, time.monotonic())

    assert asked == []
    assert attribution.quality is AttributionQuality.FULL


def test_live_process_started_after_the_event_is_not_blamed(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """If the pid's current process started after the event, it is a reused pid: no FULL."""
    event_time = time.monotonic() - 3600  # an event read long before this process existed
    child = _sleeping(spawn, wait_exec)

    attribution = Attributor(cache=ExecCache()).attribute(child.pid, event_time)

    assert attribution.quality is AttributionQuality.UNKNOWN
    assert "started later" in attribution.reason


def test_snapshot_lacking_exe_is_partial_not_a_guess() -> None:
    """A cached snapshot with a uid but no exe is PARTIAL, and the reason lists the gaps."""
    child = subprocess.Popen(["true"])
    child.wait()
    cache = ExecCache()
    cache.put(
        CachedProcess(
            info=ProcessInfo(pid=child.pid, uid=NOBODY, unread=frozenset({"exe", "cmdline"})),
            start_ticks=1,
            started_at=time.monotonic() - 1,
            seen_at=time.monotonic(),
            source=SnapshotSource.EXEC,
        )
    )

    attribution = Attributor(cache=cache).attribute(child.pid, time.monotonic())

    assert attribution.quality is AttributionQuality.PARTIAL
    assert attribution.process is not None
    assert attribution.process.uid == NOBODY
    assert "cmdline, exe" in attribution.reason
