"""systemd notifications: READY, WATCHDOG, STATUS and STOPPING over ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same
way by hand. The environment is read once, by :meth:`SystemdNotifier.from_environ`.
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

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)

    def ready(self, status: str) -> None:
        """Tell systemd start-up is complete."""
        self._send(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        """Keep-alive; systemd kills and restarts the unit if these stop."""
        self._send("WATCHDOG=1")

    def status(self, status: str) -> None:
        """A one-line status shown by ``systemctl status``."""
        self._send(f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd the daemon is shutting down."""
        self._send("STOPPING=1")
