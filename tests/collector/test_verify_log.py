"""verify_log: tampering done with direct SQL on the real database is found and named.

Runs against a SQLite file and a throwaway PostgreSQL database (127.0.0.1:5432, user
postgres; skipped with the reason when unreachable).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import psycopg
import pytest

import collector.verify_log as verify_log_module
from collector.store import PostgresStore, SqliteStore, StoredEvent
from collector.store._schema import postgres_sql
from collector.verify_log import LogProblemKind, verify_log
from weightwarden.crypto.chain import ChainLink, compute_link_hash, next_link

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from collector.store import Store
    from collector.verify_log import LogReport

ADMIN_URL = os.environ.get(
    "WEIGHTWARDEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
EDITED, REMOVED, BROKEN = LogProblemKind.EDITED, LogProblemKind.REMOVED, LogProblemKind.BROKEN_LINK


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this module, dropped afterwards."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}: {' '.join(str(exc).split())}")
    name = f"ww_test_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Db:
    """A store and direct SQL on the same database (``?`` placeholders)."""

    def __init__(self, backend: str, target: str) -> None:
        self.backend = backend
        self.target = target
        self.store: SqliteStore | PostgresStore = (
            SqliteStore(target) if backend == "sqlite" else PostgresStore(target)
        )

    def sql(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Run one statement behind the store's back and commit it."""
        if self.backend == "sqlite":
            connection = sqlite3.connect(self.target, isolation_level=None)
            try:
                connection.execute(statement, params)
            finally:
                connection.close()
        else:
            with psycopg.connect(self.target, autocommit=True) as pg:
                pg.execute(postgres_sql(statement), params)

    def add_agent(self, agent_id: str, count: int) -> list[StoredEvent]:
        """Register ``agent_id`` and store ``count`` chained events through ingest."""
        self.store.register_agent(agent_id=agent_id, public_key_pem="k", now=1)
        return self.extend(agent_id, count)

    def extend(self, agent_id: str, count: int) -> list[StoredEvent]:
        """Store ``count`` more chained events of the agent through ingest."""
        record = self.store.agent(agent_id)
        stored = list(self.store.chain(agent_id))
        head = None
        if stored:
            last = stored[-1]
            head = ChainLink(
                agent_id=agent_id,
                seq=last.seq,
                prev_hash=last.prev_hash,
                payload_hash=last.payload_hash,
                link_hash=last.link_hash,
            )
        events = []
        for i in range(count):
            payload = f'{{"metadata":{{"uid":"{uuid.uuid4().hex}"}},"n":{i},"π":"ü"}}'
            head = next_link(head, agent_id, payload.encode())
            events.append(
                StoredEvent(
                    agent_id=agent_id,
                    seq=head.seq,
                    payload=payload,
                    prev_hash=head.prev_hash,
                    payload_hash=head.payload_hash,
                    link_hash=head.link_hash,
                    uid=uuid.uuid4().hex,
                    time=1000 + head.seq,
                    class_uid=1001,
                    activity_id=14,
                    severity_id=1,
                    received_at=1,
                )
            )
        assert record is not None
        assert head is not None
        self.store.ingest(
            agent_id=agent_id,
            nonce=secrets.token_hex(16),
            expected_head_seq=record.head_seq,
            new_head_seq=head.seq,
            new_head_hash=head.link_hash,
            events=events,
            alerts=(),
        )
        return events


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """An empty store of each backend, with direct SQL beside it."""
    if request.param == "sqlite":
        target = str(tmp_path / "collector.sqlite")
    else:
        target = request.getfixturevalue("pg_database")
        with psycopg.connect(target, autocommit=True) as connection:
            exists = connection.execute("SELECT to_regclass('agents') IS NOT NULL").fetchone()
            if exists is not None and exists[0]:
                connection.execute(
                    "TRUNCATE agents, enroll_tokens, events, batch_nonces, quarantine, alerts"
                )
    database = Db(request.param, target)
    yield database
    database.store.close()


def test_public_api_is_pinned() -> None:
    """collector.verify_log exports exactly its documented names."""
    assert sorted(verify_log_module.__all__) == [
        "AgentLog",
        "LogProblem",
        "LogProblemKind",
        "LogReport",
        "verify_log",
    ]


def found(report: LogReport) -> list[tuple[LogProblemKind, str, int, int | None]]:
    """(kind, agent, seq, last_seq) of every problem."""
    return [(p.kind, p.agent_id, p.seq, p.last_seq) for p in report.problems]


def test_untouched_store_verifies_and_skips_imports(db: Db) -> None:
    """Chains stored by ingest verify clean; imported events are not judged."""
    db.add_agent("gpu-01", 30)
    db.add_agent("gpu-02", 5)
    db.store.register_agent(agent_id="gpu-03", public_key_pem="k", now=1)
    db.store.import_events(
        [
            StoredEvent(
                agent_id="import:siem",
                seq=0,
                payload="{}",
                prev_hash="",
                payload_hash="",
                link_hash="",
                uid="imp-1",
                time=1,
                class_uid=1001,
                activity_id=1,
                severity_id=1,
                received_at=1,
            )
        ],
        [],
    )
    report = verify_log(db.store)
    assert report.ok
    assert [(a.agent_id, a.rows, a.head_seq) for a in report.agents] == [
        ("gpu-01", 30, 30),
        ("gpu-02", 5, 5),
        ("gpu-03", 0, 0),
    ]
    assert report.rows == 35


def test_one_byte_changed_in_a_payload_is_an_edited_row(db: Db) -> None:
    """Changing one byte of one stored payload names that row as edited, nothing else."""
    events = db.add_agent("gpu-01", 10)
    edited = events[6].payload.replace('"n":6', '"n":7')
    assert len(edited) == len(events[6].payload)
    db.sql("UPDATE events SET payload = ? WHERE agent_id = ? AND seq = ?", (edited, "gpu-01", 7))
    report = verify_log(db.store)
    assert found(report) == [(EDITED, "gpu-01", 7, None)]
    assert "payload" in report.problems[0].detail


def test_deleted_row_is_a_removed_row(db: Db) -> None:
    """Deleting one stored row names it as removed."""
    db.add_agent("gpu-01", 10)
    db.add_agent("gpu-02", 3)
    db.sql("DELETE FROM events WHERE agent_id = ? AND seq = ?", ("gpu-01", 4))
    assert found(verify_log(db.store)) == [(REMOVED, "gpu-01", 4, 4)]


def test_deleted_tail_is_found_against_the_head(db: Db) -> None:
    """Deleting the newest rows (an internally consistent chain) is caught by the head."""
    db.add_agent("gpu-01", 10)
    db.sql("DELETE FROM events WHERE agent_id = ? AND seq > ?", ("gpu-01", 7))
    report = verify_log(db.store)
    assert found(report) == [(REMOVED, "gpu-01", 8, 10)]
    assert "tail truncated" in report.problems[0].detail


def test_every_row_deleted_is_found_against_the_head(db: Db) -> None:
    """An agent whose head says 3 but whose rows are all gone has rows 1 to 3 removed."""
    db.add_agent("gpu-01", 3)
    db.sql("DELETE FROM events WHERE agent_id = ?", ("gpu-01",))
    assert found(verify_log(db.store)) == [(REMOVED, "gpu-01", 1, 3)]


def test_changed_link_hash_is_an_edited_row_and_a_broken_link(db: Db) -> None:
    """Changing a row's link_hash edits that row and breaks the link to the next one."""
    db.add_agent("gpu-01", 10)
    db.sql(
        "UPDATE events SET link_hash = ? WHERE agent_id = ? AND seq = ?", ("ab" * 32, "gpu-01", 5)
    )
    assert found(verify_log(db.store)) == [
        (EDITED, "gpu-01", 5, None),
        (BROKEN, "gpu-01", 6, None),
    ]


def test_changed_prev_hash_is_an_edited_row_with_a_broken_link(db: Db) -> None:
    """Changing a row's prev_hash edits the row and breaks its link to the row before."""
    db.add_agent("gpu-01", 10)
    db.sql(
        "UPDATE events SET prev_hash = ? WHERE agent_id = ? AND seq = ?", ("cd" * 32, "gpu-01", 1)
    )
    report = verify_log(db.store)
    assert found(report) == [(EDITED, "gpu-01", 1, None), (BROKEN, "gpu-01", 1, None)]
    assert "GENESIS" in report.problems[1].detail


def test_relinked_splice_is_a_broken_link(db: Db) -> None:
    """A row whose link is recomputed consistently but points elsewhere is a broken link."""
    events = db.add_agent("gpu-01", 6)
    forged_prev = "ef" * 32
    link = compute_link_hash(
        agent_id="gpu-01", seq=4, prev_hash=forged_prev, payload_hash=events[3].payload_hash
    )
    db.sql(
        "UPDATE events SET prev_hash = ?, link_hash = ? WHERE agent_id = ? AND seq = ?",
        (forged_prev, link, "gpu-01", 4),
    )
    assert found(verify_log(db.store)) == [(BROKEN, "gpu-01", 4, None), (BROKEN, "gpu-01", 5, None)]


def test_rewritten_tail_with_recomputed_hashes_is_a_head_mismatch(db: Db) -> None:
    """The newest row rewritten with recomputed hashes no longer ends at the head."""
    events = db.add_agent("gpu-01", 5)
    payload = events[4].payload.replace('"n":4', '"n":9')
    forged = next_link(
        ChainLink(
            agent_id="gpu-01",
            seq=4,
            prev_hash=events[3].prev_hash,
            payload_hash=events[3].payload_hash,
            link_hash=events[3].link_hash,
        ),
        "gpu-01",
        payload.encode(),
    )
    db.sql(
        "UPDATE events SET payload = ?, payload_hash = ?, link_hash = ? "
        "WHERE agent_id = ? AND seq = ?",
        (payload, forged.payload_hash, forged.link_hash, "gpu-01", 5),
    )
    assert found(verify_log(db.store)) == [(LogProblemKind.HEAD_MISMATCH, "gpu-01", 5, None)]


def test_row_planted_after_the_head_is_reported(db: Db) -> None:
    """A row inserted after the head, which no ingest recorded, is reported beyond the head."""
    events = db.add_agent("gpu-01", 3)
    db.sql(
        "INSERT INTO events (agent_id, seq, payload, prev_hash, payload_hash, link_hash, uid,"
        " time, class_uid, activity_id, severity_id, received_at)"
        " SELECT agent_id, 9, payload, prev_hash, payload_hash, link_hash, 'planted', time,"
        " class_uid, activity_id, severity_id, received_at FROM events"
        " WHERE agent_id = ? AND seq = ?",
        ("gpu-01", events[0].seq),
    )
    assert found(verify_log(db.store)) == [(LogProblemKind.BEYOND_HEAD, "gpu-01", 9, 9)]


def test_problems_across_verification_chunks_are_found(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With chunks of 7 rows, rows removed at a chunk boundary and edits later are named."""
    monkeypatch.setattr(verify_log_module, "_CHUNK", 7)
    db.add_agent("gpu-01", 30)
    db.sql("DELETE FROM events WHERE agent_id = ? AND seq IN (8, 9)", ("gpu-01",))
    db.sql("UPDATE events SET payload = '{}' WHERE agent_id = ? AND seq = ?", ("gpu-01", 22))
    report = verify_log(db.store)
    assert found(report) == [(REMOVED, "gpu-01", 8, 9), (EDITED, "gpu-01", 22, None)]
    assert report.agents[0].rows == 28


def test_events_stored_while_verifying_are_not_tampering(db: Db) -> None:
    """A batch ingested while the chain is being read (after the head was read) is no problem."""
    db.add_agent("gpu-01", 10)

    class IngestingMeanwhile:
        """The real store, with one more batch ingested once the chain read has begun."""

        def __init__(self, store: Store) -> None:
            self.store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

        def chain(self, agent_id: str) -> Iterator[StoredEvent]:
            rows = self.store.chain(agent_id)
            yield next(rows)
            db.extend(agent_id, 5)
            yield from rows

    report = verify_log(cast("Store", IngestingMeanwhile(db.store)))
    assert report.ok
    assert report.agents[0].head_seq == 10
