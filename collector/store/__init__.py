"""The collector's record: SQLite (embedded default) or PostgreSQL, one schema, one interface.

:func:`open_store` opens what a ``--db`` value names; :class:`SqliteStore` and
:class:`PostgresStore` both implement the :class:`Store` Protocol, with the schema and
migrations of :mod:`collector.store._schema`. psycopg is imported only when a PostgreSQL
store is opened (or ``PostgresStore`` is imported): SQLite users do not pay for it.
"""

from typing import TYPE_CHECKING

from collector.store._open import open_store
from collector.store._protocol import (
    AgentRecord,
    Alert,
    AlertStatus,
    Disposition,
    EventColumns,
    HeadMoved,
    QuarantinedBatch,
    Store,
    StoredEvent,
    StoreError,
)
from collector.store._schema import LATEST_VERSION as SCHEMA_VERSION
from collector.store._sqlite import SqliteStore, Synchronous

if TYPE_CHECKING:
    from collector.store._postgres import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "AgentRecord",
    "Alert",
    "AlertStatus",
    "Disposition",
    "EventColumns",
    "HeadMoved",
    "PostgresStore",
    "QuarantinedBatch",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoredEvent",
    "Synchronous",
    "open_store",
]


def __getattr__(name: str) -> object:
    """Import ``PostgresStore`` (and psycopg with it) on first use."""
    if name == "PostgresStore":
        from collector.store._postgres import PostgresStore  # noqa: PLC0415 -- lazy psycopg

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
