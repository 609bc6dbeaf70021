"""Read a process's identity from ``/proc``: pure parsers over file text, and a thin reader.

The parsers take the bytes or text of one file and raise `ValueError` on malformed input;
they do no I/O. `read_process` is the I/O shell: it opens ``/proc/PID`` once as a directory
and reads every file relative to that descriptor, so a pid that is reaped and reused
mid-read cannot mix two processes (reads through the old descriptor fail instead). The
files whose contents vanish first at exit (``exe``, ``cmdline``, ``environ``) are read
first. A process that disappears is not an error: the snapshot keeps what was read and
says so in ``read_quality`` and ``unread``.

The environment is read only to extract ``SSH_CONNECTION``/``SSH_CLIENT`` and
``SLURM_JOB_ID``; the rest of it (which may hold secrets) is never kept.
"""

from __future__ import annotations

import errno
import functools
import os
import pwd
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from agent.attribution._cgroup import parse_cgroup
from agent.attribution._process_info import (
    Ancestor,
    CgroupIdentity,
    ProcessInfo,
    ReadQuality,
    SshOrigin,
)

__all__ = [
    "PROC",
    "SNAPSHOT_FIELDS",
    "StatFields",
    "StatusFields",
    "boot_offset_s",
    "clock_ticks_per_second",
    "environ_values",
    "lookup_user_name",
    "parse_cmdline",
    "parse_environ",
    "parse_exe_link",
    "parse_loginuid",
    "parse_ssh_origin",
    "parse_stat",
    "parse_status",
    "read_parents",
    "read_process",
    "start_time_to_monotonic",
]

PROC = Path("/proc")
UNSET_LOGIN_UID = 4294967295
"""``(uid_t)-1`` in ``/proc/PID/loginuid``: nobody logged in (a daemon, or no pam_loginuid)."""
PF_KTHREAD = 0x00200000
_DELETED = " (deleted)"
_STAT_STATE, _STAT_PPID, _STAT_FLAGS, _STAT_START = 0, 1, 6, 19  # offsets after "(comm) "
_GONE = (errno.ENOENT, errno.ESRCH)
DEFAULT_MAX_DEPTH = 32
SNAPSHOT_FIELDS = frozenset(
    {"exe", "cmdline", "ssh_origin", "start_time", "uid", "login_uid", "cgroup"}
)
"""The names `ProcessInfo.unread` can hold: each stands for the file it is read from."""

UserNameLookup = Callable[[int], str | None]
_T = TypeVar("_T")
_STATUS_UID = re.compile(r"^Uid:\s+(\d+)\s+(\d+)", re.MULTILINE)
_STATUS_GID = re.compile(r"^Gid:\s+(\d+)\s+(\d+)", re.MULTILINE)
_STATUS_PPID = re.compile(r"^PPid:\s+(\d+)", re.MULTILINE)
_STATUS_NAME = re.compile(r"^Name:\t(.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatFields:
    """The fields of ``/proc/PID/stat`` that attribution needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    start_time: int
    """Field 22: clock ticks after boot at which the process started."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusFields:
    """The fields of ``/proc/PID/status`` that attribution needs."""

    name: str | None
    ppid: int | None
    uid: int
    euid: int
    gid: int | None
    egid: int | None


def parse_stat(text: str) -> StatFields:
    """Parse ``/proc/PID/stat``.

    ``comm`` may contain spaces and parentheses, so it runs from the first ``(`` to the
    *last* ``)``.

    Raises:
        ValueError: the text is not a stat line.
    """
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 1 or close_paren < open_paren:
        raise ValueError("stat line has no (comm)")
    rest = text[close_paren + 2 :].split()
    if len(rest) <= _STAT_START:
        raise ValueError(f"stat line has {len(rest) + 2} fields, need at least 22")
    return StatFields(
        pid=int(text[:open_paren]),
        comm=text[open_paren + 1 : close_paren],
        state=rest[_STAT_STATE],
        ppid=int(rest[_STAT_PPID]),
        flags=int(rest[_STAT_FLAGS]),
        start_time=int(rest[_STAT_START]),
    )


def parse_status(text: str) -> StatusFields:
    """Parse ``/proc/PID/status`` for name, parent and real/effective ids.

    Raises:
        ValueError: the ``Uid:`` line is missing or malformed.
    """
    uids = _STATUS_UID.search(text)
    if uids is None:
        raise ValueError("status has no Uid line with real and effective ids")
    gids = _STATUS_GID.search(text)
    ppid = _STATUS_PPID.search(text)
    name = _STATUS_NAME.search(text)
    return StatusFields(
        name=name[1] if name else None,
        ppid=int(ppid[1]) if ppid else None,
        uid=int(uids[1]),
        euid=int(uids[2]),
        gid=int(gids[1]) if gids else None,
        egid=int(gids[2]) if gids else None,
    )


def parse_environ(data: bytes) -> dict[str, str]:
    """Parse a NUL-separated environment block; undecodable bytes are kept escaped."""
    env: dict[str, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key:
            env[key.decode(errors="surrogateescape")] = value.decode(errors="surrogateescape")
    return env


def environ_values(data: bytes, names: tuple[str, ...]) -> dict[str, str]:
    """Extract only ``names`` from a NUL-separated environment block (the first of each).

    Faster than `parse_environ` on the exec hot path, and keeps nothing else: the rest of
    an environment may hold secrets.
    """
    block = b"\0" + data
    found: dict[str, str] = {}
    for name in names:
        start = block.find(b"\0" + name.encode() + b"=")
        if start < 0:
            continue
        start += len(name) + 2
        end = block.find(b"\0", start)
        found[name] = block[start : end if end >= 0 else len(block)].decode(
            errors="surrogateescape"
        )
    return found


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    """Parse ``/proc/PID/cmdline`` (NUL-terminated argv) into its arguments."""
    if not data:
        return ()
    if data.endswith(b"\0"):
        data = data[:-1]
    return tuple(arg.decode(errors="surrogateescape") for arg in data.split(b"\0"))


def parse_loginuid(text: str) -> int | None:
    """Parse ``/proc/PID/loginuid``; ``None`` means unset (4294967295).

    Raises:
        ValueError: the text is not a number.
    """
    value = int(text.strip())
    return None if value == UNSET_LOGIN_UID else value


def parse_exe_link(target: str) -> tuple[str, bool]:
    """Split the ``/proc/PID/exe`` link into the path and whether the file was deleted."""
    if target.endswith(_DELETED):
        return target[: -len(_DELETED)], True
    return target, False


def parse_ssh_origin(env: Mapping[str, str]) -> SshOrigin | None:
    """Read where an ssh session came from out of ``SSH_CONNECTION`` or ``SSH_CLIENT``.

    ``SSH_CONNECTION`` is ``client_ip client_port server_ip server_port``; the older
    ``SSH_CLIENT`` is ``client_ip client_port server_port``. Malformed values give ``None``.
    """
    connection = env.get("SSH_CONNECTION", "").split()
    if len(connection) == 4:  # noqa: PLR2004 (four documented fields)
        return SshOrigin(
            client_address=connection[0],
            client_port=_port(connection[1]),
            server_address=connection[2],
            server_port=_port(connection[3]),
        )
    client = env.get("SSH_CLIENT", "").split()
    if len(client) == 3:  # noqa: PLR2004 (three documented fields)
        return SshOrigin(
            client_address=client[0],
            client_port=_port(client[1]),
            server_address=None,
            server_port=_port(client[2]),
        )
    return None


_MAX_PORT = 65535
_MAX_JOB_ID_DIGITS = 18  # below 2**63, and far above any Slurm job id


def _port(text: str) -> int | None:
    """Parse a TCP port; anything but 1-5 ASCII digits up to 65535 is malformed (``None``).

    The environment is the process owner's to write: ``str.isdigit`` alone accepts
    ``"²"``, which ``int`` rejects, and an unbounded value would not fit the snapshot's
    wire form; either would let a user make their processes unattributable.
    """
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(_MAX_PORT))):
        return None
    value = int(text)
    return value if value <= _MAX_PORT else None


@functools.lru_cache(maxsize=4096)
def lookup_user_name(uid: int) -> str | None:
    """Return the passwd name of ``uid``, ``None`` when there is none.

    Cached: NSS may go to the network (LDAP, SSSD) and this runs on the exec hot path. A
    user added after a miss stays unnamed until the cache is cleared
    (``lookup_user_name.cache_clear()``); the uid itself is always recorded.
    """
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@functools.cache
def clock_ticks_per_second() -> int:
    """Return ``USER_HZ``, the unit of the start time in ``/proc/PID/stat``."""
    return os.sysconf("SC_CLK_TCK")


def boot_offset_s() -> float:
    """Seconds by which CLOCK_BOOTTIME is ahead of CLOCK_MONOTONIC (time spent suspended)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()


def start_time_to_monotonic(start_time: int, offset_s: float | None = None) -> float:
    """Convert a stat start time (ticks after boot) to ``time.monotonic()`` seconds.

    The result is the start of the tick the process started in, so it is at most one tick
    (usually 10 ms) early.
    """
    offset = boot_offset_s() if offset_s is None else offset_s
    return start_time / clock_ticks_per_second() - offset


# --- the I/O shell ------------------------------------------------------------------------


class _Gone(Exception):  # noqa: N818 (a control-flow signal, not an error the caller sees)
    """The process disappeared while it was being read."""


def _read_file(dir_fd: int, name: str) -> bytes:
    """Read one whole file relative to the process directory descriptor.

    Raises:
        _Gone: the process has exited (ENOENT/ESRCH).
        OSError: any other failure (EACCES, EIO ...).
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _GONE:
            raise _Gone from exc
        raise
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno in _GONE:
            raise _Gone from exc
        raise
    finally:
        os.close(fd)


def _open_process_dir(proc_root: Path, pid: int) -> int | None:
    try:
        return os.open(proc_root / str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


class _Reader:
    """Reads one process's files through its directory descriptor, recording failures."""

    __slots__ = ("dir_fd", "gone", "unread")

    def __init__(self, dir_fd: int) -> None:
        self.dir_fd = dir_fd
        self.gone = False
        self.unread: set[str] = set()

    def read(self, name: str, field: str, *, of_address_space: bool = False) -> bytes | None:
        """Read one file, recording it as unread on failure.

        Files of the address space (cmdline, environ) fail with ESRCH for zombies and
        kernel threads too, so their failure alone does not mean the process is gone.
        """
        if self.gone:
            self.unread.add(field)
            return None
        try:
            return _read_file(self.dir_fd, name)
        except _Gone:
            self.gone = not of_address_space
        except OSError:
            pass
        self.unread.add(field)
        return None

    def readlink(self, name: str, field: str) -> str | None:
        if self.gone:
            self.unread.add(field)
            return None
        try:
            return os.readlink(name, dir_fd=self.dir_fd)
        except OSError:
            # ENOENT here also means "no mm": a zombie or a kernel thread. Whether the
            # process is gone is decided by the reads that follow.
            self.unread.add(field)
            return None


def read_process(
    pid: int,
    *,
    proc_root: Path = PROC,
    with_parents: bool = True,
    max_depth: int = DEFAULT_MAX_DEPTH,
    user_name: UserNameLookup = lookup_user_name,
) -> ProcessInfo:
    """Snapshot the identity of process ``pid`` from ``/proc``.

    Never raises for a process that does not exist or exits mid-read: the snapshot's
    ``read_quality`` is then ``ABSENT`` or ``VANISHED`` and ``unread`` names what is
    missing. A zombie counts as vanished (its exe and cmdline are gone).

    Args:
        pid: the process (thread-group) id.
        proc_root: where procfs is mounted.
        with_parents: also read the parent chain from ``/proc`` (see `read_parents`).
        max_depth: the most ancestors to read.
        user_name: maps a uid to its name.

    Returns:
        The snapshot.
    """
    dir_fd = _open_process_dir(proc_root, pid)
    if dir_fd is None:
        return ProcessInfo(pid=pid, read_quality=ReadQuality.ABSENT, unread=SNAPSHOT_FIELDS)
    try:
        info = _read_open_process(pid, _Reader(dir_fd), user_name)
    finally:
        os.close(dir_fd)
    if with_parents and info.ppid:
        info = replace(
            info,
            parents=read_parents(
                info.ppid, proc_root=proc_root, max_depth=max_depth, user_name=user_name
            ),
        )
    return info


def _read_open_process(pid: int, reader: _Reader, user_name: UserNameLookup) -> ProcessInfo:
    # Read every file before parsing any: the process may be exiting. exe, cmdline and
    # environ go first because they vanish first (with the address space, before zombie).
    exe_link = reader.readlink("exe", "exe")
    cmdline_raw = reader.read("cmdline", "cmdline", of_address_space=True)
    environ_raw = reader.read("environ", "ssh_origin", of_address_space=True)
    status_raw = reader.read("status", "uid")
    stat_raw = reader.read("stat", "start_time")
    loginuid_raw = reader.read("loginuid", "login_uid")
    cgroup_raw = reader.read("cgroup", "cgroup")

    stat = _parsed(reader, stat_raw, "start_time", parse_stat)
    status = _parsed(reader, status_raw, "uid", parse_status)
    login_uid = _parsed(reader, loginuid_raw, "login_uid", parse_loginuid)
    cgroup = _parsed(reader, cgroup_raw, "cgroup", parse_cgroup)
    env = environ_values(environ_raw, _ENV_NAMES) if environ_raw is not None else {}
    exe, exe_deleted = parse_exe_link(exe_link) if exe_link is not None else (None, False)
    kernel_thread = stat is not None and bool(stat.flags & PF_KTHREAD)
    unread = reader.unread
    if kernel_thread:
        unread -= {"exe", "ssh_origin"}
    zombie = stat is not None and stat.state in ("Z", "X")
    if reader.gone or zombie:
        quality = ReadQuality.VANISHED
    elif unread:
        quality = ReadQuality.PARTIAL
    else:
        quality = ReadQuality.COMPLETE
    identity = cgroup or _NO_CGROUP
    uid = status.uid if status else None
    return ProcessInfo(
        pid=pid,
        ppid=stat.ppid if stat else (status.ppid if status else None),
        comm=stat.comm if stat else None,
        state=stat.state if stat else None,
        kernel_thread=kernel_thread,
        uid=uid,
        euid=status.euid if status else None,
        user=user_name(uid) if uid is not None else None,
        login_uid=login_uid,
        login_user=user_name(login_uid) if login_uid is not None else None,
        exe=exe,
        exe_deleted=exe_deleted,
        cmdline=parse_cmdline(cmdline_raw) if cmdline_raw is not None else (),
        start_time=stat.start_time if stat else None,
        cgroup=identity.path,
        container_id=identity.container_id,
        container_runtime=identity.container_runtime,
        systemd_unit=identity.systemd_unit,
        slurm_job_id=identity.slurm_job_id
        if identity.slurm_job_id is not None
        else _int_or_none(env.get("SLURM_JOB_ID")),
        pod_uid=identity.pod_uid,
        ssh_origin=parse_ssh_origin(env),
        read_quality=quality,
        unread=frozenset(unread),
    )


_ENV_NAMES = ("SSH_CONNECTION", "SSH_CLIENT", "SLURM_JOB_ID")
_NO_CGROUP = CgroupIdentity(
    path=None,
    container_id=None,
    container_runtime=None,
    systemd_unit=None,
    slurm_job_id=None,
    pod_uid=None,
)


def _parsed(
    reader: _Reader, raw: bytes | None, field: str, parse: Callable[[str], _T]
) -> _T | None:
    """Parse ``raw`` (``None`` when unread); a malformed file marks ``field`` unread."""
    if raw is None:
        return None
    try:
        return parse(raw.decode())
    except (ValueError, UnicodeDecodeError):
        reader.unread.add(field)
        return None


def _int_or_none(text: str | None) -> int | None:
    """Parse a job id from the environment: 1-18 ASCII digits, else ``None`` (see `_port`)."""
    if text is None or not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= _MAX_JOB_ID_DIGITS else None


def read_parents(
    ppid: int,
    *,
    proc_root: Path = PROC,
    max_depth: int = DEFAULT_MAX_DEPTH,
    user_name: UserNameLookup = lookup_user_name,
) -> tuple[Ancestor, ...]:
    """Read the chain of ancestors starting at ``ppid``, up to pid 1 or ``max_depth``.

    Stops early, without error, at an ancestor that has exited (its children were then
    re-parented, so the chain seen is still the current one) or at a parent of 0 (the top
    of a pid namespace).
    """
    chain: list[Ancestor] = []
    pid = ppid
    while pid > 0 and len(chain) < max_depth:
        dir_fd = _open_process_dir(proc_root, pid)
        if dir_fd is None:
            break
        reader = _Reader(dir_fd)
        try:
            exe_link = reader.readlink("exe", "exe")
            stat = _parsed(reader, reader.read("stat", "start_time"), "start_time", parse_stat)
            status = _parsed(reader, reader.read("status", "uid"), "uid", parse_status)
        finally:
            os.close(dir_fd)
        if stat is None:
            break
        uid = status.uid if status else None
        chain.append(
            Ancestor(
                pid=pid,
                start_time=stat.start_time,
                uid=uid,
                user=user_name(uid) if uid is not None else None,
                comm=stat.comm,
                exe=parse_exe_link(exe_link)[0] if exe_link is not None else None,
            )
        )
        if pid == 1:
            break
        pid = stat.ppid
    return tuple(chain)
