"""SqliteStore: a private WAL-mode file, durable commits, threads, and clear failures."""

from __future__ import annotations

import secrets
import sqlite3
import stat
import threading
from typing import TYPE_CHECKING

import pytest

from collector.store import SqliteStore, StoredEvent, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from weightwarden.crypto.chain import ChainLink

    ChainOf = Callable[..., tuple[list[StoredEvent], ChainLink]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_wal_are_private(tmp_path: Path) -> None:
    """The database is created 0600 and its -wal and -shm files get the same mode."""
    path = tmp_path / "collector.sqlite"
    with SqliteStore(path) as store:
        store.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)
        assert mode(path) == 0o600
        assert mode(tmp_path / "collector.sqlite-wal") == 0o600
        assert mode(tmp_path / "collector.sqlite-shm") == 0o600


def test_a_new_database_has_16_kib_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path, chain_of: ChainOf
) -> None:
    """New files get 16 KiB pages; a file made with 4 KiB pages keeps them and still works."""
    fresh = tmp_path / "fresh.sqlite"
    SqliteStore(fresh).close()
    old = tmp_path / "old.sqlite"
    made = sqlite3.connect(old)
    made.execute("PRAGMA page_size = 4096")
    made.execute("CREATE TABLE before_weightwarden (x INTEGER)")
    made.close()
    with SqliteStore(old) as store:
        store.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)
        events, head = chain_of("gpu-01", 5)
        store.ingest(
            agent_id="gpu-01",
            nonce="n-1",
            expected_head_seq=0,
            new_head_seq=head.seq,
            new_head_hash=head.link_hash,
            events=events,
            alerts=(),
        )
        assert list(store.chain("gpu-01")) == events
    for path, size in ((fresh, 16384), (old, 4096)):
        check = sqlite3.connect(path)
        try:
            assert check.execute("PRAGMA page_size").fetchone()[0] == size
        finally:
            check.close()


def test_existing_database_is_tightened_to_0600(tmp_path: Path) -> None:
    """A database file readable by others is made private when the store opens it."""
    path = tmp_path / "collector.sqlite"
    path.touch(mode=0o644)
    path.chmod(0o644)
    SqliteStore(path).close()
    assert mode(path) == 0o600


def test_database_is_in_wal_mode_with_the_chosen_sync(tmp_path: Path) -> None:
    """The file is in WAL mode; synchronous is FULL by default and NORMAL when asked."""
    path = tmp_path / "collector.sqlite"
    # The setting is per connection: ask the store's own writer connection.
    with SqliteStore(path) as store:
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # noqa: SLF001 -- FULL
    with SqliteStore(path, synchronous="normal") as store:
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # noqa: SLF001 -- NORMAL
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    """A database in a directory that does not exist fails with a StoreError naming it."""
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore(tmp_path / "nowhere" / "collector.sqlite")


def test_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite fails with a StoreError saying so, and is left unchanged."""
    path = tmp_path / "notes.txt"
    content = b"these are not the tables you are looking for\n" * 100
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a SQLite database"):
        SqliteStore(path)
    assert path.read_bytes() == content


def test_write_lock_held_by_another_process_is_a_store_error(tmp_path: Path) -> None:
    """A write that cannot get the write lock within busy_timeout fails with a StoreError."""
    path = tmp_path / "collector.sqlite"
    with SqliteStore(path, busy_timeout=0.2) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="write lock"):
                store.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)
            assert store.agents() == []  # reads still work beside the other writer
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.register_agent(agent_id="gpu-01", public_key_pem="k", now=1)


@pytest.mark.parametrize("readers", [4, 0])
def test_threads_ingest_and_read_at_once(tmp_path: Path, chain_of: ChainOf, readers: int) -> None:
    """Eight threads each storing their agent's chain while reading: everything is stored."""
    with SqliteStore(tmp_path / "collector.sqlite", readers=readers) as store:
        agents = [f"gpu-{i:02d}" for i in range(8)]
        for agent_id in agents:
            store.register_agent(agent_id=agent_id, public_key_pem="k", now=1)
        errors: list[BaseException] = []

        def work(agent_id: str) -> None:
            try:
                head = None
                for expected in range(0, 100, 20):
                    events, head = chain_of(agent_id, 20, after=head)
                    record = store.agent(agent_id)
                    assert record is not None
                    assert record.head_seq == expected
                    nonce = secrets.token_hex(16)
                    assert not store.nonce_seen(nonce)
                    store.ingest(
                        agent_id=agent_id,
                        nonce=nonce,
                        expected_head_seq=expected,
                        new_head_seq=head.seq,
                        new_head_hash=head.link_hash,
                        events=events,
                        alerts=(),
                    )
            except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(agent_id,)) for agent_id in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert store.count_events() == 800
        assert {record.head_seq for record in store.agents()} == {100}
