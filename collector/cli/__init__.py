"""``weightwarden collector ...`` and ``weightwarden alerts ...``, through entry points.

pyproject.toml registers them in the ``weightwarden.commands`` group::

    collector = "collector.cli:register_collector"
    alerts = "collector.cli:register_alerts"
    policy = "collector.cli:register_policy"
    access = "collector.cli:register_access"
    detect = "collector.cli:register_detect"
    eval = "collector.cli:register_eval"
    simulate = "collector.cli:register_simulate"

Each top-level command's module is imported only when that command runs (``weightwarden
seal`` stays lean). Each subcommand lives in its own module with a
``register(subparsers)`` function. Collector commands take ``--dir DIR`` (the collector
directory: ``$WEIGHTWARDEN_COLLECTOR_DIR``, else ``/var/lib/weightwarden/collector``) or
``--db URL``. Bad input is one line on stderr and exit 2; a bad configuration exits 78.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "register_access",
    "register_alerts",
    "register_collector",
    "register_detect",
    "register_eval",
    "register_policy",
    "register_simulate",
]


def register_collector(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector`` and its subcommands to the ``weightwarden`` parser."""
    from collector.cli import (  # noqa: PLC0415 -- keep `weightwarden seal` lean
        _agents,
        _enroll,
        _init,
        _nats,
        _serve,
        _transfer,
        _verify_log,
    )

    collector = sub.add_parser(
        "collector",
        help="the central service: enrollment, ingest, the record",
        description="The collector: enrolls agents, verifies and stores their signed "
        "batches, and keeps the record (SQLite or PostgreSQL).",
    )
    actions = collector.add_subparsers(dest="collector_command", required=True, metavar="ACTION")
    for module in (_init, _enroll, _serve, _nats, _agents, _verify_log, _transfer):
        module.register(actions)


def _register(module: str, sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Import ``collector.cli.<module>`` and let it add its command."""
    importlib.import_module(f"collector.cli.{module}").register(sub)


def register_alerts(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``alerts`` (list, show, ack, resolve) to the ``weightwarden`` parser."""
    _register("_alerts", sub)


def register_policy(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``policy`` (check) to the ``weightwarden`` parser."""
    _register("_policy", sub)


def register_access(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``access`` (grant, revoke, list) to the ``weightwarden`` parser."""
    _register("_access", sub)


def register_detect(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``detect`` to the ``weightwarden`` parser."""
    _register("_detect", sub)


def register_eval(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``eval`` to the ``weightwarden`` parser."""
    _register("_eval", sub)


def register_simulate(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``simulate`` (a labelled ML organisation as OCSF events) to the parser."""
    _register("_simulate", sub)
