"""``weightwarden agent ...``: registered through the ``weightwarden.commands`` entry point.

Each subcommand lives in its own module with a ``register(subparsers)`` function.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``agent`` and its subcommands (run, events, canary) to the ``weightwarden`` parser."""
    from agent.cli import _canary, _events, _run  # noqa: PLC0415 -- keep `weightwarden seal` lean

    agent = sub.add_parser("agent", help="the host daemon and its tools")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    for module in (_run, _events, _canary):
        module.register(agent_sub)
