"""The agent's durable spool: every event is stored here first, numbered and hash-chained.

The daemon appends batches to a :class:`Spool` (SQLite in WAL mode, one transaction per
batch); each event gets the agent's next sequence number and a
:class:`~weightwarden.crypto.ChainLink` inside the transaction that stores it. The
shipper reads batches in sequence order and acknowledges what the collector stored;
only acknowledged events are trimmed. The spool is bounded (``max_events``,
``max_bytes``): what a full spool refuses is counted per event class and reported as a
health event in the chain itself (:func:`drop_report`), never dropped silently.
:class:`SpoolReader` reads a spool read-only, beside the running writer, without creating
a file (``weightwarden agent events``).

The on-disk format is described in :mod:`agent.spool._store`; the full policies in
:mod:`agent.spool._spool`.
"""

from agent.spool._drops import SPOOL_DROP_ANALYTIC, DropLedger, drop_report
from agent.spool._reader import SpoolReader
from agent.spool._record import SpooledEvent, SpoolStats
from agent.spool._spool import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    FullPolicy,
    Spool,
    Synchronous,
    wall_clock_ms,
)
from agent.spool._store import DB_NAME, ROW_OVERHEAD

__all__ = [
    "DB_NAME",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "ROW_OVERHEAD",
    "SPOOL_DROP_ANALYTIC",
    "DropLedger",
    "FullPolicy",
    "Spool",
    "SpoolReader",
    "SpoolStats",
    "SpooledEvent",
    "Synchronous",
    "drop_report",
    "wall_clock_ms",
]
