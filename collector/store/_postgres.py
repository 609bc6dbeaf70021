"""The fleet store: PostgreSQL through psycopg 3, for several collector workers.

Same schema and migrations as SQLite (:mod:`collector.store._schema`). Events go in with
binary ``COPY`` (FACTS.md: COPY ~150k rows/s against ~55k for ``executemany``).
``ingest`` reads the agent's head with ``SELECT ... FOR UPDATE`` before it writes, so a
second worker storing a batch of the same agent waits for the first to commit, then sees
the new head and gets :class:`~collector.store.HeadMoved`: two workers never both extend
one chain. Imports take a transaction-scoped advisory lock, so they number their events
one at a time. Migrations take another, so workers starting together migrate once.

Connections come from a small pool (``max_connections``, opened on demand, reused); a
connection found broken (the server restarted) is dropped with every idle one, and a
read that failed on it is tried once more on a fresh connection. A write is never
retried: its commit may have landed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from collector.store._protocol import StoreError
from collector.store._schema import EVENT_COLUMNS, Dialect, migrate
from collector.store._sql import Conflict, SqlStore
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType

__all__ = ["PostgresStore"]

T = TypeVar("T")
Cursor = psycopg.Cursor[Any]

_COPY_EVENTS: Final = f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_EVENT_TYPES: Final = (
    "text",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "int8",
    "int8",
    "int8",
    "int8",
)
_MIGRATION_LOCK: Final = 0x7777_0001
_IMPORT_LOCK: Final = 0x7777_0002
_CHECK: Final = (
    "check that PostgreSQL is running and reachable, and the URL's host, port, user, "
    "password and database (and pg_hba.conf)"
)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Pool:
    """At most ``size`` connections, opened on demand and reused (newest first)."""

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], size: int, wait: float
    ) -> None:
        self._connect = connect
        self._size = size
        self._wait = wait
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self.closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self._wait):
            raise StoreError(
                f"all {self._size} PostgreSQL connections stayed busy for {self._wait:g} s: "
                "the collector is overloaded or the database is slow"
            )
        try:
            with self._lock:
                if self.closed:
                    raise ValueError("the store is closed")
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._connect()
            try:
                yield connection
            finally:
                self._give_back(connection)
        finally:
            self._slots.release()

    def _give_back(self, connection: psycopg.Connection[Any]) -> None:
        healthy = (
            not connection.closed
            and not connection.broken
            and connection.info.transaction_status == pq.TransactionStatus.IDLE
        )
        with self._lock:
            if healthy and not self.closed:
                self._idle.append(connection)
                return
        if not healthy:
            self.flush()
        connection.close()

    def flush(self) -> None:
        """Close every idle connection (after one broke, the others likely did too)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self.flush()


class PostgresStore(SqlStore[Cursor]):
    """The collector's store in a PostgreSQL database; safe to share between threads.

    Args:
        url: ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?options]`` (or any libpq
            connection string). The database must exist; its tables are created.
        max_connections: Most connections open at once (the pool's size).
        connect_timeout: Seconds to wait for a connection (unless the URL sets it).
        pool_timeout: Seconds to wait for a free connection before failing.

    Raises:
        UsageError: The URL cannot be parsed.
        StoreError: The server cannot be reached or refuses the connection; the message
            says what to check (and never includes the password).
        ConfigError: The database was written by a newer weightwarden.
    """

    dialect = Dialect.POSTGRES

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 8,
        connect_timeout: float = 10.0,
        pool_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        params = _parse(url)
        self.where = _describe(params)
        options: dict[str, Any] = {"application_name": "weightwarden-collector"}
        options.update(params)
        options.setdefault("connect_timeout", max(1, round(connect_timeout)))
        self._options = options
        self._pool = _Pool(self._connect, max_connections, pool_timeout)
        try:
            self._write(self._migrate)
        except BaseException:
            self._pool.close()
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
        return f"PostgresStore({self.where!r})"

    def close(self) -> None:
        """Close every connection; later calls raise ValueError. Closing twice is harmless."""
        self._pool.close()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(autocommit=True, **self._options)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL {self.where}: {_one_line(exc)} ({_CHECK})"
            ) from exc

    def _migrate(self, cursor: Cursor) -> int:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        return migrate(cursor, Dialect.POSTGRES, now=time.time_ns() // 1_000_000, where=self.where)

    def _failure(self, doing: str, exc: psycopg.Error) -> StoreError:
        hint = _CHECK if isinstance(exc, psycopg.OperationalError) else "check the database"
        return StoreError(
            f"cannot {doing} the collector database {self.where}: {_one_line(exc)} ({hint})"
        )

    # -- SqlStore hooks --------------------------------------------------------------
    def _read(self, work: Callable[[Cursor], T]) -> T:
        for attempt in range(2):
            with self._pool.connection() as connection:
                try:
                    with connection.cursor() as cursor:
                        return work(cursor)
                except psycopg.OperationalError as exc:
                    if attempt == 0 and connection.broken:
                        continue  # the pool drops it and its idle siblings
                    raise self._failure("read", exc) from exc
                except psycopg.Error as exc:
                    raise self._failure("read", exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, work: Callable[[Cursor], T]) -> T:
        with self._pool.connection() as connection:
            try:
                with connection.transaction(), connection.cursor() as cursor:
                    return work(cursor)
            except psycopg.errors.UniqueViolation as exc:
                raise Conflict(_one_line(exc)) from exc
            except psycopg.DataError as exc:
                raise ValueError(f"a value does not fit its column: {_one_line(exc)}") from exc
            except psycopg.Error as exc:
                raise self._failure("write", exc) from exc

    def _lock_agent(self, cursor: Cursor, agent_id: str) -> tuple[int, str, int | None] | None:
        cursor.execute(
            "SELECT head_seq, head_hash, revoked_at FROM agents WHERE agent_id = %s FOR UPDATE",
            (agent_id,),
        )
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _insert_events(self, cursor: Cursor, rows: Iterable[tuple[Any, ...]]) -> None:
        with cursor.copy(_COPY_EVENTS) as copy:
            copy.set_types(list(_EVENT_TYPES))
            for row in rows:
                copy.write_row(row)

    def _lock_imports(self, cursor: Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_IMPORT_LOCK,))


def _parse(url: str) -> dict[str, Any]:
    """The connection parameters of ``url``.

    Raises:
        UsageError: libpq cannot parse it, or its port is not a number (the message never
            repeats the URL, which may hold a password).
    """
    expected = "expected postgresql://USER@HOST:PORT/DATABASE"
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        detail = _one_line(exc).replace(url, "<URL>")
        if "<URL>" in detail:
            detail = detail.split(":", 1)[0]
        raise UsageError(f"invalid PostgreSQL URL ({expected}): {detail}") from None
    port = str(params.get("port") or "5432")
    if not all(part.strip().isdigit() for part in port.split(",")):
        raise UsageError(f"invalid PostgreSQL URL ({expected}): port {port!r} is not a number")
    return params


def _describe(params: dict[str, Any]) -> str:
    """The database a connection string names, for messages: never the password."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user")
    database = params.get("dbname") or user or "postgres"
    return f"postgresql://{f'{user}@' if user else ''}{host}:{port}/{database}"
