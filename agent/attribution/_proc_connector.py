"""The netlink process-event connector: exec, fork, uid and exit notifications.

The kernel's proc connector (``NETLINK_CONNECTOR``, group ``CN_IDX_PROC``) multicasts one
small datagram per fork, exec, id change and exit to every subscribed socket. It works
only in the initial network namespace. Before Linux 6.6, subscribing
(``PROC_CN_MCAST_LISTEN``) needed ``CAP_NET_ADMIN`` in the initial user namespace; since
6.6 any user may subscribe (measured on 6.18: uid 65534 receives every process's events),
but only root can read other users' ``/proc/PID/exe`` and ``environ`` for the snapshot.
`probe_proc_connector` says whether it is available and, if not, why; without it
attribution falls back to ``/proc`` alone.

Wire format (host byte order)::

    nlmsghdr   u32 len, u16 type (NLMSG_DONE), u16 flags, u32 seq, u32 port
    cn_msg     u32 idx, u32 val, u32 seq, u32 ack, u16 len, u16 flags
    proc_event u32 what, u32 cpu, u64 timestamp_ns (CLOCK_MONOTONIC), then per ``what``:
      NONE (ack)  u32 err
      FORK        parent pid, parent tgid, child pid, child tgid
      EXEC        pid, tgid
      UID         pid, tgid, ruid, euid
      EXIT        pid, tgid, exit code, exit signal, parent pid, parent tgid

`ProcConnector` runs the listener on a thread: on every exec it snapshots the process
into an `ExecCache` at once, forks inherit their parent's entry, uid changes update it,
exits start its grace period. Each message is handled inside an error boundary; a socket
overrun (``ENOBUFS``: the kernel dropped events) is counted and triggers a rate-limited
rescan of ``/proc``; nothing is dropped silently. `ProcConnector.stop` wakes the thread
through a pipe and returns promptly.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import math
import os
import select
import socket
import struct
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Self

from agent.attribution._exec_cache import CachedProcess, ExecCache, SnapshotSource
from agent.attribution._process_info import Ancestor, ProcessInfo, ReadQuality
from agent.attribution._procfs import (
    DEFAULT_MAX_DEPTH,
    PROC,
    SNAPSHOT_FIELDS,
    UserNameLookup,
    boot_offset_s,
    clock_ticks_per_second,
    lookup_user_name,
    read_parents,
    read_process,
    start_time_to_monotonic,
)
from weightwarden.errors import WeightwardenError
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "ConnectorProbe",
    "ConnectorStats",
    "ListenerPriority",
    "ProcConnector",
    "ProcEvent",
    "ProcEventKind",
    "build_subscription",
    "parse_proc_events",
    "probe_proc_connector",
]

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3
_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEADER = struct.Struct("=IIQ")
_EVENT_DATA_OFFSET = _NLMSGHDR.size + _CN_MSG.size + _EVENT_HEADER.size
_RECV_BUFFER = 65536
_DEFAULT_RCVBUF = 16 << 20
_RESYNC_INTERVAL_S = 10.0
_LOG_INTERVAL_S = 10.0

_log = get_logger("agent.attribution.proc_connector")


class ProcEventKind(enum.IntEnum):
    """The ``what`` field of a proc connector event."""

    NONE = 0x00000000
    """An acknowledgement of a subscription request; ``err`` holds its errno."""
    FORK = 0x00000001
    EXEC = 0x00000002
    UID = 0x00000004
    GID = 0x00000040
    SID = 0x00000080
    PTRACE = 0x00000100
    COMM = 0x00000200
    NONZERO_EXIT = 0x20000000
    COREDUMP = 0x40000000
    EXIT = 0x80000000


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcEvent:
    """One decoded proc connector event; fields that ``kind`` lacks are ``None``."""

    kind: ProcEventKind | int
    """The event kind; an int for kinds this code does not know."""
    cpu: int
    timestamp_ns: int
    """CLOCK_MONOTONIC nanoseconds, the clock of ``time.monotonic_ns()``."""
    pid: int | None = None
    """The thread the event is about (the child, for a fork)."""
    tgid: int | None = None
    """Its process (thread-group) id; differs from ``pid`` for a thread."""
    parent_pid: int | None = None
    parent_tgid: int | None = None
    ruid: int | None = None
    euid: int | None = None
    exit_code: int | None = None
    err: int | None = None
    seq: int = 0
    ack: int = 0


def _decode_event(message: bytes, cn_seq: int, cn_ack: int, payload_len: int) -> ProcEvent | None:
    if payload_len < _EVENT_HEADER.size:
        return None
    what, cpu, timestamp_ns = _EVENT_HEADER.unpack_from(message, _NLMSGHDR.size + _CN_MSG.size)
    data = message[_EVENT_DATA_OFFSET : _NLMSGHDR.size + _CN_MSG.size + payload_len]
    try:
        kind: ProcEventKind | int = ProcEventKind(what)
    except ValueError:
        kind = what
    base = ProcEvent(kind=kind, cpu=cpu, timestamp_ns=timestamp_ns, seq=cn_seq, ack=cn_ack)
    ints = [value for (value,) in struct.iter_unpack("=I", data[: len(data) // 4 * 4])]
    fields: dict[str, int | None] = {}
    if kind == ProcEventKind.NONE:
        fields["err"] = ints[0] if ints else None
    elif kind == ProcEventKind.FORK and len(ints) >= 4:  # noqa: PLR2004 (documented layout)
        fields.update(parent_pid=ints[0], parent_tgid=ints[1], pid=ints[2], tgid=ints[3])
    elif len(ints) >= 2:  # noqa: PLR2004 (every other kind starts with pid, tgid)
        fields.update(pid=ints[0], tgid=ints[1])
        if kind == ProcEventKind.UID and len(ints) >= 4:  # noqa: PLR2004 (documented layout)
            fields.update(ruid=ints[2], euid=ints[3])
        elif kind == ProcEventKind.EXIT and len(ints) >= 3:  # noqa: PLR2004 (documented layout)
            fields["exit_code"] = ints[2]
            if len(ints) >= 6:  # noqa: PLR2004 (parent pid/tgid, added in Linux 4.x)
                fields.update(parent_pid=ints[4], parent_tgid=ints[5])
    return replace(base, **fields)  # type: ignore[arg-type]


def parse_proc_events(data: bytes) -> list[ProcEvent]:
    """Decode the netlink messages in one datagram into proc connector events.

    Messages that are not connector messages for ``CN_IDX_PROC`` are skipped; a truncated
    message ends the parse (what came before it is returned).
    """
    events: list[ProcEvent] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, _type, _flags, _seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        message = data[offset : offset + length]
        offset += (length + 3) & ~3
        if length < _NLMSGHDR.size + _CN_MSG.size:
            continue
        idx, val, cn_seq, cn_ack, payload_len, _cn_flags = _CN_MSG.unpack_from(
            message, _NLMSGHDR.size
        )
        if idx != CN_IDX_PROC or val != CN_VAL_PROC:
            continue
        payload_len = min(payload_len, length - _NLMSGHDR.size - _CN_MSG.size)
        if (event := _decode_event(message, cn_seq, cn_ack, payload_len)) is not None:
            events.append(event)
    return events


def build_subscription(operation: int, *, seq: int = 0, ack: int = 0) -> bytes:
    """Build the message that starts (``PROC_CN_MCAST_LISTEN``) or stops a subscription."""
    payload = struct.pack("=I", operation)
    cn_msg = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, ack, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn_msg), NLMSG_DONE, 0, 0, 0) + cn_msg


# --- the socket -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorProbe:
    """Whether the proc connector can be used here, and if not, why."""

    available: bool
    reason: str


class _SubscribeError(Exception):
    """Subscribing failed; the message says why in terms an operator can act on."""


def _open_subscribed(timeout_s: float, rcvbuf: int) -> socket.socket:
    """Open a netlink socket, subscribe to process events and wait for the kernel's ack.

    Raises:
        _SubscribeError: the connector is missing, the caller lacks CAP_NET_ADMIN, or no
            acknowledgement came.
    """
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except OSError as exc:
        raise _SubscribeError(
            f"cannot open a NETLINK_CONNECTOR socket ({exc.strerror}): the kernel lacks "
            "CONFIG_PROC_EVENTS or this is not the initial network namespace"
        ) from exc
    try:
        _set_receive_buffer(sock, rcvbuf)
        try:
            sock.bind((0, CN_IDX_PROC))
        except PermissionError as exc:
            raise _SubscribeError(
                "joining the proc connector group was refused (EPERM): needs CAP_NET_ADMIN"
            ) from exc
        seq = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        sock.send(build_subscription(PROC_CN_MCAST_LISTEN, seq=seq, ack=seq))
        _await_ack(sock, seq, timeout_s)
    except _SubscribeError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise _SubscribeError(f"proc connector subscription failed: {exc}") from exc
    return sock


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a large receive buffer (forced past rmem_max when privileged)."""
    so_rcvbufforce = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, so_rcvbufforce, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _await_ack(sock: socket.socket, seq: int, timeout_s: float) -> None:
    """Wait for the kernel's answer to our request: ``ack`` is our ``ack`` plus one.

    Acks to other listeners' requests reach every subscriber and are skipped.
    """
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        for event in parse_proc_events(sock.recv(_RECV_BUFFER)):
            if event.kind == ProcEventKind.NONE and event.ack == (seq + 1) & 0xFFFFFFFF:
                if event.err:
                    reason = os.strerror(event.err)
                    raise _SubscribeError(
                        f"the kernel refused the subscription ({reason}): needs CAP_NET_ADMIN "
                        "in the initial user namespace"
                    )
                return
    raise _SubscribeError(
        f"no acknowledgement from the proc connector within {timeout_s:g} s: "
        "needs CAP_NET_ADMIN in the initial user and network namespaces"
    )


def _unsubscribe(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closing the socket ends the subscription anyway
        sock.send(build_subscription(PROC_CN_MCAST_IGNORE))


def probe_proc_connector(*, timeout_s: float = 1.0) -> ConnectorProbe:
    """Try to subscribe to process events, then unsubscribe.

    Returns:
        ``available=True`` when subscribing worked; otherwise the reason, e.g. that
        ``CAP_NET_ADMIN`` is missing. Never raises.
    """
    try:
        sock = _open_subscribed(timeout_s, 1 << 16)
    except _SubscribeError as exc:
        return ConnectorProbe(available=False, reason=str(exc))
    _unsubscribe(sock)
    sock.close()
    reason = "subscribed to process events (CN_IDX_PROC)"
    if os.geteuid() != 0:
        reason += "; not root: other users' exe and environment will be unreadable"
    return ConnectorProbe(available=True, reason=reason)


# --- the listener ---------------------------------------------------------------------------


class ListenerPriority(enum.Enum):
    """How the listener thread asks to be scheduled.

    The snapshot at exec races the process's exit: a ``cat`` lives well under a
    millisecond after exec, so a listener woken late finds it gone. Measured here (2 cores,
    200 ``cat`` runs, nothing else in the process): normal priority attributed 5-45 %,
    nice -20 97-100 %, SCHED_FIFO 98.5-100 %.
    """

    REALTIME = "realtime"
    """SCHED_FIFO priority 1, falling back to nice -20, then to normal, when refused.

    The thread blocks in poll() between events and spends ~0.1-0.3 ms per exec, so even
    an exec storm leaves the kernel's real-time throttling (5 % kept back by default) in
    charge; a bounded per-event cost is what makes this safe.
    """
    HIGH = "high"
    """nice -20 (needs CAP_SYS_NICE), falling back to normal."""
    NORMAL = "normal"
    """Inherit the process's scheduling."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorStats:
    """Counters of a `ProcConnector`; all but ``running`` and ``failure`` only grow."""

    running: bool
    priority: str
    """The scheduling the listener thread got, e.g. ``SCHED_FIFO 1`` or ``nice -20``."""
    failure: str | None
    """Why the listener thread died, or ``None``; a daemon should exit when this is set."""
    events: int
    execs: int
    forks: int
    uid_changes: int
    exits: int
    overruns: int
    """Times the socket overflowed (ENOBUFS): the kernel dropped events."""
    resyncs: int
    """Rescans of ``/proc`` after overruns."""
    handler_errors: int
    """Messages whose handling raised; each is logged and skipped."""
    snapshots_vanished: int
    """Exec snapshots where the process exited mid-read (stored as far as read)."""
    snapshots_lost: int
    """Exec snapshots where the process was gone before anything could be read."""


class ProcConnector:
    """Listen to process events on a thread and keep an `ExecCache` current.

    The snapshot at exec is a race against the process's exit, so latency matters more
    than throughput here. The thread shares the GIL with the rest of the process: another
    thread that computes in Python holds it for up to the switch interval (5 ms), long
    enough to lose every short-lived process (measured: one busy Python thread beside the
    listener cut attribution of 200 ``cat`` runs from 100 % to 10 %). Run the listener in
    a process (or beside threads) that mostly waits in system calls: `ExecWatcher` runs
    it in a child process of its own and feeds the daemon's cache from there.

    Args:
        cache: where snapshots go.
        proc_root: where procfs is mounted.
        priority: how the listener thread asks to be scheduled (see `ListenerPriority`).
        scan_on_start: snapshot every running process when starting, so processes that
            started earlier are attributable after they exit.
        max_depth: the most ancestors kept per snapshot.
        receive_buffer: socket receive buffer in bytes; larger rides out bursts.
        user_name: maps a uid to its name.
        after_burst: called on the listener thread each time it has handled every
            message waiting on the socket (and after a rescan), before it waits again;
            e.g. to flush what a cache sink buffered. An exception from it ends the
            listener (recorded as its ``failure``).
    """

    def __init__(
        self,
        cache: ExecCache,
        *,
        proc_root: Path = PROC,
        priority: ListenerPriority = ListenerPriority.REALTIME,
        scan_on_start: bool = True,
        max_depth: int = DEFAULT_MAX_DEPTH,
        receive_buffer: int = _DEFAULT_RCVBUF,
        user_name: UserNameLookup = lookup_user_name,
        after_burst: Callable[[], None] | None = None,
    ) -> None:
        self._cache = cache
        self._after_burst = after_burst
        self._proc_root = proc_root
        self._scan_on_start = scan_on_start
        self._max_depth = max_depth
        self._receive_buffer = receive_buffer
        self._user_name = user_name
        self._priority = priority
        self._priority_applied = "not started"
        self._sock: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failure: str | None = None
        self._last_resync = float("-inf")
        self._overruns_resynced = 0
        self._last_logged: dict[str, float] = {}
        self._counts = dict.fromkeys(
            (
                "events",
                "execs",
                "forks",
                "uid_changes",
                "exits",
                "overruns",
                "resyncs",
                "handler_errors",
                "snapshots_vanished",
                "snapshots_lost",
            ),
            0,
        )

    @property
    def cache(self) -> ExecCache:
        """The cache this listener feeds."""
        return self._cache

    def start(self, *, timeout_s: float = 2.0) -> None:
        """Subscribe, scan running processes (if asked) and start the listener thread.

        Raises:
            WeightwardenError: the proc connector is unavailable (the message says why) or
                the listener is already running.
        """
        if self._thread is not None:
            raise WeightwardenError("the proc connector listener is already running")
        try:
            self._sock = _open_subscribed(timeout_s, self._receive_buffer)
        except _SubscribeError as exc:
            raise WeightwardenError(
                f"{exc}; attribution falls back to /proc only (short-lived processes "
                "will be reported as unattributed)"
            ) from exc
        self._sock.settimeout(0.0)  # non-blocking: the thread drains until EAGAIN
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._failure = None
        self._stopping.clear()
        if self._scan_on_start:
            try:
                self._scan()
            except BaseException:
                self.stop()
                raise
        self._thread = threading.Thread(target=self._run, name="proc-connector", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop the listener thread, unsubscribe and close the socket; idempotent.

        Returns once the thread has ended (it is woken at once, so this is prompt).

        Raises:
            WeightwardenError: the thread did not end within ``timeout_s``.
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            with contextlib.suppress(BlockingIOError):  # a wake byte is already pending
                os.write(self._wake_w, b"x")
            thread.join(timeout_s)
            if thread.is_alive():
                raise WeightwardenError(
                    f"the proc connector thread did not stop within {timeout_s:g} s"
                )
            self._thread = None
        if self._sock is not None:
            _unsubscribe(self._sock)
            self._sock.close()
            self._sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stats(self) -> ConnectorStats:
        """Return the counters and whether the listener is alive."""
        counts = dict(self._counts)
        return ConnectorStats(
            running=self._thread is not None and self._thread.is_alive(),
            priority=self._priority_applied,
            failure=self._failure,
            **counts,
        )

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        """Poll the socket and the wake pipe; handle each message as soon as it arrives."""
        sock = self._sock
        assert sock is not None  # noqa: S101 (start() sets it before the thread runs)
        self._priority_applied = self._apply_priority()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        buffer = bytearray(_RECV_BUFFER)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll(self._resync_wait_ms())}
                if self._wake_r in ready:
                    return
                self._drain(sock, buffer)
                if self._resync_wait_ms() == 0:
                    self._resync()
                if self._after_burst is not None:
                    self._after_burst()
        except Exception as exc:  # noqa: BLE001 (the thread's error boundary: record, log, end)
            self._failure = f"{type(exc).__name__}: {exc}"
            _log.exception("proc connector listener died", failure=self._failure)

    def _may_log(self, what: str) -> bool:
        """Allow one log line per kind of trouble per interval.

        A storm of log lines would make the listener miss exits; the counters keep the
        full tally.
        """
        now = time.monotonic()
        if now - self._last_logged.get(what, float("-inf")) < _LOG_INTERVAL_S:
            return False
        self._last_logged[what] = now
        return True

    def _apply_priority(self) -> str:
        """Raise this thread's scheduling priority as configured; say what it got."""
        tid = threading.get_native_id()
        if self._priority is ListenerPriority.REALTIME:
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
            except OSError as exc:
                _log.warning("SCHED_FIFO refused for the proc connector thread", error=str(exc))
            else:
                return "SCHED_FIFO 1"
        if self._priority in (ListenerPriority.REALTIME, ListenerPriority.HIGH):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, -20)
            except OSError as exc:
                _log.warning("nice -20 refused for the proc connector thread", error=str(exc))
            else:
                return "nice -20"
        return "normal"

    def _drain(self, sock: socket.socket, buffer: bytearray) -> None:
        while not self._stopping.is_set():  # an exec storm must not delay stop()
            try:
                size = sock.recv_into(buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._counts["overruns"] += 1
                if self._may_log("overrun"):
                    _log.warning(
                        "proc connector overrun: the kernel dropped process events",
                        overruns=self._counts["overruns"],
                    )
                continue
            for event in parse_proc_events(bytes(buffer[:size])):
                self._counts["events"] += 1
                try:
                    self._handle(event)
                except Exception as exc:  # noqa: BLE001 (per-message error boundary: count, log, go on)
                    self._counts["handler_errors"] += 1
                    if self._may_log("handler_error"):
                        # One line, no rendered traceback: rendering one takes long enough
                        # (tens of ms or more) for short-lived processes to be missed.
                        where = traceback.extract_tb(exc.__traceback__)[-1]
                        _log.error(
                            "proc connector event not handled",
                            kind=str(event.kind),
                            error=f"{type(exc).__name__}: {exc}",
                            at=f"{where.filename}:{where.lineno}",
                            handler_errors=self._counts["handler_errors"],
                        )

    def _handle(self, event: ProcEvent) -> None:
        at = event.timestamp_ns / 1e9
        if event.kind == ProcEventKind.EXEC and event.tgid is not None:
            self._counts["execs"] += 1
            self._on_exec(event.tgid, at)
        elif event.kind == ProcEventKind.FORK and event.pid is not None:
            if event.pid == event.tgid and event.parent_tgid is not None:  # not a new thread
                self._counts["forks"] += 1
                self._on_fork(event.pid, event.parent_tgid, at)
        elif event.kind == ProcEventKind.UID and event.tgid is not None:
            self._counts["uid_changes"] += 1
            self._on_uid(event.tgid, event.ruid, event.euid)
        elif event.kind == ProcEventKind.EXIT and event.pid is not None and event.pid == event.tgid:
            # the process ends (a thread's exit has pid != tgid and is ignored)
            self._counts["exits"] += 1
            self._cache.mark_exited(event.pid, at)

    def _on_exec(self, pid: int, at: float) -> None:
        info = read_process(
            pid, proc_root=self._proc_root, with_parents=False, user_name=self._user_name
        )
        offset = boot_offset_s()
        if info.start_time is not None and start_time_to_monotonic(info.start_time, offset) > at:
            # The pid already belongs to a process started after this exec: ours is gone.
            info = ProcessInfo(pid=pid, read_quality=ReadQuality.ABSENT, unread=SNAPSHOT_FIELDS)
        stub = self._cache.latest(pid)
        if stub is not None and stub.exited_at is not None:
            stub = None
        if info.read_quality in (ReadQuality.VANISHED, ReadQuality.ABSENT):
            self._counts[
                "snapshots_lost"
                if info.read_quality is ReadQuality.ABSENT
                else "snapshots_vanished"
            ] += 1
            if (
                stub is not None
                and stub.source is SnapshotSource.SCAN
                and stub.seen_at >= at
                and stub.info.identified
            ):
                # A scan already read the new image (the exec was queued while subscribing).
                # A fork stub is never kept here: it holds the parent's image, not this one.
                return
            info = _fill_from_stub(info, stub)
        info = replace(info, parents=self._parents_of(info.ppid))
        if info.start_time is not None:
            ticks = info.start_time
            started_at = start_time_to_monotonic(ticks, offset)
        elif stub is not None:
            ticks, started_at = stub.start_ticks, stub.started_at
        else:
            ticks, started_at = _ticks_at(at, offset), at
        self._cache.put(
            CachedProcess(
                info=info,
                start_ticks=ticks,
                started_at=started_at,
                seen_at=time.monotonic(),
                source=SnapshotSource.EXEC,
            )
        )

    def _on_fork(self, pid: int, parent: int, at: float) -> None:
        parent_entry = self._cache.latest(parent)
        offset = boot_offset_s()
        if parent_entry is None or parent_entry.exited_at is not None:
            info = read_process(
                pid, proc_root=self._proc_root, with_parents=False, user_name=self._user_name
            )
            if info.read_quality is ReadQuality.ABSENT:
                return
            info = replace(info, parents=self._parents_of(info.ppid))
        else:
            info = replace(
                parent_entry.info,
                pid=pid,
                ppid=parent,
                start_time=None,
                parents=(parent_entry.info.as_ancestor(), *parent_entry.info.parents)[
                    : self._max_depth
                ],
                unread=parent_entry.info.unread | {"start_time"},
            )
        ticks = info.start_time if info.start_time is not None else _ticks_at(at, offset)
        self._cache.put(
            CachedProcess(
                info=info,
                start_ticks=ticks,
                started_at=start_time_to_monotonic(ticks, offset),
                seen_at=time.monotonic(),
                source=SnapshotSource.FORK,
            )
        )

    def _on_uid(self, pid: int, ruid: int | None, euid: int | None) -> None:
        user_name = self._user_name

        def change(info: ProcessInfo) -> ProcessInfo:
            return replace(
                info,
                uid=ruid,
                euid=euid,
                user=user_name(ruid) if ruid is not None else None,
            )

        self._cache.update(pid, change)

    def _parents_of(self, ppid: int | None) -> tuple[Ancestor, ...]:
        """Build a parent chain from cached entries, reading ``/proc`` where none is cached."""
        if not ppid or self._max_depth < 1:
            return ()
        entry = self._cache.latest(ppid)
        if entry is None or entry.exited_at is not None:
            return read_parents(
                ppid,
                proc_root=self._proc_root,
                max_depth=self._max_depth,
                user_name=self._user_name,
            )
        return (entry.info.as_ancestor(), *entry.info.parents)[: self._max_depth]

    def _scan(self) -> None:
        """Snapshot every running process into the cache (parents first where possible)."""
        offset = boot_offset_s()
        try:
            with os.scandir(self._proc_root) as entries:
                pids = sorted(int(entry.name) for entry in entries if entry.name.isdigit())
        except OSError as exc:
            _log.warning("cannot list processes", proc_root=str(self._proc_root), error=str(exc))
            return
        for pid in pids:
            if self._stopping.is_set():
                return
            info = read_process(
                pid, proc_root=self._proc_root, with_parents=False, user_name=self._user_name
            )
            seen_at = time.monotonic()  # after the read: an exec before this is in it
            ticks = info.start_time
            if ticks is None:
                continue  # gone already
            if info.read_quality is ReadQuality.VANISHED and self._cache.exact(pid, ticks):
                continue  # exited mid-scan; what the cache holds is at least as good
            info = replace(info, parents=self._parents_of(info.ppid))
            self._cache.put(
                CachedProcess(
                    info=info,
                    start_ticks=ticks,
                    started_at=start_time_to_monotonic(ticks, offset),
                    seen_at=seen_at,
                    source=SnapshotSource.SCAN,
                )
            )

    def _resync_wait_ms(self) -> int | None:
        """Milliseconds until a pending rescan is due (0: now), or ``None`` if none is pending.

        An overrun lost events; rescanning ``/proc`` recovers the processes still running.
        Rescans are at most one per `_RESYNC_INTERVAL_S`, so a storm cannot keep the
        listener scanning instead of listening.
        """
        if self._counts["overruns"] <= self._overruns_resynced:
            return None
        left = self._last_resync + _RESYNC_INTERVAL_S - time.monotonic()
        return math.ceil(left * 1000) if left > 0 else 0

    def _resync(self) -> None:
        self._last_resync = time.monotonic()
        self._overruns_resynced = self._counts["overruns"]
        self._counts["resyncs"] += 1
        self._scan()


def _ticks_at(monotonic_s: float, offset_s: float) -> int:
    return int((monotonic_s + offset_s) * clock_ticks_per_second())


_INHERITED_OVER_EXEC: dict[str, tuple[str, ...]] = {
    # unread name -> the fields read from that file, which exec leaves unchanged
    "uid": ("uid", "euid", "user"),
    "login_uid": ("login_uid", "login_user"),
    "cgroup": (
        "cgroup",
        "container_id",
        "container_runtime",
        "systemd_unit",
        "slurm_job_id",
        "pod_uid",
    ),
    "ssh_origin": ("ssh_origin",),
}


def _fill_from_stub(info: ProcessInfo, stub: CachedProcess | None) -> ProcessInfo:
    """Complete a snapshot lost to a quick exit with what exec does not change.

    The fork stub knows the uid, login uid, cgroup and environment-derived origin (exec
    keeps them; a later uid change was applied to the stub). It must not lend its exe or
    cmdline: those are the parent's, from before the exec.
    """
    if stub is None:
        return info
    filled: dict[str, object] = {}
    recovered: set[str] = set()
    for unread_name, fields in _INHERITED_OVER_EXEC.items():
        if unread_name in info.unread and unread_name not in stub.info.unread:
            recovered.add(unread_name)
            filled.update({name: getattr(stub.info, name) for name in fields})
    if info.ppid is None and stub.info.ppid is not None:
        filled["ppid"] = stub.info.ppid
    if not filled:
        return info
    return replace(info, **filled, unread=info.unread - recovered)  # type: ignore[arg-type]
