"""``weightwarden collector agents`` and ``weightwarden collector revoke AGENT``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from collector.cli._common import add_store_options, now_ms, open_from_args, table, utc
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]

_WIDTHS = (24, 24, 24, 12, 0)


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector agents`` and ``collector revoke``."""
    agents = sub.add_parser(
        "agents",
        help="list enrolled agents and where their chains stand",
        description="One line per agent: id, enrolled, revoked, the stored head seq and hash.",
    )
    add_store_options(agents)
    agents.set_defaults(func=_run_agents)

    revoke = sub.add_parser(
        "revoke",
        help="refuse an agent's batches from now on",
        description=(
            "Refuse AGENT's batches from now on (403). Its stored events stay. To enroll "
            "the host again, issue a new token (collector enroll --host AGENT)."
        ),
    )
    revoke.add_argument("agent", metavar="AGENT", help="the agent id (its host name)")
    add_store_options(revoke)
    revoke.set_defaults(func=_run_revoke)


def _run_agents(args: argparse.Namespace) -> int:
    store = open_from_args(args)
    try:
        records = store.agents()
    finally:
        store.close()
    out = sys.stdout
    out.writelines(table([("AGENT", "ENROLLED", "REVOKED", "HEAD", "HEAD HASH")], _WIDTHS))
    out.writelines(
        table(
            (
                (
                    r.agent_id,
                    utc(r.enrolled_at),
                    utc(r.revoked_at),
                    str(r.head_seq),
                    r.head_hash[:16],
                )
                for r in records
            ),
            _WIDTHS,
        )
    )
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    store = open_from_args(args)
    try:
        if not store.revoke_agent(args.agent, now=now_ms()):
            raise UsageError(
                f"no agent {args.agent!r} is enrolled (see weightwarden collector agents)"
            )
    finally:
        store.close()
    print(f"revoked {args.agent}: its batches are refused from now on")
    return 0
