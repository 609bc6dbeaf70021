"""systemd notifications: READY, WATCHDOG, STATUS and STOPPING over ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same
way by hand. The environment is read once, by :meth:`SystemdNotifier.from_environ`.

Sending is best effort, as with ``sd_notify(3)``: a socket that cannot be reached makes a
call return False, never raise, so a shutdown still drains the spool and a missed
keep-alive is left for systemd's watchdog to judge. A status is one line: line breaks in it
become spaces, so it cannot add assignments (``READY=1``, ``MAINPID=``) of its own.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["SystemdNotifier"]


@dataclass(frozen=True, slots=True)
class SystemdNotifier:
    """Sends sd_notify datagrams; ``address`` None means not running under systemd."""

    address: str | None
    watchdog_interval: float | None
    """Half of ``WatchdogSec`` in seconds, or None when systemd set no watchdog."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        """Read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec = environ.get("WATCHDOG_USEC", "")
        interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        return cls(address, interval)

    def _send(self, message: str) -> bool:
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(errors="replace"), target)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        """Tell systemd start-up is complete; True if the message was delivered."""
        return self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        """Keep-alive; systemd kills and restarts the unit if these stop."""
        return self._send("WATCHDOG=1")

    def status(self, status: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self._send(f"STATUS={_one_line(status)}")

    def stopping(self) -> bool:
        """Tell systemd the daemon is shutting down."""
        return self._send("STOPPING=1")


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
