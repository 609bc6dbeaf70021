"""Egress: the network endpoints of processes that read weights, linked to the access session.

A process that reads a checkpoint and then opens a connection is how weights leave a host
(``scp``, ``rsync``, ``aws s3 cp``, ``curl -T``, a Python upload, ``cat ckpt | nc``).
:class:`EgressWatcher` watches such a process from the moment the daemon sees it open a
weights file until a grace period after it closes it (``agent.egress_grace``, 60 s by
default), polling ``/proc`` (``agent.egress_poll``, 1 s), and reports each new endpoint
once per session as a :class:`~weightwarden.events.NetworkActivity` whose ``session_uid``
is the file access session.

How connections are found (no capability beyond reading ``/proc`` is needed):

- the process's socket inodes come from its descriptors (``/proc/PID/fd`` →
  ``socket:[INODE]``);
- the sockets of its network namespace come from ``/proc/PID/net/{tcp,tcp6,udp,udp6}``
  (read once per namespace per poll), and are joined by inode;
- a TCP socket in LISTEN is reported as a listen (``python -m http.server`` in the
  checkpoint folder); an established one whose local port is listening is inbound (someone
  is pulling from it); any other connected socket is outbound. Unconnected UDP sockets
  are not reported (see limits).

Besides the process itself, its **descendants** (``rsync`` runs ``ssh``) and its **pipe
peers** (``cat ckpt | nc host 9000``: ``nc`` holds the other end of ``cat``'s stdout) are
watched with it. Ancestors are not pipe peers: the shell, job launcher or ``sshd`` that
reads a reader's output is its parent, and its connections would be noise (an ``sshd``
origin is already in the reader's attribution). Relatives are found by a scan of all of
``/proc`` when the session starts, when the file is closed, and every ``rescan_ms`` (5 s)
after, bounded by ``max_pids``.

Endpoints are ``(protocol, remote ip, remote port)`` (for a listen, the local address);
each is reported once per session. Loopback endpoints are reported, flagged on the
observation and at informational severity; remote ones are low severity (a detector
decides what is suspicious). A pid that exits or is reused (its start time changes)
stops being watched; a session ends ``grace_ms`` after its release, or after every
watched process has been gone that long (a lost close event cannot keep it forever).

Bounds, each counted in :class:`EgressStats` and never silent: at most ``max_sessions``
sessions (new ones are refused), ``max_endpoints`` endpoints per session (further ones
are dropped) and ``max_pids`` processes per session.

Limits: polling misses a connection opened and closed between two polls (a short upload
of a small file); unconnected UDP (``sendto`` without ``connect``) has no remote address
in ``/proc`` and is invisible; a descendant that exits between rescans is not seen;
bytes sent per connection are not measured (``/proc/net/tcp`` does not say; sock_diag
``tcp_info`` would); a pipe peer that is not an ancestor (a log
collector reading the reader's output) is watched too, and its connections reported.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    Endpoint,
    NetworkActivity,
    NetworkActivityType,
    Process,
    Severity,
    User,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "Connection",
    "Direction",
    "EgressObservation",
    "EgressStats",
    "EgressWatcher",
    "SocketEntry",
    "Transport",
    "connections_of",
    "is_loopback",
    "parse_proc_net",
    "read_connections",
    "socket_inode",
]

PROC = Path("/proc")
SENSOR = "procfs"
_TCP_STATES = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}
_LISTEN = "LISTEN"
_TABLES = ("tcp", "tcp6", "udp", "udp6")
_MIN_NET_FIELDS = 10
_STARTTIME_INDEX = 19  # field 22 of /proc/PID/stat, counted after the ")" that ends comm


class Transport(enum.StrEnum):
    """The transport protocol of a socket."""

    TCP = "tcp"
    UDP = "udp"


class Direction(enum.StrEnum):
    """Who initiated a connection, as far as ``/proc`` tells."""

    OUTBOUND = "outbound"
    """This process connected out."""
    INBOUND = "inbound"
    """Someone connected to a port this host listens on."""
    LISTEN = "listen"
    """This process listens for connections."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketEntry:
    """One line of ``/proc/net/{tcp,tcp6,udp,udp6}``.

    Attributes:
        transport: TCP or UDP.
        local_ip: Local address, textual (IPv6 compressed).
        local_port: Local port.
        remote_ip: Remote address (all zeros when not connected).
        remote_port: Remote port (0 when not connected).
        state: TCP state name (``ESTABLISHED``, ``LISTEN`` ...); for UDP ``ESTABLISHED``
            when connected, ``CLOSE`` otherwise.
        inode: Socket inode, to join with ``/proc/PID/fd``.
        uid: Owner uid of the socket.
    """

    transport: Transport
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str
    inode: int
    uid: int


_Tables = dict[str, tuple[SocketEntry, ...]]
"""Socket tables by network namespace, read once per poll."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """A socket of one process, with its direction and whether it stays on the host.

    Attributes:
        pid: The process holding the socket.
        transport: TCP or UDP.
        local_ip: Local address.
        local_port: Local port.
        remote_ip: Remote address (for a listen, the unspecified address).
        remote_port: Remote port (0 for a listen).
        state: TCP state name, or ``ESTABLISHED`` for connected UDP.
        direction: Outbound, inbound or listen.
        loopback: The remote end (for a listen, the bound address) is a loopback address.
        inode: Socket inode.
    """

    pid: int
    transport: Transport
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str
    direction: Direction
    loopback: bool
    inode: int

    @property
    def endpoint_key(self) -> tuple[str, str, int, str]:
        """What makes an endpoint new for a session: protocol, address, port, direction."""
        if self.direction is Direction.LISTEN:
            return (self.transport, self.local_ip, self.local_port, self.direction)
        return (self.transport, self.remote_ip, self.remote_port, "peer")


def _decode_address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> (``127.0.0.1``, 8080); each 32-bit word is in host byte order."""
    host, _, port = text.partition(":")
    words = [host[i : i + 8] for i in range(0, len(host), 8)]
    raw = b"".join(int(w, 16).to_bytes(4, sys.byteorder) for w in words)
    if len(raw) not in (4, 16):
        raise ValueError(f"bad socket address {text!r}")
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}", int(port, 16)  # one spelling on every Python
    return address.compressed, int(port, 16)


def parse_proc_net(text: str, *, transport: Transport) -> tuple[SocketEntry, ...]:
    """Parse ``/proc/net/tcp``-style text (IPv4 or IPv6); malformed lines are skipped."""
    entries: list[SocketEntry] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < _MIN_NET_FIELDS:
            continue
        try:
            local_ip, local_port = _decode_address(fields[1])
            remote_ip, remote_port = _decode_address(fields[2])
            state_id = int(fields[3], 16)
            uid = int(fields[7])
            inode = int(fields[9])
        except ValueError:
            continue
        state = _TCP_STATES.get(state_id, f"0x{state_id:02X}")
        entries.append(
            SocketEntry(
                transport=transport,
                local_ip=local_ip,
                local_port=local_port,
                remote_ip=remote_ip,
                remote_port=remote_port,
                state=state,
                inode=inode,
                uid=uid,
            )
        )
    return tuple(entries)


def socket_inode(link: str) -> int | None:
    """The inode of a ``socket:[INODE]`` descriptor target, else None."""
    if link.startswith("socket:[") and link.endswith("]") and link[8:-1].isdigit():
        return int(link[8:-1])
    return None


def _pipe_inode(link: str) -> int | None:
    if link.startswith("pipe:[") and link.endswith("]") and link[6:-1].isdigit():
        return int(link[6:-1])
    return None


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` stays on the host (127.0.0.0/8, ::1, or IPv4-mapped loopback)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def connections_of(
    pid: int, entries: Iterable[SocketEntry], inodes: Iterable[int]
) -> tuple[Connection, ...]:
    """Join a namespace's socket table with one process's socket inodes (pure).

    ``entries`` must be the whole table of the process's network namespace: a TCP
    connection is inbound when any socket there listens on its local port.
    """
    table = tuple(entries)
    mine = set(inodes) - {0}
    listening = {(e.transport, e.local_port) for e in table if e.state == _LISTEN}
    out: list[Connection] = []
    for e in table:
        if e.inode not in mine:
            continue
        if e.transport is Transport.TCP and e.state == _LISTEN:
            direction = Direction.LISTEN
            loopback = is_loopback(e.local_ip)
        elif e.remote_port == 0:
            continue  # unconnected UDP, or a TCP socket not yet connected
        else:
            inbound = e.transport is Transport.TCP and (e.transport, e.local_port) in listening
            direction = Direction.INBOUND if inbound else Direction.OUTBOUND
            loopback = is_loopback(e.remote_ip)
        out.append(
            Connection(
                pid=pid,
                transport=e.transport,
                local_ip=e.local_ip,
                local_port=e.local_port,
                remote_ip=e.remote_ip,
                remote_port=e.remote_port,
                state=e.state,
                direction=direction,
                loopback=loopback,
                inode=e.inode,
            )
        )
    return tuple(out)


def _fd_links(pid: int, proc_root: Path) -> list[str] | None:
    """Targets of a process's descriptors; None if it is gone or unreadable."""
    links: list[str] = []
    try:
        with os.scandir(proc_root / str(pid) / "fd") as entries:
            for entry in entries:
                try:
                    links.append(os.readlink(entry.path))  # noqa: PTH115 -- the kernel's text
                except OSError:
                    continue
    except OSError:
        return None
    return links


def _read_tables(pid: int, proc_root: Path) -> tuple[SocketEntry, ...]:
    entries: list[SocketEntry] = []
    for name in _TABLES:
        try:
            text = (proc_root / str(pid) / "net" / name).read_text()
        except OSError:
            continue  # IPv6 disabled, or the process is gone
        transport = Transport.TCP if name.startswith("tcp") else Transport.UDP
        entries.extend(parse_proc_net(text, transport=transport))
    return tuple(entries)


def read_connections(
    pid: int,
    *,
    proc_root: Path = PROC,
    tables: Callable[[int], tuple[SocketEntry, ...]] | None = None,
) -> tuple[Connection, ...] | None:
    """The connections ``pid`` holds now; None if the process is gone or unreadable.

    ``tables`` returns the socket table of ``pid``'s network namespace (default: read
    ``/proc/PID/net/*``); the watcher passes a per-poll cache.
    """
    links = _fd_links(pid, proc_root)
    if links is None:
        return None
    inodes = [i for i in map(socket_inode, links) if i is not None]
    if not inodes:
        return ()
    table = tables(pid) if tables is not None else _read_tables(pid, proc_root)
    return connections_of(pid, table, inodes)


def _start_time(pid: int, proc_root: Path) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks), or None if gone."""
    try:
        text = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    try:
        return int(fields[_STARTTIME_INDEX])
    except (IndexError, ValueError):
        return None


def _parent_of(pid: int, proc_root: Path) -> tuple[int, int] | None:
    """(ppid, start time) from ``/proc/PID/stat``, or None."""
    try:
        text = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    try:
        return int(fields[1]), int(fields[_STARTTIME_INDEX])
    except (IndexError, ValueError):
        return None


def _descendants(roots: set[int], parents: dict[int, tuple[int, int]]) -> dict[int, int]:
    found: dict[int, int] = {}
    frontier = set(roots)
    while frontier:
        frontier = {
            p
            for p, (ppid, _) in parents.items()
            if ppid in frontier and p not in roots | found.keys()
        }
        found.update((p, parents[p][1]) for p in frontier)
    return found


def _pipe_peers(
    family: set[int], parents: dict[int, tuple[int, int]], proc_root: Path
) -> dict[int, int]:
    wanted: set[int] = set()
    for pid in family:
        wanted.update(i for i in map(_pipe_inode, _fd_links(pid, proc_root) or ()) if i)
    if not wanted:
        return {}
    return {
        pid: start
        for pid, (_, start) in parents.items()
        if pid not in family
        and any(_pipe_inode(link) in wanted for link in _fd_links(pid, proc_root) or ())
    }


def _relatives(roots: set[int], proc_root: Path, *, pipes: bool) -> dict[int, int]:
    """Descendants and pipe peers of ``roots`` (not the roots), with their start times."""
    try:
        with os.scandir(proc_root) as entries:
            pids = [int(e.name) for e in entries if e.name.isdigit()]
    except OSError:
        return {}
    parents = {pid: info for pid in pids if (info := _parent_of(pid, proc_root)) is not None}
    found = _descendants(roots, parents)
    if pipes:
        family = roots | found.keys()
        peers = _pipe_peers(family, parents, proc_root)
        for ancestor in _ancestors(roots, parents):
            peers.pop(ancestor, None)
        found.update(peers)
    return found


def _ancestors(roots: set[int], parents: dict[int, tuple[int, int]]) -> set[int]:
    out: set[int] = set()
    for pid in roots:
        parent = parents.get(pid, (0, 0))[0]
        while parent > 1 and parent not in out:
            out.add(parent)
            parent = parents.get(parent, (0, 0))[0]
    return out


def _minimal_actor(pid: int, proc_root: Path) -> Actor:
    """An actor read straight from ``/proc`` for a related process the daemon did not attribute."""
    try:
        exe: str | None = os.readlink(proc_root / str(pid) / "exe")  # noqa: PTH115
    except OSError:
        exe = None
    user = None
    try:
        for line in (proc_root / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                user = User(uid=int(line.split()[2]))
                break
    except (OSError, IndexError, ValueError):
        user = None
    process = Process(pid=pid, attribution=Attribution.PARTIAL, exe=exe, user=user)
    return Actor(process=process, user=user)


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressObservation:
    """A new endpoint of a watched session: the event to spool, and what it was made from.

    Attributes:
        event: The Network Activity event, linked to the session.
        connection: The socket seen, with its direction and loopback flag.
        related: The socket belongs to a descendant or pipe peer, not the reader itself.
    """

    event: NetworkActivity
    connection: Connection
    related: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressStats:
    """Counters since start, for the daemon's health report.

    Attributes:
        sessions: Sessions watched now.
        sessions_refused: Sessions not watched because ``max_sessions`` were.
        endpoints_reported: Observations emitted.
        endpoints_dropped: New endpoints not reported because a session had ``max_endpoints``.
        pids_dropped: Related processes not watched because a session had ``max_pids``.
        scan_errors: Polls of a session that failed unexpectedly (the session continues).
        sink_errors: Observations the sink raised on (``run`` only).
        last_error: The latest unexpected error, one line.
    """

    sessions: int
    sessions_refused: int
    endpoints_reported: int
    endpoints_dropped: int
    pids_dropped: int
    scan_errors: int
    sink_errors: int
    last_error: str | None


@dataclass(slots=True, kw_only=True)
class _Watch:
    session_uid: str
    pid: int
    actor: Actor
    pids: dict[int, int | None]
    released_at: int | None = None
    gone_since: int | None = None
    rescan_at: int = 0
    seen: set[tuple[str, str, int, str]] = field(default_factory=set)


class EgressWatcher:
    """Watches the endpoints of processes holding weights (see the module doc).

    ``watch`` and ``release`` are cheap and may be called from the daemon's event thread;
    ``poll`` does the ``/proc`` reading, from one poller thread (``run``, or the daemon's).
    """

    def __init__(
        self,
        *,
        device: Device,
        proc_root: Path = PROC,
        grace_ms: int = 60_000,
        rescan_ms: int = 5_000,
        follow_relatives: bool = True,
        follow_pipes: bool = True,
        include_loopback: bool = True,
        max_sessions: int = 4096,
        max_endpoints: int = 256,
        max_pids: int = 64,
        attribute: Callable[[int], Actor] | None = None,
        new_uid: Callable[[], str] | None = None,
    ) -> None:
        self._device = device
        self._proc_root = proc_root
        self._grace_ms = grace_ms
        self._rescan_ms = rescan_ms
        self._follow = follow_relatives
        self._pipes = follow_pipes
        self._loopback = include_loopback
        self._max_sessions = max_sessions
        self._max_endpoints = max_endpoints
        self._max_pids = max_pids
        self._attribute = attribute or (lambda pid: _minimal_actor(pid, proc_root))
        self._new_uid = new_uid or (lambda: uuid.uuid4().hex)
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._counts = dict.fromkeys(
            (
                "sessions_refused",
                "endpoints_reported",
                "endpoints_dropped",
                "pids_dropped",
                "scan_errors",
                "sink_errors",
            ),
            0,
        )
        self._last_error: str | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._watches)

    def stats(self) -> EgressStats:
        """Counters since start."""
        with self._lock:
            return EgressStats(
                sessions=len(self._watches), last_error=self._last_error, **self._counts
            )

    def watch(self, session_uid: str, pid: int, *, actor: Actor, now_ms: int) -> bool:
        """Start watching ``pid`` for session ``session_uid`` (again: a reopen clears the release).

        Returns False, and counts it, when ``max_sessions`` are already watched.
        """
        with self._lock:
            existing = self._watches.get(session_uid)
            if existing is not None:
                existing.released_at = None
                return True
            if len(self._watches) >= self._max_sessions:
                self._counts["sessions_refused"] += 1
                return False
            self._watches[session_uid] = _Watch(
                session_uid=session_uid,
                pid=pid,
                actor=actor,
                pids={pid: _start_time(pid, self._proc_root)},
                rescan_at=now_ms,
            )
        return True

    def release(self, session_uid: str, *, now_ms: int) -> None:
        """The session's file was closed: keep watching for the grace period, rescan once."""
        with self._lock:
            w = self._watches.get(session_uid)
            if w is not None and w.released_at is None:
                w.released_at = now_ms
                w.rescan_at = now_ms

    def poll(self, now_ms: int) -> list[EgressObservation]:
        """Read ``/proc`` once for every session; return the endpoints not seen before."""
        with self._lock:
            watches = list(self._watches.values())
        tables: _Tables = {}
        out: list[EgressObservation] = []
        for w in watches:
            try:
                if self._expired(w, now_ms):
                    with self._lock:
                        self._watches.pop(w.session_uid, None)
                    continue
                out.extend(self._poll_one(w, now_ms, tables))
            except Exception as exc:  # noqa: BLE001 -- the boundary: one session must not stop all
                self._error(f"session {w.session_uid}: {type(exc).__name__}: {exc}")
        with self._lock:
            self._counts["endpoints_reported"] += len(out)
        return out

    def _error(self, line: str) -> None:
        with self._lock:
            self._counts["scan_errors"] += 1
            self._last_error = line

    def _expired(self, w: _Watch, now_ms: int) -> bool:
        released = w.released_at
        if released is not None and now_ms - released > self._grace_ms:
            return True
        alive = {
            pid: start
            for pid, start in w.pids.items()
            if start is None or _start_time(pid, self._proc_root) == start
        }
        w.pids = {pid: start for pid, start in alive.items() if start is not None}
        if w.pids:
            w.gone_since = None
            return False
        if w.gone_since is None:
            w.gone_since = now_ms
        return now_ms - w.gone_since > self._grace_ms

    def _poll_one(self, w: _Watch, now_ms: int, tables: _Tables) -> list[EgressObservation]:
        if self._follow and now_ms >= w.rescan_at and w.pids:
            w.rescan_at = now_ms + self._rescan_ms
            for pid, start in _relatives(set(w.pids), self._proc_root, pipes=self._pipes).items():
                if pid in w.pids:
                    continue
                if len(w.pids) >= self._max_pids:
                    with self._lock:
                        self._counts["pids_dropped"] += 1
                    continue
                w.pids[pid] = start
        out: list[EgressObservation] = []
        for pid in sorted(w.pids):
            conns = read_connections(
                pid, proc_root=self._proc_root, tables=lambda p: self._table(p, tables)
            )
            for conn in conns or ():
                if conn.loopback and not self._loopback:
                    continue
                key = conn.endpoint_key
                if key in w.seen:
                    continue
                if len(w.seen) >= self._max_endpoints:
                    with self._lock:
                        self._counts["endpoints_dropped"] += 1
                    continue
                w.seen.add(key)
                out.append(self._observation(w, conn, now_ms))
        return out

    def _table(self, pid: int, cache: _Tables) -> tuple[SocketEntry, ...]:
        try:
            netns = os.readlink(self._proc_root / str(pid) / "ns" / "net")  # noqa: PTH115
        except OSError:
            netns = f"pid:{pid}"  # unknown namespace: do not share its table
        table = cache.get(netns)
        if table is None:
            table = cache[netns] = _read_tables(pid, self._proc_root)
        return table

    def _observation(self, w: _Watch, conn: Connection, now_ms: int) -> EgressObservation:
        local = Endpoint(ip=conn.local_ip, port=conn.local_port)
        remote = Endpoint(ip=conn.remote_ip, port=conn.remote_port)
        if conn.direction is Direction.LISTEN:
            src, dst, activity = local, local, NetworkActivityType.LISTEN
        elif conn.direction is Direction.INBOUND:
            src, dst, activity = remote, local, NetworkActivityType.OPEN
        else:
            src, dst, activity = local, remote, NetworkActivityType.OPEN
        related = conn.pid != w.pid
        event = NetworkActivity(
            uid=self._new_uid(),
            time=now_ms,
            device=self._device,
            activity=activity,
            actor=self._attribute(conn.pid) if related else w.actor,
            src_endpoint=src,
            dst_endpoint=dst,
            severity=Severity.INFORMATIONAL if conn.loopback else Severity.LOW,
            session_uid=w.session_uid,
            sensor=SENSOR,
        )
        return EgressObservation(event=event, connection=conn, related=related)

    def run(
        self,
        sink: Callable[[EgressObservation], None],
        stop: threading.Event,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """Poll every ``interval_s`` until ``stop`` is set, handing each observation to ``sink``.

        Errors in a poll or in the sink are counted (``scan_errors``, ``sink_errors``) and
        the loop goes on; the daemon reports the counters as health events.
        """
        now = clock or (lambda: time.time_ns() // 1_000_000)
        while not stop.is_set():
            try:
                observations = self.poll(now())
            except Exception as exc:  # noqa: BLE001 -- the loop's error boundary
                self._error(f"poll: {type(exc).__name__}: {exc}")
                observations = []
            for observation in observations:
                try:
                    sink(observation)
                except Exception as exc:  # noqa: BLE001 -- a sink failure must not stop polling
                    with self._lock:
                        self._counts["sink_errors"] += 1
                        self._last_error = f"sink: {type(exc).__name__}: {exc}"
            stop.wait(interval_s)
