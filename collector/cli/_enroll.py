"""``weightwarden collector enroll --host NAME``: issue a one-time enrollment token."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from collector.cli._common import (
    add_store_options,
    collector_dir,
    now_ms,
    open_from_args,
    parse_ttl,
    settings_from_args,
    utc,
)
from collector.enrollment import issue_token

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]

_MS: Final = timedelta(milliseconds=1)


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector enroll``."""
    parser = sub.add_parser(
        "enroll",
        help="print a one-time token that lets HOST's agent enroll",
        description=(
            "Print a one-time enrollment token for HOST on stdout (only the token, once: "
            "the collector keeps only its SHA-256). The agent presents it with its own "
            "identity key on first start (weightwarden agent run --collector URL "
            "--enroll-token TOKEN); it expires after --ttl (default: the config's "
            "token_ttl, 24h) and works once, for HOST only."
        ),
    )
    parser.add_argument("--host", required=True, metavar="NAME", help="the agent's host name")
    parser.add_argument("--ttl", metavar="DURATION", help="token lifetime, like 24h or 30m")
    add_store_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.ttl is not None:
        ttl = parse_ttl(args.ttl)
    elif args.db:
        ttl = parse_ttl("24h")
    else:
        ttl = settings_from_args(args).config.collector.token_ttl // _MS
    store = open_from_args(args)
    try:
        issued = issue_token(store, host=args.host, ttl_ms=ttl, now=now_ms())
    finally:
        store.close()
    print(issued.token)
    where = f" --dir {collector_dir(args)}" if not args.db else ""
    print(
        f"weightwarden: token for host {issued.host}, valid once until {utc(issued.expires_at)}; "
        f"on {issued.host}: weightwarden agent run --collector URL --enroll-token TOKEN "
        f"(revoke later with: weightwarden collector revoke{where} {issued.host})",
        file=sys.stderr,
    )
    return 0
