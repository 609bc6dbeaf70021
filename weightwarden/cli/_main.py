"""Argument parsing and the error boundary shared by every subcommand.

The kernel registers ``seal``, ``verify``, ``keys`` and ``demo``. The agent and collector
packages add theirs through the ``weightwarden.commands`` entry-point group, so the kernel
never imports them. A subcommand that logs sets ``uses_logging=True`` in its parser
defaults; structlog is configured only then.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, NoReturn

from weightwarden.cli import _demo, _keys, _seal
from weightwarden.errors import WeightwardenError
from weightwarden.log import configure_logging

if TYPE_CHECKING:
    from collections.abc import Sequence

ENTRY_POINT_GROUP = "weightwarden.commands"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, exit 2, like every other error.

    Subparsers inherit the class, so ``weightwarden seal --shard-size 0`` fails the same way.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser, including subcommands registered by installed packages."""
    parser = _Parser(
        prog="weightwarden",
        description="Model-weight security: seal checkpoints, watch access, detect theft.",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log rendering: JSON under systemd or in pipes, coloured on a terminal (auto)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _seal.register(sub)
    _keys.register(sub)
    _demo.register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code instead of raising."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "uses_logging", False):  # structlog costs 100 ms that seal never needs
        configure_logging(args.log_format)
    try:
        code: int = args.func(args)
    except WeightwardenError as exc:
        print(f"weightwarden: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("weightwarden: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- the boundary: a bug must not exit 1, "tampered"
        traceback.print_exc()
        print(
            f"weightwarden: internal error: {type(exc).__name__}: {exc} (a bug: please report it)",
            file=sys.stderr,
        )
        return WeightwardenError.exit_code
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
