"""Store fixtures: a real SQLite file and a real PostgreSQL database on loopback.

PostgreSQL runs at 127.0.0.1:5432 (user postgres, trust auth; override the admin URL with
WEIGHTWARDEN_TEST_POSTGRES). A throwaway database is created for the test session and
dropped at its end; each test starts from empty tables. Tests that need PostgreSQL skip,
with the reason, when it cannot be reached.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import pytest

from collector.store import PostgresStore, SqliteStore, StoredEvent
from collector.store._schema import postgres_sql
from weightwarden.crypto.chain import next_link

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from collector.store import Store
    from weightwarden.crypto.chain import ChainLink

# A postgresql:// URL: each throwaway database's URL is this one with another path.
ADMIN_URL = os.environ.get(
    "WEIGHTWARDEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATA_TABLES = (
    "agents",
    "enroll_tokens",
    "events",
    "batch_nonces",
    "quarantine",
    "alerts",
    "grants",
    "suppressions",
)


class PgServer:
    """Creates throwaway databases through the admin URL and drops them at the end."""

    def __init__(self, admin: psycopg.Connection[Any]) -> None:
        self.admin = admin
        self.names: list[str] = []

    def create(self) -> str:
        """A new empty database; its URL."""
        name = f"ww_test_{secrets.token_hex(6)}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()

    def drop_all(self) -> None:
        """Drop every database this session created."""
        for name in self.names:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server on loopback, or a skip saying why not."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}: {' '.join(str(exc).split())}")
    server = PgServer(admin)
    try:
        yield server
    finally:
        server.drop_all()
        admin.close()


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """The session's throwaway database (its schema is created by the first store)."""
    return pg_server.create()


def _empty_tables(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass('agents') IS NOT NULL").fetchone()
        if exists is not None and exists[0]:
            connection.execute(f"TRUNCATE {', '.join(DATA_TABLES)}")


class RawSql:
    """Direct SQL on the store's database, behind the store's back (``?`` placeholders)."""

    def __init__(self, backend: str, target: str) -> None:
        self.backend = backend
        self.target = target

    def __call__(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement, commit it, return its rows (if any)."""
        if self.backend == "sqlite":
            connection = sqlite3.connect(self.target, isolation_level=None)
            try:
                cursor = connection.execute(sql, params)
                return cursor.fetchall()
            finally:
                connection.close()
        with psycopg.connect(self.target, autocommit=True) as pg:
            pg_cursor = pg.execute(postgres_sql(sql), params)
            return pg_cursor.fetchall() if pg_cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which store a contract test runs against."""
    return str(request.param)


@pytest.fixture
def target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the store lives: a SQLite file path, or the session's PostgreSQL URL (emptied)."""
    if backend == "sqlite":
        return str(tmp_path / "collector.sqlite")
    url = request.getfixturevalue("pg_url")
    _empty_tables(url)
    return str(url)


@pytest.fixture
def open_backend(backend: str, target: str) -> Iterator[Callable[..., Store]]:
    """Open (another) store on the test's database; every one is closed at the end."""
    opened: list[SqliteStore | PostgresStore] = []

    def open_one(**options: Any) -> Store:
        store = (
            SqliteStore(target, **options)
            if backend == "sqlite"
            else PostgresStore(target, **options)
        )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_backend: Callable[..., Store]) -> Store:
    """An empty store of the test's backend."""
    return open_backend()


@pytest.fixture
def raw_sql(backend: str, target: str) -> RawSql:
    """Direct SQL on the test's database."""
    return RawSql(backend, target)


def chained(
    agent_id: str,
    count: int,
    *,
    after: ChainLink | None = None,
    time0: int = 1_700_000_000_000,
    received_at: int = 1_800_000_000_000,
) -> tuple[list[StoredEvent], ChainLink]:
    """``count`` chained events of ``agent_id`` after ``after``; and the last link."""
    events = []
    head = after
    for i in range(count):
        uid = uuid.uuid4().hex
        payload = (
            f'{{"class_uid":1001,"metadata":{{"uid":"{uid}"}},"n":{i},'
            f'"path":"/weights/模型-{i}.safetensors","time":{time0 + i}}}'
        )
        head = next_link(head, agent_id, payload.encode())
        events.append(
            StoredEvent(
                agent_id=agent_id,
                seq=head.seq,
                payload=payload,
                prev_hash=head.prev_hash,
                payload_hash=head.payload_hash,
                link_hash=head.link_hash,
                uid=uid,
                time=time0 + i,
                class_uid=1001,
                activity_id=14,
                severity_id=1,
                received_at=received_at,
            )
        )
    assert head is not None
    return events, head


@pytest.fixture
def chain_of() -> Callable[..., tuple[list[StoredEvent], ChainLink]]:
    """``chain_of(agent_id, count, after=link)``: chained events and their last link."""
    return chained
