"""A digest cache so re-sealing a folder re-hashes only the files that changed.

An entry is keyed by the file's path, the digest parameters (algorithm, shard size) and the
byte range, and is valid only while the file's device, inode, size, mtime_ns and ctime_ns
are all unchanged. ctime cannot be set from user space, so rewriting a file and restoring
its mtime still invalidates the entry. Whoever can write the cache file can make a
non-``--full`` verification trust a stale digest: the file is created 0600 in a 0700
folder, and ``verify --full`` ignores the cache altogether.

The cache is SQLite. Entries for the files of one run are loaded up front, lookups are
in-memory and thread-safe, and new digests are written in one transaction by
:meth:`DigestCache.flush`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DigestCache", "FileStamp", "RangeKey", "default_cache_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    path TEXT NOT NULL,
    params TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (path, params, start, "end")
) WITHOUT ROWID
"""

RACY_WINDOW_NS = 100_000_000
"""Files changed less than 100 ms ago are never cached (far above any timestamp tick)."""

_Entry = tuple[tuple[int, int, int, int, int], bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStamp:
    """What identifies one version of a file's content for the cache."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        """Stamp from a stat result."""
        return cls(
            dev=st.st_dev,
            ino=st.st_ino,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
        )


@dataclass(frozen=True, slots=True)
class RangeKey:
    """A byte range of a file, hashed with given parameters (e.g. ``sha256-sharded-N``)."""

    path: str
    params: str
    start: int
    end: int


def default_cache_path(environ: dict[str, str] | os._Environ[str]) -> Path:
    """``$XDG_CACHE_HOME/weightwarden/digests.sqlite``, else under ``~/.cache``."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weightwarden" / "digests.sqlite"


class DigestCache:
    """Digests of file ranges, valid only for the exact file version they were made from."""

    def __init__(self, path: Path, *, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        self._path = path
        self._racy_window_ns = racy_window_ns
        self._lock = threading.Lock()
        self._entries: dict[RangeKey, _Entry] = {}
        self._pending: dict[RangeKey, _Entry] = {}
        self.hits = 0
        self.misses = 0
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(
                f"cannot open digest cache {path}: {exc}; pass --no-cache or another --cache-file"
            ) from exc

    def preload(self, paths: Iterable[Path]) -> None:
        """Load the entries of ``paths`` into memory before hashing starts."""
        names = sorted({str(p) for p in paths})
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f'SELECT path, params, start, "end", dev, ino, size, mtime_ns, ctime_ns, digest '  # noqa: S608 -- only "?" placeholders are interpolated
                f"FROM digests WHERE path IN ({marks})",
                chunk,
            )
            for path, params, start, end, dev, ino, size, mtime, ctime, digest in rows:
                self._entries[RangeKey(path, params, start, end)] = (
                    (dev, ino, size, mtime, ctime),
                    digest,
                )

    def get(self, key: RangeKey, *, stamp: FileStamp) -> bytes | None:
        """The cached digest if it was made from exactly this file version, else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == _stamp_tuple(stamp):
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, key: RangeKey, *, stamp: FileStamp, digest: bytes) -> None:
        """Remember a digest for this file version; written by :meth:`flush`.

        A file whose ctime is younger than the racy window (:data:`RACY_WINDOW_NS`) is not
        cached: on a
        filesystem with coarse timestamps a second write within the same clock tick would
        keep the same ctime, and the entry would then vouch for content it never saw (git's
        "racily clean" problem). Such a file is simply hashed again next time.
        """
        if time.time_ns() - stamp.ctime_ns < self._racy_window_ns:
            return
        entry = (_stamp_tuple(stamp), digest)
        with self._lock:
            self._entries[key] = entry
            self._pending[key] = entry

    def flush(self) -> None:
        """Write new digests in one transaction."""
        with self._lock:
            rows = [(*astuple(k), *e[0], e[1]) for k, e in self._pending.items()]
            self._pending.clear()
        if rows:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?,?,?,?,?,?,?,?,?,?)", rows
                )

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        self._db.close()


def _stamp_tuple(stamp: FileStamp) -> tuple[int, int, int, int, int]:
    return (stamp.dev, stamp.ino, stamp.size, stamp.mtime_ns, stamp.ctime_ns)
