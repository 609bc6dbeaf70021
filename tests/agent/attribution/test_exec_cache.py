from __future__ import annotations

import threading

import pytest

from agent.attribution import CachedProcess, ExecCache, ProcessInfo, SnapshotSource


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """Return the time the test set."""
        return self.now


def entry(
    pid: int,
    start_ticks: int,
    *,
    exe: str = "/usr/bin/cat",
    uid: int = 1000,
    source: SnapshotSource = SnapshotSource.EXEC,
) -> CachedProcess:
    return CachedProcess(
        info=ProcessInfo(pid=pid, uid=uid, exe=exe, start_time=start_ticks),
        start_ticks=start_ticks,
        started_at=start_ticks / 100,
        seen_at=start_ticks / 100,
        source=source,
    )


def test_exited_process_stays_findable_for_the_grace_period_then_expires() -> None:
    """An exited entry is found until grace_s after its exit, then expired and counted."""
    clock = Clock()
    cache = ExecCache(grace_s=60, clock=clock)
    cache.put(entry(500, 99_000))
    cache.mark_exited(500, clock.now)

    clock.now += 59
    found = cache.find(500, at_time=clock.now)
    assert found is not None
    assert found.exited_at == 1000.0
    clock.now += 2
    assert cache.find(500, at_time=clock.now) is None
    assert cache.stats().expired == 1
    assert len(cache) == 0


def test_running_process_never_expires() -> None:
    """Only exited entries have a grace period; a running one stays until evicted."""
    clock = Clock()
    cache = ExecCache(grace_s=1, clock=clock)
    cache.put(entry(500, 99_000))
    clock.now += 10_000
    assert cache.latest(500) is not None


def test_reused_pid_is_told_apart_by_start_time() -> None:
    """Two processes with one pid are separate keys; find picks the one alive at the time."""
    cache = ExecCache(clock=Clock())
    cache.put(entry(500, 99_000, exe="/usr/bin/cat"))  # started at t=990
    cache.mark_exited(500, 995.0)
    cache.put(entry(500, 99_900, exe="/usr/bin/python3"))  # started at t=999

    early = cache.find(500, at_time=996.0)
    late = cache.find(500, at_time=1000.0)
    assert early is not None
    assert early.info.exe == "/usr/bin/cat"
    assert late is not None
    assert late.info.exe == "/usr/bin/python3"
    assert cache.find(500, at_time=980.0) is None  # before either started


def test_exec_snapshot_replaces_fork_stub_of_the_same_process() -> None:
    """A start time within one tick is the same process: the exec snapshot replaces it."""
    cache = ExecCache(clock=Clock())
    cache.put(entry(500, 99_000, exe="/usr/bin/bash", source=SnapshotSource.FORK))
    cache.put(entry(500, 99_001, exe="/usr/bin/cat"))

    assert len(cache) == 1
    latest = cache.latest(500)
    assert latest is not None
    assert latest.info.exe == "/usr/bin/cat"
    assert latest.source is SnapshotSource.EXEC


def test_late_snapshot_does_not_resurrect_an_exited_process() -> None:
    """Replacing an exited entry keeps its exit time."""
    cache = ExecCache(clock=Clock())
    cache.put(entry(500, 99_000))
    cache.mark_exited(500, 999.0)
    cache.put(entry(500, 99_000, exe="/usr/bin/other"))
    latest = cache.latest(500)
    assert latest is not None
    assert latest.exited_at == 999.0


def test_full_cache_evicts_least_recently_updated_and_counts_lost_grace() -> None:
    """Beyond max_entries the oldest entry goes; an exited one in grace is counted apart."""
    clock = Clock()
    cache = ExecCache(max_entries=2, grace_s=60, clock=clock)
    cache.put(entry(1, 1))
    cache.put(entry(2, 2))
    cache.mark_exited(1, clock.now)  # exited, in grace; its exit makes it the newest
    cache.put(entry(3, 3))  # evicts pid 2
    cache.put(entry(4, 4))  # evicts pid 1, still in grace

    stats = cache.stats()
    assert stats.evicted == 2
    assert stats.evicted_in_grace == 1
    assert stats.entries == 2
    assert cache.latest(1) is None
    assert cache.latest(2) is None


def test_mark_exited_of_unknown_pid_returns_none() -> None:
    """An exit for a process the cache never saw changes nothing."""
    cache = ExecCache(clock=Clock())
    assert cache.mark_exited(12345, 1.0) is None
    assert len(cache) == 0


def test_update_changes_only_the_running_entry() -> None:
    """A uid change applies to the running process, not to an exited one with that pid."""
    cache = ExecCache(clock=Clock())
    cache.put(entry(500, 99_000, uid=0))
    cache.mark_exited(500, 995.0)
    assert not cache.update(500, lambda info: info)
    cache.put(entry(500, 99_900, uid=0))

    assert cache.update(500, lambda info: ProcessInfo(pid=info.pid, uid=65534, exe=info.exe))

    old = cache.exact(500, 99_000)
    new = cache.exact(500, 99_900)
    assert old is not None
    assert old.info.uid == 0
    assert new is not None
    assert new.info.uid == 65534


@pytest.mark.parametrize(("max_entries", "grace_s"), [(0, 60.0), (10, -1.0)])
def test_invalid_bounds_are_refused(max_entries: int, grace_s: float) -> None:
    """A cache without room or with a negative grace period is a programming error."""
    with pytest.raises(ValueError, match="must"):
        ExecCache(max_entries=max_entries, grace_s=grace_s)


def test_concurrent_writers_and_readers_keep_the_bound() -> None:
    """Threads putting, exiting and finding at once never exceed max_entries."""
    cache = ExecCache(max_entries=100, grace_s=0.0)

    def work(base: int) -> None:
        for i in range(2000):
            pid = base + i
            cache.put(entry(pid, pid))
            cache.mark_exited(pid, 0.0)
            cache.find(pid, at_time=1e9)

    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats()
    assert stats.entries <= 100
    assert stats.inserted == 8000
