"""``weightwarden collector nats-worker``: store batches from NATS JetStream until SIGTERM.

Workers of one or many processes share one durable pull consumer on the agents' stream
(:mod:`collector.nats_worker`). The store is ``--db``, else the one ``DIR/collector.toml``
names (whose ``[limits]`` also apply). SIGTERM and SIGINT stop it gracefully: the batch
in hand is stored and acknowledged, fetched ones go back to the stream. Exit 78 when the
stream or consumer is configured in a way that loses batches, 70 when NATS cannot be
reached or a worker stops on its own (systemd restarts it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collector.cli._common import add_store_options, collector_dir, now_ms
from collector.config import load_settings
from collector.ingest import IngestLimits
from weightwarden.errors import UsageError
from weightwarden.log import get_logger
from weightwarden.stop_signals import StopSignals

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]

_DEFAULT_PREFIX = "weightwarden.batches"
_DEFAULT_DURABLE = "weightwarden-collector"


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector nats-worker``."""
    parser = sub.add_parser(
        "nats-worker",
        help="store the agents' batches from NATS JetStream (competing workers)",
        description=(
            "Fetch signed batches from a JetStream stream through a durable pull consumer "
            "shared by every collector worker, verify and store them like POST /v1/batches, "
            "and acknowledge each once stored. Runs until SIGTERM or SIGINT."
        ),
    )
    parser.add_argument(
        "--servers",
        required=True,
        metavar="URL",
        help="NATS server URLs, comma-separated (nats://127.0.0.1:4222)",
    )
    parser.add_argument("--stream", required=True, metavar="NAME", help="the agents' stream")
    parser.add_argument(
        "--durable",
        default=_DEFAULT_DURABLE,
        metavar="NAME",
        help=f"the shared durable consumer (default: {_DEFAULT_DURABLE})",
    )
    parser.add_argument(
        "--subject-prefix",
        default=_DEFAULT_PREFIX,
        metavar="PREFIX",
        help=f"the agents' subject prefix (default: {_DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="workers in this process (default 1)"
    )
    parser.add_argument(
        "--batch", type=int, default=10, metavar="N", help="messages fetched at once (default 10)"
    )
    parser.add_argument(
        "--ack-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="redeliver a message not acknowledged within this time (new consumer; default 30)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="wait this long for NATS and each JetStream call (default 5)",
    )
    parser.add_argument(
        "--no-create-stream",
        action="store_true",
        help="do not create the stream; it must exist",
    )
    add_store_options(parser)
    parser.set_defaults(func=_run, uses_logging=True)


def _run(args: argparse.Namespace) -> int:
    from collector.nats_worker import serve_nats  # noqa: PLC0415 -- nats-py only for this command

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers:
        raise UsageError("--servers: name at least one URL like nats://127.0.0.1:4222")
    if min(args.workers, args.batch) < 1 or min(args.ack_wait, args.connect_timeout) <= 0:
        raise UsageError("--workers, --batch, --ack-wait and --connect-timeout must be positive")
    limits = IngestLimits()
    synchronous = "full"
    db = args.db
    if not db:
        settings = load_settings(collector_dir(args))
        db = settings.db
        synchronous = settings.config.collector.synchronous
        limits = IngestLimits(
            max_body_bytes=settings.config.limits.max_body_bytes,
            max_events=settings.config.limits.max_events_per_batch,
        )
    with StopSignals() as signals:
        serve_nats(
            servers,
            stream=args.stream,
            durable=args.durable,
            db=db,
            stop=signals.event,
            workers=args.workers,
            subject_prefix=args.subject_prefix,
            limits=limits,
            synchronous=synchronous,
            batch=args.batch,
            ack_wait=args.ack_wait,
            create_stream=not args.no_create_stream,
            connect_timeout=args.connect_timeout,
            clock=now_ms,
        )
        if signals.received is not None:
            get_logger("collector").info("stopped", signal=signals.received)
    return 0
