"""The collector's record: SQLite (embedded default) or PostgreSQL, one schema, one interface."""

from collector.store._protocol import (
    AgentRecord,
    Alert,
    AlertStatus,
    Disposition,
    HeadMoved,
    QuarantinedBatch,
    Store,
    StoredEvent,
)

__all__ = [
    "AgentRecord",
    "Alert",
    "AlertStatus",
    "Disposition",
    "HeadMoved",
    "QuarantinedBatch",
    "Store",
    "StoredEvent",
]
