"""The reader thread both file sensors share: poll, stop promptly, fail loudly.

One thread polls the sensor's kernel descriptors and an eventfd that `ReaderLoop.stop`
writes to, so stopping never waits for a file event. Two error boundaries:

* a sink that raises is counted and logged by `Dispatch`, and the loop goes on;
* anything that goes wrong reading or decoding the kernel descriptors ends the loop with
  the exception kept in `ReaderLoop.failure`, so the daemon can exit non-zero and let
  systemd restart it (DESIGN.md decision 10) rather than run blind.
"""

from __future__ import annotations

import os
import select
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from agent.sensors._record import RecordSink, SensorRecord

__all__ = ["Dispatch", "LoopSensor", "ReaderLoop", "SensorStats"]

_log = get_logger("agent.sensors")


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorStats:
    """Counters of one sensor since it started; a snapshot, safe to keep.

    Attributes:
        records: Records handed to the sink (including OVERFLOW and UNWATCHED).
        filtered: Events on the marked filesystems that were outside the roots (fanotify),
            or opens and closes of directories themselves (inotify), dropped on purpose.
        unresolved: Events whose path could not be resolved (object gone, descriptor
            could not be opened for us); they are counted and not reported as records.
        overflows: Kernel queue overflows, each also reported as an OVERFLOW record.
        sink_errors: Exceptions raised by the sink (logged; the sensor went on).
        rescans: Full rescans of the roots after an overflow (inotify).
        watches: Directories watched now (inotify); 0 for fanotify, which marks filesystems.
        unwatched: Directories that could not be watched (inotify watch limit).
    """

    records: int = 0
    filtered: int = 0
    unresolved: int = 0
    overflows: int = 0
    sink_errors: int = 0
    rescans: int = 0
    watches: int = 0
    unwatched: int = 0


class Dispatch:
    """Hands records to the sink behind an error boundary, and serves self-test waiters."""

    def __init__(self, sink: RecordSink, *, sensor: str) -> None:
        self._sink = sink
        self._sensor = sensor
        self._lock = threading.Lock()
        self._waiters: list[tuple[Callable[[SensorRecord], bool], threading.Event]] = []
        self.records = 0
        self.sink_errors = 0

    def emit(self, record: SensorRecord) -> None:
        """Give one record to the sink; a sink exception is counted and logged, not raised."""
        self.records += 1
        try:
            self._sink(record)
        except Exception:  # noqa: BLE001 - the boundary: a consumer bug must not blind the sensor
            self.sink_errors += 1
            _log.exception("sensor_sink_failed", sensor=self._sensor, kind=record.kind.value)
        if self._waiters:
            with self._lock:
                for predicate, seen in self._waiters:
                    if predicate(record):
                        seen.set()

    def expect(self, predicate: Callable[[SensorRecord], bool]) -> _Expectation:
        """Return a context manager whose event is set when a matching record passes."""
        return _Expectation(self, predicate)

    def _add(self, predicate: Callable[[SensorRecord], bool], seen: threading.Event) -> None:
        with self._lock:
            self._waiters.append((predicate, seen))

    def _remove(self, predicate: Callable[[SensorRecord], bool], seen: threading.Event) -> None:
        with self._lock:
            self._waiters.remove((predicate, seen))


class _Expectation:
    def __init__(self, dispatch: Dispatch, predicate: Callable[[SensorRecord], bool]) -> None:
        self._dispatch = dispatch
        self._predicate = predicate
        self._seen = threading.Event()

    def __enter__(self) -> threading.Event:
        self._dispatch._add(self._predicate, self._seen)  # noqa: SLF001 - a helper of Dispatch
        return self._seen

    def __exit__(self, *_exc: object) -> None:
        self._dispatch._remove(self._predicate, self._seen)  # noqa: SLF001 - as above


class ReaderLoop:
    """A thread that calls ``on_readable(fd)`` whenever one of ``fds`` can be read.

    ``on_readable`` reads and handles what is there; whatever it raises ends the loop and
    is kept as `failure`. The thread is a daemon thread so that a forgotten sensor never
    blocks interpreter exit, but `stop` is the way to end it.
    """

    def __init__(
        self, *, name: str, fds: Sequence[int], on_readable: Callable[[int], None]
    ) -> None:
        self._name = name
        self._fds = tuple(fds)
        self._on_readable = on_readable
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._done = threading.Event()
        self.failure: BaseException | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end and wait up to ``timeout`` seconds; True if it ended."""
        if self._thread.is_alive():
            os.eventfd_write(self._stop_fd, 1)
            self._thread.join(timeout)
        ended = not self._thread.is_alive()
        if ended and self._stop_fd >= 0:
            os.close(self._stop_fd)
            self._stop_fd = -1
        return ended

    def wait(self, timeout: float | None) -> bool:
        """Wait until the loop has ended (stopped or failed); True if it has."""
        return self._done.wait(timeout)

    @property
    def alive(self) -> bool:
        """The thread is running."""
        return self._thread.is_alive()

    def _run(self) -> None:
        poller = select.poll()
        for fd in (*self._fds, self._stop_fd):
            poller.register(fd, select.POLLIN)
        try:
            for fd in self._ready(poller):
                self._on_readable(fd)
        except BaseException as exc:  # noqa: BLE001 - kept as the sensor's failure, not lost
            self.failure = exc
            _log.exception("sensor_failed", sensor=self._name)
        finally:
            self._done.set()

    def _ready(self, poller: select.poll) -> Iterator[int]:
        while True:
            for fd, events in poller.poll():
                if fd == self._stop_fd:
                    return
                if events & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
                    raise OSError(f"{self._name}: descriptor {fd} reported poll events {events:#x}")
                yield fd


class LoopSensor:
    """What both sensors share: a reader loop, its state, and use as a context manager.

    Subclasses set ``self._loop`` in ``start`` and implement ``start`` and ``stop``.
    """

    _loop: ReaderLoop | None

    def start(self) -> None:
        """Start watching (subclasses)."""
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching (subclasses)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """The reader thread is alive."""
        return self._loop is not None and self._loop.alive

    @property
    def failure(self) -> BaseException | None:
        """Why the reader stopped on its own (an error reading the kernel), if it did."""
        return None if self._loop is None else self._loop.failure

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the reader ends (stopped or failed); True if it has ended."""
        return self._loop is None or self._loop.wait(timeout)
