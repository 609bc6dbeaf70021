"""PostgresStore: row locks between workers, a pool that outlives restarts, clear failures."""

from __future__ import annotations

import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from collector.store import HeadMoved, PostgresStore, StoredEvent, StoreError
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from collector.store import Store
    from weightwarden.crypto.chain import ChainLink

    ChainOf = Callable[..., tuple[list[StoredEvent], ChainLink]]


@pytest.fixture
def url(pg_url: str) -> str:
    """The session's database, emptied."""
    with psycopg.connect(pg_url, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass('agents') IS NOT NULL").fetchone()
        if exists is not None and exists[0]:
            connection.execute(
                "TRUNCATE agents, enroll_tokens, events, batch_nonces, quarantine, alerts"
            )
    return pg_url


def ingest(store: Store, events: list[StoredEvent], head: ChainLink, *, expected: int) -> None:
    store.ingest(
        agent_id="gpu-01",
        nonce=secrets.token_hex(16),
        expected_head_seq=expected,
        new_head_seq=head.seq,
        new_head_hash=head.link_hash,
        events=events,
        alerts=(),
    )


def wait_for_lock_waiters(admin: psycopg.Connection[Any], database: str, count: int) -> None:
    """Poll until ``count`` sessions of ``database`` wait on a lock (no timing asserted)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (database,),
        ).fetchone()
        if row is not None and row[0] >= count:
            return
        time.sleep(0.01)
    pytest.fail(f"{count} sessions never waited on the agent's row lock")


def test_workers_blocked_on_one_agent_extend_its_chain_once(url: str, chain_of: ChainOf) -> None:
    """Two workers queued on the agent's row lock: one stores, the other then gets HeadMoved."""
    with PostgresStore(url) as first, PostgresStore(url) as second:
        first.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)
        batches = [chain_of("gpu-01", 50), chain_of("gpu-01", 50)]
        outcome: list[str] = []
        holder = psycopg.connect(url)
        holder.execute("SELECT 1 FROM agents WHERE agent_id = 'gpu-01' FOR UPDATE")

        def worker(store: Store, events: list[StoredEvent], head: ChainLink) -> None:
            try:
                ingest(store, events, head, expected=0)
                outcome.append("stored")
            except HeadMoved:
                outcome.append("moved")

        threads = [
            threading.Thread(target=worker, args=(store, *batch))
            for store, batch in zip((first, second), batches, strict=True)
        ]
        for thread in threads:
            thread.start()
        with psycopg.connect(url, autocommit=True) as admin:
            wait_for_lock_waiters(admin, holder.info.dbname, 2)
        holder.rollback()
        holder.close()
        for thread in threads:
            thread.join()
        assert sorted(outcome) == ["moved", "stored"]
        assert first.count_events() == 50
        agent = first.agent("gpu-01")
        assert agent is not None
        assert agent.head_seq == 50


def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    """A refused connection is a one-line StoreError saying what to check, without the password."""
    with pytest.raises(StoreError) as caught:
        PostgresStore("postgresql://ww:s3cret-pw@127.0.0.1:1/collector", connect_timeout=2)
    message = str(caught.value)
    assert "postgresql://ww@127.0.0.1:1/collector" in message
    assert "check that PostgreSQL is running" in message
    assert "s3cret-pw" not in message
    assert "\n" not in message


@pytest.mark.usefixtures("pg_server")
def test_missing_database_is_a_store_error() -> None:
    """A database that does not exist fails with a StoreError naming it."""
    with pytest.raises(StoreError, match="ww_no_such_db"):
        PostgresStore("postgresql://postgres@127.0.0.1:5432/ww_no_such_db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ww:s3cret-pw@127.0.0.1:notaport/db",
        "postgresql://ww:s3cret-pw@[::1/db",
        "postgresql://ww:s3cret-pw@127.0.0.1/db?bogus=1",
    ],
)
def test_malformed_url_is_a_usage_error_without_the_password(url: str) -> None:
    """A URL libpq cannot parse, or with a port that is no number, is a UsageError."""
    with pytest.raises(UsageError, match="invalid PostgreSQL URL") as caught:
        PostgresStore(url)
    assert "s3cret-pw" not in str(caught.value)


def test_more_threads_than_connections_share_the_pool(url: str) -> None:
    """Sixteen threads on a pool of two connections all get their answers."""
    with PostgresStore(url, max_connections=2) as store:
        store.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)
        results: list[object] = []

        def read() -> None:
            results.extend(store.agent("gpu-01") for _ in range(20))

        threads = [threading.Thread(target=read) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 320
        assert all(record is not None for record in results)


def test_store_recovers_after_its_connections_are_killed(url: str, pg_server: Any) -> None:
    """After the server drops every connection (as on a restart), reads and writes work again."""
    with PostgresStore(url, max_connections=3) as store:
        store.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)
        barrier = threading.Barrier(3)

        def warm() -> None:  # open all three pooled connections
            barrier.wait()
            store.agents()

        threads = [threading.Thread(target=warm) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        killed = pg_server.admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = %s",
            ("weightwarden-collector", psycopg.conninfo.conninfo_to_dict(url)["dbname"]),
        ).fetchone()
        assert killed is not None
        assert killed[0] >= 1
        assert [record.agent_id for record in store.agents()] == ["gpu-01"]
        store.register_agent(agent_id="gpu-02", public_key_pem="k", now=1)
        assert len(store.agents()) == 2
