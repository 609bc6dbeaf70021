from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from agent.attribution import (
    AttributionQuality,
    Attributor,
    ExecCache,
    ProcConnector,
    ProcEventKind,
    parse_proc_events,
    probe_proc_connector,
)
from weightwarden.errors import WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

NOBODY = 65534

# Datagrams captured from Linux 6.18 while root ran `true` as uid 65534 (pid 24561).
ACK = bytes.fromhex(
    "4c000000030000001a6800000000000001000000010000001a68000008000000280000000000000001000000"
    "dc38e74abc000000000000000000000000000000000000000000000000000000"
)
FORK = bytes.fromhex(
    "4c000000030000001b6800000000000001000000010000001b68000000000000280000000100000001000000"
    "dff3f24abc000000f05f0000f05f0000f15f0000f15f00000000000000000000"
)
UID = bytes.fromhex(
    "4c00000003000000545e0000000000000100000001000000545e000000000000280000000400000000000000"
    "a11cf54abc000000f15f0000f15f0000feff0000feff00000000000000000000"
)
EXEC = bytes.fromhex(
    "4c00000003000000555e0000000000000100000001000000555e00000000000028000000020000000000000"
    "097bc034bbc000000f15f0000f15f000000000000000000000000000000000000"
)
EXIT = bytes.fromhex(
    "4c00000003000000565e0000000000000100000001000000565e000000000000280000000000008000000000"
    "165f0b4bbc000000f15f0000f15f00000000000011000000f05f0000f05f0000"
)


@pytest.fixture
def connector_available() -> None:
    """Skip unless this process may subscribe to the proc connector."""
    probe = probe_proc_connector()
    if not probe.available:
        pytest.skip(f"proc connector unavailable: {probe.reason}")


def _listener_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "proc-connector"]


def _wait_until_exited(cache: ExecCache, pid: int) -> None:
    """Wait until the listener has recorded the exit of ``pid`` (it handles events in order)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entry = cache.latest(pid)
        if entry is not None and entry.exited_at is not None:
            return
        time.sleep(0.01)
    pytest.fail(f"the listener never recorded the exit of pid {pid}")


# --- pure decoding --------------------------------------------------------------------------


def test_real_fork_uid_exec_exit_datagrams_decode() -> None:
    """Captured kernel datagrams decode into pids, parents, uids and exit codes."""
    fork, uid, exec_, exit_ = (parse_proc_events(d)[0] for d in (FORK, UID, EXEC, EXIT))
    assert (fork.kind, fork.pid, fork.tgid, fork.parent_tgid) == (
        ProcEventKind.FORK,
        24561,
        24561,
        24560,
    )
    assert (uid.kind, uid.tgid, uid.ruid, uid.euid) == (ProcEventKind.UID, 24561, 65534, 65534)
    assert (exec_.kind, exec_.pid, exec_.tgid) == (ProcEventKind.EXEC, 24561, 24561)
    assert (exit_.kind, exit_.pid, exit_.exit_code, exit_.parent_tgid) == (
        ProcEventKind.EXIT,
        24561,
        0,
        24560,
    )
    assert fork.timestamp_ns < uid.timestamp_ns < exec_.timestamp_ns < exit_.timestamp_ns


def test_ack_carries_the_requesters_ack_plus_one_and_errno() -> None:
    """A subscription ack has kind NONE, ack = request ack + 1 and err = 0 on success."""
    (ack,) = parse_proc_events(ACK)
    assert (ack.kind, ack.ack, ack.err) == (ProcEventKind.NONE, 8, 0)


def test_several_messages_in_one_datagram_all_decode() -> None:
    """Netlink may pack messages back to back; each is decoded in order."""
    kinds = [event.kind for event in parse_proc_events(FORK + EXEC + EXIT)]
    assert kinds == [ProcEventKind.FORK, ProcEventKind.EXEC, ProcEventKind.EXIT]


@pytest.mark.parametrize("cut", [0, 10, 20, 40, 75])
def test_truncated_datagram_yields_only_whole_messages(cut: int) -> None:
    """A datagram cut short never raises; the cut message is dropped."""
    assert parse_proc_events(FORK + EXEC[:cut]) == parse_proc_events(FORK)


def test_messages_for_other_connector_users_are_skipped() -> None:
    """A connector message with another idx is not a process event."""
    other = bytearray(EXEC)
    other[16] = 7  # cn_msg.idx
    assert parse_proc_events(bytes(other)) == []


# --- the socket -------------------------------------------------------------------------------


@pytest.mark.usefixtures("as_root")
def test_probe_as_root_subscribes() -> None:
    """Root with CAP_NET_ADMIN in the initial namespaces can subscribe."""
    probe = probe_proc_connector()
    if not probe.available and "namespace" in probe.reason:
        pytest.skip(f"not in the initial namespaces: {probe.reason}")
    assert probe.available, probe.reason


def _kernel_at_least(major: int, minor: int) -> bool:
    numbers = [int(part) for part in os.uname().release.split("-")[0].split(".")[:2]]
    return (numbers[0], numbers[1]) >= (major, minor)


@pytest.mark.usefixtures("as_root")
def test_probe_without_cap_net_admin_reports_the_kernels_answer() -> None:
    """Without CAP_NET_ADMIN: refused naming the capability before 6.6, allowed since."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    script = (
        "from agent.attribution import probe_proc_connector as p; r = p(); "
        "print(r.available); print(r.reason)"
    )
    result = subprocess.run(
        [
            setpriv,
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    available, reason = result.stdout.splitlines()
    if _kernel_at_least(6, 6):
        assert available == "True", reason  # cn_proc lets any user listen since 6.6
    else:
        assert available == "False"
        assert "CAP_NET_ADMIN" in reason


# --- the listener -----------------------------------------------------------------------------


@pytest.mark.usefixtures("as_root", "connector_available")
def test_short_lived_cats_as_nobody_are_attributed_after_they_exit(world_dir: Path) -> None:
    """200 `cat`s run by uid 65534 and reaped at once are attributed from the exec cache."""
    target = world_dir / "weights.bin"
    target.write_bytes(b"w" * 4096)
    target.chmod(0o644)
    cat = os.path.realpath(shutil.which("cat") or "/bin/cat")
    cache = ExecCache(grace_s=600)
    connector = ProcConnector(cache)
    gc.collect()
    gc.freeze()  # a large test-process heap would stall the in-process listener on collection
    connector.start()
    try:
        with tempfile.TemporaryFile("w+") as pids_out:
            shell = subprocess.run(
                [
                    "sh",
                    "-c",
                    'for i in $(seq 200); do cat "$1" >/dev/null & echo $!; wait; done',
                    "sh",
                    str(target),
                ],
                user=NOBODY,
                group=NOBODY,
                stdout=pids_out,
                check=True,
                timeout=120,
            )
            pids_out.seek(0)
            pids = [int(line) for line in pids_out.read().split()]
        _wait_until_exited(cache, pids[-1])
        stats = connector.stats()
    finally:
        connector.stop()
        gc.unfreeze()

    assert shell.returncode == 0
    assert len(pids) == 200
    attributor = Attributor(cache=cache)
    now = time.monotonic()
    results = [attributor.attribute(pid, now) for pid in pids]
    qualities = Counter(result.quality for result in results)
    correct = sum(
        1
        for result in results
        if result.quality is AttributionQuality.FROM_CACHE
        and result.process is not None
        and result.process.uid == NOBODY
        and result.process.user == "nobody"
        and result.process.exe == cat
    )
    with_argv = sum(
        1
        for result in results
        if result.process is not None and result.process.cmdline == ("cat", str(target))
    )
    sys.stderr.write(
        f"exec cache attributed {correct}/{len(pids)} exited cats to nobody and {cat} "
        f"({with_argv} with their argv; {dict(qualities)}); listener {stats}\n"
    )
    # The issue's >= 99 % is measured by benchmarks/agent_overhead.py on a quiet machine. On
    # a 2-core runner busy with other work, a cat can finish before the listener reads it
    # (CI saw 191/200 under load): the floor here is loose, but every miss must be counted.
    assert correct / len(pids) >= 0.9, (qualities, stats)
    assert len(pids) - correct <= stats.snapshots_vanished + stats.snapshots_lost, stats
    # A lost snapshot is counted and still says who (uid from the fork), never guessed.
    for result in results:
        if result.quality is not AttributionQuality.FROM_CACHE:
            assert result.quality in (AttributionQuality.PARTIAL, AttributionQuality.UNKNOWN)
            assert result.process is None or result.process.exe is None  # not sh's exe
            if result.quality is AttributionQuality.PARTIAL:
                assert result.process is not None
                assert result.process.uid == NOBODY


@pytest.mark.usefixtures("as_root", "connector_available")
def test_exec_snapshot_records_uid_change_parent_and_exit(world_dir: Path) -> None:
    """A child that became nobody before exec is cached with its parent and exit time."""
    cache = ExecCache(grace_s=600)
    with ProcConnector(cache) as connector:
        subprocess.run(["true"], user=NOBODY, group=NOBODY, check=True)  # fork, uid, exec
        marker = subprocess.Popen(["sleep", "0"], cwd=world_dir)
        marker.wait()
        _wait_until_exited(cache, marker.pid)
        stats = connector.stats()
    assert stats.execs >= 2
    assert stats.forks >= 2
    assert stats.exits >= 2
    assert stats.uid_changes >= 1
    assert stats.failure is None
    entry = cache.latest(marker.pid)
    assert entry is not None
    assert entry.info.exe == os.path.realpath(shutil.which("sleep") or "sleep")
    assert entry.info.ppid == os.getpid()
    assert entry.info.parents[0].pid == os.getpid()
    assert entry.exited_at is not None


@pytest.mark.usefixtures("as_root", "connector_available")
def test_start_scans_running_processes_into_the_cache(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """Processes that started before the listener are cached, so their exit is attributable."""
    child = subprocess.Popen(["sleep", "60"])
    spawn.append(child)
    wait_exec(child.pid, "sleep")
    cache = ExecCache(grace_s=600)
    with ProcConnector(cache):
        entry = cache.latest(child.pid)
        assert entry is not None
        assert entry.info.uid == os.getuid()
        child.kill()
        child.wait()
        _wait_until_exited(cache, child.pid)
    attribution = Attributor(cache=cache).attribute(child.pid, time.monotonic())
    assert attribution.quality is AttributionQuality.FROM_CACHE
    assert attribution.process is not None
    assert attribution.process.cmdline == ("sleep", "60")


@pytest.mark.usefixtures("as_root", "connector_available")
def test_stop_is_prompt_idempotent_and_leaves_no_thread() -> None:
    """stop() wakes the blocked listener, joins it and closes; a second stop is harmless."""
    assert _listener_threads() == []
    connector = ProcConnector(ExecCache(), scan_on_start=False)
    connector.start()
    assert connector.stats().running
    connector.stop(timeout_s=5)
    assert _listener_threads() == []
    assert not connector.stats().running
    connector.stop()
    connector.start()
    with pytest.raises(WeightwardenError, match="already running"):
        connector.start()
    connector.stop()
    assert _listener_threads() == []


@pytest.mark.usefixtures("as_root", "connector_available")
def test_realtime_priority_applies_to_the_listener_thread_only() -> None:
    """The listener thread gets SCHED_FIFO (or says what it got); the caller's is unchanged."""
    policy_before = os.sched_getscheduler(0)
    connector = ProcConnector(ExecCache(), scan_on_start=False)
    connector.start()
    try:
        (thread,) = _listener_threads()
        deadline = time.monotonic() + 10
        while connector.stats().priority == "not started" and time.monotonic() < deadline:
            time.sleep(0.01)
        priority = connector.stats().priority
        assert thread.native_id is not None
        if priority == "SCHED_FIFO 1":
            assert os.sched_getscheduler(thread.native_id) == os.SCHED_FIFO
        else:
            assert priority in ("nice -20", "normal")
        assert os.sched_getscheduler(0) == policy_before
    finally:
        connector.stop()


@pytest.mark.usefixtures("as_root", "connector_available")
def test_a_failing_event_is_counted_and_the_listener_goes_on() -> None:
    """An exception while handling one message is counted; later messages are handled."""

    def user_name(uid: int) -> str | None:
        if uid == NOBODY:
            raise RuntimeError("NSS lookup failed")
        return "root" if uid == 0 else None

    cache = ExecCache(grace_s=600)
    with ProcConnector(cache, user_name=user_name, scan_on_start=False) as connector:
        subprocess.run(["true"], user=NOBODY, group=NOBODY, check=True)
        after = subprocess.Popen(["sleep", "0.2"])  # lives long enough to be read
        after.wait()
        _wait_until_exited(cache, after.pid)
        stats = connector.stats()
    assert stats.handler_errors >= 1
    assert stats.failure is None
    entry = cache.latest(after.pid)
    assert entry is not None
    assert entry.info.user == "root"


@pytest.mark.usefixtures("as_root", "connector_available")
def test_socket_overrun_is_counted_and_triggers_a_rescan(
    spawn: list[subprocess.Popen[bytes]],
) -> None:
    """A listener too slow for a burst counts the kernel's ENOBUFS and rescans /proc."""
    release = threading.Event()

    def slow_user_name(uid: int) -> str | None:
        release.wait(30)  # a stalled NSS server
        return str(uid)

    cache = ExecCache(grace_s=600)
    connector = ProcConnector(
        cache, user_name=slow_user_name, scan_on_start=False, receive_buffer=4096
    )
    connector.start()
    try:
        subprocess.run(
            ["sh", "-c", "for i in $(seq 300); do /bin/true; done"], check=True, timeout=120
        )
        release.set()
        survivor = subprocess.Popen(["sleep", "60"])
        spawn.append(survivor)
        deadline = time.monotonic() + 20
        while connector.stats().resyncs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = connector.stats()
    finally:
        release.set()
        connector.stop()
    assert stats.overruns >= 1
    assert stats.resyncs >= 1


@pytest.mark.usefixtures("as_root", "connector_available")
def test_after_burst_runs_on_the_listener_thread_once_events_are_handled() -> None:
    """The after_burst hook is called by the listener thread after it handled events."""
    calls: list[str] = []
    cache = ExecCache(grace_s=600)
    connector = ProcConnector(
        cache,
        scan_on_start=False,
        after_burst=lambda: calls.append(threading.current_thread().name),
    )
    with connector:
        child = subprocess.Popen(["true"])
        child.wait()
        _wait_until_exited(cache, child.pid)
        deadline = time.monotonic() + 20
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
    assert calls
    assert set(calls) == {"proc-connector"}
