"""What every collector and alerts command shares: where the record is, times, safe text.

Only the command line reads the environment: ``--dir`` defaults to
``$WEIGHTWARDEN_COLLECTOR_DIR``, else ``/var/lib/weightwarden/collector``.
"""

from __future__ import annotations

import os
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from collector.config import CONFIG_NAME, DEFAULT_DIR, DIR_ENV, load_settings
from weightwarden.config import parse_duration, parse_since
from weightwarden.errors import ConfigError, UsageError
from weightwarden.events import Severity

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

    from collector.config import CollectorSettings
    from collector.store import Store
    from policies import Policy

__all__ = [
    "add_policy_option",
    "add_store_options",
    "collector_dir",
    "now_ms",
    "open_from_args",
    "parse_since",
    "parse_ttl",
    "policy_from_args",
    "safe",
    "settings_from_args",
    "severity_name",
    "table",
    "utc",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def now_ms() -> int:
    """Wall-clock time, milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--dir DIR`` and ``--db URL``."""
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=f"collector directory (default: ${DIR_ENV}, else {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="the database instead of DIR's: a path, sqlite:///PATH or postgresql://...",
    )


def collector_dir(args: argparse.Namespace) -> Path:
    """``--dir``, else ``$WEIGHTWARDEN_COLLECTOR_DIR``, else the default directory."""
    if args.dir is not None:
        return Path(args.dir)
    env = os.environ.get(DIR_ENV)
    return Path(env) if env else DEFAULT_DIR


def settings_from_args(args: argparse.Namespace) -> CollectorSettings:
    """The collector directory's settings.

    Raises:
        ConfigError: ``DIR/collector.toml`` is missing or invalid.
    """
    return load_settings(collector_dir(args))


def open_from_args(args: argparse.Namespace) -> Store:
    """The store ``--db`` names, else the one DIR's config names.

    Raises:
        ConfigError: No ``--db`` and DIR has no valid config.
        UsageError: ``--db`` is malformed.
        StoreError: The database cannot be opened.
    """
    from collector.store import open_store  # noqa: PLC0415 -- psycopg only when needed

    if args.db:
        return open_store(args.db)
    settings = settings_from_args(args)
    return open_store(settings.db, synchronous=settings.config.collector.synchronous)


def add_policy_option(parser: argparse.ArgumentParser) -> None:
    """``--policy FILE``, which overrides ``[detection] policy`` in ``DIR/collector.toml``."""
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the policy file (default: [detection] policy in DIR/collector.toml)",
    )


def policy_from_args(args: argparse.Namespace) -> Policy:
    """The policy ``--policy`` names, else the one ``DIR/collector.toml`` names, parsed.

    Raises:
        ConfigError: Neither names a policy, or the file is missing, unreadable or invalid.
    """
    from collector.policy_file import load_policy  # noqa: PLC0415 -- only commands that judge

    if args.policy is not None:
        return load_policy(Path(args.policy))
    directory = collector_dir(args)
    path = None
    if (directory / CONFIG_NAME).is_file():
        path = settings_from_args(args).policy
    if path is None:
        raise ConfigError(
            f"no policy file: pass --policy FILE, or set [detection] policy in "
            f"{directory / CONFIG_NAME}"
        )
    return load_policy(path)


def parse_ttl(text: str) -> int:
    """``--ttl``: a duration like ``24h`` or ``30m``, in milliseconds.

    Raises:
        UsageError: Not a positive duration.
    """
    try:
        ttl = parse_duration(text) // _ONE_MS
    except ValueError:
        ttl = 0
    if ttl <= 0:
        raise UsageError(f"--ttl {text!r}: expected a positive duration like 24h, 30m or 7d")
    return ttl


def utc(ms: int | None) -> str:
    """Milliseconds since the epoch as ``2024-05-01T12:00:00.000Z`` (``-`` for None)."""
    if ms is None:
        return "-"
    try:
        moment = _EPOCH + ms * _ONE_MS
    except OverflowError:
        return str(ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def severity_name(value: int) -> str:
    """An OCSF severity id as its name (``CRITICAL``), or the number if it has none."""
    try:
        return Severity(value).name
    except ValueError:
        return str(value)


def safe(text: str | None, limit: int = 0) -> str:
    """Text for a terminal: control and format characters escaped, cut to ``limit``."""
    if text is None:
        return "-"
    out = "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"}
        else ch
        for ch in text
    )
    if limit and len(out) > limit:
        return out[: limit - 1] + "…"
    return out


def table(rows: Iterable[tuple[str, ...]], widths: tuple[int, ...]) -> Iterable[str]:
    """Lines of a table: each cell padded to its width (0: the last, unbounded column)."""
    for row in rows:
        cells = [safe(cell, width).ljust(width) for cell, width in zip(row, widths, strict=True)]
        yield "  ".join(cells).rstrip() + "\n"
