"""Open the store a ``--db`` value names: a SQLite file, or a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from collector.store._sqlite import SqliteStore, Synchronous
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collector.store._protocol import Store

__all__ = ["open_store"]

_SQLITE_URL: Final = "sqlite://"
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def open_store(target: str, *, synchronous: Synchronous | str = Synchronous.FULL) -> Store:
    """Open (and migrate) the store ``target`` names.

    Args:
        target: A filesystem path or ``sqlite:///ABS/PATH`` (SQLite), or a
            ``postgresql://`` / ``postgres://`` URL (PostgreSQL).
        synchronous: SQLite's durability setting (``full`` or ``normal``); PostgreSQL
            keeps its server's settings.

    Raises:
        UsageError: ``target`` is empty, names another scheme, or is a malformed URL.
        StoreError: The database cannot be opened or reached (the message says what to check).
        ConfigError: The database was written by a newer weightwarden.
    """
    if not target.strip():
        raise UsageError("no database given: pass a file path, sqlite:///PATH or postgresql://...")
    lowered = target.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        from collector.store._postgres import PostgresStore  # noqa: PLC0415 -- lazy psycopg

        scheme, rest = target.split("://", 1)
        return PostgresStore(f"{scheme.lower()}://{rest}")  # libpq wants it in lower case
    if lowered.startswith(_SQLITE_URL):
        path = target[len(_SQLITE_URL) :]
        if not path.startswith("/") or path.startswith("//") or "?" in path:
            raise UsageError(
                f"bad SQLite URL {target!r}: write sqlite:///ABSOLUTE/PATH (three slashes, "
                "no options), or give the file path itself"
            )
        return SqliteStore(Path(path), synchronous=synchronous)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise UsageError(
            f"unsupported database {scheme}://...: use a file path, sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DATABASE"
        )
    return SqliteStore(Path(target), synchronous=synchronous)
