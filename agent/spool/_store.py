"""The spool's on-disk format: one SQLite database in WAL mode inside a private directory.

Layout of ``DIR`` (mode 0700)::

    spool.sqlite        the database (mode 0600); -wal and -shm beside it while open
    spool.lock          held with flock(LOCK_EX) by the one writer; readers never touch it

Tables (format ``weightwarden-spool``, version 1)::

    meta(key, value)         format, version, agent_id
    events(seq, time, payload, prev_hash, payload_hash, link_hash)
                             one row per held event; payload = canonical_bytes(event),
                             seq = the chain's sequence number, time = event time (ms)
    state(id = 1, ...)       acked_seq and the anchor (the link of the last trimmed event,
                             so the chain continues after a trim), held_count, held_bytes,
                             drop_first_ms, drop_last_ms, reported_drops
    drops(class, pending, total)
                             events refused while full, per event class: ``pending`` not
                             yet reported in a health event, ``total`` since creation

The chain head is never stored twice: it is the newest row of ``events``, else the anchor,
else the chain has not started. Whatever changes the head changes it in one transaction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from weightwarden.crypto.chain import ChainLink

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "DB_NAME",
    "FORMAT",
    "LOCK_NAME",
    "ROW_OVERHEAD",
    "VERSION",
    "create_schema",
    "link_from_row",
    "read_only_uri",
]

DB_NAME: Final = "spool.sqlite"
LOCK_NAME: Final = "spool.lock"
FORMAT: Final = "weightwarden-spool"
VERSION: Final = 1
ROW_OVERHEAD: Final = 256
"""Bytes counted per held event on top of its payload: three hex hashes, seq, time and the
b-tree cell. ``max_bytes`` bounds payload plus this, which tracks the file size closely."""

_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    payload BLOB NOT NULL,
    prev_hash TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    link_hash TEXT NOT NULL
);
CREATE TABLE state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq INTEGER NOT NULL,
    anchor_prev_hash TEXT,
    anchor_payload_hash TEXT,
    anchor_link_hash TEXT,
    held_count INTEGER NOT NULL,
    held_bytes INTEGER NOT NULL,
    drop_first_ms INTEGER,
    drop_last_ms INTEGER,
    reported_drops INTEGER NOT NULL
);
CREATE TABLE drops (
    class TEXT PRIMARY KEY,
    pending INTEGER NOT NULL,
    total INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO state (id, acked_seq, held_count, held_bytes, reported_drops) VALUES (1, 0, 0, 0, 0);
"""


def create_schema(connection: sqlite3.Connection, agent_id: str) -> None:
    """Create the tables of an empty database in one transaction (autocommit connection)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("format", FORMAT), ("version", str(VERSION)), ("agent_id", agent_id)],
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def link_from_row(
    agent_id: str, seq: int, prev_hash: str, payload_hash: str, link_hash: str
) -> ChainLink:
    """Rebuild a :class:`ChainLink` from its stored columns."""
    return ChainLink(
        agent_id=agent_id,
        seq=seq,
        prev_hash=prev_hash,
        payload_hash=payload_hash,
        link_hash=link_hash,
    )


def read_only_uri(db_path: Path) -> str:
    """A SQLite URI that opens ``db_path`` read-only and creates no file.

    A read-only connection to a WAL database creates the -wal and -shm files when they are
    missing (the writer removes both when it closes cleanly). Then nothing else is open
    and every committed transaction is in the main file, so the file is opened as
    ``immutable``, which needs neither. A writer that starts during such a read appends
    to its own new -wal file and leaves the main file alone until it checkpoints (after
    about 1,000 pages); a read that overlaps that checkpoint may fail with a SQLite error
    and should be repeated.
    """
    uri = db_path.absolute().as_uri()
    wal = Path(f"{db_path}-wal")
    shm = Path(f"{db_path}-shm")
    if os.path.lexists(wal) and os.path.lexists(shm):
        return f"{uri}?mode=ro"
    return f"{uri}?mode=ro&immutable=1"
