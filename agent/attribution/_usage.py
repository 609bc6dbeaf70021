"""How much of a file a process read, and which processes hold files under a path.

fanotify reports an open, not how much was read; and mmap'd reads (safetensors) produce no
read events at all (DESIGN.md decision 2). The amounts come from ``/proc``:

- ``/proc/PID/io``: ``rchar`` counts bytes returned by read calls (from any file, socket
  or pipe); ``read_bytes`` counts bytes fetched from storage (zero for cached data).
- ``/proc/PID/fdinfo/FD``: ``pos``, the file offset of the descriptor that holds the file:
  for sequential ``read()`` it is how far the reader got.
- ``/proc/PID/smaps``: the ``Rss`` of the mappings of the file: how much of it is paged in
  for this process, i.e. what an mmap reader has touched (pages brought in by readahead
  or fault-around count too, so it is an upper bound of what was touched).

Paths are compared exactly as the kernel prints them (symlinks resolved, as seen from the
process's mount namespace), and a file deleted while open (`` (deleted)`` suffix) still
matches. Every function tolerates a process that exits mid-read: it then reports what it
could (nothing held, 0 bytes mapped). Without root, other users' processes are unreadable
and are skipped the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.attribution._procfs import PROC

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "IoCounters",
    "holders",
    "mapped_rss",
    "open_files",
    "parse_fdinfo_pos",
    "parse_io",
    "parse_maps_paths",
    "parse_smaps_rss",
    "read_io",
    "read_position",
]

_DELETED = " (deleted)"
_MAPS_FIELDS = 5  # address perms offset dev inode, then the path


@dataclass(frozen=True, slots=True, kw_only=True)
class IoCounters:
    """The counters of ``/proc/PID/io``, in bytes and calls since the process started."""

    rchar: int
    wchar: int
    syscr: int
    syscw: int
    read_bytes: int
    write_bytes: int
    cancelled_write_bytes: int


def parse_io(text: str) -> IoCounters:
    """Parse ``/proc/PID/io``.

    Raises:
        ValueError: a counter is missing or not a number.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = int(value)
    try:
        return IoCounters(
            rchar=values["rchar"],
            wchar=values["wchar"],
            syscr=values["syscr"],
            syscw=values["syscw"],
            read_bytes=values["read_bytes"],
            write_bytes=values["write_bytes"],
            cancelled_write_bytes=values["cancelled_write_bytes"],
        )
    except KeyError as exc:
        raise ValueError(f"io counters lack {exc}") from exc


def parse_fdinfo_pos(text: str) -> int:
    """Return the ``pos`` (file offset) of a ``/proc/PID/fdinfo/FD`` text.

    Raises:
        ValueError: there is no ``pos`` line.
    """
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == "pos":
            return int(value)
    raise ValueError("fdinfo has no pos line")


def _maps_entries(text: str) -> list[tuple[int, str]]:
    """Return (line index, path) of each mapping header line that names a path."""
    entries = []
    for index, line in enumerate(text.splitlines()):
        fields = line.split(maxsplit=_MAPS_FIELDS)
        if len(fields) > _MAPS_FIELDS and "-" in fields[0] and fields[5].startswith("/"):
            entries.append((index, fields[5]))
    return entries


def _kernel_path(path: str) -> str:
    r"""Spell ``path`` as maps/smaps do, which escape a newline as ``\\012``."""
    return path.replace("\n", "\\012")


def _same_file(shown: str, path: str) -> bool:
    return shown in (path, path + _DELETED)


def parse_smaps_rss(text: str, path: str) -> int:
    """Sum the ``Rss`` of the mappings of ``path`` in a ``/proc/PID/smaps`` text, in bytes."""
    wanted = _kernel_path(path)
    total = 0
    in_mapping = False
    for line in text.splitlines():
        fields = line.split(maxsplit=_MAPS_FIELDS)
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            in_mapping = len(fields) > _MAPS_FIELDS and _same_file(fields[5], wanted)
        elif in_mapping and fields[:1] == ["Rss:"]:
            total += int(fields[1]) * 1024
    return total


def parse_maps_paths(text: str) -> set[str]:
    """Return the file paths mapped in a ``/proc/PID/maps`` (or smaps) text."""
    return {path.removesuffix(_DELETED) for _, path in _maps_entries(text)}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="surrogateescape")
    except OSError:
        return None


def read_io(pid: int, *, proc_root: Path = PROC) -> IoCounters | None:
    """Read ``/proc/PID/io``; ``None`` when the process is gone or unreadable."""
    text = _read_text(proc_root / str(pid) / "io")
    if text is None:
        return None
    try:
        return parse_io(text)
    except ValueError:
        return None


def open_files(pid: int, *, proc_root: Path = PROC) -> list[tuple[int, str]]:
    """List the (fd, path) of the files ``pid`` has open, by fd.

    Sockets, pipes and anonymous inodes are left out; a deleted file keeps the kernel's
    `` (deleted)`` suffix. An exited or unreadable process gives an empty list.
    """
    found = []
    try:
        with os.scandir(proc_root / str(pid) / "fd") as entries:
            for entry in entries:
                try:
                    # os.readlink keeps the kernel's text exactly (Path would re-normalise it)
                    target = os.readlink(entry.path)  # noqa: PTH115
                except OSError:
                    continue  # closed meanwhile
                if target.startswith("/"):
                    found.append((int(entry.name), target))
    except OSError:
        return []  # exited, or not ours to read
    return sorted(found)


def mapped_rss(pid: int, path: str | os.PathLike[str], *, proc_root: Path = PROC) -> int:
    """Return how many bytes of ``path`` are resident in ``pid``'s mappings (0 if none)."""
    text = _read_text(proc_root / str(pid) / "smaps")
    return parse_smaps_rss(text, os.fspath(path)) if text is not None else 0


def read_position(pid: int, path: str | os.PathLike[str], *, proc_root: Path = PROC) -> int | None:
    """Return the file offset of ``pid``'s descriptor for ``path``; ``None`` if none is open.

    With several descriptors on the file, the furthest offset is returned.
    """
    wanted = os.fspath(path)
    positions = []
    for fd, target in open_files(pid, proc_root=proc_root):
        if _same_file(target, wanted):
            text = _read_text(proc_root / str(pid) / "fdinfo" / str(fd))
            if text is not None:
                try:
                    positions.append(parse_fdinfo_pos(text))
                except ValueError:
                    continue
    return max(positions) if positions else None


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def holders(
    path_prefixes: str | os.PathLike[str] | list[str] | tuple[str, ...],
    *,
    proc_root: Path = PROC,
) -> list[int]:
    """Return the pids that have a file under any of ``path_prefixes`` open or mapped.

    A prefix matches whole path components (``/data/ckpt`` matches ``/data/ckpt/a`` but
    not ``/data/ckpt2``). Scans every process: meant for the inotify fallback, whose
    events carry no pid, not for every event. Processes that exit or are unreadable
    during the scan are skipped.
    """
    if isinstance(path_prefixes, (str, os.PathLike)):
        path_prefixes = [os.fspath(path_prefixes)]
    prefixes = tuple(str(prefix).rstrip("/") or "/" for prefix in path_prefixes)
    if "/" in prefixes:
        prefixes = ("",)  # "/" holds everything; "" + "/" matches every absolute path
    try:
        with os.scandir(proc_root) as entries:
            pids = sorted(int(entry.name) for entry in entries if entry.name.isdigit())
    except OSError:
        return []
    found = []
    for pid in pids:
        if any(
            _under(target.removesuffix(_DELETED), prefixes)
            for _, target in open_files(pid, proc_root=proc_root)
        ):
            found.append(pid)
            continue
        maps = _read_text(proc_root / str(pid) / "maps")
        if maps is not None and any(_under(path, prefixes) for path in parse_maps_paths(maps)):
            found.append(pid)
    return found
