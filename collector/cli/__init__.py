"""``weightwarden collector ...`` and ``weightwarden alerts ...``, through entry points.

pyproject.toml registers both in the ``weightwarden.commands`` group::

    collector = "collector.cli:register_collector"
    alerts = "collector.cli:register_alerts"
    policy = "collector.cli:register_policy"
    access = "collector.cli:register_access"

Each subcommand lives in its own module with a ``register(subparsers)`` function. Every
command takes ``--dir DIR`` (the collector directory: ``$WEIGHTWARDEN_COLLECTOR_DIR``, else
``/var/lib/weightwarden/collector``) or ``--db URL``. Bad input is one line on stderr and
exit 2; a bad configuration exits 78.
"""

from __future__ import annotations

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


def register_alerts(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``alerts`` (list, show, ack, resolve) to the ``weightwarden`` parser."""
    from collector.cli import _alerts  # noqa: PLC0415 -- keep `weightwarden seal` lean

    _alerts.register(sub)


def register_policy(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``policy`` (check) to the ``weightwarden`` parser."""
    from collector.cli import _policy  # noqa: PLC0415 -- keep `weightwarden seal` lean

    _policy.register(sub)


def register_access(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``access`` (grant, revoke, list) to the ``weightwarden`` parser."""
    from collector.cli import _access  # noqa: PLC0415 -- keep `weightwarden seal` lean

    _access.register(sub)


def register_detect(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``detect`` to the ``weightwarden`` parser."""
    from collector.cli import _detect  # noqa: PLC0415 -- keep `weightwarden seal` lean

    _detect.register(sub)


def register_eval(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``eval`` to the ``weightwarden`` parser."""
    from collector.cli import _eval  # noqa: PLC0415 -- keep `weightwarden seal` lean

    _eval.register(sub)


def register_simulate(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``simulate`` (a labelled ML organisation as OCSF events) to the parser."""
    from collector.cli import _simulate  # noqa: PLC0415 -- keep `weightwarden seal` lean

    _simulate.register(sub)
