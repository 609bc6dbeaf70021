import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.egress import (
    Connection,
    Direction,
    EgressObservation,
    EgressWatcher,
    SocketEntry,
    Transport,
    connections_of,
    is_loopback,
    parse_proc_net,
    read_connections,
    socket_inode,
)
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    NetworkActivityType,
    Process,
    Severity,
    User,
)

DEVICE = Device(hostname="gpu-01", agent_id="agent-1")
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"  # noqa: E501

# A child driven by commands on stdin; it answers each with one line on stdout.
CHILD = r"""
import os, socket, subprocess, sys
held = []
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "read":
        with open(arg, "rb") as f:
            f.read()
        print("read", flush=True)
    elif cmd == "connect":
        held.append(socket.create_connection(("127.0.0.1", int(arg))))
        print("connected", flush=True)
    elif cmd == "listen":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        held.append(s)
        print(s.getsockname()[1], flush=True)
    elif cmd == "accept":
        conn, _ = held[-1].accept()
        held.append(conn)
        print("accepted", flush=True)
    elif cmd == "spawn":
        code = "import socket, sys; s = socket.create_connection(('127.0.0.1', %s)); "
        code += "print('connected', flush=True); sys.stdin.read()"
        held.append(subprocess.Popen([sys.executable, "-c", code % arg], stdin=subprocess.PIPE))
        print(held[-1].pid, flush=True)
    elif cmd == "write":
        with open(arg, "rb") as f:
            sys.stdout.write(f.read(16).hex() + "\n")
        sys.stdout.flush()
"""


class Child:
    """A real process that reads files and opens sockets when told to."""

    def __init__(self, *, stdin: int | None = None, stdout: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE if stdin is None else stdin,
            stdout=subprocess.PIPE if stdout is None else stdout,
            text=True,
        )
        self.pid = self.proc.pid

    def ask(self, command: str) -> str:
        """Send one command; return the child's one-line answer."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, f"child exited on {command!r}"
        return answer

    def close(self) -> None:
        """Kill the child and anything it spawned."""
        for spawned in _children_of(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(spawned, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    made: list[Child] = []

    def make(**kwargs: int) -> Child:
        child = Child(**kwargs)
        made.append(child)
        return child

    yield make
    for child in made:
        child.close()


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A TCP server on 127.0.0.1 that the test accepts on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model-00001-of-00002.safetensors"
    path.write_bytes(b"\0" * 4096)
    return path


def _actor(pid: int) -> Actor:
    user = User(uid=0, name="root")
    return Actor(process=Process(pid=pid, attribution=Attribution.FULL, user=user), user=user)


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def _hex_v4(ip: bytes, port: int) -> str:
    return f"{int.from_bytes(ip, sys.byteorder):08X}:{port:04X}"


def _hex_v6(ip: bytes, port: int) -> str:
    words = (int.from_bytes(ip[i : i + 4], sys.byteorder) for i in range(0, 16, 4))
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _line(local: str, remote: str, state: int, inode: int, uid: int = 1000) -> str:
    return (
        f"   0: {local} {remote} {state:02X} 00000000:00000000 00:00000000 00000000 "
        f"{uid:5d}        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


def test_parse_proc_net_decodes_ipv4_and_ipv6_addresses_ports_and_states():
    """Host-order hex words become addresses; states and inodes are read; garbage skipped."""
    v4 = HEADER + _line(
        _hex_v4(bytes([10, 0, 0, 5]), 40000), _hex_v4(bytes([203, 0, 113, 9]), 443), 0x01, 77
    )
    v4 += "   1: garbage\n"
    (entry,) = parse_proc_net(v4, transport=Transport.TCP)
    assert entry == SocketEntry(
        transport=Transport.TCP,
        local_ip="10.0.0.5",
        local_port=40000,
        remote_ip="203.0.113.9",
        remote_port=443,
        state="ESTABLISHED",
        inode=77,
        uid=1000,
    )
    loop6 = bytes(15) + b"\x01"
    mapped = bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])
    v6 = HEADER + _line(_hex_v6(loop6, 9000), _hex_v6(bytes(16), 0), 0x0A, 5)
    v6 += _line(_hex_v6(mapped, 5000), _hex_v6(mapped, 9000), 0x02, 6)
    listen, syn = parse_proc_net(v6, transport=Transport.TCP)
    assert (listen.local_ip, listen.local_port, listen.state) == ("::1", 9000, "LISTEN")
    assert (syn.remote_ip, syn.state) == ("::ffff:127.0.0.1", "SYN_SENT")


def test_connections_of_classifies_outbound_inbound_and_listen():
    """A listener, a connection to its port (inbound) and one out (outbound) are told apart."""
    entries = [
        SocketEntry(transport=Transport.TCP, local_ip="0.0.0.0", local_port=8000,  # noqa: S104
                    remote_ip="0.0.0.0", remote_port=0, state="LISTEN", inode=1, uid=0),  # noqa: S104
        SocketEntry(transport=Transport.TCP, local_ip="10.0.0.5", local_port=8000,
                    remote_ip="10.0.0.9", remote_port=51000, state="ESTABLISHED", inode=2, uid=0),
        SocketEntry(transport=Transport.TCP, local_ip="10.0.0.5", local_port=51111,
                    remote_ip="198.51.100.7", remote_port=22, state="ESTABLISHED", inode=3, uid=0),
        SocketEntry(transport=Transport.UDP, local_ip="0.0.0.0", local_port=5353,  # noqa: S104
                    remote_ip="0.0.0.0", remote_port=0, state="CLOSE", inode=4, uid=0),  # noqa: S104
        SocketEntry(transport=Transport.UDP, local_ip="10.0.0.5", local_port=40000,
                    remote_ip="127.0.0.53", remote_port=53, state="ESTABLISHED", inode=5, uid=0),
        SocketEntry(transport=Transport.TCP, local_ip="10.0.0.5", local_port=51112,
                    remote_ip="198.51.100.8", remote_port=22, state="ESTABLISHED", inode=6, uid=0),
    ]  # fmt: skip
    conns = connections_of(42, entries, [1, 2, 3, 4, 5])
    by_inode = {c.inode: c for c in conns}
    assert set(by_inode) == {1, 2, 3, 5}  # unconnected UDP and other processes' sockets left out
    assert by_inode[1].direction is Direction.LISTEN
    assert by_inode[2].direction is Direction.INBOUND
    assert by_inode[3].direction is Direction.OUTBOUND
    assert not by_inode[3].loopback
    assert by_inode[5].direction is Direction.OUTBOUND
    assert by_inode[5].loopback


def test_small_parsers():
    """socket:[N] gives N; loopback covers 127/8, ::1 and IPv4-mapped loopback."""
    assert socket_inode("socket:[123]") == 123
    assert socket_inode("pipe:[123]") is None
    assert socket_inode("/dev/null") is None
    assert is_loopback("127.0.0.53")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("not an ip")


def test_read_connections_sees_a_real_connection_of_a_real_process(children, server):
    """The reader joins /proc/PID/fd with /proc/PID/net/tcp for a live child."""
    child = children()
    assert read_connections(child.pid) == ()
    child.ask(f"connect {_port(server)}")
    conns = read_connections(child.pid)
    assert conns is not None
    assert [(c.remote_ip, c.remote_port, c.direction) for c in conns] == [
        ("127.0.0.1", _port(server), Direction.OUTBOUND)
    ]
    assert read_connections(2**22 + 7) is None


def test_a_reader_that_connects_out_is_reported_once_linked_to_its_session(
    children, server, weights
):
    """A child reads a weights file then connects: one event, right port, linked session."""
    child = children()
    child.ask(f"read {weights}")
    watcher = EgressWatcher(device=DEVICE, new_uid=iter(map(str, range(100))).__next__)
    actor = _actor(child.pid)
    assert watcher.watch("session-1", child.pid, actor=actor, now_ms=1_000)
    assert watcher.poll(1_000) == []
    child.ask(f"connect {_port(server)}")
    (obs,) = watcher.poll(2_000)
    event = obs.event
    assert event.session_uid == "session-1"
    assert event.activity is NetworkActivityType.OPEN
    assert event.dst_endpoint.ip == "127.0.0.1"
    assert event.dst_endpoint.port == _port(server)
    assert event.src_endpoint.port == obs.connection.local_port
    assert event.actor == actor
    assert event.device == DEVICE
    assert event.time == 2_000
    assert event.severity is Severity.INFORMATIONAL
    assert obs.connection.loopback
    assert obs.connection.direction is Direction.OUTBOUND
    assert not obs.related
    assert watcher.poll(3_000) == []  # the same endpoint is reported once per session
    assert watcher.stats().endpoints_reported == 1


def test_the_grace_period_keeps_watching_after_close_then_ends(children, server, weights):
    """After release, new endpoints are still reported until the grace period has passed."""
    child = children()
    child.ask(f"read {weights}")
    watcher = EgressWatcher(device=DEVICE, grace_ms=60_000)
    watcher.watch("s", child.pid, actor=_actor(child.pid), now_ms=0)
    watcher.release("s", now_ms=1_000)
    child.ask(f"connect {_port(server)}")
    assert len(watcher.poll(30_000)) == 1
    assert len(watcher) == 1
    assert watcher.poll(61_001) == []
    assert len(watcher) == 0


def test_a_session_ends_a_grace_period_after_its_process_is_gone(children):
    """A lost close event cannot keep a session: it ends once the process has been gone long."""
    child = children()
    watcher = EgressWatcher(device=DEVICE, grace_ms=10_000)
    watcher.watch("s", child.pid, actor=_actor(child.pid), now_ms=0)
    child.close()
    watcher.poll(1_000)
    assert len(watcher) == 1
    watcher.poll(11_001)
    assert len(watcher) == 0


def test_a_pipe_peer_that_connects_is_reported_as_related(children, server, weights):
    """`reader | sender`: the sender holds the pipe's other end; its connection is reported."""
    code = (
        f"import sys; open({str(weights)!r}, 'rb').read(); "
        f"print('connect {_port(server)}', flush=True); sys.stdin.read()"
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert reader.stdout is not None
        sender = children(stdin=reader.stdout.fileno())
        reader.stdout.close()  # the test itself must not hold the pipe
        assert sender.proc.stdout is not None
        assert sender.proc.stdout.readline().strip() == "connected"
        watcher = EgressWatcher(device=DEVICE)
        watcher.watch("s", reader.pid, actor=_actor(reader.pid), now_ms=0)
        observations = watcher.poll(1_000)
    finally:
        reader.kill()
        reader.communicate(timeout=30)
    assert [(o.connection.pid, o.event.dst_endpoint.port, o.related) for o in observations] == [
        (sender.pid, _port(server), True)
    ]
    event = observations[0].event
    assert event.session_uid == "s"
    assert event.actor.process is not None
    assert event.actor.process.pid == sender.pid
    assert event.actor.process.attribution is Attribution.PARTIAL
    assert event.actor.process.exe == str(Path(sys.executable).resolve())


def test_a_descendant_that_connects_is_reported_as_related(children, server, weights):
    """A child the reader spawns (rsync runs ssh) is watched with it."""
    reader = children()
    reader.ask(f"read {weights}")
    watcher = EgressWatcher(device=DEVICE)
    watcher.watch("s", reader.pid, actor=_actor(reader.pid), now_ms=0)
    spawned = int(reader.ask(f"spawn {_port(server)}"))
    conn, _ = server.accept()
    try:
        deadline = time.monotonic() + 30
        found: list[EgressObservation] = []
        now = 0
        while not found and time.monotonic() < deadline:
            now += 6_000  # past rescan_ms, so every poll looks for relatives
            found = [o for o in watcher.poll(now) if o.related]
        assert [(o.connection.pid, o.event.dst_endpoint.port) for o in found] == [
            (spawned, _port(server))
        ]
    finally:
        conn.close()


def test_listening_and_inbound_connections_are_reported(children, weights):
    """A reader that serves (listens, accepts) yields a LISTEN and an inbound event."""
    child = children()
    child.ask(f"read {weights}")
    watcher = EgressWatcher(device=DEVICE)
    watcher.watch("s", child.pid, actor=_actor(child.pid), now_ms=0)
    port = int(child.ask("listen"))
    (listen,) = watcher.poll(1_000)
    assert listen.event.activity is NetworkActivityType.LISTEN
    assert listen.connection.direction is Direction.LISTEN
    assert listen.event.dst_endpoint.port == port
    puller = socket.create_connection(("127.0.0.1", port))
    try:
        child.ask("accept")
        (inbound,) = watcher.poll(2_000)
        assert inbound.connection.direction is Direction.INBOUND
        assert inbound.event.src_endpoint.port == _port(puller)
        assert inbound.event.dst_endpoint.port == port
    finally:
        puller.close()


def test_bounds_are_counted_not_silent(children):
    """Past max_sessions a watch is refused; past max_endpoints an endpoint is dropped."""
    child = children()
    watcher = EgressWatcher(device=DEVICE, max_sessions=1, max_endpoints=1)
    assert watcher.watch("a", child.pid, actor=_actor(child.pid), now_ms=0)
    assert watcher.watch("a", child.pid, actor=_actor(child.pid), now_ms=0)  # same session
    assert not watcher.watch("b", child.pid, actor=_actor(child.pid), now_ms=0)
    with socket.socket() as s1, socket.socket() as s2:
        for s in (s1, s2):
            s.bind(("127.0.0.1", 0))
            s.listen()
            child.ask(f"connect {_port(s)}")
        assert len(watcher.poll(1_000)) == 1
    stats = watcher.stats()
    assert (stats.sessions_refused, stats.endpoints_dropped, stats.sessions) == (1, 1, 1)


def test_loopback_can_be_left_out(children, server):
    """With include_loopback=False a connection to 127.0.0.1 is not reported."""
    child = children()
    watcher = EgressWatcher(device=DEVICE, include_loopback=False)
    watcher.watch("s", child.pid, actor=_actor(child.pid), now_ms=0)
    child.ask(f"connect {_port(server)}")
    assert watcher.poll(1_000) == []


def test_run_polls_until_stopped_and_survives_a_failing_sink(children, server):
    """The polling thread hands observations to the sink; a sink error is counted, not fatal.

    The first observation goes to a sink that raises: it is counted and the loop goes on to
    deliver the next endpoint.
    """
    child = children()
    watcher = EgressWatcher(device=DEVICE)
    watcher.watch("s", child.pid, actor=_actor(child.pid), now_ms=0)
    got: list[EgressObservation] = []
    calls = iter(range(1_000))

    def sink(observation: EgressObservation) -> None:
        if next(calls) == 0:
            raise RuntimeError("spool full")
        got.append(observation)

    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(sink, stop), kwargs={"interval_s": 0.05})
    thread.start()
    try:
        child.ask(f"connect {_port(server)}")
        deadline = time.monotonic() + 30
        while watcher.stats().sink_errors == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            second = _port(other)
            child.ask(f"connect {second}")
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert watcher.stats().sink_errors == 1
    assert [o.event.dst_endpoint.port for o in got] == [second]
    assert isinstance(got[0].connection, Connection)
    assert watcher.stats().endpoints_reported == 2
