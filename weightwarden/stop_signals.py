"""SIGTERM and SIGINT as a stop request that a service's main flow waits for.

A Python signal handler runs on the main thread between two bytecodes, possibly while that
thread holds a lock: the logger's, for one. A handler that logs can then wait forever for a
lock its own thread holds. It happened: a collector worker given SIGTERM twice in quick
succession (its parent killed) blocked inside its second handler's log call and never
exited. So the handler here only notes which signal came and sets an event; whoever waits
on the event logs.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["StopSignals"]


class StopSignals:
    """While entered, SIGTERM and SIGINT set :attr:`event` (and nothing else happens).

    Attributes:
        event: Set by the first signal; a service's main loop waits on it.
        received: The first signal's name (``"SIGTERM"``), or None before any.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what signal.signal returned
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        self.event.set()
