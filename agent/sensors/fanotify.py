"""The primary file sensor: fanotify through ctypes, notification events only.

Why not PyPI ``pyfanotify``: it drops events from descendants of the listening process,
which hides exactly the readers a daemon's own tests (and its children) spawn.

Two fanotify groups, both ``FAN_CLASS_NOTIF``:

* **Content group** (descriptor mode). ``FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE``
  on a *filesystem* mark (``FAN_MARK_FILESYSTEM``, Linux 4.20) of every filesystem holding
  a root or mounted under one, so folders created later are covered without new marks.
  Each event carries the actor's pid and a read-only descriptor of the file; the sensor
  ``statx``-es that descriptor (inode, device, size, mount id), resolves the path with
  ``readlink(/proc/self/fd/N)``, and always closes it. The mark sees the whole filesystem,
  so events outside the roots are dropped in the listener and counted (``filtered``). A
  file opened through another mount of the same filesystem (a bind mount, a container's
  view) is resolved through its file handle against our own mount, so renaming the path
  by bind-mounting the weights elsewhere does not hide a read. ``FAN_REPORT_FD_ERROR``
  (Linux 6.13) is used when present, so a descriptor the kernel cannot open for us
  arrives as an event with an error rather than as a failed read. A weight file read
  through a hard link outside the roots is still reported: files under the roots are
  indexed by (device, inode) at start and as events name them, and an event outside the
  roots on a file with more than one link is looked up there (``path`` the weight file,
  ``other_path`` the link it was opened through).
* **Names group** (FID mode, ``FAN_REPORT_DFID_NAME``, Linux 5.9): ``FAN_CREATE |
  FAN_DELETE`` and ``FAN_RENAME`` (Linux 5.17; one event with the old and new names,
  reported as RENAME) or, before 5.17, ``FAN_MOVED_FROM | FAN_MOVED_TO`` (reported
  separately), with ``FAN_ONDIR``, on the same filesystem marks. Events carry a directory
  file handle and a name; the directory is opened with ``open_by_handle_at`` (needs
  ``CAP_DAC_READ_SEARCH``) against a descriptor on that filesystem and read back with
  readlink. A directory that is already gone (``rm -rf``) resolves from a bounded cache of
  directory handles under the roots, filled by a walk at start and kept current on
  creates and renames.

Measured on Linux 6.18 (root): descriptor-mode groups accept inode, mount and filesystem
marks for open/close; directory-entry events need FID mode and a filesystem or inode
mark (a mount mark gives ``EINVAL``); ``FAN_RENAME`` needs ``FAN_REPORT_DFID_NAME``; both
groups start. If the names group cannot start (old kernel, a filesystem without file
handles such as some FUSE or network filesystems, no ``CAP_DAC_READ_SEARCH``) the sensor
runs the content group alone and says so in `FanotifySensor.support`.

Never marked: permission events (``FAN_*_PERM``; a stalled listener would block every
opener, unkillable) and ``FAN_ACCESS`` (15-30 % read-throughput cost, merged anyway, and
never produced by mmap page faults). Consequences to know:

* mmap readers (safetensors) produce only OPEN and CLOSE_NOWRITE; how much was read comes
  from /proc/PID/io and smaps (another module's job).
* The pid may be gone when the event is read (``cat`` of a small file): attribution is not
  done here. Events of the same process on the same file that are still queued merge into
  one event; the sensor emits OPEN before CLOSE_* for a merged event, so repeated
  open/close pairs between two reads count once.
* The kernel queue is bounded (``/proc/sys/fs/fanotify/max_queued_events``, 16384 here).
  An overflow arrives as ``FAN_Q_OVERFLOW`` and is counted and emitted as an OVERFLOW
  record, never dropped silently.
* Filesystems mounted under a root after the sensor started are not marked; restart the
  sensor to cover them.
* Start walks the roots once (one ``stat`` per file, one file handle per directory) for
  the inode index (at most 2^20 files) and the directory cache (at most 65536).
* A filesystem mark sees the whole filesystem: ``filtered`` counts what lay outside the
  roots, and ``unresolved`` includes names in short-lived directories elsewhere on it.
* Paths are as the kernel resolves them now: a file renamed between the event and its
  read shows the new name; a file unlinked meanwhile keeps its last name.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
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

__all__ = ["FanotifySensor", "FanotifySupport", "probe_fanotify"]

_log = get_logger("agent.sensors.fanotify")

# <linux/fanotify.h>
FAN_OPEN = 0x20
FAN_CLOSE_WRITE = 0x08
FAN_CLOSE_NOWRITE = 0x10
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_Q_OVERFLOW = 0x4000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
FAN_REPORT_FD_ERROR = 0x2000

FAN_MARK_ADD = 0x1
FAN_MARK_FILESYSTEM = 0x100

FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = 12

FANOTIFY_METADATA_VERSION = 3
FAN_NOFD = -1

CONTENT_MASK = FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE
NAMES_MASK = FAN_CREATE | FAN_DELETE | FAN_ONDIR
MOVE_MASK = FAN_MOVED_FROM | FAN_MOVED_TO

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_STATX_DONT_SYNC = 0x4000
_STATX_BASIC_STATS = 0x7FF
_STATX_MNT_ID = 0x1000
_MAX_HANDLE_SZ = 128

_METADATA = struct.Struct("=IBBHQii")
_INFO_HEADER = struct.Struct("=BBH")
_HANDLE_HEADER = struct.Struct("=Ii")
_FSID_SIZE = 8
_READ_SIZE = 256 * 1024
_DIR_CACHE_SIZE = 65536
_INODE_INDEX_SIZE = 1 << 20
_DELETED = " (deleted)"

# errno values a descriptor-mode read returns when the kernel could not open the event's
# file for us (before FAN_REPORT_FD_ERROR): one event is lost, the group is fine.
_EVENT_OPEN_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENXIO, errno.ESTALE, errno.ENODEV,
     errno.EMFILE, errno.ENFILE, errno.EOPNOTSUPP, errno.ETXTBSY, errno.EROFS, errno.EINVAL,
     errno.ENOMEM}
)  # fmt: skip

_CONTENT_KINDS = (
    (FAN_OPEN, SensorEventKind.OPEN),
    (FAN_CLOSE_WRITE, SensorEventKind.CLOSE_WRITE),
    (FAN_CLOSE_NOWRITE, SensorEventKind.CLOSE_NOWRITE),
)
_NAME_KINDS = (
    (FAN_CREATE, SensorEventKind.CREATE),
    (FAN_DELETE, SensorEventKind.DELETE),
    (FAN_MOVED_FROM, SensorEventKind.MOVED_FROM),
    (FAN_MOVED_TO, SensorEventKind.MOVED_TO),
)


# --- system calls -----------------------------------------------------------------------

_libc = LIBC
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p
]  # fmt: skip
_libc.fanotify_mark.restype = ctypes.c_int
_libc.name_to_handle_at.argtypes = [
    ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
]  # fmt: skip
_libc.name_to_handle_at.restype = ctypes.c_int
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.open_by_handle_at.restype = ctypes.c_int
_libc.statx.argtypes = [
    ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p
]  # fmt: skip
_libc.statx.restype = ctypes.c_int
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
_libc.statfs.restype = ctypes.c_int


def _fanotify_init(flags: int) -> int:
    event_flags = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC
    return check(_libc.fanotify_init(flags, event_flags), "fanotify_init")


def _mark_filesystem(fd: int, mask: int, path: str) -> None:
    flags = FAN_MARK_ADD | FAN_MARK_FILESYSTEM
    check(_libc.fanotify_mark(fd, flags, mask, _AT_FDCWD, os.fsencode(path)), "fanotify_mark")


def _name_to_handle(dirfd: int, path: str, flags: int) -> bytes:
    """Return a ``struct file_handle`` (header and bytes) for a path or descriptor."""
    buf = ctypes.create_string_buffer(_HANDLE_HEADER.size + _MAX_HANDLE_SZ)
    _HANDLE_HEADER.pack_into(buf, 0, _MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    check(
        _libc.name_to_handle_at(dirfd, os.fsencode(path), buf, ctypes.byref(mount_id), flags),
        "name_to_handle_at",
    )
    size, _ = _HANDLE_HEADER.unpack_from(buf, 0)
    return buf.raw[: _HANDLE_HEADER.size + size]


def _open_by_handle(mount_fd: int, handle: bytes, flags: int) -> int:
    return check(_libc.open_by_handle_at(mount_fd, handle, flags), "open_by_handle_at")


@dataclass(frozen=True, slots=True)
class _Stat:
    dev: int
    ino: int
    size: int
    nlink: int
    mnt_id: int | None


def _statx(dirfd: int, path: str, buf: ctypes.Array[ctypes.c_char]) -> _Stat:
    flags = _AT_STATX_DONT_SYNC | (_AT_EMPTY_PATH if not path else 0)
    check(
        _libc.statx(dirfd, os.fsencode(path), flags, _STATX_BASIC_STATS | _STATX_MNT_ID, buf),
        "statx",
    )
    (mask,) = struct.unpack_from("=I", buf, 0)
    (nlink,) = struct.unpack_from("=I", buf, 16)
    ino, size = struct.unpack_from("=QQ", buf, 32)
    major, minor = struct.unpack_from("=II", buf, 136)
    (mnt_id,) = struct.unpack_from("=Q", buf, 144)
    return _Stat(
        dev=os.makedev(major, minor),
        ino=ino,
        size=size,
        nlink=nlink,
        mnt_id=mnt_id if mask & _STATX_MNT_ID else None,
    )


def _fsid(path: str) -> bytes:
    """The 8 raw bytes of ``statfs(path).f_fsid``, as fanotify reports them in events."""
    if ctypes.sizeof(ctypes.c_long) != 8:  # noqa: PLR2004 - f_fsid offset assumes 64-bit
        raise WeightwardenError("the fanotify sensor supports 64-bit Linux only")
    buf = ctypes.create_string_buffer(256)
    check(_libc.statfs(os.fsencode(path), buf), "statfs")
    return buf.raw[56 : 56 + _FSID_SIZE]


# --- probing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FanotifySupport:
    """What the fanotify sensor can do on this machine, for these roots.

    Attributes:
        usable: Opens and closes under every root can be watched, with the actor's pid.
        names: Creates, deletes and renames can be watched too (FID group).
        rename_pairs: A rename arrives as one event with both names (``FAN_RENAME``).
        reason: What is missing and what to do about it; a summary when all works.
    """

    usable: bool
    names: bool
    rename_pairs: bool
    reason: str


def _init_content_group(paths: Sequence[str]) -> tuple[int, bool]:
    """Start the descriptor-mode group and mark ``paths``; return (fd, fd_error_mode)."""
    base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
    try:
        fd = _fanotify_init(base | FAN_REPORT_FD_ERROR)
        fd_errors = True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = _fanotify_init(base)
        fd_errors = False
    try:
        for path in paths:
            _mark_filesystem(fd, CONTENT_MASK, path)
    except BaseException:
        os.close(fd)
        raise
    return fd, fd_errors


def _init_names_group(paths: Sequence[str]) -> tuple[int, bool]:
    """Start the FID-mode group, mark ``paths`` and check that handles open.

    Returns:
        The group's descriptor, and whether ``FAN_RENAME`` is marked (else moves are).
    """
    fd = _fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME)
    try:
        rename = True
        for path in paths:
            try:
                _mark_filesystem(fd, NAMES_MASK | FAN_RENAME, path)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                rename = False
        if not rename:
            for path in paths:
                _mark_filesystem(fd, NAMES_MASK | MOVE_MASK, path)
        for path in paths:
            # open_by_handle_at needs CAP_DAC_READ_SEARCH and a filesystem that decodes.
            handle = _name_to_handle(_AT_FDCWD, path, 0)
            mount_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.close(_open_by_handle(mount_fd, handle, os.O_PATH | os.O_CLOEXEC))
            finally:
                os.close(mount_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, rename


_NEEDS_SYS_ADMIN = "fanotify needs CAP_SYS_ADMIN: run the agent as root, or use the inotify sensor"
_NEEDS_READ_SEARCH = "opening file handles needs CAP_DAC_READ_SEARCH: grant it to the agent"
_NAMES = "create/delete/rename (FID mode, Linux 5.9+)"


def _explain(exc: OSError, what: str, needs: str = _NEEDS_SYS_ADMIN) -> str:
    if exc.errno == errno.EPERM:
        return f"{what}: permission denied; {needs}"
    if exc.errno == errno.ENOSYS:
        return f"{what}: this kernel has no fanotify (CONFIG_FANOTIFY); use the inotify sensor"
    if exc.errno in {errno.ENODEV, errno.EOPNOTSUPP, errno.EXDEV}:
        return f"{what}: the filesystem does not support this fanotify mark ({exc})"
    if exc.errno == errno.EINVAL:
        return f"{what}: this kernel lacks a needed fanotify feature ({exc})"
    return f"{what}: {exc}"


def _explain_names(exc: OSError) -> str:
    # fanotify_init already worked for the content group, so EPERM here is the handle.
    return _explain(exc, _NAMES, _NEEDS_READ_SEARCH)


def _marked_paths(roots: WeightRoots, proc_root: Path) -> tuple[str, ...]:
    """Roots, plus every mount point under a root (its filesystem needs its own mark)."""
    paths = [str(p) for p in roots.paths]
    try:
        mountinfo = (proc_root / "self" / "mountinfo").read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightwardenError(
            f"cannot read {proc_root}/self/mountinfo ({exc.strerror}); is /proc mounted?"
        ) from exc
    paths.extend(p for p in roots.mount_points_below(mountinfo) if p not in paths)
    return tuple(paths)


def probe_fanotify(roots: Sequence[Path], *, proc_root: Path = Path("/proc")) -> FanotifySupport:
    """Say whether the fanotify sensor can run here for ``roots``, and why not.

    Tries what `FanotifySensor.start` does (both groups, the marks, opening a handle) and
    undoes it; reads no events.

    Raises:
        UsageError: A root is relative, missing or not a directory.
    """
    marked = _marked_paths(WeightRoots(roots), proc_root)
    try:
        fd, _ = _init_content_group(marked)
    except OSError as exc:
        return FanotifySupport(
            usable=False, names=False, rename_pairs=False, reason=_explain(exc, "open/close")
        )
    os.close(fd)
    try:
        fd, rename = _init_names_group(marked)
    except OSError as exc:
        reason = _explain_names(exc)
        return FanotifySupport(usable=True, names=False, rename_pairs=False, reason=reason)
    os.close(fd)
    reason = "open/close with pid; create/delete/" + (
        "rename (FAN_RENAME)" if rename else "moves (FAN_MOVED_FROM/TO, no FAN_RENAME)"
    )
    return FanotifySupport(usable=True, names=True, rename_pairs=rename, reason=reason)


# --- event decoding -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    mask: int
    fd: int
    pid: int
    info: bytes


@dataclass(frozen=True, slots=True)
class _DirName:
    fsid: bytes
    handle: bytes
    name: str


def _events(buf: bytes) -> list[_Event]:
    """Split a read of a fanotify descriptor into events (no I/O)."""
    events: list[_Event] = []
    offset = 0
    while offset + _METADATA.size <= len(buf):
        length, version, _, meta_len, mask, fd, pid = _METADATA.unpack_from(buf, offset)
        if version != FANOTIFY_METADATA_VERSION:
            raise WeightwardenError(
                f"fanotify metadata version {version}, expected {FANOTIFY_METADATA_VERSION}: "
                "this kernel speaks a different fanotify ABI"
            )
        if length < meta_len or offset + length > len(buf):
            raise WeightwardenError(f"malformed fanotify event (length {length})")
        events.append(_Event(mask, fd, pid, buf[offset + meta_len : offset + length]))
        offset += length
    return events


def _dir_names(info: bytes) -> dict[int, _DirName]:
    """The directory-handle-and-name records of one FID-mode event, by info type."""
    found: dict[int, _DirName] = {}
    offset = 0
    while offset + _INFO_HEADER.size <= len(info):
        info_type, _, length = _INFO_HEADER.unpack_from(info, offset)
        if length < _INFO_HEADER.size or offset + length > len(info):
            raise WeightwardenError(f"malformed fanotify info record (length {length})")
        if info_type in {
            FAN_EVENT_INFO_TYPE_DFID_NAME,
            FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
            FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
        }:
            start = offset + _INFO_HEADER.size
            fsid = info[start : start + _FSID_SIZE]
            handle_at = start + _FSID_SIZE
            size, _ = _HANDLE_HEADER.unpack_from(info, handle_at)
            name_at = handle_at + _HANDLE_HEADER.size + size
            name = info[name_at : offset + length].split(b"\0", 1)[0]
            found[info_type] = _DirName(fsid, info[handle_at:name_at], os.fsdecode(name))
        offset += length
    return found


def _fd_path(fd_dir: str, fd: int) -> str:
    """The path the kernel gives for one of our descriptors (readlink /proc/self/fd/N)."""
    return os.readlink(f"{fd_dir}/{fd}")  # noqa: PTH115 - once per event; str, no Path objects


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


# --- the sensor ---------------------------------------------------------------------------


class FanotifySensor(LoopSensor):
    """Watches opens, closes, creates, deletes and renames under the weight roots.

    Records go to ``sink`` on the sensor's reader thread. Use as a context manager, or
    call `start` and `stop`. Needs CAP_SYS_ADMIN (and CAP_DAC_READ_SEARCH for names); see
    `probe_fanotify`.
    """

    def __init__(
        self,
        *,
        roots: Sequence[Path],
        sink: RecordSink,
        clock: Callable[[], float] = time.monotonic,
        proc_root: Path = Path("/proc"),
    ) -> None:
        """Check the roots; start nothing.

        Raises:
            UsageError: A root is relative, missing or not a directory.
        """
        self._roots = WeightRoots(roots)
        self._dispatch = Dispatch(sink, sensor="fanotify")
        self._clock = clock
        self._proc_root = proc_root
        self._fd_dir = str(proc_root / "self" / "fd")
        self._content_fd = -1
        self._names_fd = -1
        self._fd_errors = False
        self._rename_pairs = False
        self._mounts: set[int] = set()
        self._mount_fds: list[int] = []
        self._mount_fd_by_dev: dict[int, int] = {}
        self._mount_fd_by_fsid: dict[bytes, int] = {}
        self._dirs: OrderedDict[tuple[bytes, bytes], str] = OrderedDict()
        self._inodes: dict[tuple[int, int], str] = {}
        self._statx_buf = ctypes.create_string_buffer(256)
        self._loop: ReaderLoop | None = None
        self._support: FanotifySupport | None = None
        self._filtered = 0
        self._unresolved = 0
        self._overflows = 0

    # lifecycle

    def start(self) -> None:
        """Start both groups and the reader thread.

        Raises:
            WeightwardenError: fanotify cannot watch the roots (no CAP_SYS_ADMIN, no kernel
                support, unsupported filesystem); the message says what to do.
            UsageError: The sensor was started before.
        """
        if self._loop is not None:
            raise UsageError("this fanotify sensor was already started; make a new one")
        marked = _marked_paths(self._roots, self._proc_root)
        try:
            self._content_fd, self._fd_errors = _init_content_group(marked)
        except OSError as exc:
            raise WeightwardenError(_explain(exc, "fanotify open/close")) from exc
        try:
            self._open_mount_fds(marked)
            self._start_names(marked)
            self._walk_roots()
            fds = [fd for fd in (self._content_fd, self._names_fd) if fd >= 0]
            self._loop = ReaderLoop(name="fanotify", fds=fds, on_readable=self._on_readable)
            self._loop.start()
        except BaseException:
            self._close_fds()
            raise
        _log.info(
            "sensor_started",
            sensor="fanotify",
            roots=[str(p) for p in self._roots.paths],
            marked=list(marked),
            support=self.support.reason,
        )

    def _open_mount_fds(self, marked: Sequence[str]) -> None:
        for path in marked:
            try:
                st = _statx(_AT_FDCWD, path, self._statx_buf)
                fsid = _fsid(path)
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise WeightwardenError(f"cannot open marked path {path}: {exc}") from exc
            self._mount_fds.append(fd)
            if st.mnt_id is not None:
                self._mounts.add(st.mnt_id)
            self._mount_fd_by_dev.setdefault(st.dev, fd)
            self._mount_fd_by_fsid.setdefault(fsid, fd)

    def _start_names(self, marked: Sequence[str]) -> None:
        try:
            self._names_fd, self._rename_pairs = _init_names_group(marked)
        except OSError as exc:
            reason = _explain_names(exc)
            self._support = FanotifySupport(
                usable=True, names=False, rename_pairs=False, reason=reason
            )
            _log.warning("sensor_degraded", sensor="fanotify", reason=reason)
            return
        moves = "rename (FAN_RENAME)" if self._rename_pairs else "moves (no FAN_RENAME)"
        self._support = FanotifySupport(
            usable=True,
            names=True,
            rename_pairs=self._rename_pairs,
            reason=f"open/close with pid; create/delete/{moves}",
        )

    def _walk_roots(self) -> None:
        """Index the files under the roots by inode, and remember directory handles.

        The inode index finds reads through hard links outside the roots; the directory
        handles resolve names in directories already deleted when their event is read.
        """
        stack = [str(p) for p in self._roots.paths]
        while stack:
            directory = stack.pop()
            if self._names_fd >= 0 and len(self._dirs) < _DIR_CACHE_SIZE:
                self._remember_dir(directory)
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            self._index_inode(st.st_dev, st.st_ino, entry.path)
            except OSError:
                continue

    def _index_inode(self, dev: int, ino: int, path: str) -> None:
        key = (dev, ino)
        if key in self._inodes or len(self._inodes) < _INODE_INDEX_SIZE:
            self._inodes[key] = path

    def _index_path(self, path: str) -> None:
        with contextlib.suppress(OSError):
            st = os.stat(path, follow_symlinks=False)  # noqa: PTH116 - paths stay str in the sensor
            if stat.S_ISREG(st.st_mode):
                self._index_inode(st.st_dev, st.st_ino, path)

    def _remember_dir(self, path: str) -> None:
        with contextlib.suppress(OSError):
            key = (_fsid(path), _name_to_handle(_AT_FDCWD, path, 0))
            self._cache_dir(key, path)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and close the groups; returns within about ``timeout``.

        Raises:
            WeightwardenError: The reader thread did not end in time (descriptors are then
                left open rather than closed under a running thread).
        """
        loop = self._loop
        if loop is not None and not loop.stop(timeout):
            raise WeightwardenError(f"fanotify reader did not stop within {timeout} s")
        self._close_fds()
        if loop is not None:
            _log.info("sensor_stopped", sensor="fanotify", stats=str(self.stats()))

    def _close_fds(self) -> None:
        for fd in (self._content_fd, self._names_fd, *self._mount_fds):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._content_fd = self._names_fd = -1
        self._mount_fds.clear()
        self._mount_fd_by_dev.clear()
        self._mount_fd_by_fsid.clear()

    # state

    @property
    def support(self) -> FanotifySupport:
        """What this sensor watches, once started (before: nothing)."""
        if self._support is None:
            return FanotifySupport(
                usable=False, names=False, rename_pairs=False, reason="not started"
            )
        return self._support

    def stats(self) -> SensorStats:
        """A snapshot of the sensor's counters."""
        return SensorStats(
            records=self._dispatch.records,
            filtered=self._filtered,
            unresolved=self._unresolved,
            overflows=self._overflows,
            sink_errors=self._dispatch.sink_errors,
        )

    def self_test(self, path: Path, timeout: float = 2.0) -> bool:
        """Open ``path`` and wait up to ``timeout`` s for our own OPEN record of it.

        ``path`` must be a readable regular file under a root. The open is real: the sink
        also receives it, with this process's pid.

        Raises:
            UsageError: ``path`` is not under a root.
        """
        real = path.resolve()
        if not self._roots.contains(str(real)):
            raise UsageError(f"self-test file {path} is not under a weight root")
        if not self.running:
            return False
        pid = os.getpid()

        def ours(record: SensorRecord) -> bool:
            return record.kind is SensorEventKind.OPEN and record.pid == pid and record.path == real

        with self._dispatch.expect(ours) as seen:
            os.close(os.open(real, os.O_RDONLY | os.O_CLOEXEC))
            return seen.wait(timeout)

    # reader thread

    def _on_readable(self, fd: int) -> None:
        if fd == self._content_fd:
            self._read_content(fd)
        else:
            self._read_names(fd)

    def _overflow(self, now: float) -> None:
        self._overflows += 1
        _log.warning("sensor_overflow", sensor="fanotify", overflows=self._overflows)
        self._dispatch.emit(
            SensorRecord(
                kind=SensorEventKind.OVERFLOW,
                source=SensorSource.FANOTIFY,
                monotonic=now,
                path=None,
                count=self._overflows,
            )
        )

    def _read_content(self, fd: int) -> None:
        try:
            buf = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if not self._fd_errors and exc.errno in _EVENT_OPEN_ERRNOS:
                # The kernel could not open one event's file for us; that event is lost.
                self._unresolved += 1
                return
            raise
        if not buf:
            raise OSError(errno.EIO, "the fanotify descriptor returned end of file")
        now = self._clock()
        events = _events(buf)
        done = 0
        try:
            for event in events:
                try:
                    self._content_event(event, now)
                finally:
                    done += 1
                    if event.fd >= 0:
                        os.close(event.fd)
        finally:
            for event in events[done:]:
                if event.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(event.fd)

    def _content_event(self, event: _Event, now: float) -> None:
        if event.mask & FAN_Q_OVERFLOW:
            self._overflow(now)
            return
        if event.fd < 0:  # FAN_REPORT_FD_ERROR: the kernel could not open it for us
            self._unresolved += 1
            return
        try:
            st = _statx(event.fd, "", self._statx_buf)
            path = self._content_path(event.fd, st)
        except OSError:
            self._unresolved += 1
            return
        alias = None
        if self._roots.contains(path):
            self._index_inode(st.dev, st.ino, path)
        elif st.nlink > 1 and (known := self._inodes.get((st.dev, st.ino))) is not None:
            path, alias = known, Path(path)  # a weight file read through a hard link
        else:
            self._filtered += 1
            return
        resolved = Path(path)
        for bit, kind in _CONTENT_KINDS:
            if event.mask & bit:
                self._dispatch.emit(
                    SensorRecord(
                        kind=kind,
                        source=SensorSource.FANOTIFY,
                        monotonic=now,
                        path=resolved,
                        other_path=alias,
                        pid=event.pid,
                        inode=st.ino,
                        device=st.dev,
                        size=st.size,
                    )
                )

    def _content_path(self, fd: int, st: _Stat) -> str:
        """The file's path as seen through our own mounts of its filesystem."""
        path = None
        if st.mnt_id is not None and st.mnt_id not in self._mounts:
            path = self._path_by_handle(fd, st.dev)
        if path is None:
            path = _fd_path(self._fd_dir, fd)
        if st.nlink == 0 and path.endswith(_DELETED):
            path = path[: -len(_DELETED)]
        return path

    def _path_by_handle(self, fd: int, dev: int) -> str | None:
        """Resolve a descriptor opened through a mount we did not mark (bind, container)."""
        mount_fd = self._mount_fd_by_dev.get(dev)
        if mount_fd is None:
            return None
        try:
            handle = _name_to_handle(fd, "", _AT_EMPTY_PATH)
            ours = _open_by_handle(mount_fd, handle, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return _fd_path(self._fd_dir, ours)
        finally:
            os.close(ours)

    def _read_names(self, fd: int) -> None:
        try:
            buf = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if not buf:
            raise OSError(errno.EIO, "the fanotify descriptor returned end of file")
        now = self._clock()
        for event in _events(buf):
            if event.mask & FAN_Q_OVERFLOW:
                self._overflow(now)
            else:
                self._names_event(event, now)

    def _names_event(self, event: _Event, now: float) -> None:
        infos = _dir_names(event.info)
        is_dir = bool(event.mask & FAN_ONDIR)
        if event.mask & FAN_RENAME:
            self._rename_event(event, infos, now, is_dir=is_dir)
            return
        named = infos.get(FAN_EVENT_INFO_TYPE_DFID_NAME)
        path = None if named is None else self._resolve(named)
        if path is None:
            self._unresolved += 1
            return
        if not self._roots.contains(path):
            self._filtered += 1
            return
        for bit, kind in _NAME_KINDS:
            if event.mask & bit:
                self._emit_name(kind, now, path, None, event.pid, is_dir=is_dir)
        if event.mask & (FAN_CREATE | FAN_MOVED_TO):
            if is_dir:
                self._remember_dir(path)
            else:
                self._index_path(path)

    def _rename_event(
        self, event: _Event, infos: dict[int, _DirName], now: float, *, is_dir: bool
    ) -> None:
        old_info = infos.get(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME)
        new_info = infos.get(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)
        old = None if old_info is None else self._resolve(old_info)
        new = None if new_info is None else self._resolve(new_info)
        old_in = old is not None and self._roots.contains(old)
        new_in = new is not None and self._roots.contains(new)
        if not (old_in or new_in):
            if old is None or new is None:
                self._unresolved += 1
            else:
                self._filtered += 1
            return
        if old is not None and new is not None:
            self._emit_name(SensorEventKind.RENAME, now, old, new, event.pid, is_dir=is_dir)
        elif old is not None:
            self._emit_name(SensorEventKind.MOVED_FROM, now, old, None, event.pid, is_dir=is_dir)
        elif new is not None:
            self._emit_name(SensorEventKind.MOVED_TO, now, new, None, event.pid, is_dir=is_dir)
        if is_dir and old is not None:
            self._rename_cached_dirs(old, new if new_in else None)
        if new_in and new is not None:
            if is_dir:
                self._remember_dir(new)
            else:
                self._index_path(new)

    def _emit_name(
        self,
        kind: SensorEventKind,
        now: float,
        path: str,
        other: str | None,
        pid: int,
        *,
        is_dir: bool,
    ) -> None:
        self._dispatch.emit(
            SensorRecord(
                kind=kind,
                source=SensorSource.FANOTIFY,
                monotonic=now,
                path=Path(path),
                other_path=None if other is None else Path(other),
                pid=pid,
                is_dir=is_dir,
            )
        )

    def _resolve(self, named: _DirName) -> str | None:
        """The path of a directory handle plus name; the cache answers for gone directories."""
        key = (named.fsid, named.handle)
        directory = None
        mount_fd = self._mount_fd_by_fsid.get(named.fsid)
        if mount_fd is not None:
            try:
                dir_fd = _open_by_handle(mount_fd, named.handle, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                pass
            else:
                try:
                    directory = _fd_path(self._fd_dir, dir_fd)
                except OSError:
                    directory = None
                finally:
                    os.close(dir_fd)
                if directory is None or directory.endswith(_DELETED):
                    directory = None
                elif self._roots.contains(directory):
                    self._cache_dir(key, directory)
        if directory is None:
            directory = self._dirs.get(key)
        return None if directory is None else _join(directory, named.name)

    def _cache_dir(self, key: tuple[bytes, bytes], path: str) -> None:
        self._dirs[key] = path
        self._dirs.move_to_end(key)
        while len(self._dirs) > _DIR_CACHE_SIZE:
            self._dirs.popitem(last=False)

    def _rename_cached_dirs(self, old: str, new: str | None) -> None:
        """Keep remembered paths right after a directory under a root moved."""
        prefix = old + "/"
        for key, path in list(self._dirs.items()):
            if path == old or path.startswith(prefix):
                if new is None:
                    del self._dirs[key]
                else:
                    self._dirs[key] = new + path[len(old) :]
        for inode, path in list(self._inodes.items()):
            if path.startswith(prefix):
                if new is None:
                    del self._inodes[inode]
                else:
                    self._inodes[inode] = new + path[len(old) :]
