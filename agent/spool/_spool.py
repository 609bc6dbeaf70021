"""The writer: every event goes into the durable spool first, numbered and chained.

One :class:`Spool` per spool directory (an exclusive ``flock`` makes a second writer fail
instead of forking the chain). :meth:`Spool.append` stores a batch in one SQLite
transaction, assigning each event its sequence number and hash-chain link inside that
transaction; when it returns, the events are on disk (``synchronous=FULL``, the default,
also survives power loss; ``NORMAL`` survives a crash of the process, not of the host).
On open the chain head is read back from the database, so after ``kill -9`` the chain
continues with no gap and no fork.

When full (``max_events`` held, or ``max_bytes``), the policy decides:

``drop_new`` (the default)
    The events that do not fit are refused at once. The batch's longest prefix that fits
    is stored, the rest is counted per event class (persistently), and as soon as there
    is room again (an acknowledgement trims, or the bounds grow) a health event reporting
    the count and the time window is appended before anything else.
``block``
    :meth:`Spool.append` waits up to ``block_timeout`` seconds for an acknowledgement to
    make room for the whole batch, then does what ``drop_new`` does. This slows the
    producer (the sensors' bounded queue then absorbs, and counts, what it cannot hold).

A disk that is full (SQLite ``SQLITE_FULL``) is handled like a full spool: the batch is
refused and counted, and the count is written with the next transaction that succeeds.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Self

from agent.spool._drops import DropLedger, drop_report
from agent.spool._reader import SpoolReader, check_format, load_ledger, read_anchor, read_head
from agent.spool._record import SpooledEvent, SpoolStats
from agent.spool._store import DB_NAME, LOCK_NAME, ROW_OVERHEAD, create_schema
from weightwarden.crypto.chain import next_link
from weightwarden.errors import ConfigError, UsageError, WeightwardenError
from weightwarden.events import Device, canonical_bytes
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from types import TracebackType

    from structlog.typing import FilteringBoundLogger

    from weightwarden.crypto.chain import ChainLink
    from weightwarden.events import Event

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "FullPolicy",
    "Spool",
    "Synchronous",
    "wall_clock_ms",
]

DEFAULT_MAX_EVENTS: Final = 5_000_000
DEFAULT_MAX_BYTES: Final = 4 << 30
_HEALTH_ESTIMATE: Final = 2048
"""Bytes a drop report is assumed to need while waiting for room (``block``)."""
_BUSY_TIMEOUT_MS: Final = 5000


def _log() -> FilteringBoundLogger:
    """The spool's logger, made on first use: ``agent events`` never pays for structlog."""
    return get_logger("agent.spool")


class FullPolicy(enum.StrEnum):
    """What :meth:`Spool.append` does with events that do not fit."""

    DROP_NEW = "drop_new"
    """Refuse them at once; count them and report the count in a health event."""
    BLOCK = "block"
    """Wait up to ``block_timeout`` for room, then refuse and count like DROP_NEW."""


class Synchronous(enum.StrEnum):
    """SQLite's ``synchronous`` setting for the spool (WAL mode)."""

    FULL = "full"
    """fsync the WAL on every commit: an appended event survives power loss."""
    NORMAL = "normal"
    """fsync only at checkpoints: an appended event survives a crash of the agent
    (``kill -9``), but the last transactions may be lost if the host loses power."""


def wall_clock_ms() -> int:
    """Wall-clock time in milliseconds since the epoch (the default clock)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tally:
    """The writer's view of the spool after a planned transaction."""

    head: ChainLink | None
    count: int
    size: int
    ledger: DropLedger


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """Rows one transaction inserts, what the caller gets back, and the state after it."""

    rows: list[tuple[int, int, bytes, str, str, str]]
    stored: list[SpooledEvent]
    tally: _Tally


@dataclass(frozen=True, slots=True, kw_only=True)
class _Prepared:
    """An event ready to store: its class name, time and canonical bytes."""

    kind: str
    time: int
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload) + ROW_OVERHEAD


class Spool:
    """The agent's durable, bounded, hash-chained event spool; the one writer of a directory.

    Thread-safe: appends, acknowledgements and reads may come from different threads (the
    daemon appends, the shipper reads and acknowledges). Reads go through a read-only
    connection of their own, so they never wait for an append.

    Args:
        directory: The spool directory; created with mode 0700 (tightened to 0700 if it
            exists), the database inside it with mode 0600.
        agent_id: The agent's identity in the chain; a spool keeps the agent it was
            created for.
        hostname: The host, named in the spool's own health events.
        max_events: Most events held (appended and not yet acknowledged).
        max_bytes: Most bytes held, counted as payload plus :data:`ROW_OVERHEAD` per event.
        full_policy: What to do with events that do not fit (see the module docstring).
        block_timeout: Seconds ``block`` waits for room before refusing.
        synchronous: SQLite durability: ``full`` (default) or ``normal``.
        clock: Wall-clock milliseconds, for the time window of refused events.

    Raises:
        ConfigError: The directory cannot be created or opened, holds something that is
            not a spool, or holds the spool of another agent.
        WeightwardenError: Another process is writing this spool.
        ValueError: A bound is below 1 or the timeout is negative.
    """

    def __init__(
        self,
        directory: Path,
        *,
        agent_id: str,
        hostname: str,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        full_policy: FullPolicy | str = FullPolicy.DROP_NEW,
        block_timeout: float = 5.0,
        synchronous: Synchronous | str = Synchronous.FULL,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError(f"spool bounds must be at least 1, got {max_events}, {max_bytes}")
        if block_timeout < 0:
            raise ValueError(f"block_timeout must not be negative, got {block_timeout}")
        if not agent_id:
            raise ValueError("agent_id must not be empty")
        self.directory = directory
        self.agent_id = agent_id
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.full_policy = FullPolicy(full_policy)
        self.block_timeout = block_timeout
        self._device = Device(hostname=hostname, agent_id=agent_id)
        self._clock = clock
        self._cond = threading.Condition()
        self._closed = False
        self._reader: SpoolReader | None = None
        self._reader_lock = threading.Lock()
        self._lock_fd = _lock_directory(directory)
        try:
            self._connection = _open_database(directory / DB_NAME, Synchronous(synchronous))
            try:
                self._tally, self._acked = self._load(agent_id)
            except BaseException:
                self._connection.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._ledger_dirty = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[SpooledEvent]:
        """Store ``events`` in one transaction, each with its sequence number and link.

        Returns:
            The stored events, in order: all of ``events`` unless the spool was full, else
            the longest prefix that fit (the rest was refused and counted, see the module
            docstring). Sequence numbers are contiguous except where the spool put its own
            health event (a drop report) before them.

        Raises:
            WeightwardenError: The database could not be written (other than a full disk,
                which refuses and counts the batch).
            ValueError: The spool is closed.
        """
        if not events:
            return []
        prepared = [
            _Prepared(kind=type(event).__name__, time=event.time, payload=canonical_bytes(event))
            for event in events
        ]
        with self._cond:
            self._check_open()
            if self.full_policy is FullPolicy.BLOCK:
                self._wait_for_room(prepared)
            now = self._clock()
            plan = self._plan(self._tally, prepared, now)
            try:
                with self._transaction():
                    self._insert(plan)
                    self._write_state(plan.tally)
            except sqlite3.Error as exc:
                if _disk_full(exc):
                    return self._refuse_on_full_disk(prepared, now, exc)
                raise WeightwardenError(f"cannot write spool {self.directory}: {exc}") from exc
            self._commit(plan.tally)
            return plan.stored

    def ack(self, up_to_seq: int) -> int:
        """Trim every held event up to ``up_to_seq``: the collector stored them durably.

        The last trimmed link is kept as the anchor, so the chain continues across trims
        and restarts. If refused events are waiting to be reported and the trim made room,
        their health event is appended in the same transaction.

        Returns:
            How many events were trimmed (0 if ``up_to_seq`` was already acknowledged).

        Raises:
            ValueError: ``up_to_seq`` is beyond the newest sequence number (no collector
                can have confirmed it), or the spool is closed.
            WeightwardenError: The database could not be written.
        """
        with self._cond:
            self._check_open()
            head_seq = 0 if self._tally.head is None else self._tally.head.seq
            if up_to_seq > head_seq:
                raise ValueError(f"cannot acknowledge seq {up_to_seq}: the newest is {head_seq}")
            if up_to_seq <= self._acked:
                return 0
            now = self._clock()
            try:
                with self._transaction():
                    trimmed, trimmed_size = self._trim(up_to_seq)
                    tally = _Tally(
                        head=self._tally.head,
                        count=self._tally.count - trimmed,
                        size=self._tally.size - trimmed_size,
                        ledger=self._tally.ledger,
                    )
                    plan = self._plan(tally, [], now)
                    self._insert(plan)
                    self._write_state(plan.tally)
            except sqlite3.Error as exc:
                raise WeightwardenError(f"cannot trim spool {self.directory}: {exc}") from exc
            self._acked = up_to_seq
            self._commit(plan.tally)
            self._cond.notify_all()
            return trimmed

    # ----------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------

    def read_batch(self, after_seq: int, limit: int) -> list[SpooledEvent]:
        """Return up to ``limit`` held events with ``seq > after_seq``, in seq order.

        Reads through a read-only connection: never waits for an append.

        Raises:
            ValueError: ``limit`` is below 1, or the spool is closed.
        """
        with self._reader_lock:
            if self._closed:
                raise ValueError(f"spool {self.directory} is closed")
            if self._reader is None:
                self._reader = SpoolReader(self.directory)
            reader = self._reader
        return reader.read_batch(after_seq, limit)

    @property
    def head(self) -> ChainLink | None:
        """The newest link of the chain (held or trimmed); None before the first event."""
        with self._cond:
            return self._tally.head

    def anchor(self) -> ChainLink | None:
        """The link of the last trimmed event (``verify_chain(..., after=)``), if any."""
        with self._cond:
            self._check_open()
            return read_anchor(self._connection, self.agent_id)

    def stats(self) -> SpoolStats:
        """Counters of this spool, including refusals not yet written to disk."""
        with self._cond:
            self._check_open()
            tally = self._tally
            oldest, newest = (None, None)
            if tally.count:
                oldest, newest = self._connection.execute(
                    "SELECT min(seq), max(seq) FROM events"
                ).fetchone()
            return SpoolStats(
                count=tally.count,
                bytes=tally.size,
                oldest_seq=oldest,
                newest_seq=newest,
                head_seq=0 if tally.head is None else tally.head.seq,
                acked_seq=self._acked,
                dropped=tally.ledger.totals,
                unreported_drops=tally.ledger.pending_total,
                reported_drops=tally.ledger.reported,
            )

    def close(self) -> None:
        """Close the database (checkpointing the WAL) and release the writer lock.

        Closing twice is harmless. Refusals counted after the last successful write (a
        full disk) are lost with the process; a log line says how many.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._ledger_dirty:
                _log().error(
                    "spool closing with unwritten drop counts",
                    spool=str(self.directory),
                    unreported=self._tally.ledger.pending_total,
                )
            with self._reader_lock:
                if self._reader is not None:
                    self._reader.close()
            self._connection.close()
            os.close(self._lock_fd)
            self._cond.notify_all()

    # ----------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.directory} is closed")

    def _load(self, agent_id: str) -> tuple[_Tally, int]:
        connection = self._connection
        db_path = self.directory / DB_NAME
        try:
            if not connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                create_schema(connection, agent_id)
            stored_agent = check_format(connection, db_path)
            if stored_agent != agent_id:
                raise ConfigError(
                    f"spool {self.directory} belongs to agent {stored_agent!r}, not "
                    f"{agent_id!r}: give this agent its own spool directory"
                )
            head = read_head(connection, agent_id)
            acked, count, size = connection.execute(
                "SELECT acked_seq, held_count, held_bytes FROM state"
            ).fetchone()
            ledger = load_ledger(connection)
        except UsageError as exc:
            raise ConfigError(str(exc)) from exc
        except sqlite3.Error as exc:
            raise ConfigError(f"{db_path} is not a usable weightwarden spool: {exc}") from exc
        return _Tally(head=head, count=count, size=size, ledger=ledger), acked

    def _fits(self, count: int, size: int, item: _Prepared) -> bool:
        return count + 1 <= self.max_events and size + item.size <= self.max_bytes

    def _plan(self, tally: _Tally, prepared: Sequence[_Prepared], now: int) -> _Plan:
        """Decide what one transaction stores: a pending drop report first, then a prefix."""
        head, count, size, ledger = tally.head, tally.count, tally.size, tally.ledger
        rows: list[tuple[int, int, bytes, str, str, str]] = []
        stored: list[SpooledEvent] = []

        def add(item: _Prepared) -> SpooledEvent:
            nonlocal head, count, size
            link = next_link(head, self.agent_id, item.payload)
            rows.append(
                (
                    link.seq,
                    item.time,
                    item.payload,
                    link.prev_hash,
                    link.payload_hash,
                    link.link_hash,
                )
            )
            head, count, size = link, count + 1, size + item.size
            return SpooledEvent(seq=link.seq, time=item.time, payload=item.payload, link=link)

        room = True
        if ledger.pending_total:
            report = self._drop_report(ledger, head, now)
            room = self._fits(count, size, report)
            if room:
                add(report)
                ledger = ledger.mark_reported()
        accepted = 0
        for item in prepared:
            if not room or not self._fits(count, size, item):
                break
            stored.append(add(item))
            accepted += 1
        refused = prepared[accepted:]
        if refused:
            if not ledger.pending_total:
                _log().warning(
                    "spool full: refusing events",
                    spool=str(self.directory),
                    held=count,
                    held_bytes=size,
                    policy=self.full_policy.value,
                )
            ledger = ledger.refuse((item.kind for item in refused), now)
        return _Plan(
            rows=rows, stored=stored, tally=_Tally(head=head, count=count, size=size, ledger=ledger)
        )

    def _drop_report(self, ledger: DropLedger, head: ChainLink | None, now: int) -> _Prepared:
        seq = 1 if head is None else head.seq + 1
        report = drop_report(
            ledger,
            uid=f"weightwarden-health:{self.agent_id}:spool-drop:{seq}",
            now_ms=now,
            device=self._device,
            max_events=self.max_events,
            max_bytes=self.max_bytes,
            policy=self.full_policy.value,
        )
        return _Prepared(
            kind=type(report).__name__, time=report.time, payload=canonical_bytes(report)
        )

    def _wait_for_room(self, prepared: Sequence[_Prepared]) -> None:
        """Block (``block`` policy) until the batch fits, the spool is empty, or time is up."""
        need_count = len(prepared)
        need_size = sum(item.size for item in prepared)
        deadline = time.monotonic() + self.block_timeout
        while not self._closed:
            tally = self._tally
            pending = 1 if tally.ledger.pending_total else 0
            if tally.count == 0 or (
                tally.count + need_count + pending <= self.max_events
                and tally.size + need_size + pending * _HEALTH_ESTIMATE <= self.max_bytes
            ):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)
        self._check_open()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _insert(self, plan: _Plan) -> None:
        if plan.rows:
            self._connection.executemany(
                "INSERT INTO events (seq, time, payload, prev_hash, payload_hash, link_hash) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                plan.rows,
            )

    def _trim(self, up_to_seq: int) -> tuple[int, int]:
        connection = self._connection
        anchor = connection.execute(
            "SELECT prev_hash, payload_hash, link_hash FROM events WHERE seq = ?", (up_to_seq,)
        ).fetchone()
        if anchor is None:
            raise WeightwardenError(
                f"spool {self.directory} lacks held seq {up_to_seq}: the database was edited"
            )
        trimmed, payload_size = connection.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM events WHERE seq <= ?",
            (up_to_seq,),
        ).fetchone()
        connection.execute("DELETE FROM events WHERE seq <= ?", (up_to_seq,))
        connection.execute(
            "UPDATE state SET acked_seq = ?, anchor_prev_hash = ?, anchor_payload_hash = ?, "
            "anchor_link_hash = ?",
            (up_to_seq, *anchor),
        )
        return trimmed, payload_size + trimmed * ROW_OVERHEAD

    def _write_state(self, tally: _Tally) -> None:
        connection = self._connection
        ledger = tally.ledger
        connection.execute(
            "UPDATE state SET held_count = ?, held_bytes = ?, drop_first_ms = ?, "
            "drop_last_ms = ?, reported_drops = ?",
            (tally.count, tally.size, ledger.first_ms, ledger.last_ms, ledger.reported),
        )
        if ledger != self._tally.ledger or self._ledger_dirty:
            connection.executemany(
                "INSERT INTO drops (class, pending, total) VALUES (?, ?, ?) "
                "ON CONFLICT (class) DO UPDATE SET pending = excluded.pending, "
                "total = excluded.total",
                [
                    (name, ledger.pending.get(name, 0), total)
                    for name, total in ledger.totals.items()
                ],
            )

    def _commit(self, tally: _Tally) -> None:
        """Adopt the state a transaction wrote, after it committed."""
        if tally.ledger.reported > self._tally.ledger.reported:
            _log().warning(
                "spool had room again: reported refused events in a health event",
                spool=str(self.directory),
                reported=tally.ledger.reported - self._tally.ledger.reported,
            )
        self._tally = tally
        self._ledger_dirty = False

    def _refuse_on_full_disk(
        self, prepared: Sequence[_Prepared], now: int, exc: sqlite3.Error
    ) -> list[SpooledEvent]:
        tally = self._tally
        self._tally = _Tally(
            head=tally.head,
            count=tally.count,
            size=tally.size,
            ledger=tally.ledger.refuse((item.kind for item in prepared), now),
        )
        self._ledger_dirty = True
        _log().error(
            "spool disk full: refusing events",
            spool=str(self.directory),
            refused=len(prepared),
            error=str(exc),
        )
        return []


def _disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _lock_directory(directory: Path) -> int:
    """Create the directory (0700) and take the writer lock; return the lock's descriptor."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"spool {directory}: cannot create or open the spool directory: {exc.strerror or exc}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise WeightwardenError(
            f"spool {directory} is in use by another writer (pid {holder}); "
            "only one agent may write a spool"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _open_database(db_path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """Open (creating with mode 0600) the database in WAL mode with the durability asked."""
    try:
        fd = os.open(db_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
    except OSError as exc:
        raise ConfigError(f"spool {db_path}: cannot create or open: {exc.strerror or exc}") from exc
    try:
        connection = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ConfigError(f"spool {db_path}: cannot open: {exc}") from exc
    try:
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        connection.execute(f"PRAGMA synchronous = {synchronous.value.upper()}")
    except sqlite3.Error as exc:
        connection.close()
        raise ConfigError(f"{db_path} is not a usable weightwarden spool: {exc}") from exc
    if mode.lower() != "wal":
        connection.close()
        raise ConfigError(
            f"spool {db_path}: the filesystem does not support SQLite WAL mode (got "
            f"{mode!r}); put the spool on a local filesystem"
        )
    return connection
