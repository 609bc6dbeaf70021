"""The one schema of both stores: tables, versioned migrations, and the SQL they share.

Tables (schema version 2)::

    schema_migrations(version, name, applied_at)
                        one row per migration applied, in the same transaction as it
    agents(agent_id, public_key_pem, enrolled_at, revoked_at, head_seq, head_hash)
                        the chain head is what ingest compare-and-sets
    enroll_tokens(token_hash, host, expires_at, used_at)
                        SHA-256 of each one-time token, bound to a host name
    events(agent_id, seq, payload, prev_hash, payload_hash, link_hash, uid, time,
           class_uid, activity_id, severity_id, received_at)
                        primary key (agent_id, seq); ``payload`` is the canonical text;
                        indexed by (time, agent_id, seq) for listing; imported rows
                        (agent ``import:<source>``) have a unique uid index of their own
    batch_nonces(nonce, agent_id, received_at)
                        every stored batch's nonce: one seen again is a replay
    quarantine(id, agent_id, received_at, reason, body)
                        refused batches, kept byte for byte as evidence
    alerts(id, created_at, updated_at, severity_id, title, rule, status, disposition,
           note, agent_id, evidence, finding)
                        ``evidence`` is a JSON array of event uids, ``finding`` OCSF JSON
    grants(id, user_name, asset, approver, reason, created_at, expires_at, revoked_at)
                        time-limited access grants (``weightwarden access grant``), kept
                        after they expire or are revoked, for the audit trail
    suppressions(id, rule, reason, user_glob, host_glob, program_glob, path_glob,
                 expires_at, created_at, alert_id)
                        scoped suppressions from triage (``alerts resolve --suppress``);
                        ``alert_id`` is the alert whose disposition created it

There is deliberately no index on the uid of agent events: agent uids are random, and a
random-key index costs every ingest batch a write to most of its leaf pages.

Migrations are applied when a store opens, in one transaction, and recorded in
``schema_migrations``; opening again applies nothing. A database whose newest migration is
unknown to this version of weightwarden was written by a newer one and is refused with a
:class:`~weightwarden.errors.ConfigError` rather than misread.

SQL here uses ``?`` placeholders (SQLite's); :func:`postgres_sql` turns them into
psycopg's ``%s``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from collector.store._protocol import Alert, AlertStatus, Disposition, StoredEvent
from weightwarden.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ALERT_COLUMNS",
    "EVENT_COLUMNS",
    "IMPORT_PREFIX",
    "LATEST_VERSION",
    "MIGRATIONS",
    "Cursor",
    "Dialect",
    "Migration",
    "alert_from_row",
    "alert_row",
    "check_event",
    "event_from_row",
    "event_row",
    "evidence_json",
    "migrate",
    "postgres_sql",
]

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1

IMPORT_PREFIX: Final = "import:"
"""Agent ids of imported, unchained events start with this."""

EVENT_COLUMNS: Final = (
    "agent_id",
    "seq",
    "payload",
    "prev_hash",
    "payload_hash",
    "link_hash",
    "uid",
    "time",
    "class_uid",
    "activity_id",
    "severity_id",
    "received_at",
)
"""The events table's columns, in the order of :func:`event_row` (and of COPY)."""

ALERT_COLUMNS: Final = (
    "id",
    "created_at",
    "updated_at",
    "severity_id",
    "title",
    "rule",
    "status",
    "disposition",
    "note",
    "agent_id",
    "evidence",
    "finding",
)
"""The alerts table's columns, in the order of :func:`alert_row`."""


class Dialect(enum.StrEnum):
    """Which database a statement is written for."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


_TYPES: Final = {
    # {key}: identifiers compared byte for byte, so both stores order them alike
    Dialect.SQLITE: {"int": "INTEGER", "bytes": "BLOB", "key": "TEXT"},
    Dialect.POSTGRES: {"int": "BIGINT", "bytes": "BYTEA", "key": 'TEXT COLLATE "C"'},
}


class Cursor(Protocol):
    """What both drivers' cursors offer and the shared SQL uses."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any:  # noqa: ANN401 -- the driver's own cursor
        """Run one statement."""

    def fetchone(self) -> Any:  # noqa: ANN401 -- a driver row
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """The remaining rows."""

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> Any:  # noqa: ANN401 -- the driver's own cursor
        """Run one statement once per parameter row."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One step of the schema: statements with ``{int}``, ``{bytes}``, ``{key}`` types."""

    version: int
    name: str
    statements: tuple[str, ...]

    def sql(self, dialect: Dialect) -> list[str]:
        """The statements, with the column types of ``dialect``."""
        return [statement.format_map(_TYPES[dialect]) for statement in self.statements]


MIGRATIONS: Final = (
    Migration(
        version=1,
        name="collector store: agents, tokens, events, nonces, quarantine, alerts",
        statements=(
            """CREATE TABLE agents (
                agent_id {key} PRIMARY KEY,
                public_key_pem TEXT NOT NULL,
                enrolled_at {int} NOT NULL,
                revoked_at {int},
                head_seq {int} NOT NULL,
                head_hash TEXT NOT NULL
            )""",
            """CREATE TABLE enroll_tokens (
                token_hash {key} PRIMARY KEY,
                host TEXT NOT NULL,
                expires_at {int} NOT NULL,
                used_at {int}
            )""",
            """CREATE TABLE events (
                agent_id {key} NOT NULL,
                seq {int} NOT NULL,
                payload TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                payload_hash TEXT NOT NULL,
                link_hash TEXT NOT NULL,
                uid {key} NOT NULL,
                time {int} NOT NULL,
                class_uid {int} NOT NULL,
                activity_id {int} NOT NULL,
                severity_id {int} NOT NULL,
                received_at {int} NOT NULL,
                PRIMARY KEY (agent_id, seq)
            )""",
            "CREATE INDEX events_time ON events (time, agent_id, seq)",
            (
                "CREATE UNIQUE INDEX events_import_uid ON events (uid)"
                " WHERE substr(agent_id, 1, 7) = 'import:'"
            ),
            """CREATE TABLE batch_nonces (
                nonce {key} PRIMARY KEY,
                agent_id {key} NOT NULL,
                received_at {int} NOT NULL
            )""",
            """CREATE TABLE quarantine (
                id {key} PRIMARY KEY,
                agent_id {key} NOT NULL,
                received_at {int} NOT NULL,
                reason TEXT NOT NULL,
                body {bytes} NOT NULL
            )""",
            "CREATE INDEX quarantine_received ON quarantine (received_at, id)",
            """CREATE TABLE alerts (
                id {key} PRIMARY KEY,
                created_at {int} NOT NULL,
                updated_at {int} NOT NULL,
                severity_id {int} NOT NULL,
                title TEXT NOT NULL,
                rule TEXT NOT NULL,
                status TEXT NOT NULL,
                disposition TEXT,
                note TEXT,
                agent_id {key},
                evidence TEXT NOT NULL,
                finding TEXT NOT NULL
            )""",
            "CREATE INDEX alerts_created ON alerts (created_at, id)",
        ),
    ),
    Migration(
        version=2,
        name="access grants and triage suppressions",
        statements=(
            """CREATE TABLE grants (
                id {key} PRIMARY KEY,
                user_name TEXT NOT NULL,
                asset TEXT NOT NULL,
                approver TEXT NOT NULL,
                reason TEXT NOT NULL,
                created_at {int} NOT NULL,
                expires_at {int} NOT NULL,
                revoked_at {int}
            )""",
            "CREATE INDEX grants_created ON grants (created_at, id)",
            """CREATE TABLE suppressions (
                id {key} PRIMARY KEY,
                rule TEXT NOT NULL,
                reason TEXT NOT NULL,
                user_glob TEXT,
                host_glob TEXT,
                program_glob TEXT,
                path_glob TEXT,
                expires_at {int},
                created_at {int} NOT NULL,
                alert_id {key}
            )""",
            "CREATE INDEX suppressions_created ON suppressions (created_at, id)",
        ),
    ),
)
"""Every migration, oldest first; versions are 1, 2, 3 ... with no holes."""

LATEST_VERSION: Final = MIGRATIONS[-1].version

_CREATE_MIGRATIONS: Final = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at {int} NOT NULL
)"""


def migrate(cursor: Cursor, dialect: Dialect, *, now: int, where: str) -> int:
    """Bring the schema up to date inside the caller's transaction; return its version.

    Args:
        cursor: A cursor in a write transaction (the caller commits).
        dialect: The database's dialect.
        now: Milliseconds since the epoch, recorded with each migration applied.
        where: The database as the user named it, for messages.

    Raises:
        ConfigError: The database was written by a newer weightwarden.
    """
    cursor.execute(_CREATE_MIGRATIONS.format_map(_TYPES[dialect]))
    cursor.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    current = int(cursor.fetchone()[0])
    if current > LATEST_VERSION:
        raise ConfigError(
            f"the collector database {where} has schema version {current}, written by a newer "
            f"weightwarden (this one knows up to version {LATEST_VERSION}): upgrade "
            "weightwarden, or point --db at another database"
        )
    insert = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
    if dialect is Dialect.POSTGRES:
        insert = postgres_sql(insert)
    for migration in MIGRATIONS:
        if migration.version > current:
            for statement in migration.sql(dialect):
                cursor.execute(statement)
            cursor.execute(insert, (migration.version, migration.name, now))
    return LATEST_VERSION


def postgres_sql(sql: str) -> str:
    """``sql`` with psycopg placeholders: ``?`` becomes ``%s`` and a literal ``%`` ``%%``."""
    return sql.replace("%", "%%").replace("?", "%s")


def check_event(event: StoredEvent) -> None:
    """Refuse values that one of the stores could not keep exactly.

    Raises:
        ValueError: The payload or uid holds a NUL character (PostgreSQL text cannot), or
            an index column does not fit a signed 64-bit integer.
    """
    if "\x00" in event.payload or "\x00" in event.uid:
        raise ValueError(
            f"event {event.agent_id}/{event.seq}: payload or uid holds a NUL character"
        )
    numbers = (event.time, event.class_uid, event.activity_id, event.severity_id)
    if min(numbers) < _I64_MIN or max(numbers) > _I64_MAX:
        raise ValueError(
            f"event {event.agent_id}/{event.seq}: time, class_uid, activity_id or severity_id "
            "does not fit a 64-bit integer"
        )


def event_row(event: StoredEvent) -> tuple[Any, ...]:
    """The event's column values, in :data:`EVENT_COLUMNS` order."""
    return (
        event.agent_id,
        event.seq,
        event.payload,
        event.prev_hash,
        event.payload_hash,
        event.link_hash,
        event.uid,
        event.time,
        event.class_uid,
        event.activity_id,
        event.severity_id,
        event.received_at,
    )


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """A stored event from its columns, in :data:`EVENT_COLUMNS` order."""
    return StoredEvent(
        agent_id=row[0],
        seq=row[1],
        payload=row[2],
        prev_hash=row[3],
        payload_hash=row[4],
        link_hash=row[5],
        uid=row[6],
        time=row[7],
        class_uid=row[8],
        activity_id=row[9],
        severity_id=row[10],
        received_at=row[11],
    )


def alert_row(alert: Alert) -> tuple[Any, ...]:
    """The alert's column values, in :data:`ALERT_COLUMNS` order."""
    return (
        alert.id,
        alert.created_at,
        alert.updated_at,
        alert.severity_id,
        alert.title,
        alert.rule,
        alert.status,
        alert.disposition,
        alert.note,
        alert.agent_id,
        evidence_json(alert.evidence),
        alert.finding,
    )


def evidence_json(evidence: Sequence[str]) -> str:
    """An alert's evidence ids as its column holds them."""
    return json.dumps(list(evidence), separators=(",", ":"), ensure_ascii=False)


def alert_from_row(row: Sequence[Any]) -> Alert:
    """An alert from its columns, in :data:`ALERT_COLUMNS` order."""
    return Alert(
        id=row[0],
        created_at=row[1],
        updated_at=row[2],
        severity_id=row[3],
        title=row[4],
        rule=row[5],
        status=cast("AlertStatus", row[6]),
        disposition=cast("Disposition | None", row[7]),
        note=row[8],
        agent_id=row[9],
        evidence=tuple(json.loads(row[10])),
        finding=row[11],
    )
