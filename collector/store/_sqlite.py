"""The embedded store: one SQLite file in WAL mode (the collector's default).

Every write runs in one ``BEGIN IMMEDIATE`` transaction on a single writer connection
behind a lock, so writers in this process queue on the lock instead of in SQLite's busy
handler (which sleeps), and ``ingest``'s compare-and-set on the head is serialised. Reads
use a small pool of read-only connections: in WAL mode they run beside the writer, also
while it waits for ``fsync``. Another process writing the same file is kept out by
SQLite's own lock and waited for up to ``busy_timeout`` seconds.

The file is created with mode 0600 (an existing one is tightened to 0600); SQLite gives
its ``-wal`` and ``-shm`` files the same mode. A new file gets 16 KiB pages: an event row
is ~1.5 KB, so a 4 KiB page (SQLite's default) holds two and every batch writes (and
copies into the WAL) hundreds of pages; 16 KiB pages cut ingest CPU by about a fifth
(benchmarks/ingest.py). A file created with another page size keeps it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self, TypeVar

from collector.store._protocol import StoreError
from collector.store._schema import Dialect, migrate
from collector.store._sql import Conflict, SqlStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

__all__ = ["SqliteStore", "Synchronous"]

T = TypeVar("T")

_PAGE_SIZE: Final = 16384
"""Bytes per page of a new database file (an existing file keeps its own)."""
_UNIQUE_CODES: Final = frozenset(
    {sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE}
)


class Synchronous(enum.StrEnum):
    """SQLite's ``synchronous`` setting (the database is always in WAL mode)."""

    FULL = "full"
    """fsync the WAL on every commit: a stored batch survives power loss (the default)."""
    NORMAL = "normal"
    """fsync at checkpoints only: a stored batch survives a crash of the collector, but the
    last transactions may be lost if the host loses power."""


class SqliteStore(SqlStore[sqlite3.Cursor]):
    """The collector's store in one SQLite file; safe to share between threads.

    Args:
        path: The database file; created (mode 0600) if missing. Its directory must exist.
        synchronous: ``full`` (default) or ``normal``, see :class:`Synchronous`.
        busy_timeout: Seconds to wait for another process's write lock, and for a free
            read connection.
        readers: Read connections kept beside the writer; 0 makes reads share the
            writer connection (and its lock).

    Raises:
        StoreError: The file cannot be created or opened, is not a SQLite database, or
            cannot be put in WAL mode.
        ConfigError: The database was written by a newer weightwarden.
        ValueError: ``readers`` is negative or ``busy_timeout`` not positive.
    """

    dialect = Dialect.SQLITE
    # Listing pages walk the time index; with an agent filter SQLite would otherwise pick
    # the primary key and sort the agent's rows again for every page.
    _events_source = "events INDEXED BY events_time"

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Synchronous | str = Synchronous.FULL,
        busy_timeout: float = 5.0,
        readers: int = 4,
    ) -> None:
        super().__init__()
        if readers < 0:
            raise ValueError(f"readers must not be negative, got {readers}")
        if busy_timeout <= 0:
            raise ValueError(f"busy_timeout must be positive, got {busy_timeout}")
        self.path = Path(path)
        self.synchronous = Synchronous(synchronous)
        self._busy_timeout = busy_timeout
        self._closed = False
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._readers = readers
        self._slots = threading.BoundedSemaphore(max(readers, 1))
        _create_private(self.path)
        self._writer = self._connect(writer=True)
        try:
            self._write(
                lambda cursor: migrate(
                    cursor, Dialect.SQLITE, now=time.time_ns() // 1_000_000, where=str(self.path)
                )
            )
        except BaseException:
            self._writer.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def close(self) -> None:
        """Close every connection; later calls raise ValueError. Closing twice is harmless."""
        with self._write_lock, self._pool_lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._writer.close()
        for connection in idle:
            connection.close()

    # -- connections -----------------------------------------------------------------
    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._failure("open", exc) from exc
        try:
            if writer:
                # Takes effect only while the file holds no page yet (a new database).
                connection.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                connection.execute(f"PRAGMA synchronous = {self.synchronous.value.upper()}")
            else:
                mode = "wal"
                connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            connection.close()
            raise self._failure("open", exc) from exc
        if str(mode).lower() != "wal":
            connection.close()
            raise StoreError(
                f"cannot put the collector database {self.path} in WAL mode (it stays in "
                f"{mode!r} mode): put it on a local filesystem"
            )
        return connection

    def _failure(self, doing: str, exc: sqlite3.Error) -> StoreError:
        """A StoreError for ``exc`` that says what to check."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            hint = f"another process held its write lock for more than {self._busy_timeout:g} s"
        elif "not a database" in text:
            hint = "the file is not a SQLite database: check --db"
        elif "readonly" in text or "unable to open" in text:
            hint = "check that the file and its directory exist and are writable by this user"
        elif "disk" in text or "full" in text:
            hint = "check the free space and health of the disk"
        else:
            hint = "check the file and the disk"
        return StoreError(f"cannot {doing} the collector database {self.path}: {text} ({hint})")

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the store {self.path} is closed")

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if not self._slots.acquire(timeout=self._busy_timeout):
            raise StoreError(
                f"all {self._readers} read connections to {self.path} stayed busy for "
                f"{self._busy_timeout:g} s: the collector is overloaded"
            )
        try:
            with self._pool_lock:
                self._check_open()
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._connect(writer=False)
            try:
                yield connection
            finally:
                with self._pool_lock:
                    if self._closed:
                        connection.close()
                    else:
                        self._idle.append(connection)
        finally:
            self._slots.release()

    # -- SqlStore hooks --------------------------------------------------------------
    def _read(self, work: Callable[[sqlite3.Cursor], T]) -> T:
        if self._readers == 0:
            with self._write_lock:
                self._check_open()
                return self._run_read(self._writer, work)
        with self._reader() as connection:
            return self._run_read(connection, work)

    def _run_read(self, connection: sqlite3.Connection, work: Callable[[sqlite3.Cursor], T]) -> T:
        cursor = connection.cursor()
        try:
            return work(cursor)
        except sqlite3.Error as exc:
            raise self._failure("read", exc) from exc
        finally:
            cursor.close()

    def _write(self, work: Callable[[sqlite3.Cursor], T]) -> T:
        with self._write_lock:
            self._check_open()
            connection = self._writer
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failure("write", exc) from exc
            cursor = connection.cursor()
            try:
                result = work(cursor)
                connection.execute("COMMIT")
            except BaseException as exc:
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError) and (
                    exc.sqlite_errorcode in _UNIQUE_CODES
                ):
                    raise Conflict(str(exc)) from exc
                if isinstance(exc, sqlite3.Error):
                    raise self._failure("write", exc) from exc
                raise
            finally:
                cursor.close()
            return result


def _create_private(path: Path) -> None:
    """Create ``path`` with mode 0600 if missing, tighten it to 0600 if not.

    Raises:
        StoreError: The directory is missing or the file cannot be created or opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError as exc:
        raise StoreError(
            f"cannot open the collector database {path}: its directory {path.parent} does not "
            "exist (run `weightwarden collector init`, or check --db)"
        ) from exc
    except OSError as exc:
        raise StoreError(
            f"cannot open the collector database {path}: {exc.strerror} (check the path, "
            "that it is a regular file, and its permissions)"
        ) from exc
    try:
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot make the collector database {path} private (mode 0600): {exc.strerror}"
        ) from exc
    finally:
        os.close(fd)
