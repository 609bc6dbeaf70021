"""Run the proc connector listener in a child process and feed the daemon's exec cache.

Why a process: the listener snapshots ``/proc/PID`` the moment a process execs, racing
the process's exit (a ``cat`` lives well under a millisecond). In a process with busy
Python threads it waits for the GIL for up to the switch interval (5 ms) and loses the
race: one busy thread beside it cut attribution of 200 ``cat`` runs from 100 % to 10 %.
The daemon has busy threads (event pipeline, spool writes), so `ExecWatcher` starts a
child interpreter that does nothing but listen; its GIL is free for the listener.

The child (`run_child`, started as ``python -P -c "from agent.attribution._watcher import
run_child; ..."``) runs a `ProcConnector` whose cache relays every ``put``,
``mark_exited`` and ``update`` to its stdout as one JSON line (`agent.attribution._codec`).
Lines are encoded and written when the listener has drained the socket (a burst), or
every 256 messages during a long one. A burst of only fork stubs and uid changes is held
back until the exec that usually follows has been snapshotted, so encoding them does not
delay that snapshot, and a stub that the exec snapshot replaces is not sent at all (this
halves the lines per short-lived process and so the daemon's decoding work). Writes
never block the listener while the daemon is merely slow: what the pipe cannot take
waits in a bounded backlog that the child's main thread writes out (see `_LineSink`).
Its stdout is a private duplicate of fd 1 (fd 1 itself points at stderr, so nothing
printed by accident can corrupt the protocol); logs go to stderr as JSON lines, and a
``stats`` line reports the listener's and the relay's counters every
``stats_interval_s``.

The child also keeps Python's cyclic garbage collector off the listener's path.
Automatic collections strike mid-snapshot, whenever allocations cross a threshold: during
a stream of ``cat`` runs they came every few milliseconds and paused the listener for
0.1 ms (young) to 1.9 ms (older generations) here. Instead, everything alive after
start-up is frozen (``gc.freeze``) and once a second the main thread collects only what
was allocated since, then freezes the survivors, so no collection walks the cache again
(see `_YoungCollector`).

It exits when its stdin reaches end of file (the parent closed it, or died), on SIGTERM,
or when its stdout is broken; the kernel kills it when the parent dies
(``PR_SET_PDEATHSIG``, SIGKILL), and it exits at once if the parent died before that was
set. It ignores SIGINT: a Ctrl-C on the daemon's terminal is the daemon's to handle. Exit
status: 0 when asked to stop, 70 when it cannot do its job (subscription refused,
listener died; a ``failed`` line says why first), 2 for bad arguments.

The parent (`ExecWatcher`) spawns the child, and one reader thread (blocked in
``read()`` nearly all the time, so it costs the daemon little) decodes the lines and
applies them to the daemon's `ExecCache` in order. Lines longer than ``max_line_bytes``
are skipped and counted, as are lines that do not decode; each line is handled inside
an error boundary. If the child exits without being asked to, `ExecWatcher.failure`
says why and `ExecWatcher.alive` turns false: the daemon should exit non-zero so
systemd restarts it (DESIGN.md decision 10).

Clocks: the kernel stamps proc connector events with CLOCK_MONOTONIC, and the cache's
times are ``time.monotonic()`` (the same clock). CLOCK_MONOTONIC is system-wide, not
per process, so the child's times are valid in the parent as they are. The one way to
break this is a time namespace (Linux 5.6+, ``unshare --time``), which offsets a
process's view of the clock; the child is the parent's child and shares its namespace,
and `ExecWatcher.start` verifies it: the ``ready`` line carries the child's clock
reading, which must fall between the parent's readings before the spawn and after the
line arrived, or the start fails. (Event timestamps are the initial namespace's clock:
a daemon run inside a time namespace has skewed times whether or not the listener runs
in a child.)

Caveats:

- ``PR_SET_PDEATHSIG`` fires when the *thread* that spawned the child ends, not only the
  process. Call `ExecWatcher.start` from a thread that lives as long as the watcher (the
  daemon's main thread); otherwise the child is killed and ``failure`` set, loudly.
- Under systemd, stopping the unit sends SIGTERM to every process in its cgroup, the
  child included, so ``failure`` may be set while the daemon is stopping anyway. Prefer
  ``KillMode=mixed``, which lets the daemon stop the child itself through
  `ExecWatcher.stop`.
- Entries reach the daemon's cache a little after the child took them. An event for a
  process that has already gone should be attributed after `ExecWatcher.wait_for_exit`
  returned (or timed out): then the exec snapshot is in the cache if the child got one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import gc
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from agent.attribution._codec import (
    ExitMessage,
    FailedMessage,
    ReadyMessage,
    RelayStats,
    SnapshotMessage,
    StatsMessage,
    UpdateMessage,
    WatcherMessage,
    decode_message,
    encode_message,
)
from agent.attribution._exec_cache import (
    SAME_START_TICKS,
    CachedProcess,
    ExecCache,
    SnapshotSource,
)
from agent.attribution._proc_connector import ConnectorStats, ListenerPriority, ProcConnector
from agent.attribution._procfs import DEFAULT_MAX_DEPTH, PROC
from weightwarden.errors import WeightwardenError
from weightwarden.log import configure_logging, get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.attribution._process_info import ProcessInfo

__all__ = ["ExecWatcher", "RelayStats", "WatcherStats", "run_child"]

EXIT_STOPPED = 0
EXIT_FAILED = 70
_CHILD_CODE = "from agent.attribution._watcher import run_child; raise SystemExit(run_child())"
_CHILD_NAME = b"ww-exec-watcher"  # comm is at most 15 bytes
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_FLUSH_EVERY = 256  # messages buffered at most before a write, during a long burst
_WRITE_CHUNK = 1 << 16  # bytes per write, so the lock is never held long
_DEFAULT_BACKLOG = 32 << 20
_READ_CHUNK = 1 << 16
_DEFAULT_MAX_LINE = 16 << 20
_DEFAULT_PIPE_BYTES = 1 << 20
_DEFAULT_RCVBUF = 16 << 20
_TICK_S = 1.0  # how often the child's main thread checks the listener's health
_FULL_COLLECTION_S = 3600.0
_REAP_TIMEOUT_S = 5.0
_LOG_INTERVAL_S = 10.0

_log = get_logger("agent.attribution.exec_watcher")


# --- the child ------------------------------------------------------------------------------


class _LineSink:
    """Collect the listener's messages and write them to the parent as JSON lines.

    Messages are kept as values and encoded by `after_burst` / `flush` (or when
    `_FLUSH_EVERY` are waiting), so the listener handles the next event before it spends
    time on JSON. Writes never block the listener while the parent is merely slow: the
    pipe is non-blocking, and what it cannot take waits in a backlog that the main thread
    writes out as the parent reads (`drain`, on ``POLLOUT``). The backlog is bounded: at
    ``backlog_limit`` bytes the listener waits for the parent (counted in ``stalls``); the
    kernel's socket buffer then absorbs events, and if that overflows the listener counts
    an overrun and rescans ``/proc``. A broken pipe (the parent is gone) is recorded in
    ``broken`` and the main thread is woken through ``wake_fd``.
    """

    def __init__(self, fd: int, *, wake_fd: int, backlog_limit: int) -> None:
        self._fd = fd
        self._wake_fd = wake_fd
        self._backlog_limit = backlog_limit
        self._lock = threading.Lock()
        self._pending: list[WatcherMessage] = []
        self._backlog: deque[memoryview] = deque()
        self._backlog_bytes = 0
        self.broken: str | None = None
        self._counts = dict.fromkeys(
            ("lines", "coalesced", "backlog_peak_bytes", "stalls", "encode_errors"), 0
        )
        self._last_logged = float("-inf")
        os.set_blocking(fd, False)

    @property
    def backlog_bytes(self) -> int:
        """Bytes encoded but not yet taken by the pipe."""
        return self._backlog_bytes

    def stats(self) -> RelayStats:
        """Return the relay's counters."""
        return RelayStats(backlog_bytes=self._backlog_bytes, **self._counts)

    def send(self, message: WatcherMessage) -> None:
        """Queue a message; encode and write the queue if it is long."""
        with self._lock:
            if self.broken is not None:
                return
            self._pending.append(message)
            if len(self._pending) >= _FLUSH_EVERY:
                self._flush_locked()

    def flush(self) -> None:
        """Encode every queued message and write what the pipe takes."""
        with self._lock:
            self._flush_locked()

    def after_burst(self) -> None:
        """Flush, unless every queued message is provisional (a fork stub or a uid change).

        Those come just before an exec (``fork``, ``setuid``, ``exec``), whose snapshot
        races the new program's exit: encoding them now would delay it. They go out with
        the next burst that holds anything else (the exec snapshot, or any exit), or at the
        main thread's next tick, in order; a stub that the exec snapshot replaces is not
        sent at all (see `_coalesce`).
        """
        with self._lock:
            if not all(map(_provisional, self._pending)):
                self._flush_locked()

    def drain(self) -> None:
        """Write as much of the backlog as the pipe takes now (the main thread's job)."""
        with self._lock:
            self._write_locked()

    def _flush_locked(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self.broken is not None:
            return
        messages, coalesced = _coalesce(pending)
        self._counts["coalesced"] += coalesced
        lines: list[bytes] = []
        for message in messages:
            try:
                lines.append(encode_message(message))
            except WeightwardenError as exc:
                self._counts["encode_errors"] += 1
                now = time.monotonic()
                if now - self._last_logged >= _LOG_INTERVAL_S:
                    self._last_logged = now
                    _log.error(
                        "watcher message not encoded",
                        error=str(exc),
                        encode_errors=self._counts["encode_errors"],
                    )
        self._counts["lines"] += len(lines)
        data = memoryview(b"".join(lines))
        if data:
            self._backlog.append(data)
            self._backlog_bytes += len(data)
        self._write_locked()
        self._counts["backlog_peak_bytes"] = max(
            self._counts["backlog_peak_bytes"], self._backlog_bytes
        )
        if self._backlog_bytes >= self._backlog_limit and self.broken is None:
            self._counts["stalls"] += 1
            self._wait_below_limit()
        if self._backlog:
            self._wake()  # the main thread writes the rest as the parent reads

    def _write_locked(self) -> None:
        """Write backlog chunks until the pipe is full or the backlog empty."""
        while self._backlog and self.broken is None:
            chunk = self._backlog[0]
            try:
                written = os.write(self._fd, chunk[:_WRITE_CHUNK])
            except BlockingIOError:
                return
            except OSError as exc:
                self.broken = f"cannot write to the parent: {exc.strerror}"
                self._backlog.clear()
                self._backlog_bytes = 0
                self._wake()
                return
            self._backlog_bytes -= written
            if written == len(chunk):
                self._backlog.popleft()
            else:
                self._backlog[0] = chunk[written:]

    def _wait_below_limit(self) -> None:
        """Block until the parent has read the backlog below its bound."""
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        while self._backlog_bytes >= self._backlog_limit and self.broken is None:
            poller.poll()
            self._write_locked()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a wake byte is already pending
            os.write(self._wake_fd, b"!")


def _provisional(message: WatcherMessage) -> bool:
    return isinstance(message, UpdateMessage) or (
        isinstance(message, SnapshotMessage) and message.entry.source is SnapshotSource.FORK
    )


def _coalesce(messages: list[WatcherMessage]) -> tuple[list[WatcherMessage], int]:
    """Leave out fork stubs (and uid changes to them) that an exec snapshot replaces.

    A fork stub, the uid changes after it and an exec snapshot of the same process (start
    times within a tick) with no exit between them leave the parent's cache exactly as
    the exec snapshot alone does: ``put`` replaces the stub. Everything else is kept, in
    order.

    Returns:
        The messages to send and how many were left out.
    """
    drop: set[int] = set()
    open_stubs: dict[int, tuple[int, int, list[int]]] = {}  # pid -> (index, ticks, updates)
    for index, message in enumerate(messages):
        match message:
            case SnapshotMessage(entry=entry) if entry.source is SnapshotSource.FORK:
                open_stubs[entry.info.pid] = (index, entry.start_ticks, [])
            case UpdateMessage(pid=pid) if pid in open_stubs:
                open_stubs[pid][2].append(index)
            case SnapshotMessage(entry=entry):
                stub = open_stubs.pop(entry.info.pid, None)
                if (
                    stub is not None
                    and entry.source is SnapshotSource.EXEC
                    and abs(stub[1] - entry.start_ticks) <= SAME_START_TICKS
                ):
                    drop.update((stub[0], *stub[2]))
            case ExitMessage(pid=pid):
                open_stubs.pop(pid, None)
    if not drop:
        return messages, 0
    return [m for index, m in enumerate(messages) if index not in drop], len(drop)


class _RelayCache(ExecCache):
    """An `ExecCache` that also sends every change to a `_LineSink`.

    The listener reads this cache (fork stubs, parent chains), so it stays a full cache;
    the parent replays the same operations in the same order on its own.
    """

    def __init__(self, sink: _LineSink, *, max_entries: int, grace_s: float) -> None:
        super().__init__(max_entries=max_entries, grace_s=grace_s)
        self._sink = sink

    def put(self, entry: CachedProcess) -> None:
        """Insert the entry, then relay it."""
        super().put(entry)
        self._sink.send(SnapshotMessage(entry=entry))

    def mark_exited(self, pid: int, at: float) -> CachedProcess | None:
        """Record the exit, then relay it (even unmatched: the parent may hold the entry)."""
        entry = super().mark_exited(pid, at)
        self._sink.send(ExitMessage(pid=pid, at=at))
        return entry

    def update(self, pid: int, change: Callable[[ProcessInfo], ProcessInfo]) -> bool:
        """Apply the change, then relay the resulting snapshot."""
        changed: list[ProcessInfo] = []

        def recording(info: ProcessInfo) -> ProcessInfo:
            new = change(info)
            changed.append(new)
            return new

        found = super().update(pid, recording)
        if found:
            self._sink.send(UpdateMessage(pid=pid, info=changed[-1]))
        return found


def _prctl(option: int, arg: int | bytes) -> None:
    """Call prctl(2); raise OSError when it fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_char_p(arg) if isinstance(arg, bytes) else ctypes.c_ulong(arg)
    zero = ctypes.c_ulong(0)
    if libc.prctl(ctypes.c_int(option), value, zero, zero, zero) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _die_with_parent(parent_pid: int | None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies.

    Returns:
        Whether the parent is still the one that started us (``False``: it died before
        the request took effect, and nobody will read what we write).
    """
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError as exc:
        _log.warning("PR_SET_PDEATHSIG refused; relying on stdin closing", error=str(exc))
    return parent_pid is None or os.getppid() == parent_pid


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="exec-watcher",
        description="Relay proc connector exec snapshots to the parent as JSON lines.",
    )
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--proc-root", type=Path, default=PROC)
    parser.add_argument(
        "--priority",
        choices=[p.value for p in ListenerPriority],
        default=ListenerPriority.REALTIME.value,
    )
    parser.add_argument("--no-scan", action="store_true")
    parser.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH)
    parser.add_argument("--receive-buffer", type=int, default=_DEFAULT_RCVBUF)
    parser.add_argument("--cache-entries", type=int, default=16384)
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--stats-interval", type=float, default=5.0)
    parser.add_argument("--backlog-bytes", type=int, default=_DEFAULT_BACKLOG)
    return parser.parse_args(argv)


def run_child(argv: Sequence[str] | None = None) -> int:
    """Run the watcher child until told to stop; the process's whole job.

    Args:
        argv: the arguments (``sys.argv[1:]`` when ``None``); `ExecWatcher` builds them.

    Returns:
        The exit status: 0 when asked to stop, 70 when the listener could not run.
    """
    args = _parse_args(argv)
    gc.disable()  # collections happen at the main thread's ticks (see the module docstring)
    out_fd = os.dup(1)  # the protocol stream; not inherited by anything we might spawn
    os.dup2(2, 1)  # a stray print() lands on stderr, never inside the protocol
    configure_logging("json")
    if not _die_with_parent(args.parent_pid):
        return EXIT_STOPPED
    with contextlib.suppress(OSError):
        _prctl(_PR_SET_NAME, _CHILD_NAME)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    terminated = threading.Event()
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: terminated.set())
    sink = _LineSink(out_fd, wake_fd=wake_w, backlog_limit=args.backlog_bytes)
    cache = _RelayCache(sink, max_entries=args.cache_entries, grace_s=args.grace)
    connector = ProcConnector(
        cache,
        proc_root=args.proc_root,
        priority=ListenerPriority(args.priority),
        scan_on_start=not args.no_scan,
        max_depth=args.max_depth,
        receive_buffer=args.receive_buffer,
        after_burst=sink.after_burst,
    )
    try:
        connector.start()
    except WeightwardenError as exc:
        _log.error("exec watcher cannot listen", error=str(exc))
        sink.send(FailedMessage(reason=str(exc)))
        _flush_out(sink, out_fd)
        return EXIT_FAILED
    gc.collect()
    gc.freeze()  # start-up objects and the scanned processes are never walked again
    status = EXIT_FAILED
    try:
        sink.send(ReadyMessage(pid=os.getpid(), monotonic=time.monotonic()))
        sink.send(StatsMessage(connector=connector.stats(), relay=sink.stats()))
        sink.flush()
        status = _ChildLoop(
            connector,
            sink,
            out_fd=out_fd,
            wake_fd=wake_r,
            terminated=terminated,
            stats_interval_s=args.stats_interval,
        ).run()
    except Exception as exc:  # noqa: BLE001 (the child's error boundary: say why, exit 70)
        _log.exception("exec watcher failed")
        sink.send(FailedMessage(reason=f"the exec watcher failed: {type(exc).__name__}: {exc}"))
    finally:
        try:
            connector.stop()
        finally:
            sink.send(StatsMessage(connector=connector.stats(), relay=sink.stats()))
            _flush_out(sink, out_fd)
    return status


class _ChildLoop:
    """The child's main thread: wait for the end, and keep the relay moving meanwhile.

    It ends at stdin's end of file, SIGTERM, a broken pipe or the listener's death.
    Meanwhile it writes the backlog out as the parent reads, collects young garbage,
    reports the counters every ``stats_interval_s`` and sends what the listener held
    back. It holds the GIL only for moments, once a tick or per pipe write.
    """

    def __init__(
        self,
        connector: ProcConnector,
        sink: _LineSink,
        *,
        out_fd: int,
        wake_fd: int,
        terminated: threading.Event,
        stats_interval_s: float,
    ) -> None:
        self._connector = connector
        self._sink = sink
        self._out_fd = out_fd
        self._wake_fd = wake_fd
        self._terminated = terminated
        self._stats_interval_s = stats_interval_s
        self._poller = select.poll()
        self._poller.register(0, select.POLLIN)
        self._poller.register(wake_fd, select.POLLIN)

    def run(self) -> int:
        """Serve until told to stop; return the exit status."""
        next_stats = time.monotonic() + self._stats_interval_s
        collector = _YoungCollector()
        while True:
            if not self._wait(min(_TICK_S, max(0.0, next_stats - time.monotonic()))):
                return EXIT_STOPPED  # the parent closed our stdin, or died
            if self._terminated.is_set():
                _log.info("exec watcher stopping on SIGTERM")
                return EXIT_STOPPED
            if self._sink.broken is not None:
                _log.info("exec watcher stopping: the parent is gone", reason=self._sink.broken)
                return EXIT_STOPPED
            collector.tick()
            stats = self._connector.stats()
            if stats.failure is not None:
                reason = f"the proc connector listener died: {stats.failure}"
                self._sink.send(FailedMessage(reason=reason))
                return EXIT_FAILED
            if time.monotonic() >= next_stats:
                self._sink.send(StatsMessage(connector=stats, relay=self._sink.stats()))
                next_stats = time.monotonic() + self._stats_interval_s
            self._sink.flush()  # what after_burst held back, and the stats

    def _wait(self, timeout_s: float) -> bool:
        """Wait for input, a wake-up or room in the pipe; ``False`` at stdin's end."""
        if self._sink.backlog_bytes:
            self._poller.register(self._out_fd, select.POLLOUT)
        else:
            with contextlib.suppress(KeyError):
                self._poller.unregister(self._out_fd)
        for fd, flags in self._poller.poll(timeout_s * 1000):
            if fd == self._wake_fd:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_fd, 4096)
            elif fd == self._out_fd:
                self._sink.drain()
            elif flags & (select.POLLNVAL | select.POLLERR) or not _read_stdin():
                return False
        return True


class _YoungCollector:
    """Collect only the objects allocated since the last tick, then freeze the survivors.

    The cost of a collection is proportional to the live objects it walks: walking only a
    second's worth of new ones keeps each pause short (0.3 ms after 200 ``cat`` runs in a
    second, measured here), where the default collector would also walk the whole cache
    in its full collections. Frozen objects are still freed by reference counting; only
    a reference cycle that became garbage after its objects were frozen waits for the
    hourly full collection.
    """

    def __init__(self) -> None:
        self._last_tick = self._last_full = time.monotonic()

    def tick(self) -> None:
        """Run a young collection once per `_TICK_S`, a full one once per hour."""
        now = time.monotonic()
        if now - self._last_tick < _TICK_S * 0.9:  # the poll may wake a little early
            return
        self._last_tick = now
        if now - self._last_full >= _FULL_COLLECTION_S:
            self._last_full = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(0)
        gc.freeze()


def _flush_out(sink: _LineSink, out_fd: int) -> None:
    """Send everything still queued before exiting, waiting for the parent to read it."""
    sink.flush()
    poller = select.poll()
    poller.register(out_fd, select.POLLOUT)
    while sink.backlog_bytes and sink.broken is None:
        poller.poll(_TICK_S * 1000)
        sink.drain()


def _read_stdin() -> bool:
    """Read (and ignore) what the parent wrote; ``False`` at end of file."""
    try:
        return bool(os.read(0, 4096))
    except BlockingIOError:
        return True
    except OSError:
        return False


# --- the parent -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WatcherStats:
    """Counters of an `ExecWatcher`; the counts only grow."""

    running: bool
    """The child is up and its lines are being applied (`ExecWatcher.alive`)."""
    child_pid: int | None
    """The current (or last) child's pid."""
    failure: str | None
    """Why the watcher stopped working; the daemon should exit non-zero when set."""
    pipe_bytes: int | None
    """The capacity of the pipe from the child (how far it may run ahead of the reader)."""
    lines: int
    """Lines read from the child, including those that did not decode."""
    snapshots: int
    exits: int
    exits_unmatched: int
    """Exits for which the cache held no running entry (nothing to mark)."""
    updates: int
    updates_unmatched: int
    decode_errors: int
    """Lines that were not valid messages (skipped; ``last_decode_error`` says why)."""
    oversized_lines: int
    """Lines longer than ``max_line_bytes`` (skipped unread)."""
    apply_errors: int
    """Messages whose application to the cache raised (skipped)."""
    last_decode_error: str | None
    connector: ConnectorStats | None
    """The listener's counters as the child last reported them."""
    relay: RelayStats | None
    """The child's relay counters (backlog, stalls, coalesced) as it last reported them."""


class ExecWatcher:
    """Run the exec listener in a child process and keep ``cache`` current from it.

    Decide whether to use it with `probe_proc_connector` in the daemon; without the
    connector there is nothing for the child to listen to. `start`, `stop` and
    `wait_for_exit` may be called from any thread, `start` preferably from the main
    thread (see the module's caveat on ``PR_SET_PDEATHSIG``).

    Args:
        cache: the daemon's cache, the one its `Attributor` reads.
        python: the interpreter for the child; it must import this package.
        proc_root: where procfs is mounted.
        priority: how the child's listener thread asks to be scheduled.
        scan_on_start: snapshot every running process at start (they reach ``cache``
            before `start` returns).
        max_depth: the most ancestors kept per snapshot.
        receive_buffer: the child's netlink socket receive buffer, in bytes.
        child_cache_entries: the bound of the child's own cache (it needs one for fork
            stubs and parent chains).
        stats_interval_s: how often the child reports its listener's counters.
        child_backlog_bytes: how much encoded output the child keeps for a slow reader
            before its listener waits (then the kernel's socket buffer absorbs events).
        start_timeout_s: how long `start` waits for the child to be listening.
        max_line_bytes: longer lines are skipped and counted.
        pipe_bytes: the capacity asked for the pipe from the child (best effort).
    """

    def __init__(
        self,
        cache: ExecCache,
        *,
        python: str = sys.executable,
        proc_root: Path = PROC,
        priority: ListenerPriority = ListenerPriority.REALTIME,
        scan_on_start: bool = True,
        max_depth: int = DEFAULT_MAX_DEPTH,
        receive_buffer: int = _DEFAULT_RCVBUF,
        child_cache_entries: int = 16384,
        stats_interval_s: float = 5.0,
        child_backlog_bytes: int = _DEFAULT_BACKLOG,
        start_timeout_s: float = 15.0,
        max_line_bytes: int = _DEFAULT_MAX_LINE,
        pipe_bytes: int = _DEFAULT_PIPE_BYTES,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        if stats_interval_s <= 0:
            raise ValueError("stats_interval_s must be positive")
        self._cache = cache
        self._command = [
            python,
            "-P",  # never import from the working directory
            "-c",
            _CHILD_CODE,
            "--proc-root",
            str(proc_root),
            "--priority",
            priority.value,
            "--max-depth",
            str(max_depth),
            "--receive-buffer",
            str(receive_buffer),
            "--cache-entries",
            str(child_cache_entries),
            "--grace",
            repr(cache.grace_s),
            "--stats-interval",
            repr(stats_interval_s),
            "--backlog-bytes",
            str(child_backlog_bytes),
            *(() if scan_on_start else ("--no-scan",)),
        ]
        self._start_timeout_s = start_timeout_s
        self._max_line = max_line_bytes
        self._pipe_request = pipe_bytes
        self._lifecycle = threading.Lock()
        self._changed = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._child_pid: int | None = None
        self._pipe_bytes: int | None = None
        self._spawned_at = 0.0
        self._ready = threading.Event()
        self._stopping = False
        self._failure: str | None = None
        self._child_failure: str | None = None
        self._connector: ConnectorStats | None = None
        self._relay: RelayStats | None = None
        self._last_decode_error: str | None = None
        self._last_logged = float("-inf")
        self._counts = dict.fromkeys(
            (
                "lines",
                "snapshots",
                "exits",
                "exits_unmatched",
                "updates",
                "updates_unmatched",
                "decode_errors",
                "oversized_lines",
                "apply_errors",
            ),
            0,
        )

    @property
    def cache(self) -> ExecCache:
        """The cache this watcher feeds."""
        return self._cache

    @property
    def failure(self) -> str | None:
        """Why the watcher stopped working (child died, clock mismatch ...), or ``None``."""
        return self._failure

    @property
    def alive(self) -> bool:
        """Whether the child is listening and its lines are being applied."""
        reader = self._reader
        return (
            self._ready.is_set()
            and self._failure is None
            and not self._stopping
            and reader is not None
            and reader.is_alive()
        )

    def start(self) -> None:
        """Spawn the child and return once it listens (and its scan is in the cache).

        Raises:
            WeightwardenError: already running; the interpreter cannot be started; the
                child could not subscribe (the message says why), did not get ready in
                ``start_timeout_s``, or does not share this process's monotonic clock.
        """
        with self._lifecycle:
            if self._proc is not None:
                raise WeightwardenError("the exec watcher is already running")
            self._ready.clear()
            self._stopping = False
            self._failure = self._child_failure = None
            self._connector = None
            self._relay = None
            self._spawned_at = time.monotonic()
            try:
                proc = subprocess.Popen(
                    [*self._command, "--parent-pid", str(os.getpid())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                    cwd="/",
                )
            except OSError as exc:
                raise WeightwardenError(
                    f"cannot start the exec watcher with {self._command[0]}: {exc}"
                ) from exc
            assert proc.stdout is not None  # noqa: S101 (stdout=PIPE)
            self._proc, self._child_pid = proc, proc.pid
            self._pipe_bytes = _grow_pipe(proc.stdout.fileno(), self._pipe_request)
            self._reader = threading.Thread(
                target=self._read, args=(proc,), name="exec-watcher-reader", daemon=True
            )
            self._reader.start()
        with self._changed:
            self._changed.wait_for(
                lambda: self._ready.is_set() or self._failure is not None,
                self._start_timeout_s,
            )
        if self._ready.is_set() and self._failure is None:
            return
        reason = self._failure or f"it did not get ready within {self._start_timeout_s:g} s"
        self.stop()
        raise WeightwardenError(f"the exec watcher did not start: {reason}")

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Close the child's stdin so it exits, reap it, end the reader; idempotent.

        A child that has not exited within ``timeout_s`` is terminated, then killed.

        Raises:
            WeightwardenError: the reader thread did not end within ``timeout_s`` after
                the child was gone.
        """
        with self._lifecycle:
            proc, reader = self._proc, self._reader
            if proc is None:
                return
            self._stopping = True
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _log.warning("exec watcher child ignored stdin closing; killing it", pid=proc.pid)
                proc.kill()
                proc.wait()
            if reader is not None:
                reader.join(timeout_s)
                if reader.is_alive():
                    raise WeightwardenError(
                        f"the exec watcher reader did not stop within {timeout_s:g} s"
                    )
            if proc.stdout is not None:
                proc.stdout.close()
            self._proc = self._reader = None
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_for_exit(self, pid: int, *, timeout_s: float) -> bool:
        """Wait until ``cache`` records that the latest process with ``pid`` exited.

        Call it for a pid that is gone from ``/proc`` before attributing it from the
        cache: the child's lines reach the cache a little after the events.

        Returns:
            Whether the exit is recorded; ``False`` after ``timeout_s`` or as soon as the
            watcher is not alive (its lines stopped coming).
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                entry = self._cache.latest(pid)
                if entry is not None and entry.exited_at is not None:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return False
                self._changed.wait(left)

    def stats(self) -> WatcherStats:
        """Return the counters, the child's latest listener counters and any failure."""
        return WatcherStats(
            running=self.alive,
            child_pid=self._child_pid,
            failure=self._failure,
            pipe_bytes=self._pipe_bytes,
            last_decode_error=self._last_decode_error,
            connector=self._connector,
            relay=self._relay,
            **self._counts,
        )

    # --- the reader thread ------------------------------------------------------------------

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None  # noqa: S101 (stdout=PIPE)
        try:
            self._read_lines(proc.stdout.fileno())
        except Exception as exc:  # noqa: BLE001 (the reader's error boundary: record, stop the child)
            self._fail(f"the exec watcher reader failed: {type(exc).__name__}: {exc}")
            proc.kill()
        try:
            code = proc.wait(_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # closed its stdout but lives on: not ours to keep
            proc.kill()
            code = proc.wait()
        if not self._stopping:
            how = (
                f"was killed by {signal.Signals(-code).name}"
                if code < 0
                else f"exited with status {code}"
            )
            detail = f": {self._child_failure}" if self._child_failure else ""
            self._fail(
                f"the exec watcher child (pid {proc.pid}) {how}{detail}; short-lived processes "
                "are no longer attributed from the exec cache"
            )
        with self._changed:
            self._changed.notify_all()

    def _read_lines(self, fd: int) -> None:
        """Split what the child writes into lines (bounded) and handle each in order."""
        pending = bytearray()
        skipping = False  # inside a line that is already too long
        while chunk := os.read(fd, _READ_CHUNK):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                piece = chunk[start:end]
                start = end + 1
                if skipping:
                    skipping = False
                    continue
                if len(pending) + len(piece) > self._max_line:
                    self._counts["lines"] += 1
                    self._counts["oversized_lines"] += 1
                    pending.clear()
                    continue
                if pending:
                    pending += piece
                    piece = bytes(pending)
                    pending.clear()
                self._handle_line(piece)
            rest = chunk[start:]
            if not skipping and len(pending) + len(rest) > self._max_line:
                self._counts["lines"] += 1
                self._counts["oversized_lines"] += 1
                pending.clear()
                skipping = True
            elif not skipping:
                pending += rest
            with self._changed:
                self._changed.notify_all()
        if pending:
            self._handle_line(bytes(pending))  # cut short: decodes as an error

    def _handle_line(self, line: bytes) -> None:
        self._counts["lines"] += 1
        try:
            message = decode_message(line)
        except WeightwardenError as exc:
            self._counts["decode_errors"] += 1
            self._last_decode_error = str(exc)
            self._log_rarely("exec watcher line not decoded", error=str(exc))
            return
        try:
            self._apply(message)
        except Exception as exc:  # noqa: BLE001 (per-line error boundary: count, log, go on)
            self._counts["apply_errors"] += 1
            self._log_rarely(
                "exec watcher message not applied", error=f"{type(exc).__name__}: {exc}"
            )

    def _apply(self, message: WatcherMessage) -> None:
        match message:
            case SnapshotMessage(entry=entry):
                self._cache.put(entry)
                self._counts["snapshots"] += 1
            case ExitMessage(pid=pid, at=at):
                self._counts["exits"] += 1
                if self._cache.mark_exited(pid, at) is None:
                    self._counts["exits_unmatched"] += 1
            case UpdateMessage(pid=pid, info=info):
                self._counts["updates"] += 1
                if not self._cache.update(pid, lambda _old: info):
                    self._counts["updates_unmatched"] += 1
            case StatsMessage(connector=connector, relay=relay):
                self._connector, self._relay = connector, relay
            case ReadyMessage(monotonic=child_now):
                self._on_ready(child_now)
            case FailedMessage(reason=reason):
                self._child_failure = reason

    def _on_ready(self, child_now: float) -> None:
        """Accept the child's clock if it lies between our readings around the spawn."""
        now = time.monotonic()
        if not self._spawned_at <= child_now <= now:
            self._fail(
                f"the exec watcher child's monotonic clock reads {child_now:.6f} s, outside "
                f"this process's [{self._spawned_at:.6f}, {now:.6f}] s: it runs in another "
                "time namespace and its timestamps would be wrong here"
            )
            proc = self._proc
            if proc is not None:
                proc.kill()
            return
        self._ready.set()
        with self._changed:
            self._changed.notify_all()

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
            _log.error("exec watcher failed", failure=reason)
        with self._changed:
            self._changed.notify_all()

    def _log_rarely(self, event: str, **fields: object) -> None:
        now = time.monotonic()
        if now - self._last_logged >= _LOG_INTERVAL_S:
            self._last_logged = now
            _log.warning(event, decode_errors=self._counts["decode_errors"], **fields)


def _grow_pipe(fd: int, size: int) -> int | None:
    """Ask for a larger pipe (room for bursts while the reader waits); return its size."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return None
