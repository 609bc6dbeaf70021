"""``weightwarden collector init``: create the collector directory (config, key, database)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.cli._common import collector_dir
from collector.config import DEFAULT_DIR, DEFAULT_LISTEN, DIR_ENV, init_directory

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector init``."""
    parser = sub.add_parser(
        "init",
        help="create the collector directory: config, identity key, database",
        description=(
            "Create DIR (mode 0700) with collector.toml, the collector's key pair "
            "(collector.key, mode 0600, and collector.pub), the SQLite database and, with "
            "--tls, a self-signed certificate (tls.crt) so that `collector serve` speaks "
            "HTTPS. Refuses a directory that already holds a collector."
        ),
    )
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help=f"collector directory to create (default: ${DIR_ENV}, else {DEFAULT_DIR})",
    )
    parser.add_argument("--tls", action="store_true", help="also write a self-signed certificate")
    parser.add_argument(
        "--tls-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or IP the certificate names (repeatable; default: this host's "
        "name, localhost, 127.0.0.1, ::1)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where `collector serve` listens ({DEFAULT_LISTEN})",
    )
    parser.set_defaults(func=_run, db=None)


def _run(args: argparse.Namespace) -> int:
    directory = collector_dir(args)
    names = args.tls_name or [socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    result = init_directory(
        directory, tls=args.tls, listen=args.listen, tls_names=names, now=datetime.now(UTC)
    )
    print(f"collector directory {result.directory}")
    print(f"  config       {result.config}")
    print(f"  key          {result.key} (0600)")
    print(f"  public key   {result.public_key}")
    if result.certificate is not None:
        print(f"  certificate  {result.certificate} (self-signed; pin it on the agents)")
    print(f"  database     {result.db}")
    print(f"next: weightwarden collector enroll --dir {directory} --host HOST")
    return 0
