"""Reading a spool without writing to it: the ``events`` command and the shipper.

A :class:`SpoolReader` opens the database read-only and never creates a file (see
:func:`agent.spool._store.read_only_uri`), so it can run beside the daemon, as often as
anyone likes, on a spool it may not change. In WAL mode readers never block the writer,
and the writer never blocks them.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Final, Self

from agent.spool._drops import DropLedger
from agent.spool._record import SpooledEvent, SpoolStats
from agent.spool._store import DB_NAME, FORMAT, VERSION, link_from_row, read_only_uri
from weightwarden.errors import UsageError, WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from types import TracebackType

    from weightwarden.crypto.chain import ChainLink

__all__ = ["SpoolReader", "load_ledger", "load_stats", "read_anchor", "read_head"]

_BUSY_TIMEOUT_MS: Final = 5000
_SELECT: Final = "SELECT seq, time, payload, prev_hash, payload_hash, link_hash FROM events"


class SpoolReader:
    """A read-only view of a spool directory, safe beside the running writer.

    Thread-safe: calls are serialised on one connection.

    Raises:
        UsageError: ``directory`` does not exist, is not a spool, or cannot be opened; the
            message says which.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        db_path = directory / DB_NAME
        if not directory.is_dir():
            raise UsageError(f"spool {directory}: no such directory (pass the agent's spool DIR)")
        if not db_path.is_file():
            raise UsageError(f"{directory} is not a weightwarden spool: it holds no {DB_NAME}")
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(
                read_only_uri(db_path), uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open spool {db_path}: {exc}") from exc
        try:
            self._connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self.agent_id = check_format(self._connection, db_path)
        except BaseException:
            self._connection.close()
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

    def close(self) -> None:
        """Close the connection; further calls fail. Closing twice is harmless."""
        with self._lock:
            self._connection.close()

    def read_batch(
        self, after_seq: int = 0, limit: int = 1000, *, since_ms: int | None = None
    ) -> list[SpooledEvent]:
        """Return up to ``limit`` held events with ``seq > after_seq``, in seq order.

        Args:
            after_seq: Continue after this sequence number (0: from the oldest held).
            limit: Most events returned, at least 1.
            since_ms: Only events whose own time is at or after this (ms since the epoch).

        Raises:
            ValueError: ``limit`` is below 1.
            WeightwardenError: The database could not be read.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        sql = f"{_SELECT} WHERE seq > ?"
        params: tuple[int, ...] = (after_seq,)
        if since_ms is not None:
            sql += " AND time >= ?"
            params += (since_ms,)
        sql += " ORDER BY seq LIMIT ?"
        with self._lock, self._reading():
            rows = self._connection.execute(sql, (*params, limit)).fetchall()
        return [
            SpooledEvent(
                seq=seq,
                time=time,
                payload=payload,
                link=link_from_row(self.agent_id, seq, prev, digest, link),
            )
            for seq, time, payload, prev, digest, link in rows
        ]

    def head(self) -> ChainLink | None:
        """The newest link of the chain (held or trimmed); None before the first event."""
        with self._lock, self._reading():
            return read_head(self._connection, self.agent_id)

    def anchor(self) -> ChainLink | None:
        """The link of the last trimmed event: pass it as ``verify_chain(..., after=)``."""
        with self._lock, self._reading():
            return read_anchor(self._connection, self.agent_id)

    def stats(self) -> SpoolStats:
        """Counters as the database holds them, read in one snapshot."""
        with self._lock, self._reading():
            self._connection.execute("BEGIN")
            try:
                return load_stats(self._connection, self.agent_id)
            finally:
                self._connection.execute("COMMIT")

    def _reading(self) -> AbstractContextManager[None]:
        return _read_errors(self.directory)


@contextmanager
def _read_errors(directory: Path) -> Iterator[None]:
    """Turn a SQLite failure during a read into a WeightwardenError naming the spool."""
    try:
        yield
    except sqlite3.Error as exc:
        raise WeightwardenError(
            f"cannot read spool {directory}: {exc} (if the agent just started, retry)"
        ) from exc


def check_format(connection: sqlite3.Connection, db_path: Path) -> str:
    """Return the spool's agent id after checking that ``db_path`` is a spool we can read.

    Raises:
        UsageError: Not a SQLite database, not a weightwarden spool, or a newer format.
    """
    try:
        rows = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise UsageError(f"{db_path} is not a weightwarden spool ({exc})") from exc
    if rows.get("format") != FORMAT or "agent_id" not in rows:
        raise UsageError(f"{db_path} is not a weightwarden spool (no spool format marker)")
    if rows.get("version") != str(VERSION):
        raise UsageError(
            f"{db_path} is spool format version {rows.get('version')}; this weightwarden "
            f"reads version {VERSION} (upgrade weightwarden)"
        )
    return str(rows["agent_id"])


def read_head(connection: sqlite3.Connection, agent_id: str) -> ChainLink | None:
    """The newest held link, else the anchor, else None (the chain has not started)."""
    row = connection.execute(
        "SELECT seq, prev_hash, payload_hash, link_hash FROM events ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is not None:
        return link_from_row(agent_id, *row)
    return read_anchor(connection, agent_id)


def read_anchor(connection: sqlite3.Connection, agent_id: str) -> ChainLink | None:
    """The link of the last event trimmed by an acknowledgement; None if none was."""
    row = connection.execute(
        "SELECT acked_seq, anchor_prev_hash, anchor_payload_hash, anchor_link_hash FROM state"
    ).fetchone()
    if row is None or row[0] == 0 or None in row:
        return None
    return link_from_row(agent_id, *row)


def load_ledger(connection: sqlite3.Connection) -> DropLedger:
    """The drop counters as stored."""
    first_ms, last_ms, reported = connection.execute(
        "SELECT drop_first_ms, drop_last_ms, reported_drops FROM state"
    ).fetchone()
    pending: dict[str, int] = {}
    totals: dict[str, int] = {}
    for name, pending_count, total in connection.execute("SELECT class, pending, total FROM drops"):
        pending[name] = pending_count
        totals[name] = total
    return DropLedger(
        pending=pending, totals=totals, first_ms=first_ms, last_ms=last_ms, reported=reported
    )


def load_stats(connection: sqlite3.Connection, agent_id: str) -> SpoolStats:
    """Counters as stored (call inside one read transaction for a consistent snapshot)."""
    acked_seq, count, size = connection.execute(
        "SELECT acked_seq, held_count, held_bytes FROM state"
    ).fetchone()
    oldest, newest = connection.execute("SELECT min(seq), max(seq) FROM events").fetchone()
    head = read_head(connection, agent_id)
    ledger = load_ledger(connection)
    return SpoolStats(
        count=count,
        bytes=size,
        oldest_seq=oldest,
        newest_seq=newest,
        head_seq=0 if head is None else head.seq,
        acked_seq=acked_seq,
        dropped=ledger.totals,
        unreported_drops=ledger.pending_total,
        reported_drops=ledger.reported,
    )
