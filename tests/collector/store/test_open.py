"""open_store: which store a --db value names, and one-line errors for the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from collector.store import PostgresStore, SqliteStore, StoreError, open_store
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path


def test_a_path_opens_sqlite(tmp_path: Path) -> None:
    """A filesystem path opens a SqliteStore on that file."""
    path = tmp_path / "collector.sqlite"
    store = open_store(str(path))
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == path
        assert path.exists()
    finally:
        store.close()


def test_a_sqlite_url_opens_sqlite_with_options(tmp_path: Path) -> None:
    """sqlite:///ABS/PATH opens that file, with the asked synchronous setting."""
    path = tmp_path / "collector.sqlite"
    store = open_store(f"sqlite://{path}", synchronous="normal")
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == path
        assert store.synchronous == "normal"
    finally:
        store.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_a_postgres_url_opens_postgres(pg_url: str, scheme: str) -> None:
    """postgresql:// and postgres:// URLs open a PostgresStore."""
    store = open_store(pg_url.replace("postgresql", scheme, 1))
    try:
        assert isinstance(store, PostgresStore)
        assert store.agents() is not None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "no database given"),
        ("   ", "no database given"),
        ("sqlite://relative/path.db", "bad SQLite URL"),
        ("sqlite:////tmp/x.db?mode=ro", "bad SQLite URL"),
        ("mysql://root@localhost/db", "unsupported database mysql://"),
        ("s3://bucket/key", "unsupported database s3://"),
    ],
)
def test_other_targets_are_one_line_usage_errors(target: str, message: str) -> None:
    """Anything but a path, sqlite:/// or postgresql:// is a one-line UsageError."""
    with pytest.raises(UsageError, match=message) as caught:
        open_store(target)
    assert "\n" not in str(caught.value)


def test_unreachable_postgres_is_a_store_error() -> None:
    """A PostgreSQL URL nobody answers is a StoreError (a WeightwardenError), not a traceback."""
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
