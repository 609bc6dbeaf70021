"""Argument parsing and the error boundary shared by every subcommand.

The kernel registers ``seal``, ``verify``, ``keys`` and ``demo``. The agent and collector
packages add theirs through the ``weightwarden.commands`` entry-point group, so the kernel
never imports them. A subcommand that logs sets ``uses_logging=True`` in its parser
defaults; structlog is configured only then.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
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


_KERNEL_COMMANDS = frozenset({"seal", "verify", "keys", "demo"})


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if any (skipping global options)."""
    args = iter(argv)
    for arg in args:
        if arg == "--log-format":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; installed packages' subcommands are loaded only when needed.

    ``weightwarden seal`` must start fast (it is timed against model_signing): a kernel
    command loads no plugin at all, a plugin command loads only its own entry point, and
    anything else (``--help``, a typo) loads every one so the error lists all commands.
    """
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
    if command in _KERNEL_COMMANDS:
        return parser
    from importlib.metadata import entry_points  # noqa: PLC0415 -- 25 ms kernel commands skip

    plugins = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    chosen = [ep for ep in plugins if ep.name == command] or plugins
    for ep in chosen:
        ep.load()(sub)
    return parser


_SIGPIPE_EXIT = 141
"""128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code instead of raising."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(arguments))
    args = parser.parse_args(arguments)
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
    except BrokenPipeError:
        # The reader went away (``... | head``): not an error of ours, and nothing more to say.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _SIGPIPE_EXIT
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
