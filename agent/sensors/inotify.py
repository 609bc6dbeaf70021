"""The fallback file sensor: inotify through ctypes, for hosts without CAP_SYS_ADMIN.

Why not watchdog: it silently discards ``IN_Q_OVERFLOW``, and a monitor that loses events
without saying so is worse than none (DESIGN.md decision 1).

What it needs: Linux inotify (2.6.13; ``IN_Q_OVERFLOW`` and the watch limit are as old),
no privileges beyond read and search permission on the roots. One watch per directory
under the roots, added by walking them at start, for ``IN_OPEN``, ``IN_CLOSE_WRITE``,
``IN_CLOSE_NOWRITE``, ``IN_CREATE``, ``IN_DELETE``, ``IN_MOVED_FROM`` and
``IN_MOVED_TO`` (and, on the roots, ``IN_DELETE_SELF`` and ``IN_MOVE_SELF``). A directory
created later gets a watch when its ``IN_CREATE`` is read, before its CREATE record is
emitted; its contents are then listed and reported as CREATE records (a file created in
the gap may be reported twice, once by the listing and once by its own event). A rename
inside the roots is paired by cookie into one RENAME record, and the watched paths below
a renamed directory are updated.

What is lost compared with fanotify:

* **No pid**: records carry ``pid=None``; attribution can only guess from other sources
  (audit, the process cache), and must say so.
* **Per-directory watches**: each costs kernel memory and counts against
  ``fs.inotify.max_user_watches`` (``user.max_inotify_watches`` per user namespace). At
  start a tree that does not fit is an error naming the limit; a directory created later
  that does not fit is reported as an UNWATCHED record and counted, and nothing under it
  is seen. ``max_watches`` sets a lower, self-imposed bound the same way.
* **Gaps after new directories**: opens of files in a new directory before its watch is
  added are not seen (creates are, through the listing).
* **Overflow**: the queue holds ``fs.inotify.max_queued_events`` events (16384 here).
  ``IN_Q_OVERFLOW`` is counted, the roots are rescanned (watches re-added, stale ones
  removed) and an OVERFLOW record is emitted with the running count. What happened during
  the gap is unknown; the sealer's re-verification is what catches changed content.
* Opens and closes of the directories themselves (``ls``) are dropped (counted as
  filtered), as the fanotify sensor never reports them; so are the sensor's own listings.
* Links: inotify reports an open to the watch of the parent directory's inode it was
  opened through. A bind mount of a watched directory (even in another mount namespace)
  shares those inodes, so reads through it are reported under the watched path
  (verified on Linux 6.18); a read through a hard link in an unwatched directory is not
  seen. Symlinked directories inside the roots are not followed.
* A root that is deleted or moved is reported as UNWATCHED; it is not re-acquired.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from agent.sensors._libc import LIBC, check
from agent.sensors._loop import Dispatch, LoopSensor, ReaderLoop, SensorStats
from agent.sensors._record import SensorEventKind, SensorRecord, SensorSource
from agent.sensors._roots import WeightRoots
from weightwarden.errors import UsageError, WeightwardenError
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.sensors._record import RecordSink

__all__ = ["InotifySensor"]

_log = get_logger("agent.sensors.inotify")

# <sys/inotify.h>
IN_OPEN = 0x20
IN_CLOSE_WRITE = 0x08
IN_CLOSE_NOWRITE = 0x10
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (
    IN_OPEN
    | IN_CLOSE_WRITE
    | IN_CLOSE_NOWRITE
    | IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
ROOT_MASK = WATCH_MASK | IN_DELETE_SELF | IN_MOVE_SELF

_EVENT = struct.Struct("=iIII")
_READ_SIZE = 256 * 1024
_PAIR_WAIT_MS = 20  # a rename's MOVED_TO follows its MOVED_FROM within the same syscall
_CONTENT_KINDS = (
    (IN_OPEN, SensorEventKind.OPEN),
    (IN_CLOSE_WRITE, SensorEventKind.CLOSE_WRITE),
    (IN_CLOSE_NOWRITE, SensorEventKind.CLOSE_NOWRITE),
)

_libc = LIBC
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.inotify_rm_watch.restype = ctypes.c_int


class _WatchLimitError(Exception):
    """No watch could be added for a directory: the kernel or self-imposed limit."""


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


class InotifySensor(LoopSensor):
    """Watches opens, closes, creates, deletes and renames under the roots, without pids.

    Same surface as `FanotifySensor`: records go to ``sink`` on the reader thread; use as
    a context manager or call `start` and `stop`.
    """

    def __init__(
        self,
        *,
        roots: Sequence[Path],
        sink: RecordSink,
        clock: Callable[[], float] = time.monotonic,
        proc_root: Path = Path("/proc"),
        max_watches: int | None = None,
    ) -> None:
        """Check the roots; start nothing.

        Args:
            roots: Directories to watch, recursively.
            sink: Receives every record.
            clock: Monotonic clock stamped on records.
            proc_root: Where /proc is (its inotify limits go into error messages).
            max_watches: A bound on watches below the kernel's; None for the kernel's only.

        Raises:
            UsageError: A root is relative, missing or not a directory.
        """
        self._roots = WeightRoots(roots)
        self._root_paths = frozenset(str(p) for p in self._roots.paths)
        self._dispatch = Dispatch(sink, sensor="inotify")
        self._clock = clock
        self._proc_root = proc_root
        self._max_watches = max_watches
        self._fd = -1
        self._wd_path: dict[int, str] = {}
        self._path_wd: dict[str, int] = {}
        self._moves: OrderedDict[int, tuple[str, bool]] = OrderedDict()
        self._loop: ReaderLoop | None = None
        self._filtered = 0
        self._unresolved = 0
        self._overflows = 0
        self._rescans = 0
        self._unwatched = 0

    # lifecycle

    def start(self) -> None:
        """Watch every directory under the roots and start the reader thread.

        Raises:
            WeightwardenError: inotify cannot start, or the roots hold more directories
                than the watch limit allows (the message names the limit to raise).
            UsageError: The sensor was started before.
        """
        if self._loop is not None:
            raise UsageError("this inotify sensor was already started; make a new one")
        try:
            self._fd = check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        except OSError as exc:
            raise WeightwardenError(self._explain_init(exc)) from exc
        try:
            for root in self._roots.paths:
                self._watch_tree(str(root), now=None)
            self._loop = ReaderLoop(name="inotify", fds=[self._fd], on_readable=self._on_readable)
            self._loop.start()
        except _WatchLimitError as exc:
            self._close()
            raise WeightwardenError(self._explain_limit(str(exc))) from exc
        except BaseException:
            self._close()
            raise
        _log.info(
            "sensor_started",
            sensor="inotify",
            roots=sorted(self._root_paths),
            watches=len(self._wd_path),
        )

    def _explain_init(self, exc: OSError) -> str:
        if exc.errno == errno.EMFILE:
            limit = self._read_limit("max_user_instances")
            return (
                f"inotify instance limit reached (fs.inotify.max_user_instances={limit}); "
                "raise it with sysctl, or run fewer inotify users"
            )
        return f"inotify_init1 failed: {exc}"

    def _explain_limit(self, directory: str) -> str:
        if self._max_watches is not None and len(self._wd_path) >= self._max_watches:
            limit = f"the configured max_watches={self._max_watches}"
        else:
            limit = f"fs.inotify.max_user_watches={self._read_limit('max_user_watches')}"
        return (
            f"inotify watch limit reached at {directory} after {len(self._wd_path)} "
            f"directories ({limit}); raise the limit (sysctl fs.inotify.max_user_watches, or "
            "user.max_inotify_watches in a user namespace), watch fewer directories, or "
            "give the agent CAP_SYS_ADMIN to use the fanotify sensor"
        )

    def _read_limit(self, name: str) -> str:
        try:
            path = self._proc_root / "sys" / "fs" / "inotify" / name
            return path.read_text(encoding="ascii").strip()
        except OSError:
            return "unknown"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and close the inotify descriptor.

        Raises:
            WeightwardenError: The reader thread did not end in time.
        """
        loop = self._loop
        if loop is not None and not loop.stop(timeout):
            raise WeightwardenError(f"inotify reader did not stop within {timeout} s")
        self._close()
        if loop is not None:
            _log.info("sensor_stopped", sensor="inotify", stats=str(self.stats()))

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # removes every watch
            self._fd = -1

    # state

    def stats(self) -> SensorStats:
        """A snapshot of the sensor's counters."""
        return SensorStats(
            records=self._dispatch.records,
            filtered=self._filtered,
            unresolved=self._unresolved,
            overflows=self._overflows,
            sink_errors=self._dispatch.sink_errors,
            rescans=self._rescans,
            watches=len(self._wd_path),
            unwatched=self._unwatched,
        )

    def self_test(self, path: Path, timeout: float = 2.0) -> bool:
        """Open ``path`` and wait up to ``timeout`` s for an OPEN record of it.

        Without pids this cannot tell our open from another's; it proves the watch works.

        Raises:
            UsageError: ``path`` is not under a root.
        """
        real = path.resolve()
        if not self._roots.contains(str(real)):
            raise UsageError(f"self-test file {path} is not under a weight root")
        if not self.running:
            return False

        def opened(record: SensorRecord) -> bool:
            return record.kind is SensorEventKind.OPEN and record.path == real

        with self._dispatch.expect(opened) as seen:
            os.close(os.open(real, os.O_RDONLY | os.O_CLOEXEC))
            return seen.wait(timeout)

    # watches

    def _add_watch(self, path: str) -> int | None:
        """Watch one directory; None if it is gone or unreadable.

        Raises:
            _WatchLimitError: The kernel or the configured limit allows no more watches.
        """
        if (
            self._max_watches is not None
            and len(self._wd_path) >= self._max_watches
            and path not in self._path_wd
        ):
            raise _WatchLimitError(path)
        mask = ROOT_MASK if path in self._root_paths else WATCH_MASK
        wd = int(_libc.inotify_add_watch(self._fd, os.fsencode(path), mask))
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSPC:
                raise _WatchLimitError(path)
            if code in {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP}:
                if code == errno.EACCES:
                    _log.warning("sensor_dir_unreadable", sensor="inotify", path=path)
                return None
            raise OSError(code, f"inotify_add_watch {path}: {os.strerror(code)}")
        previous = self._wd_path.get(wd)
        if previous is not None and previous != path:
            self._path_wd.pop(previous, None)  # the same directory, now under a new name
        self._wd_path[wd] = path
        self._path_wd[path] = wd
        return wd

    def _try_watch(self, path: str, now: float | None) -> bool | None:
        """Watch one directory: True if watched, False if gone, None if over the limit.

        Raises:
            _WatchLimitError: Over the limit at start (``now`` is None).
        """
        try:
            return self._add_watch(path) is not None
        except _WatchLimitError:
            if now is None:
                raise
            return None

    def _watch_tree(self, top: str, *, now: float | None, report_entries: bool = False) -> None:
        """Watch ``top`` and every directory below it.

        A directory's watch is in place before its CREATE record is emitted, so a consumer
        that reacts to the record cannot outrun the watch. Without ``now`` (at start) a
        watch limit raises `_WatchLimitError`; with it (while running) each directory that
        does not fit is reported UNWATCHED. With ``report_entries`` (a directory that was
        unwatched until now) each entry found is reported as CREATE, since it was made
        before its watch existed.
        """
        top_watched = self._try_watch(top, now)
        if top_watched is None and now is not None:
            self._report_unwatched(top, now, why="watch limit")
        stack = [top] if top_watched else []
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    found = [(e.path, e.is_dir(follow_symlinks=False)) for e in entries]
            except OSError:
                continue
            for path, is_dir in found:
                watched = self._try_watch(path, now) if is_dir else False
                if report_entries and now is not None:
                    self._emit(SensorEventKind.CREATE, now, path, is_dir=is_dir)
                if watched is None and now is not None:
                    self._report_unwatched(path, now, why="watch limit")
                if watched:
                    stack.append(path)

    def _report_unwatched(self, directory: str, now: float, *, why: str) -> None:
        self._unwatched += 1
        _log.error(
            "sensor_unwatched",
            sensor="inotify",
            path=directory,
            why=why,
            hint=self._explain_limit(directory) if why == "watch limit" else None,
        )
        self._emit(SensorEventKind.UNWATCHED, now, directory, is_dir=True)

    def _unwatch_tree(self, top: str) -> None:
        """Drop the watches of a directory that left the roots (their paths are stale)."""
        prefix = top + "/"
        for wd, path in list(self._wd_path.items()):
            if path == top or path.startswith(prefix):
                self._forget(wd)
                _libc.inotify_rm_watch(self._fd, wd)  # EINVAL if already gone: fine

    def _forget(self, wd: int) -> None:
        path = self._wd_path.pop(wd, None)
        if path is not None and self._path_wd.get(path) == wd:
            del self._path_wd[path]

    def _rename_watched(self, old: str, new: str) -> None:
        prefix = old + "/"
        for wd, path in list(self._wd_path.items()):
            if path == old or path.startswith(prefix):
                renamed = new + path[len(old) :]
                self._forget(wd)
                self._wd_path[wd] = renamed
                self._path_wd[renamed] = wd

    def _rescan(self, now: float) -> None:
        """Rebuild the watches from the tree as it is now (after an overflow)."""
        before = dict(self._wd_path)
        self._wd_path.clear()
        self._path_wd.clear()
        for root in self._roots.paths:
            self._watch_tree(str(root), now=now)
        for wd in before.keys() - self._wd_path.keys():
            _libc.inotify_rm_watch(self._fd, wd)
        self._rescans += 1

    # reader thread

    def _on_readable(self, fd: int) -> None:
        self._drain(fd)
        if self._moves and select.select([fd], [], [], _PAIR_WAIT_MS / 1000)[0]:
            self._drain(fd)
        self._flush_moves(self._clock())

    def _drain(self, fd: int) -> None:
        try:
            buf = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not buf:
            raise OSError(errno.EIO, "the inotify descriptor returned end of file")
        now = self._clock()
        offset = 0
        while offset + _EVENT.size <= len(buf):
            wd, mask, cookie, length = _EVENT.unpack_from(buf, offset)
            start = offset + _EVENT.size
            name = os.fsdecode(buf[start : start + length].split(b"\0", 1)[0])
            offset = start + length
            self._event(wd, mask, cookie, name, now)

    def _event(self, wd: int, mask: int, cookie: int, name: str, now: float) -> None:
        if self._moves and self._interrupts_moves(wd, mask, cookie, name):
            self._flush_moves(now)
        if mask & IN_Q_OVERFLOW:
            self._overflow(now)
            return
        base = self._wd_path.get(wd)
        if mask & IN_IGNORED:
            self._forget(wd)
            if base in self._root_paths:
                self._report_unwatched(base, now, why="root removed")
            return
        if base is None:
            self._unresolved += 1  # queued for a watch we have since dropped
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if mask & IN_MOVE_SELF and base in self._root_paths:
                self._unwatch_tree(base)
                self._report_unwatched(base, now, why="root moved")
            return
        path = _join(base, name) if name else base
        self._path_event(path, mask, cookie, now, is_dir=bool(mask & IN_ISDIR))

    def _interrupts_moves(self, wd: int, mask: int, cookie: int, name: str) -> bool:
        """Whether the pending renames must be reported as names gone before this event.

        One syscall queues a rename's two halves, but events of other processes on other
        CPUs (the sensor's own listing of a new folder, a reader in the tree) can fall
        between them. Only an event about a pending name itself, or about something inside
        it, must not be reported ahead of that name's departure; anything else leaves the
        pair to be completed by its MOVED_TO, or reported as gone at the end of the read.
        """
        if mask & IN_MOVED_TO and cookie in self._moves:
            return False
        if mask & IN_Q_OVERFLOW:
            return True
        if mask & IN_ISDIR and mask & (IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
            return False  # a folder opened or closed (listed): reports nothing
        base = self._wd_path.get(wd)
        if base is None:
            return False
        path = _join(base, name) if name else base
        return any(
            path == gone or path.startswith(gone + "/") for gone, _is_dir in self._moves.values()
        )

    def _path_event(self, path: str, mask: int, cookie: int, now: float, *, is_dir: bool) -> None:
        if mask & (IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
            if is_dir:
                self._filtered += 1
                return
            for bit, kind in _CONTENT_KINDS:
                if mask & bit:
                    self._emit(kind, now, path)
        if mask & IN_CREATE:
            self._new_name(SensorEventKind.CREATE, path, now, is_dir=is_dir, report_entries=True)
        if mask & IN_DELETE:
            self._emit(SensorEventKind.DELETE, now, path, is_dir=is_dir)
        if mask & IN_MOVED_FROM:
            self._moves[cookie] = (path, is_dir)
        if mask & IN_MOVED_TO:
            self._moved_to(cookie, path, now, is_dir=is_dir)

    def _new_name(
        self,
        kind: SensorEventKind,
        path: str,
        now: float,
        *,
        is_dir: bool,
        report_entries: bool,
        old: str | None = None,
    ) -> None:
        """Report a name that appeared; a directory is watched before it is reported."""
        watched: bool | None = False
        if is_dir:
            watched = self._try_watch(path, now)
        if old is None:
            self._emit(kind, now, path, is_dir=is_dir)
        else:
            self._emit(kind, now, old, other=path, is_dir=is_dir)
        if watched is None:
            self._report_unwatched(path, now, why="watch limit")
        elif watched:
            self._watch_tree(path, now=now, report_entries=report_entries)

    def _moved_to(self, cookie: int, path: str, now: float, *, is_dir: bool) -> None:
        pending = self._moves.pop(cookie, None)
        if pending is None:  # moved in from outside the roots
            self._new_name(SensorEventKind.MOVED_TO, path, now, is_dir=is_dir, report_entries=False)
            return
        old = pending[0]
        if not is_dir:
            self._emit(SensorEventKind.RENAME, now, old, other=path)
            return
        was_watched = old in self._path_wd
        self._rename_watched(old, path)
        if was_watched:
            self._emit(SensorEventKind.RENAME, now, old, other=path, is_dir=True)
        else:
            # Renamed before its watch was added: watch it now and report what it holds.
            self._new_name(
                SensorEventKind.RENAME, path, now, is_dir=True, report_entries=True, old=old
            )

    def _flush_moves(self, now: float) -> None:
        """Report renames whose other half never came: the name left the roots."""
        while self._moves:
            _, (path, is_dir) = self._moves.popitem(last=False)
            self._emit(SensorEventKind.MOVED_FROM, now, path, is_dir=is_dir)
            if is_dir:
                self._unwatch_tree(path)

    def _overflow(self, now: float) -> None:
        self._overflows += 1
        _log.warning("sensor_overflow", sensor="inotify", overflows=self._overflows)
        self._flush_moves(now)
        self._rescan(now)
        self._dispatch.emit(
            SensorRecord(
                kind=SensorEventKind.OVERFLOW,
                source=SensorSource.INOTIFY,
                monotonic=now,
                path=None,
                count=self._overflows,
            )
        )

    def _emit(
        self,
        kind: SensorEventKind,
        now: float,
        path: str,
        *,
        other: str | None = None,
        is_dir: bool = False,
    ) -> None:
        self._dispatch.emit(
            SensorRecord(
                kind=kind,
                source=SensorSource.INOTIFY,
                monotonic=now,
                path=Path(path),
                other_path=None if other is None else Path(other),
                is_dir=is_dir,
            )
        )
