"""What both stores do alike: every :class:`~collector.store.Store` method, in shared SQL.

A driver subclass supplies the connections and the few statements that differ:

``_read(work)``
    runs ``work(cursor)`` on a connection of its own (no write transaction);
``_write(work)``
    runs ``work(cursor)`` in one write transaction, commits, and turns a unique-key
    violation into :class:`Conflict` and other driver errors into
    :class:`~collector.store.StoreError`; anything ``work`` raises rolls it back;
``_lock_agent(cursor, agent_id)``
    reads the agent's head so that no other writer can change it before the commit;
``_insert_events(cursor, rows)``
    inserts event rows (``executemany`` on SQLite, ``COPY`` on PostgreSQL).

Long reads (:meth:`SqlStore.events`, :meth:`SqlStore.chain`) page by key, a short read per
page, so an iterator never holds a connection or a snapshot between pages: a page sees
what was committed when it ran.
"""

from __future__ import annotations

import operator
from itertools import repeat
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from collector.store._protocol import (
    AgentRecord,
    Alert,
    AlertStatus,
    Disposition,
    EventColumns,
    HeadMoved,
    QuarantinedBatch,
    StoredEvent,
)
from collector.store._schema import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    IMPORT_PREFIX,
    Cursor,
    Dialect,
    alert_from_row,
    alert_row,
    check_event,
    event_from_row,
    event_row,
    evidence_json,
    postgres_sql,
)
from policies import Grant, Suppression
from weightwarden.crypto.chain import GENESIS
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = ["Conflict", "SqlStore"]

T = TypeVar("T")
C = TypeVar("C", bound=Cursor)

_MIN_PREFIX: Final = 6
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_EVENTS: Final = ", ".join(EVENT_COLUMNS)
_ALERTS: Final = ", ".join(ALERT_COLUMNS)
_AGENTS: Final = "agent_id, public_key_pem, enrolled_at, revoked_at, head_seq, head_hash"
# Only column names and "?" placeholders are interpolated into SQL in this module (S608).
_INSERT_ALERT: Final = (
    f"INSERT INTO alerts ({_ALERTS}) VALUES ({', '.join('?' * len(ALERT_COLUMNS))})"  # noqa: S608
    " ON CONFLICT (id) DO NOTHING"
)
_INSERT_EVENTS: Final = (
    f"INSERT INTO events ({_EVENTS}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"  # noqa: S608
)
_SELECT_AGENTS: Final = f"SELECT {_AGENTS} FROM agents"  # noqa: S608
_SELECT_ALERTS: Final = f"SELECT {_ALERTS} FROM alerts"  # noqa: S608
_SELECT_EVENTS: Final = f"SELECT {_EVENTS} FROM"


_GRANTS: Final = "id, user_name, asset, approver, reason, created_at, expires_at, revoked_at"
_SUPPRESSIONS: Final = (
    "id, rule, reason, user_glob, host_glob, program_glob, path_glob, expires_at, created_at,"
    " alert_id"
)


class Conflict(Exception):  # noqa: N818 -- internal signal: a unique key was already taken
    """A write hit a primary or unique key that is already stored."""


def _agent_from_row(row: Sequence[Any]) -> AgentRecord:
    return AgentRecord(
        agent_id=row[0],
        public_key_pem=row[1],
        enrolled_at=row[2],
        revoked_at=row[3],
        head_seq=row[4],
        head_hash=row[5],
    )


class SqlStore(Generic[C]):
    """The shared implementation; see the module docstring for what a driver adds."""

    dialect: ClassVar[Dialect]
    page_size: ClassVar[int] = 1000
    """Rows per page of :meth:`events` and :meth:`chain`."""
    _events_source: ClassVar[str] = "events"
    """The FROM of :meth:`events` (SQLite names its time index, see there)."""

    def __init__(self) -> None:
        self._sql_cache: dict[str, str] = {}

    # -- driver hooks ----------------------------------------------------------------
    def _read(self, work: Callable[[C], T]) -> T:
        raise NotImplementedError

    def _write(self, work: Callable[[C], T]) -> T:
        raise NotImplementedError

    def _lock_agent(self, cursor: C, agent_id: str) -> tuple[int, str, int | None] | None:
        """(head_seq, head_hash, revoked_at) of the agent, locked until the commit."""
        cursor.execute(
            self._q("SELECT head_seq, head_hash, revoked_at FROM agents WHERE agent_id = ?"),
            (agent_id,),
        )
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _insert_events(self, cursor: C, rows: Iterable[tuple[Any, ...]]) -> None:
        cursor.executemany(self._q(_INSERT_EVENTS), list(rows))

    def _lock_imports(self, cursor: C) -> None:
        """Keep other imports out until the commit (SQLite's write lock already does)."""

    def _q(self, sql: str) -> str:
        """``sql`` in this driver's placeholder style."""
        if self.dialect is Dialect.SQLITE:
            return sql
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = postgres_sql(sql)
        return cached

    # -- enrollment ------------------------------------------------------------------
    def add_token(self, *, token_hash: str, host: str, expires_at: int) -> None:
        """Remember a one-time enrollment token (only its SHA-256 is kept).

        Raises:
            ValueError: The same token hash is already stored.
        """

        def work(cursor: C) -> None:
            cursor.execute(
                self._q(
                    "INSERT INTO enroll_tokens (token_hash, host, expires_at, used_at)"
                    " VALUES (?, ?, ?, NULL)"
                ),
                (token_hash, host, expires_at),
            )

        try:
            self._write(work)
        except Conflict:
            raise ValueError("this enrollment token hash is already stored") from None

    def redeem_token(self, *, token_hash: str, host: str, now: int) -> bool:
        """Atomically use the token: true only if unused, unexpired and issued for ``host``.

        A token expires at ``expires_at``: it is usable while ``now < expires_at``.
        """
        changed = self._changed(
            "UPDATE enroll_tokens SET used_at = ? WHERE token_hash = ? AND host = ?"
            " AND used_at IS NULL AND expires_at > ?",
            (now, token_hash, host, now),
        )
        return changed == 1

    def register_agent(self, *, agent_id: str, public_key_pem: str, now: int) -> None:
        """Register (or re-key, if revoked) an agent; a new agent's head is 0 / GENESIS.

        A re-keyed agent keeps its stored events and head.

        Raises:
            UsageError: The agent is enrolled and not revoked.
        """
        changed = self._changed(
            f"INSERT INTO agents ({_AGENTS}) VALUES (?, ?, ?, NULL, 0, ?)"  # noqa: S608
            " ON CONFLICT (agent_id) DO UPDATE SET"
            " public_key_pem = excluded.public_key_pem,"
            " enrolled_at = excluded.enrolled_at, revoked_at = NULL"
            " WHERE agents.revoked_at IS NOT NULL",
            (agent_id, public_key_pem, now, GENESIS),
        )
        if changed != 1:
            raise UsageError(
                f"agent {agent_id!r} is already enrolled: revoke it first to enroll it again"
            )

    def agent(self, agent_id: str) -> AgentRecord | None:
        """One agent, or None."""

        def work(cursor: C) -> AgentRecord | None:
            cursor.execute(self._q(f"{_SELECT_AGENTS} WHERE agent_id = ?"), (agent_id,))
            row = cursor.fetchone()
            return None if row is None else _agent_from_row(row)

        return self._read(work)

    def agents(self) -> list[AgentRecord]:
        """Every agent, by id."""

        def work(cursor: C) -> list[AgentRecord]:
            cursor.execute(f"{_SELECT_AGENTS} ORDER BY agent_id")
            return [_agent_from_row(row) for row in cursor.fetchall()]

        return self._read(work)

    def revoke_agent(self, agent_id: str, *, now: int) -> bool:
        """Refuse the agent's batches from now on; false if unknown.

        Revoking again keeps the first revocation time.
        """
        changed = self._changed(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?) WHERE agent_id = ?",
            (now, agent_id),
        )
        return changed == 1

    # -- ingest ----------------------------------------------------------------------
    def stored_links(self, agent_id: str, first_seq: int, last_seq: int) -> dict[int, str]:
        """``seq -> link_hash`` of the agent's stored events in that range (inclusive)."""

        def work(cursor: C) -> dict[int, str]:
            cursor.execute(
                self._q(
                    "SELECT seq, link_hash FROM events WHERE agent_id = ? AND seq >= ? AND seq <= ?"
                ),
                (agent_id, first_seq, last_seq),
            )
            return {row[0]: row[1] for row in cursor.fetchall()}

        return self._read(work)

    def nonce_seen(self, nonce: str) -> bool:
        """Whether a batch with this nonce was stored before."""

        def work(cursor: C) -> bool:
            cursor.execute(self._q("SELECT 1 FROM batch_nonces WHERE nonce = ?"), (nonce,))
            return cursor.fetchone() is not None

        return self._read(work)

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
        """Store a batch atomically: events, nonce, head (compare-and-set) and alerts.

        Raises:
            HeadMoved: The agent's head is no longer ``expected_head_seq``, the agent was
                revoked, or the nonce or an event's ``(agent_id, seq)`` is already stored.
                Nothing was stored.
            ValueError: The arguments contradict each other or the agent is unknown: an
                event of another agent, an event after ``new_head_seq``, a new head that is
                behind the expected one or not the link of the batch's event at that seq,
                text with a NUL character.
        """
        if isinstance(events, EventColumns):
            rows: Iterable[tuple[Any, ...]] = _column_rows(
                agent_id, expected_head_seq, new_head_seq, new_head_hash, events
            )
            count, received_at = len(events), events.received_at
        else:
            rows = _batch_rows(agent_id, expected_head_seq, new_head_seq, new_head_hash, events)
            count, received_at = len(events), events[0].received_at if events else 0
        alert_rows = [alert_row(alert) for alert in alerts]

        def work(cursor: C) -> None:
            head_seq = self._check_head(
                cursor, agent_id, expected_head_seq, new_head_seq, new_head_hash
            )
            cursor.execute(
                self._q(
                    "INSERT INTO batch_nonces (nonce, agent_id, received_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (nonce) DO NOTHING"
                ),
                (nonce, agent_id, received_at),
            )
            if cursor.rowcount != 1:
                raise HeadMoved(f"agent {agent_id}: batch nonce {nonce} is already stored")
            if count:
                self._insert_events(cursor, rows)
            if new_head_seq != head_seq:
                cursor.execute(
                    self._q("UPDATE agents SET head_seq = ?, head_hash = ? WHERE agent_id = ?"),
                    (new_head_seq, new_head_hash, agent_id),
                )
            if alert_rows:
                cursor.executemany(self._q(_INSERT_ALERT), alert_rows)

        try:
            self._write(work)
        except Conflict as exc:
            raise HeadMoved(
                f"agent {agent_id}: an event of this batch is already stored ({exc})"
            ) from None

    def _check_head(
        self,
        cursor: C,
        agent_id: str,
        expected_head_seq: int,
        new_head_seq: int,
        new_head_hash: str,
    ) -> int:
        """Lock the agent's head and check it is where the batch expects; return its seq."""
        head = self._lock_agent(cursor, agent_id)
        if head is None:
            raise ValueError(f"agent {agent_id!r} is not enrolled: nothing was stored")
        head_seq, head_hash, revoked_at = head
        if head_seq != expected_head_seq:
            raise HeadMoved(f"agent {agent_id}: head is at seq {head_seq}, not {expected_head_seq}")
        if revoked_at is not None:
            raise HeadMoved(f"agent {agent_id} was revoked")
        if new_head_seq == head_seq and new_head_hash != head_hash:
            raise ValueError(
                f"agent {agent_id}: new head hash differs from the stored head at the same "
                f"seq {head_seq}"
            )
        return head_seq

    def quarantine(self, batch: QuarantinedBatch, alerts: Sequence[Alert]) -> None:
        """Keep a refused batch and its integrity alerts.

        Raises:
            ValueError: A quarantined batch with this id is already stored.
        """
        alert_rows = [alert_row(alert) for alert in alerts]

        def work(cursor: C) -> None:
            cursor.execute(
                self._q(
                    "INSERT INTO quarantine (id, agent_id, received_at, reason, body)"
                    " VALUES (?, ?, ?, ?, ?)"
                ),
                (batch.id, batch.agent_id, batch.received_at, batch.reason, batch.body),
            )
            if alert_rows:
                cursor.executemany(self._q(_INSERT_ALERT), alert_rows)

        try:
            self._write(work)
        except Conflict:
            raise ValueError(f"quarantined batch {batch.id!r} is already stored") from None

    def quarantined(self) -> list[QuarantinedBatch]:
        """Every quarantined batch, oldest first."""

        def work(cursor: C) -> list[QuarantinedBatch]:
            cursor.execute(
                "SELECT id, agent_id, received_at, reason, body FROM quarantine"
                " ORDER BY received_at, id"
            )
            return [
                QuarantinedBatch(
                    id=row[0],
                    agent_id=row[1],
                    received_at=row[2],
                    reason=row[3],
                    body=bytes(row[4]),
                )
                for row in cursor.fetchall()
            ]

        return self._read(work)

    def import_events(self, events: Sequence[StoredEvent], alerts: Sequence[Alert]) -> int:
        """Store imported (unchained) events; return how many were new (by uid).

        Each event's ``agent_id`` must start with ``import:``. An event whose uid is stored
        among imported events already, or came earlier in ``events``, is skipped. New
        events are numbered per source after the ones stored (the ``seq`` given is
        ignored). Imports run one at a time.

        Raises:
            ValueError: An event's agent id does not start with ``import:``, or its text
                holds a NUL character.
        """
        for event in events:
            if not event.agent_id.startswith(IMPORT_PREFIX):
                raise ValueError(
                    f"imported event {event.uid!r} has agent id {event.agent_id!r}: imported "
                    f"events belong to an {IMPORT_PREFIX}<source> agent"
                )
            check_event(event)
        alert_rows = [alert_row(alert) for alert in alerts]
        uids = list({event.uid: None for event in events})

        def work(cursor: C) -> int:
            self._lock_imports(cursor)
            seen = self._stored_import_uids(cursor, uids)
            next_seq: dict[str, int] = {}
            rows: list[tuple[Any, ...]] = []
            for event in events:
                if event.uid in seen:
                    continue
                seen.add(event.uid)
                seq = next_seq.get(event.agent_id)
                if seq is None:
                    seq = self._last_seq(cursor, event.agent_id) + 1
                next_seq[event.agent_id] = seq + 1
                row = event_row(event)
                rows.append((row[0], seq, *row[2:]))
            if rows:
                self._insert_events(cursor, rows)
            if alert_rows:
                cursor.executemany(self._q(_INSERT_ALERT), alert_rows)
            return len(rows)

        return self._write(work)

    def _stored_import_uids(self, cursor: C, uids: list[str]) -> set[str]:
        """Which of ``uids`` are stored among imported events."""
        return set(self._imported(cursor, "uid", uids))

    def _imported(self, cursor: C, columns: str, uids: Sequence[str]) -> list[Any]:
        """``columns`` (a constant) of the imported events whose uid is one of ``uids``."""
        found: list[Any] = []
        chunk = 500
        for start in range(0, len(uids), chunk):
            part = list(uids[start : start + chunk])
            cursor.execute(
                self._q(
                    f"SELECT {columns} FROM events"  # noqa: S608 -- constants and ? only
                    " WHERE substr(agent_id, 1, 7) = 'import:'"
                    f" AND uid IN ({', '.join('?' * len(part))})"
                ),
                part,
            )
            rows = cursor.fetchall()
            found.extend(row[0] if columns == "uid" else tuple(row) for row in rows)
        return found

    def imported_payloads(self, uids: Sequence[str]) -> dict[str, str]:
        """``uid -> payload`` of the imported events stored under any of ``uids``."""
        unique = list(dict.fromkeys(uids))
        return dict(self._read(lambda cursor: self._imported(cursor, "uid, payload", unique)))

    def _last_seq(self, cursor: C, agent_id: str) -> int:
        cursor.execute(
            self._q("SELECT COALESCE(MAX(seq), 0) FROM events WHERE agent_id = ?"), (agent_id,)
        )
        return int(cursor.fetchone()[0])

    # -- reading ---------------------------------------------------------------------
    def events(
        self,
        *,
        agent_id: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredEvent]:
        """Events by (time, agent, seq), with ``since <= time < until``, at most ``limit``.

        The iterator reads a page at a time as it is consumed; each page sees what was
        committed when it was read.
        """
        rows = self._rows(_EVENTS, agent_id, since, until, limit, key=(7, 0, 1))
        return (event_from_row(row) for row in rows)

    def payloads(self, *, since: int | None = None, until: int | None = None) -> Iterator[str]:
        """The canonical payloads of the events with ``since <= time < until``.

        In (time, agent, seq) order: what detection reads, without a :class:`StoredEvent`
        per row.
        """
        rows = self._rows("time, agent_id, seq, payload", None, since, until, None, key=(0, 1, 2))
        return (row[3] for row in rows)

    def _rows(
        self,
        columns: str,
        agent_id: str | None,
        since: int | None,
        until: int | None,
        limit: int | None,
        *,
        key: tuple[int, int, int],
    ) -> Iterator[Any]:
        """Rows of ``events`` by (time, agent_id, seq), a page at a time.

        ``columns`` is one of this module's constant column lists (never input); ``key``
        gives the positions of time, agent_id and seq among them. After the first page the
        lower bound is the last row's (time, agent_id, seq) alone: with ``time >= since``
        beside it the planner seeks from ``since`` on every page, and reading a period
        costs the square of its length.
        """
        fixed: list[str] = []
        fixed_params: list[Any] = []
        if agent_id is not None:
            fixed.append("agent_id = ?")
            fixed_params.append(agent_id)
        if until is not None:
            fixed.append("time < ?")
            fixed_params.append(until)
        remaining = limit
        after: tuple[int, str, int] | None = None
        while remaining is None or remaining > 0:
            size = self.page_size if remaining is None else min(self.page_size, remaining)
            where = list(fixed)
            args = list(fixed_params)
            if after is not None:
                where.append("(time, agent_id, seq) > (?, ?, ?)")
                args.extend(after)
            elif since is not None:
                where.append("time >= ?")
                args.append(since)
            sql = self._q(
                f"SELECT {columns} FROM {self._events_source}"  # noqa: S608 -- constants and ? only
                + (f" WHERE {' AND '.join(where)}" if where else "")
                + " ORDER BY time, agent_id, seq LIMIT ?"
            )
            rows = self._fetch_all(sql, (*args, size))
            yield from rows
            if len(rows) < size:
                return
            last = rows[-1]
            after = (last[key[0]], last[key[1]], last[key[2]])
            if remaining is not None:
                remaining -= len(rows)

    def chain(self, agent_id: str) -> Iterator[StoredEvent]:
        """One agent's stored events by seq, a page at a time as the iterator is consumed."""
        sql = self._q(
            f"{_SELECT_EVENTS} events WHERE agent_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        )
        after = -(2**63)
        while True:
            rows = self._fetch_all(sql, (agent_id, after, self.page_size))
            for row in rows:
                yield event_from_row(row)
            if len(rows) < self.page_size:
                return
            after = rows[-1][1]

    def _changed(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement (``?`` placeholders) in a write transaction; rows it changed."""

        def work(cursor: C) -> int:
            cursor.execute(self._q(sql), params)
            return int(cursor.rowcount)

        return self._write(work)

    def _fetch_all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        def work(cursor: C) -> list[Any]:
            cursor.execute(sql, params)
            return cursor.fetchall()

        return self._read(work)

    def count_events(self) -> int:
        """How many events are stored (imported ones included)."""

        def work(cursor: C) -> int:
            cursor.execute("SELECT count(*) FROM events")
            return int(cursor.fetchone()[0])

        return self._read(work)

    # -- alerts ----------------------------------------------------------------------
    def add_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store alerts raised outside ingest; one whose id is stored already is skipped."""
        alert_rows = [alert_row(alert) for alert in alerts]
        if not alert_rows:
            return

        def work(cursor: C) -> None:
            cursor.executemany(self._q(_INSERT_ALERT), alert_rows)

        self._write(work)

    def refresh_alerts(self, alerts: Sequence[Alert], *, now: int) -> int:
        """Bring stored alerts that are not resolved up to a later run's view of them."""
        sql = self._q(
            "UPDATE alerts SET severity_id = ?, title = ?, rule = ?, evidence = ?, finding = ?,"
            " updated_at = ? WHERE id = ? AND status <> 'resolved'"
        )
        rows = [
            (
                alert.severity_id,
                alert.title,
                alert.rule,
                evidence_json(alert.evidence),
                alert.finding,
                now,
                alert.id,
            )
            for alert in alerts
        ]

        def work(cursor: C) -> int:
            changed = 0
            for row in rows:
                cursor.execute(sql, row)
                changed += int(cursor.rowcount)
            return changed

        return self._write(work) if rows else 0

    def alerts(self, *, status: AlertStatus | None = None, since: int | None = None) -> list[Alert]:
        """Alerts, newest first (by ``created_at``, then id); ``since`` is inclusive."""
        conditions: list[str] = []
        params: list[Any] = []
        if status is not None:
            conditions.append("status = ?")
            params.append(status)
        if since is not None:
            conditions.append("created_at >= ?")
            params.append(since)
        sql = self._q(
            _SELECT_ALERTS
            + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
            + " ORDER BY created_at DESC, id DESC"
        )
        return [alert_from_row(row) for row in self._fetch_all(sql, params)]

    def alert(self, alert_id: str) -> Alert | None:
        """One alert, by id or by a unique prefix of at least 6 characters."""
        return self._read(lambda cursor: self._find_alert(cursor, alert_id))

    def _find_alert(self, cursor: C, alert_id: str) -> Alert | None:
        cursor.execute(self._q(f"{_SELECT_ALERTS} WHERE id = ?"), (alert_id,))
        row = cursor.fetchone()
        if row is None and len(alert_id) >= _MIN_PREFIX:
            cursor.execute(
                self._q(f"{_SELECT_ALERTS} WHERE substr(id, 1, length(?)) = ? LIMIT 2"),
                (alert_id, alert_id),
            )
            found = cursor.fetchall()
            row = found[0] if len(found) == 1 else None
        return None if row is None else alert_from_row(row)

    def update_alert(
        self,
        alert_id: str,
        *,
        status: AlertStatus,
        disposition: Disposition,
        note: str | None,
        now: int,
    ) -> Alert | None:
        """Record a triage decision; None if there is no such alert (or the prefix is shared).

        ``alert_id`` may be a unique prefix, as for :meth:`alert`; a ``note`` of None keeps
        the alert's note.
        """

        def work(cursor: C) -> Alert | None:
            found = self._find_alert(cursor, alert_id)
            if found is None:
                return None
            cursor.execute(
                self._q(
                    "UPDATE alerts SET status = ?, disposition = ?, note = COALESCE(?, note),"
                    " updated_at = ? WHERE id = ?"
                ),
                (status, disposition, note, now, found.id),
            )
            return self._find_alert(cursor, found.id)

        return self._write(work)

    # -- access grants and suppressions ----------------------------------------------
    def add_grant(self, grant: Grant) -> None:
        """Keep an access grant.

        Raises:
            ValueError: A grant with this id is already stored, or its text holds a NUL.
        """
        _no_nul("grant", grant.id, grant.id, grant.user, grant.asset, grant.approver, grant.reason)

        def work(cursor: C) -> None:
            cursor.execute(
                self._q(
                    f"INSERT INTO grants ({_GRANTS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
                ),
                (
                    grant.id,
                    grant.user,
                    grant.asset,
                    grant.approver,
                    grant.reason,
                    grant.created_at,
                    grant.until,
                    grant.revoked_at,
                ),
            )

        try:
            self._write(work)
        except Conflict:
            raise ValueError(f"grant {grant.id!r} is already stored") from None

    def revoke_grant(self, grant_id: str, *, now: int) -> bool:
        """Revoke a grant from ``now`` on; false if there is no such grant or it was revoked."""
        changed = self._changed(
            "UPDATE grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, grant_id),
        )
        return changed == 1

    def grants(self, *, now: int | None = None) -> list[Grant]:
        """Grants, oldest first: every one, or (``now``) only those in force at ``now``.

        In force: created at or before ``now``, expiring after it, not revoked by then.
        """
        sql = f"SELECT {_GRANTS} FROM grants"  # noqa: S608
        params: tuple[int, ...] = ()
        if now is not None:
            sql += (
                " WHERE created_at <= ? AND expires_at > ?"
                " AND (revoked_at IS NULL OR revoked_at > ?)"
            )
            params = (now, now, now)
        sql += " ORDER BY created_at, id"
        return [_grant_from_row(row) for row in self._fetch_all(self._q(sql), params)]

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
        s = suppression
        _no_nul(
            "suppression",
            suppression_id,
            suppression_id,
            s.rule,
            s.reason,
            s.user,
            s.host,
            s.program,
            s.path,
            alert_id,
        )

        def work(cursor: C) -> None:
            cursor.execute(
                self._q(
                    f"INSERT INTO suppressions ({_SUPPRESSIONS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    suppression_id,
                    s.rule,
                    s.reason,
                    s.user,
                    s.host,
                    s.program,
                    s.path,
                    s.until,
                    created_at,
                    alert_id,
                ),
            )

        try:
            self._write(work)
        except Conflict:
            raise ValueError(f"suppression {suppression_id!r} is already stored") from None

    def lift_suppressions(self, alert_id: str, *, now: int) -> int:
        """End, from ``now``, the suppressions the triage of ``alert_id`` created."""
        return self._changed(
            "UPDATE suppressions SET expires_at = ? WHERE alert_id = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (now, alert_id, now),
        )

    def suppressions(self, *, now: int | None = None) -> list[Suppression]:
        """Suppressions, oldest first: every one, or (``now``) only those not expired."""
        sql = f"SELECT {_SUPPRESSIONS} FROM suppressions"  # noqa: S608
        params: tuple[int, ...] = ()
        if now is not None:
            sql += " WHERE expires_at IS NULL OR expires_at > ?"
            params = (now,)
        sql += " ORDER BY created_at, id"
        return [_suppression_from_row(row) for row in self._fetch_all(self._q(sql), params)]


def _no_nul(kind: str, key: str, *texts: str | None) -> None:
    """Refuse text PostgreSQL cannot keep, so both stores refuse it alike."""
    if any(text is not None and "\x00" in text for text in texts):
        raise ValueError(f"{kind} {key!r}: text holds a NUL character")


def _grant_from_row(row: Sequence[Any]) -> Grant:
    return Grant(
        id=row[0],
        user=row[1],
        asset=row[2],
        approver=row[3],
        reason=row[4],
        created_at=row[5],
        until=row[6],
        revoked_at=row[7],
    )


def _suppression_from_row(row: Sequence[Any]) -> Suppression:
    return Suppression(
        rule=row[1],
        reason=row[2],
        user=row[3],
        host=row[4],
        program=row[5],
        path=row[6],
        until=row[7],
    )


def _batch_rows(
    agent_id: str,
    expected_head_seq: int,
    new_head_seq: int,
    new_head_hash: str,
    events: Sequence[StoredEvent],
) -> list[tuple[Any, ...]]:
    """The batch's event rows, once the arguments are checked against each other."""
    if new_head_seq < expected_head_seq:
        raise ValueError(
            f"agent {agent_id}: new head seq {new_head_seq} is behind the expected head "
            f"{expected_head_seq}"
        )
    rows = []
    head_link = None
    for event in events:
        if event.agent_id != agent_id:
            raise ValueError(f"event {event.agent_id}/{event.seq} in a batch of agent {agent_id}")
        if not 1 <= event.seq <= new_head_seq:
            raise ValueError(
                f"event {agent_id}/{event.seq} is outside 1..{new_head_seq} (the new head)"
            )
        check_event(event)
        if event.seq == new_head_seq:
            head_link = event.link_hash
        rows.append(event_row(event))
    if new_head_seq != expected_head_seq and head_link != new_head_hash:
        raise ValueError(
            f"agent {agent_id}: the new head (seq {new_head_seq}) must be the link of the "
            "batch's event at that seq"
        )
    return rows


def _column_rows(
    agent_id: str,
    expected_head_seq: int,
    new_head_seq: int,
    new_head_hash: str,
    events: EventColumns,
) -> Iterator[tuple[Any, ...]]:
    """What :func:`_batch_rows` checks, a column at a time; then the rows as they are read."""
    if new_head_seq < expected_head_seq:
        raise ValueError(
            f"agent {agent_id}: new head seq {new_head_seq} is behind the expected head "
            f"{expected_head_seq}"
        )
    if events.agent_id != agent_id:
        raise ValueError(f"events of agent {events.agent_id} in a batch of agent {agent_id}")
    if not events and new_head_seq != expected_head_seq:
        raise ValueError(
            f"agent {agent_id}: the new head (seq {new_head_seq}) must be the link of the "
            "batch's event at that seq"
        )
    if not events:
        return iter(())
    if min(events.seq) < 1 or max(events.seq) > new_head_seq:
        raise ValueError(f"events of agent {agent_id} are outside 1..{new_head_seq} (the new head)")
    if any(map(operator.contains, events.payload, repeat("\x00"))) or any(
        map(operator.contains, events.uid, repeat("\x00"))
    ):
        raise ValueError(f"events of agent {agent_id}: a payload or uid holds a NUL character")
    for column in (events.time, events.class_uid, events.activity_id, events.severity_id):
        if min(column) < _I64_MIN or max(column) > _I64_MAX:
            raise ValueError(
                f"events of agent {agent_id}: time, class_uid, activity_id or severity_id "
                "does not fit a 64-bit integer"
            )
    if new_head_seq != expected_head_seq and _link_at(events, new_head_seq) != new_head_hash:
        raise ValueError(
            f"agent {agent_id}: the new head (seq {new_head_seq}) must be the link of the "
            "batch's event at that seq"
        )
    return events.rows()


def _link_at(events: EventColumns, seq: int) -> str | None:
    """The link hash of the batch's (last) event at ``seq``; the last event is the usual one."""
    last = len(events.seq) - 1
    if events.seq[last] == seq:
        return events.link_hash[last]
    return next((events.link_hash[i] for i in range(last, -1, -1) if events.seq[i] == seq), None)
