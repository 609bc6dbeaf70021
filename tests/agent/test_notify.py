"""systemd notifications, received on a real AF_UNIX datagram socket as systemd would."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.notify import SystemdNotifier

if TYPE_CHECKING:
    from collections.abc import Iterator


def _receive(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    return sock.recv(4096)


def _nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


@pytest.fixture
def path_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a path (short: sun_path holds 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="ww-notify-")
    path = str(Path(folder) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace, named as systemd names it: ``@name``."""
    name = f"ww-notify-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield sock, "@" + name
    sock.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_each_notification_arrives_as_one_datagram(
    which: str, request: pytest.FixtureRequest
) -> None:
    """READY (with its status), WATCHDOG, STATUS and STOPPING reach the socket in order."""
    sock, address = request.getfixturevalue(which)
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.address == address
    notifier.ready("sensor fanotify; attribution full")
    notifier.watchdog()
    notifier.status("sealing 3 checkpoints")
    notifier.stopping()
    assert _receive(sock) == b"READY=1\nSTATUS=sensor fanotify; attribution full"
    assert _receive(sock) == b"WATCHDOG=1"
    assert _receive(sock) == b"STATUS=sealing 3 checkpoints"
    assert _receive(sock) == b"STOPPING=1"


def test_a_status_cannot_add_assignments_of_its_own(
    path_socket: tuple[socket.socket, str],
) -> None:
    """A newline in a status is flattened: it must not smuggle in READY=1 or MAINPID=."""
    sock, address = path_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
    notifier.status("probe failed:\nMAINPID=1\r\nREADY=1")
    message = _receive(sock)
    assert message.count(b"\n") == 0
    assert message.startswith(b"STATUS=probe failed:")
    notifier.ready("line one\nline two")
    assert _receive(sock) == b"READY=1\nSTATUS=line one line two"


def test_without_notify_socket_every_call_is_a_no_op(
    path_socket: tuple[socket.socket, str],
) -> None:
    """Run by hand (no NOTIFY_SOCKET, or an empty one): nothing is sent and nothing fails."""
    sock, _address = path_socket
    for environ in ({}, {"NOTIFY_SOCKET": ""}):
        notifier = SystemdNotifier.from_environ(environ)
        assert notifier.address is None
        notifier.ready("up")
        notifier.watchdog()
        notifier.status("fine")
        notifier.stopping()
    assert _nothing_waiting(sock)


def test_a_notify_socket_nobody_listens_on_does_not_stop_the_agent(tmp_path: Path) -> None:
    """A vanished socket is not a reason to stop watching: the send fails quietly, returns False."""
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.ready("up") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    abstract = SystemdNotifier.from_environ({"NOTIFY_SOCKET": f"@ww-absent-{os.getpid()}-x"})
    assert abstract.status("x") is False


def test_a_delivered_notification_returns_true(path_socket: tuple[socket.socket, str]) -> None:
    """Each call says whether systemd got the message."""
    sock, address = path_socket
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.watchdog() is True
    assert _receive(sock) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("usec", "interval"),
    [
        ("30000000", 15.0),
        ("1000000", 0.5),
        ("1", 0.0000005),
        ("0", None),
        ("", None),
        ("-5", None),
        ("30s", None),
        ("3e7", None),
        (" 30000000", None),
    ],
)
def test_the_watchdog_interval_is_half_of_watchdog_usec(usec: str, interval: float | None) -> None:
    """Keep-alives go out at half the timeout systemd set; a zero or malformed value means none."""
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval == interval


def test_no_watchdog_usec_means_no_watchdog() -> None:
    """Without WATCHDOG_USEC systemd expects no keep-alives."""
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@x"}).watchdog_interval is None
    assert SystemdNotifier.from_environ({}).watchdog_interval is None
