from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.attribution import (
    AttributionQuality,
    Attributor,
    CachedProcess,
    ExecCache,
    ExecWatcher,
    ProcessInfo,
    SnapshotSource,
    SshOrigin,
    probe_proc_connector,
)
from agent.attribution._codec import ExitMessage, SnapshotMessage, UpdateMessage, decode_message
from agent.attribution._watcher import _LineSink
from weightwarden.errors import WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NOBODY = 65534


@pytest.fixture
def connector_available() -> None:
    """Skip unless this process may subscribe to the proc connector (the parent's probe)."""
    probe = probe_proc_connector()
    if not probe.available:
        pytest.skip(f"proc connector unavailable: {probe.reason}")


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fail the test if it leaves a thread running that was not there before."""
    before = set(threading.enumerate())
    yield
    leaked = [thread.name for thread in set(threading.enumerate()) - before]
    assert leaked == []


@pytest.fixture
def watchers() -> Iterator[list[ExecWatcher]]:
    """Stop every watcher a test started, whatever happened."""
    started: list[ExecWatcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def _wrapper(directory: Path, body: str) -> str:
    """Write an executable shell script that stands in for the interpreter."""
    script = directory / "python-wrapper"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def _wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    pytest.fail(f"timed out waiting until {what}")


# --- attribution through the child ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_cats_as_nobody_are_attributed_while_a_parent_thread_is_busy(
    world_dir: Path, watchers: list[ExecWatcher]
) -> None:
    """200 `cat`s as uid 65534, a busy Python thread in this process: >= 90 % attributed."""
    target = world_dir / "weights.bin"
    target.write_bytes(b"w" * 4096)
    target.chmod(0o644)
    cat = os.path.realpath(shutil.which("cat") or "/bin/cat")
    cache = ExecCache(grace_s=600)
    watcher = ExecWatcher(cache, stats_interval_s=0.2)
    watchers.append(watcher)
    watcher.start()

    stop = threading.Event()
    spins = [0]

    def spin() -> None:  # holds the GIL as long as the interpreter lets it
        while not stop.is_set():
            spins[0] += 1

    busy = threading.Thread(target=spin, name="busy")
    busy.start()
    pids: list[int] = []
    try:
        for _ in range(200):
            child = subprocess.Popen(
                [cat, str(target)], user=NOBODY, group=NOBODY, stdout=subprocess.DEVNULL
            )
            child.wait()
            pids.append(child.pid)
        caught_up = watcher.wait_for_exit(pids[-1], timeout_s=30)
    finally:
        stop.set()
        busy.join()
    assert spins[0] > 0
    assert caught_up, watcher.stats()

    attributor = Attributor(cache=cache)
    now = time.monotonic()
    results = [attributor.attribute(pid, now) for pid in pids]
    qualities = Counter(result.quality.value for result in results)
    correct = sum(
        1
        for result in results
        if result.process is not None and result.process.uid == NOBODY and result.process.exe == cat
    )
    _wait_until(
        lambda: (s := watcher.stats().connector) is not None and s.execs >= len(pids),
        "the child reported its counters",
    )
    stats = watcher.stats()
    sys.stderr.write(
        f"exec watcher attributed {correct}/{len(pids)} exited cats to uid {NOBODY} and {cat} "
        f"with a busy thread in the parent ({dict(qualities)}); {stats}\n"
    )
    # The issue's >= 99 % is measured by benchmarks/agent_overhead.py on a quiet machine. On
    # a 2-core runner busy with other work a cat can finish before the listener reads it:
    # the floor here is loose, but every miss must be counted by the child's listener.
    assert correct / len(pids) >= 0.9, (qualities, stats)
    connector = stats.connector
    assert connector is not None
    assert len(pids) - correct <= connector.snapshots_vanished + connector.snapshots_lost
    assert stats.decode_errors == stats.oversized_lines == stats.apply_errors == 0
    assert stats.failure is None
    for result in results:  # the rest say they do not know, never guess
        if not (result.process and result.process.exe == cat):
            assert result.quality is not AttributionQuality.FULL


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_start_returns_with_running_processes_in_the_cache(
    spawn: list[subprocess.Popen[bytes]], watchers: list[ExecWatcher]
) -> None:
    """The child's scan of /proc reaches the parent's cache before start() returns."""
    sleeper = subprocess.Popen(["sleep", "60"], user=NOBODY, group=NOBODY)
    spawn.append(sleeper)
    _wait_until(lambda: Path(f"/proc/{sleeper.pid}/exe").readlink().name == "sleep", "sleep exec'd")
    cache = ExecCache(grace_s=600)
    watcher = ExecWatcher(cache)
    watchers.append(watcher)
    watcher.start()
    assert watcher.alive
    entry = cache.latest(sleeper.pid)
    assert entry is not None
    assert entry.info.uid == NOBODY
    assert entry.info.cmdline == ("sleep", "60")
    sleeper.kill()
    sleeper.wait()
    assert watcher.wait_for_exit(sleeper.pid, timeout_s=20)
    attribution = Attributor(cache=cache).attribute(sleeper.pid, time.monotonic())
    assert attribution.quality is AttributionQuality.FROM_CACHE


@pytest.mark.usefixtures("as_root", "connector_available")
def test_child_times_are_on_the_parents_monotonic_clock(watchers: list[ExecWatcher]) -> None:
    """A process started and ended between two parent clock readings is stamped between them."""
    cache = ExecCache(grace_s=600)
    watcher = ExecWatcher(cache, scan_on_start=False)
    watchers.append(watcher)
    watcher.start()
    before = time.monotonic()
    child = subprocess.Popen(["true"])
    child.wait()
    assert watcher.wait_for_exit(child.pid, timeout_s=20)
    after = time.monotonic()
    entry = cache.latest(child.pid)
    assert entry is not None
    assert entry.exited_at is not None
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert before - tick <= entry.started_at <= entry.exited_at <= after


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_a_made_up_environment_cannot_make_a_process_unattributable(
    watchers: list[ExecWatcher],
) -> None:
    """Absurd ssh ports and job ids from the environment travel as None; nothing is dropped."""
    cache = ExecCache(grace_s=600)
    watcher = ExecWatcher(cache, scan_on_start=False, stats_interval_s=0.1)
    watchers.append(watcher)
    watcher.start()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SSH_CONNECTION": "192.0.2.1 99999 198.51.100.1 \u00b2",
        "SLURM_JOB_ID": "9" * 5000,
    }
    child = subprocess.Popen(["sleep", "0.2"], env=env, user=NOBODY, group=NOBODY)
    child.wait()
    assert watcher.wait_for_exit(child.pid, timeout_s=20)
    attribution = Attributor(cache=cache).attribute(child.pid, time.monotonic())
    assert attribution.quality is AttributionQuality.FROM_CACHE
    assert attribution.process is not None
    assert attribution.process.uid == NOBODY
    assert attribution.process.ssh_origin == SshOrigin(
        client_address="192.0.2.1",
        client_port=None,
        server_address="198.51.100.1",
        server_port=None,
    )
    assert attribution.process.slurm_job_id is None
    _wait_until(
        lambda: (c := watcher.stats().connector) is not None and c.exits >= 1,
        "the child reported its counters",
    )
    stats = watcher.stats()
    assert stats.decode_errors == 0
    assert stats.connector is not None
    assert stats.connector.handler_errors == 0


# --- lifecycle ------------------------------------------------------------------------------


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_stop_ends_the_child_cleanly_and_is_idempotent() -> None:
    """stop() closes the child's stdin; it exits 0, the reader ends, nothing is left over."""
    watcher = ExecWatcher(ExecCache(), scan_on_start=False)
    watcher.start()
    with pytest.raises(WeightwardenError, match="already running"):
        watcher.start()
    child_pid = watcher.stats().child_pid
    assert child_pid is not None
    assert Path(f"/proc/{child_pid}/comm").read_text().strip() == "ww-exec-watcher"
    watcher.stop()
    assert _gone(child_pid)
    assert not watcher.alive
    assert watcher.failure is None
    stats = watcher.stats()
    assert stats.connector is not None
    assert not stats.connector.running  # the child's last word: its listener stopped
    watcher.stop()
    with watcher:  # it can start again
        assert watcher.alive
    assert watcher.failure is None


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_a_killed_child_sets_failure(watchers: list[ExecWatcher]) -> None:
    """SIGKILL on the child: failure says so, alive turns false, waiting returns at once."""
    watcher = ExecWatcher(ExecCache(), scan_on_start=False)
    watchers.append(watcher)
    watcher.start()
    child_pid = watcher.stats().child_pid
    assert child_pid is not None
    os.kill(child_pid, signal.SIGKILL)
    _wait_until(lambda: watcher.failure is not None, "the failure is recorded")
    assert "was killed by SIGKILL" in (watcher.failure or "")
    assert not watcher.alive
    assert not watcher.stats().running
    assert watcher.wait_for_exit(1 << 22, timeout_s=30) is False  # returns, does not wait


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_sigterm_ends_the_child_and_the_parent_notices(watchers: list[ExecWatcher]) -> None:
    """The child exits 0 on SIGTERM; unasked, that is a failure for the parent."""
    watcher = ExecWatcher(ExecCache(), scan_on_start=False)
    watchers.append(watcher)
    watcher.start()
    child_pid = watcher.stats().child_pid
    assert child_pid is not None
    os.kill(child_pid, signal.SIGTERM)
    _wait_until(lambda: watcher.failure is not None, "the failure is recorded")
    assert "exited with status 0" in (watcher.failure or "")


@pytest.mark.usefixtures("as_root", "connector_available")
def test_the_child_dies_with_its_parent_even_if_its_stdin_stays_open() -> None:
    """PR_SET_PDEATHSIG: a parent killed with -9 takes the child along."""
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from agent.attribution import ExecCache, ExecWatcher
        watcher = ExecWatcher(ExecCache(), scan_on_start=False)
        watcher.start()
        # keep the child's stdin open beyond this process, so only the death signal is left
        keeper = subprocess.Popen(
            ["sleep", "120"], pass_fds=[watcher._proc.stdin.fileno()], start_new_session=True
        )
        print(watcher.stats().child_pid, keeper.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    keeper_pid = 0
    try:
        assert parent.stdout is not None
        child_pid, keeper_pid = (int(word) for word in parent.stdout.readline().split())
        assert not _gone(child_pid)
        parent.kill()
        parent.wait()
        _wait_until(lambda: _gone(child_pid), "the orphaned child is gone")
        assert not _gone(keeper_pid)  # its stdin was still open: the death signal did it
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if keeper_pid:
            os.kill(keeper_pid, signal.SIGKILL)


# --- start failures and bad lines -----------------------------------------------------------


@pytest.mark.usefixtures("no_thread_leak")
def test_an_interpreter_that_cannot_run_fails_start(tmp_path: Path) -> None:
    """A missing interpreter, or one that exits at once, makes start() raise and clean up."""
    with pytest.raises(WeightwardenError, match="cannot start the exec watcher"):
        ExecWatcher(ExecCache(), python=str(tmp_path / "no-python")).start()
    watcher = ExecWatcher(ExecCache(), python=_wrapper(tmp_path, "exit 3"))
    with pytest.raises(WeightwardenError, match="exited with status 3"):
        watcher.start()
    assert not watcher.alive


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_a_refused_subscription_fails_start_with_the_childs_reason(tmp_path: Path) -> None:
    """A child in another network namespace cannot subscribe; start() says why."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    python = _wrapper(tmp_path, f'exec {unshare} --net "{sys.executable}" "$@"')
    watcher = ExecWatcher(ExecCache(), python=python, scan_on_start=False)
    with pytest.raises(WeightwardenError, match="status 70: proc connector subscription failed"):
        watcher.start()


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_a_child_on_another_monotonic_clock_is_refused(tmp_path: Path) -> None:
    """A child in a time namespace with its clock moved by 1000 s fails the clock check."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(
        [unshare, "--time", "--monotonic", "1000", "true"], check=False, capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"no time namespaces here: {probe.stderr.decode().strip()}")
    python = _wrapper(tmp_path, f'exec {unshare} --time --monotonic 1000 "{sys.executable}" "$@"')
    watcher = ExecWatcher(ExecCache(), python=python, scan_on_start=False)
    with pytest.raises(WeightwardenError, match="another time namespace"):
        watcher.start()


@pytest.mark.usefixtures("as_root", "connector_available", "no_thread_leak")
def test_bad_and_oversized_lines_are_counted_and_skipped(
    tmp_path: Path, watchers: list[ExecWatcher]
) -> None:
    """Garbage and a line over the bound before the real child's output: counted, not fatal."""
    body = (
        'printf \'not json\\n{"v":1,"kind":"exit","pid":-1,"at":0}\\n\'\n'
        "head -c 300000 /dev/zero | tr '\\0' x; printf '\\n'\n"
        f'exec "{sys.executable}" "$@"'
    )
    cache = ExecCache(grace_s=600)
    watcher = ExecWatcher(
        cache, python=_wrapper(tmp_path, body), scan_on_start=False, max_line_bytes=100_000
    )
    watchers.append(watcher)
    watcher.start()
    stats = watcher.stats()
    assert stats.decode_errors == 2
    assert stats.oversized_lines == 1
    assert "exit.pid: expected an integer" in (stats.last_decode_error or "")
    child = subprocess.Popen(["true"])
    child.wait()
    assert watcher.wait_for_exit(child.pid, timeout_s=20)  # the real lines still flow
    assert watcher.alive


def _stub(pid: int, ticks: int) -> CachedProcess:
    return CachedProcess(
        info=ProcessInfo(pid=pid, uid=0),
        start_ticks=ticks,
        started_at=ticks / 100,
        seen_at=ticks / 100,
        source=SnapshotSource.FORK,
    )


def _exec_snapshot(pid: int, ticks: int) -> CachedProcess:
    return CachedProcess(
        info=ProcessInfo(pid=pid, uid=NOBODY, exe="/usr/bin/cat", start_time=ticks),
        start_ticks=ticks,
        started_at=ticks / 100,
        seen_at=ticks / 100,
        source=SnapshotSource.EXEC,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipes:
    """The pipe to the "parent" and the main thread's wake-up pipe, all non-blocking."""

    read: int
    write: int
    wake_r: int
    wake_w: int


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    """Fresh pipes for a `_LineSink`, closed afterwards."""
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    yield Pipes(read=read_fd, write=write_fd, wake_r=wake_r, wake_w=wake_w)
    for fd in (read_fd, write_fd, wake_r, wake_w):
        with contextlib.suppress(OSError):
            os.close(fd)


def _sink(pipes: Pipes, *, backlog_limit: int = 1 << 20) -> _LineSink:
    return _LineSink(pipes.write, wake_fd=pipes.wake_w, backlog_limit=backlog_limit)


def _read_available(read_fd: int) -> bytes:
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_fd, 1 << 16):
            data += chunk
    return data


def _read_all(read_fd: int) -> list[bytes]:
    return _read_available(read_fd).splitlines()


def test_a_burst_of_fork_stubs_waits_for_the_exec_then_all_go_out_in_order(
    pipes: Pipes,
) -> None:
    """Provisional messages stay queued after their burst; the next real one flushes all."""
    sink = _sink(pipes)
    sink.send(SnapshotMessage(entry=_stub(9, 500)))
    sink.send(UpdateMessage(pid=9, info=ProcessInfo(pid=9, uid=NOBODY)))
    sink.after_burst()
    assert _read_all(pipes.read) == []
    sink.send(ExitMessage(pid=9, at=6.0))
    sink.after_burst()
    kinds = [type(decode_message(line)).__name__ for line in _read_all(pipes.read)]
    assert kinds == ["SnapshotMessage", "UpdateMessage", "ExitMessage"]
    assert sink.stats().coalesced == 0


def test_a_stub_replaced_by_its_exec_snapshot_is_not_sent(pipes: Pipes) -> None:
    """Stub, uid change and exec snapshot of one process go out as the snapshot alone."""
    sink = _sink(pipes)
    sink.send(SnapshotMessage(entry=_stub(9, 500)))
    sink.send(SnapshotMessage(entry=_stub(10, 500)))  # another process: kept
    sink.send(UpdateMessage(pid=9, info=ProcessInfo(pid=9, uid=NOBODY)))
    sink.send(SnapshotMessage(entry=_exec_snapshot(9, 501)))
    sink.send(SnapshotMessage(entry=_stub(11, 500)))
    sink.send(ExitMessage(pid=11, at=6.0))  # exited before its exec: both kept
    sink.send(SnapshotMessage(entry=_exec_snapshot(11, 500)))
    sink.after_burst()
    sent = [decode_message(line) for line in _read_all(pipes.read)]
    assert [
        (type(m).__name__, m.entry.info.pid if isinstance(m, SnapshotMessage) else None)
        for m in sent
    ] == [
        ("SnapshotMessage", 10),
        ("SnapshotMessage", 9),
        ("SnapshotMessage", 11),
        ("ExitMessage", None),
        ("SnapshotMessage", 11),
    ]
    assert sink.stats().coalesced == 2

    # the parent's cache ends the same either way
    replayed, direct = ExecCache(grace_s=600), ExecCache(grace_s=600)
    replayed.put(_stub(9, 500))
    replayed.update(9, lambda info: replace(info, uid=NOBODY))
    replayed.put(_exec_snapshot(9, 501))
    direct.put(_exec_snapshot(9, 501))
    assert replayed.latest(9) == direct.latest(9)
    assert len(replayed) == len(direct) == 1


def test_a_slow_reader_fills_the_backlog_not_the_listener(pipes: Pipes) -> None:
    """A full pipe leaves the rest in the backlog; drain() sends it on, in order."""
    fcntl.fcntl(pipes.write, fcntl.F_SETPIPE_SZ, 4096)
    sink = _sink(pipes)
    for pid in range(300):
        sink.send(ExitMessage(pid=pid, at=float(pid)))
    sink.flush()  # returns although the pipe holds only part of it
    assert sink.backlog_bytes > 0
    assert os.read(pipes.wake_r, 16).startswith(b"!")  # the main thread: write the rest
    data = b""
    while sink.backlog_bytes:
        data += _read_available(pipes.read)
        sink.drain()
    data += _read_available(pipes.read)
    assert [decode_message(line) for line in data.splitlines()] == [
        ExitMessage(pid=pid, at=float(pid)) for pid in range(300)
    ]
    stats = sink.stats()
    assert (stats.lines, stats.stalls, stats.backlog_bytes) == (300, 0, 0)
    assert stats.backlog_peak_bytes > 0


def test_a_backlog_at_its_bound_makes_the_listener_wait(pipes: Pipes) -> None:
    """Past backlog_limit, flush() waits until the parent has read enough; it counts that."""
    fcntl.fcntl(pipes.write, fcntl.F_SETPIPE_SZ, 4096)
    sink = _sink(pipes, backlog_limit=8192)
    received: list[bytes] = []
    os.set_blocking(pipes.read, True)

    def parent() -> None:
        # A slow parent: start reading only once the pipe and the backlog are surely full,
        # so the listener must wait (however fast this machine schedules threads).
        time.sleep(0.5)
        data = b""
        while chunk := os.read(pipes.read, 4096):
            data += chunk
        received.extend(data.splitlines())

    reader = threading.Thread(target=parent)
    reader.start()
    for pid in range(400):  # ~300-byte lines: far more than the pipe and the bound hold
        sink.send(SnapshotMessage(entry=_exec_snapshot(pid, 500)))
    sink.flush()
    assert sink.backlog_bytes < 8192
    while sink.backlog_bytes:
        select.select([], [pipes.write], [])
        sink.drain()
    os.close(pipes.write)
    reader.join()
    assert [decode_message(line) for line in received] == [
        SnapshotMessage(entry=_exec_snapshot(pid, 500)) for pid in range(400)
    ]
    assert sink.stats().stalls >= 1


def test_a_broken_pipe_is_recorded_and_wakes_the_main_thread(
    pipes: Pipes,
) -> None:
    """Writing after the parent closed its end marks the sink broken instead of raising."""
    os.close(pipes.read)
    sink = _sink(pipes)
    sink.send(ExitMessage(pid=9, at=2.0))
    sink.flush()
    assert sink.broken is not None
    assert "Broken pipe" in sink.broken
    assert os.read(pipes.wake_r, 16) == b"!"
    sink.send(ExitMessage(pid=10, at=3.0))  # dropped quietly: nobody is reading
    sink.flush()
    assert sink.backlog_bytes == 0
