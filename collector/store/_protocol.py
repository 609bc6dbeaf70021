"""What the collector keeps, and the one interface both stores (SQLite, PostgreSQL) provide.

Values are frozen dataclasses; times are milliseconds since the epoch (UTC). Every method
that writes does so in one transaction. ``ingest`` is the hot path: it stores a verified
batch's new events, advances the agent's chain head (compare-and-set on the head it was
given, so two collector workers can never both extend one agent's chain), records the
batch nonce (a nonce seen before is a replay) and stores the alerts derived from the
batch, all atomically: a batch is either wholly stored or not at all.

What a store raises::

    HeadMoved                 the head moved, the batch's nonce or one of its events is
                              already stored, or the agent was revoked: re-read and re-check
    StoreError                (WeightwardenError, exit 70) the database cannot be reached,
                              opened or written; the message says what to check
    ConfigError               (exit 78) the database was written by a newer weightwarden
    UsageError                (exit 2) an enrolled agent registered again
    ValueError                arguments that break the store's invariants (a caller bug)

An alert whose ``id`` is already stored is kept as it was (adding it again is a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, Literal, Protocol

from weightwarden.errors import WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from policies import Grant, Suppression

__all__ = [
    "AgentRecord",
    "Alert",
    "AlertStatus",
    "Disposition",
    "EventColumns",
    "HeadMoved",
    "QuarantinedBatch",
    "Store",
    "StoreError",
    "StoredEvent",
]

AlertStatus = Literal["new", "acknowledged", "resolved"]
Disposition = Literal["true_positive", "false_positive", "benign"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    """An enrolled agent: its identity key and where its chain stands."""

    agent_id: str
    public_key_pem: str
    enrolled_at: int
    revoked_at: int | None
    head_seq: int
    """0 before the first event."""
    head_hash: str
    """``GENESIS`` before the first event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """One event as stored: the canonical payload, its chain link, and index columns.

    Imported events (``collector import``) have ``agent_id`` ``import:<source>``, their own
    running ``seq`` (assigned by :meth:`Store.import_events`) and empty hash fields: they
    are not part of any agent's chain.
    """

    agent_id: str
    seq: int
    payload: str
    prev_hash: str
    payload_hash: str
    link_hash: str
    uid: str
    time: int
    class_uid: int
    activity_id: int
    severity_id: int
    received_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventColumns:
    """One batch's events as columns: the ingest hot path's form of :class:`StoredEvent`.

    Field ``f`` of event ``i`` is ``f[i]``; every event has the batch's ``agent_id`` and
    ``received_at``. Building one object per event costs more than storing it, so ingest
    hands the store columns, and the store inserts :meth:`rows` as they come.

    Raises:
        ValueError: The columns differ in length.
    """

    agent_id: str
    received_at: int
    seq: Sequence[int]
    payload: Sequence[str]
    prev_hash: Sequence[str]
    payload_hash: Sequence[str]
    link_hash: Sequence[str]
    uid: Sequence[str]
    time: Sequence[int]
    class_uid: Sequence[int]
    activity_id: Sequence[int]
    severity_id: Sequence[int]

    def __post_init__(self) -> None:
        lengths = {len(column) for column in self._columns()}
        if len(lengths) != 1:
            raise ValueError(f"event columns differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.seq)

    def _columns(self) -> tuple[Sequence[Any], ...]:
        return (
            self.seq,
            self.payload,
            self.prev_hash,
            self.payload_hash,
            self.link_hash,
            self.uid,
            self.time,
            self.class_uid,
            self.activity_id,
            self.severity_id,
        )

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Each event's column values, in the order of :class:`StoredEvent`'s fields."""
        return zip(repeat(self.agent_id), *self._columns(), repeat(self.received_at))

    def events(self) -> Iterator[StoredEvent]:
        """One :class:`StoredEvent` per event (for readers that want objects)."""
        for row in self.rows():
            yield StoredEvent(
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A finding for the security team, with its triage state."""

    id: str
    created_at: int
    updated_at: int
    severity_id: int
    title: str
    rule: str
    status: AlertStatus
    disposition: Disposition | None
    note: str | None
    agent_id: str | None
    evidence: tuple[str, ...]
    """Event uids the alert rests on."""
    finding: str
    """The OCSF Detection Finding (2004), canonical JSON."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantinedBatch:
    """A batch kept aside because it broke the chain rules (gap, fork, replay, bad link)."""

    id: str
    agent_id: str
    received_at: int
    reason: str
    body: bytes


class HeadMoved(Exception):  # noqa: N818 -- a signal between store and ingest, not an error
    """``ingest`` found the agent's head moved since it was read; re-read and retry.

    Also raised when the batch's nonce or one of its ``(agent_id, seq)`` is already stored
    (another worker stored it first), or the agent was revoked since it was read: the
    re-read shows which.
    """


class StoreError(WeightwardenError):
    """The database cannot be reached, opened or written; the message says what to check.

    The operation did not happen (a write is rolled back), except that a failure while
    committing leaves it unknown whether the commit landed: re-read before retrying.
    """


class Store(Protocol):
    """The collector's storage. Implementations: ``SqliteStore``, ``PostgresStore``."""

    # -- enrollment ------------------------------------------------------------------
    def add_token(self, *, token_hash: str, host: str, expires_at: int) -> None:
        """Remember a one-time enrollment token (only its SHA-256 is kept)."""

    def redeem_token(self, *, token_hash: str, host: str, now: int) -> bool:
        """Atomically use the token: true only if unused, unexpired and issued for ``host``."""

    def register_agent(self, *, agent_id: str, public_key_pem: str, now: int) -> None:
        """Register (or re-key, if revoked) an agent; its head starts at 0 / GENESIS.

        A re-keyed agent keeps its stored events and its head: its chain continues (an
        agent whose spool was wiped starts again at seq 1, which is a fork; enroll such a
        host under a new agent id).

        Raises:
            UsageError: The agent is enrolled and not revoked.
        """

    def agent(self, agent_id: str) -> AgentRecord | None:
        """One agent, or None."""

    def agents(self) -> list[AgentRecord]:
        """Every agent, by id."""

    def revoke_agent(self, agent_id: str, *, now: int) -> bool:
        """Refuse the agent's batches from now on; false if unknown."""

    # -- ingest ----------------------------------------------------------------------
    def stored_links(self, agent_id: str, first_seq: int, last_seq: int) -> dict[int, str]:
        """``seq -> link_hash`` of the agent's stored events in that range."""

    def nonce_seen(self, nonce: str) -> bool:
        """Whether a batch with this nonce was stored before."""

    def ingest(
        self,
        *,
        agent_id: str,
        nonce: str,
        expected_head_seq: int,
        new_head_seq: int,
        new_head_hash: str,
        events: Sequence[StoredEvent] | EventColumns,
        alerts: Sequence[Alert],
    ) -> None:
        """Store a batch atomically (see the module doc).

        ``events`` are the batch's new events, as objects or (the hot path) as columns.

        Raises:
            HeadMoved: the agent's head is no longer ``expected_head_seq``.
        """

    def quarantine(self, batch: QuarantinedBatch, alerts: Sequence[Alert]) -> None:
        """Keep a refused batch and its integrity alerts."""

    def quarantined(self) -> list[QuarantinedBatch]:
        """Every quarantined batch, oldest first."""

    def import_events(self, events: Sequence[StoredEvent], alerts: Sequence[Alert]) -> int:
        """Store imported (unchained) events; return how many were new (by uid).

        Each event's ``agent_id`` must start with ``import:``; an event whose uid is already
        stored among imported events (or earlier in ``events``) is skipped. The store
        numbers the new events of each source after the ones it holds (the ``seq`` given
        is ignored).
        """

    def imported_payloads(self, uids: Sequence[str]) -> dict[str, str]:
        """``uid -> payload`` of the imported events stored under any of ``uids``."""

    # -- reading ---------------------------------------------------------------------
    def events(
        self,
        *,
        agent_id: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredEvent]:
        """Events by (time, agent, seq), with ``since <= time < until``."""

    def payloads(self, *, since: int | None = None, until: int | None = None) -> Iterator[str]:
        """The payloads of the events with ``since <= time < until``, in :meth:`events` order."""

    def chain(self, agent_id: str) -> Iterator[StoredEvent]:
        """One agent's stored events by seq, for re-verification."""

    def count_events(self) -> int:
        """How many events are stored."""

    # -- alerts ----------------------------------------------------------------------
    def add_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store alerts raised outside ingest (detectors run over stored events)."""

    def refresh_alerts(self, alerts: Sequence[Alert], *, now: int) -> int:
        """Bring stored alerts that are not resolved up to a later run's view of them.

        Severity, title, rule, evidence and finding are replaced; creation time and triage
        state (status, disposition, note) are kept; ``updated_at`` becomes ``now``. A
        resolved alert stays as it was closed. Returns how many alerts changed.
        """

    def alerts(self, *, status: AlertStatus | None = None, since: int | None = None) -> list[Alert]:
        """Alerts, newest first; ``since`` compares with ``created_at``."""

    def alert(self, alert_id: str) -> Alert | None:
        """One alert (by id, or by a unique prefix of at least 6 characters)."""

    def update_alert(
        self,
        alert_id: str,
        *,
        status: AlertStatus,
        disposition: Disposition,
        note: str | None,
        now: int,
    ) -> Alert | None:
        """Record a triage decision; None if there is no such alert.

        ``alert_id`` may be a unique prefix (as for :meth:`alert`); a ``note`` of None keeps
        the note the alert has.
        """

    # -- access grants and suppressions ------------------------------------------------
    def add_grant(self, grant: Grant) -> None:
        """Keep an access grant.

        Raises:
            ValueError: A grant with this id is already stored, or its text holds a NUL.
        """

    def revoke_grant(self, grant_id: str, *, now: int) -> bool:
        """Revoke a grant from ``now`` on; false if there is no such grant or it was revoked."""

    def grants(self, *, now: int | None = None) -> list[Grant]:
        """Grants, oldest first: every one, or (``now``) only those in force at ``now``."""

    def add_suppression(
        self,
        suppression: Suppression,
        *,
        suppression_id: str,
        created_at: int,
        alert_id: str | None = None,
    ) -> None:
        """Keep a suppression (``alert_id``: the alert whose triage created it).

        Raises:
            ValueError: A suppression with this id is already stored, or its text holds a NUL.
        """

    def lift_suppressions(self, alert_id: str, *, now: int) -> int:
        """End, from ``now``, the suppressions the triage of ``alert_id`` created.

        They stay in the table (the audit trail) with their expiry set to ``now``. Returns
        how many were still in force.
        """

    def suppressions(self, *, now: int | None = None) -> list[Suppression]:
        """Suppressions, oldest first: every one, or (``now``) only those not expired."""

    def close(self) -> None:
        """Release connections."""
