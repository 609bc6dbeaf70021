"""What a file sensor hands on: one `SensorRecord` per observed file event.

A sensor only observes. It does not attribute (pid to user, exe, job), does not decide
what is suspicious, and never blocks the process that touched the file. It hands each
record to a `RecordSink`: a callback, or a `RecordQueue` when the consumer runs on
another thread. Both paths are bounded and loud: the queue counts what it could not hold
and puts an OVERFLOW record where the gap is, so a consumer always learns that it missed
something.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["RecordQueue", "RecordSink", "SensorEventKind", "SensorRecord", "SensorSource"]


class SensorEventKind(enum.Enum):
    """What happened to the file (or, for OVERFLOW and UNWATCHED, to the sensor)."""

    OPEN = "open"
    """The file was opened. For a reader that maps the file (safetensors), this and
    CLOSE_NOWRITE are the only events: page-fault reads produce no access event."""
    CLOSE_WRITE = "close_write"
    """A descriptor opened for writing was closed: the content may have changed."""
    CLOSE_NOWRITE = "close_nowrite"
    """A read-only descriptor was closed."""
    CREATE = "create"
    """A name was created (file, directory, link) under a watched directory."""
    DELETE = "delete"
    """A name was removed."""
    RENAME = "rename"
    """`path` was renamed to `other_path`; both names are known."""
    MOVED_FROM = "moved_from"
    """`path` was renamed away and the new name is unknown (it left the roots, or the
    sensor could not resolve it)."""
    MOVED_TO = "moved_to"
    """`path` appeared by rename and the old name is unknown (it came from outside the
    roots, or the sensor could not resolve it)."""
    OVERFLOW = "overflow"
    """Events were lost: the kernel queue or the record queue overflowed. `count` says how
    many overflows (kernel) or dropped records (queue) this source has had in total."""
    UNWATCHED = "unwatched"
    """`path` (a directory under the roots) is not or no longer watched, so events under
    it are not seen: the inotify watch limit was reached, or a root was removed."""


class SensorSource(enum.Enum):
    """Which mechanism produced a record."""

    FANOTIFY = "fanotify"
    INOTIFY = "inotify"
    QUEUE = "queue"
    """The record queue itself (only OVERFLOW records: records it could not hold)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorRecord:
    """One file event as a sensor saw it, before any attribution.

    Attributes:
        kind: What happened.
        source: Which sensor produced it.
        monotonic: When the sensor read the event, from the clock it was given (seconds,
            monotonic). The kernel does not timestamp these events; this is read time.
        path: Absolute path of the file as the sensor resolved it, symlinks resolved;
            None only for OVERFLOW records that concern no particular file.
        other_path: For RENAME, the new name (``path`` is the old one). For OPEN and
            CLOSE_* (fanotify), the name the file was opened through when that is a hard
            link outside the roots (``path`` is then the weight file's name).
        pid: Process id of the actor (fanotify); None where unknown (inotify, overflow).
            The process may already have exited when the record is read.
        is_dir: The object is a directory.
        inode: Inode number, read from the event's own descriptor (fanotify open/close).
        device: Device number (``st_dev``) read the same way.
        size: File size in bytes when the event was read (fanotify open/close).
        count: For OVERFLOW, the cumulative number of overflows (kernel) or of dropped
            records (queue) for this source; zero otherwise.
    """

    kind: SensorEventKind
    source: SensorSource
    monotonic: float
    path: Path | None
    other_path: Path | None = None
    pid: int | None = None
    is_dir: bool = False
    inode: int | None = None
    device: int | None = None
    size: int | None = None
    count: int = 0


class RecordSink(Protocol):
    """Receives records on the sensor's reader thread; must return quickly.

    An exception raised by a sink is counted and logged by the sensor and does not stop it.
    A sink that blocks stalls the reader, and the kernel queue overflows (reported).
    """

    def __call__(self, record: SensorRecord, /) -> None:
        """Take one record."""


class RecordQueue:
    """A bounded FIFO between a sensor's reader thread and a consumer thread.

    Use an instance as the sensor's sink. ``put`` never blocks: when the queue is full the
    record is dropped and counted, and an OVERFLOW record (source QUEUE, ``count`` =
    records dropped so far) takes its place in the stream: before the next record that
    fits, or as soon as the consumer has drained what was held. The consumer thus sees
    each gap where it happened.
    """

    def __init__(self, *, maxsize: int, clock: Callable[[], float]) -> None:
        if maxsize < 2:  # noqa: PLR2004 - room for one record and its overflow marker
            raise ValueError("a RecordQueue needs maxsize >= 2")
        self._maxsize = maxsize
        self._clock = clock
        self._items: deque[SensorRecord] = deque()
        self._ready = threading.Condition()
        self._dropped = 0
        self._gap = False

    def __call__(self, record: SensorRecord, /) -> None:
        """Add a record without blocking, or count it as dropped."""
        with self._ready:
            free = self._maxsize - len(self._items)
            if self._gap:
                if free >= 2:  # noqa: PLR2004 - the marker and the record
                    self._items.append(self._marker())
                    self._gap = False
                    free -= 1
                elif free == 1:
                    # Only the marker fits: the record becomes part of the gap it reports.
                    self._dropped += 1
                    self._items.append(self._marker())
                    self._gap = False
                    self._ready.notify()
                    return
            if free <= 0:
                self._dropped += 1
                self._gap = True
                return
            self._items.append(record)
            self._ready.notify()

    def _marker(self) -> SensorRecord:
        return SensorRecord(
            kind=SensorEventKind.OVERFLOW,
            source=SensorSource.QUEUE,
            monotonic=self._clock(),
            path=None,
            count=self._dropped,
        )

    def get(self, timeout: float | None = None) -> SensorRecord | None:
        """Return the oldest record, waiting up to ``timeout`` seconds; None on timeout."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._items) or self._gap, timeout):
                return None
            if self._items:
                return self._items.popleft()
            # Drained, and records were dropped after the last one held: report the gap now.
            self._gap = False
            return self._marker()

    @property
    def dropped(self) -> int:
        """How many records did not fit, since the queue was made."""
        return self._dropped

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
