"""``weightwarden collector verify-log``: re-verify every stored chain; name what changed.

Exit 0 when every agent's stored chain verifies against its head, 1 when a row was edited,
removed or inserted (a finding, not an error: the report says which rows), 2 on bad input.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from collector.cli._common import add_store_options, open_from_args, safe

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector verify-log``."""
    parser = sub.add_parser(
        "verify-log",
        help="re-verify every agent's stored hash chain; name edited or removed rows",
        description=(
            "Recompute every stored event's payload and link hash, agent by agent, and "
            "compare each chain's end with the agent's head. Prints one line per agent "
            "and one per problem. Exit 0 if everything verifies, 1 if not."
        ),
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default) or one JSON object per problem per line",
    )
    add_store_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from collector.verify_log import verify_log  # noqa: PLC0415

    store = open_from_args(args)
    try:
        report = verify_log(store)
    finally:
        store.close()
    out = sys.stdout
    for agent in report.agents:
        if args.format == "json":
            for problem in agent.problems:
                out.write(
                    json.dumps(
                        {
                            "agent_id": problem.agent_id,
                            "kind": problem.kind.value,
                            "seq": problem.seq,
                            "last_seq": problem.last_seq,
                            "detail": problem.detail,
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
            continue
        verdict = "ok" if agent.ok else f"{len(agent.problems)} problem(s)"
        out.write(
            f"{safe(agent.agent_id)}: {agent.rows} rows up to head seq {agent.head_seq}: "
            f"{verdict}\n"
        )
        for problem in agent.problems:
            where = (
                f"seq {problem.seq}"
                if problem.last_seq in (None, problem.seq)
                else f"seq {problem.seq}-{problem.last_seq}"
            )
            out.write(f"  {problem.kind.value}: {where}: {safe(problem.detail)}\n")
    if args.format == "text":
        total = "verified" if report.ok else f"NOT verified: {len(report.problems)} problem(s)"
        out.write(f"{len(report.agents)} agent(s), {report.rows} rows: {total}\n")
    return 0 if report.ok else 1
