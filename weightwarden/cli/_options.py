"""Argument types and secret inputs shared by subcommands. Only the CLI reads the environment."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from weightwarden.errors import KeyFileError, UsageError
from weightwarden.seal import DigestCache, default_cache_path

__all__ = ["add_cache_options", "byte_size", "open_cache", "positive_int", "read_passphrase"]

PASSPHRASE_ENV = "WEIGHTWARDEN_KEY_PASSPHRASE"  # noqa: S105 -- the variable's name, not a secret
_SIZE = re.compile(r"^(\d+)\s*(KiB|MiB|GiB|TiB)?$")
_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def byte_size(text: str) -> int:
    """Parse ``1073741824`` or ``1GiB`` (IEC suffixes only, so there is no 1000-vs-1024 doubt)."""
    m = _SIZE.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        msg = f"expected a positive number of bytes like 1073741824 or 1GiB, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(m.group(1)) * _UNITS[m.group(2)]


def positive_int(text: str) -> int:
    """Parse a count that must be at least 1 (``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"expected a whole number of at least 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def read_passphrase(passphrase_file: Path | None) -> bytes | None:
    """A key passphrase from ``--passphrase-file`` or $WEIGHTWARDEN_KEY_PASSPHRASE, never argv."""
    if passphrase_file is not None:
        try:
            data = passphrase_file.read_bytes()
        except OSError as exc:
            raise KeyFileError(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror}"
            ) from exc
        secret = data.rstrip(b"\r\n")
        if not secret:
            raise KeyFileError(f"passphrase file {passphrase_file} is empty")
        return secret
    env = os.environ.get(PASSPHRASE_ENV)
    return env.encode() if env else None


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """``--cache-file PATH`` and ``--no-cache``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cache-file",
        type=Path,
        help=(
            "digest cache for incremental re-hashing "
            "(default: $XDG_CACHE_HOME/weightwarden/digests.sqlite)"
        ),
    )
    group.add_argument("--no-cache", action="store_true", help="hash every byte, touch no cache")


def open_cache(args: argparse.Namespace, *, disabled: bool = False) -> DigestCache | None:
    """The digest cache the arguments ask for, or None."""
    if disabled or args.no_cache:
        return None
    path = args.cache_file or default_cache_path(os.environ)
    if path.exists() and path.is_dir():
        raise UsageError(f"--cache-file {path} is a directory")
    return DigestCache(path)
