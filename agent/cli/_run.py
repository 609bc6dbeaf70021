"""``weightwarden agent run``: the daemon, in the foreground (systemd runs it as Type=notify)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``agent run``."""
    p = sub.add_parser(
        "run",
        help="run the host agent until SIGTERM",
        description=(
            "Watch weight roots, attribute every access, seal finished checkpoints and spool "
            "a hash-chained record. Flags override the TOML config for a quick start. Exit "
            "codes: 0 stopped by a signal, 2 bad arguments, 70 a component died (systemd "
            "restarts it), 78 bad configuration (systemd does not)."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file with an [agent] table")
    p.add_argument(
        "--watch",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a weight root to watch (repeatable); replaces agent.weight_roots",
    )
    p.add_argument("--spool", type=Path, metavar="DIR", help="spool folder (default: state dir)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="replaces agent.state_dir")
    p.add_argument("--collector", metavar="URL", help="replaces agent.collector.url")
    p.add_argument(
        "--enroll-token",
        metavar="TOKEN",
        help="one-time token from `weightwarden collector enroll` (needed on first start only)",
    )
    p.set_defaults(func=_run, uses_logging=True)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace  # noqa: PLC0415 -- keep `weightwarden --help` lean

    from agent.config import load_agent_config  # noqa: PLC0415
    from agent.daemon import Daemon  # noqa: PLC0415

    config = load_agent_config(args.config, watch=tuple(args.watch), spool=args.spool)
    if args.state_dir is not None:
        config = replace(config, state_dir=args.state_dir.absolute())
    if args.collector is not None:
        config = replace(config, collector=replace(config.collector, url=args.collector))
    return Daemon(config, environ=os.environ, enroll_token=args.enroll_token).run()
