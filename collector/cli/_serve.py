"""``weightwarden collector serve``: run the HTTP(S) API until SIGTERM or SIGINT.

Settings come from ``DIR/collector.toml``; ``--listen`` and ``--db`` override it (with
``--db`` and no config file, the defaults apply). The first log line names the URL it
listens on (``--listen 127.0.0.1:0`` picks a free port). With ``$NOTIFY_SOCKET`` set
(systemd ``Type=notify``) it reports ``READY=1`` once listening and ``STOPPING=1`` on
the way out. SIGTERM and SIGINT stop it gracefully: requests in progress finish.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any

from collector.cli._common import add_store_options, collector_dir, now_ms
from collector.config import CollectorConfig, CollectorSettings, load_settings, parse_listen
from collector.http import CollectorServer, ServerLimits, tls_context
from collector.ingest import IngestLimits, Ingestor
from weightwarden.errors import ConfigError, UsageError
from weightwarden.log import get_logger

if TYPE_CHECKING:
    import argparse
    from types import FrameType

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector serve``."""
    parser = sub.add_parser(
        "serve",
        help="run the collector's HTTP(S) API (enroll, batches, health, OpenAPI)",
        description=(
            "Serve POST /v1/enroll, POST /v1/batches, GET /v1/health and GET /openapi.json "
            "until SIGTERM or SIGINT. Settings from DIR/collector.toml; --listen and --db "
            "override it. Exit 78 on a bad configuration."
        ),
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    add_store_options(parser)
    parser.set_defaults(func=_run, uses_logging=True)


def _settings(args: argparse.Namespace) -> CollectorSettings:
    directory = collector_dir(args)
    if args.db and not (directory / "collector.toml").exists():
        return CollectorSettings(
            directory=directory,
            config=CollectorConfig(),
            db=args.db,
            tls_cert=None,
            tls_key=None,
            public_key=None,
        )
    return load_settings(directory)


def _notify(message: str) -> None:
    """Tell systemd (``$NOTIFY_SOCKET``) how the service stands; nothing without it."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
    ):
        sock.sendto(message.encode(), address)


def _run(args: argparse.Namespace) -> int:
    from collector.store import open_store  # noqa: PLC0415 -- psycopg only when needed

    settings = _settings(args)
    config = settings.config
    listen_text = args.listen or config.collector.listen
    try:
        listen = parse_listen(listen_text)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            tls = tls_context(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{settings.directory / 'collector.toml'}: collector.tls_cert/tls_key: cannot "
                f"load {settings.tls_cert} with {settings.tls_key}: {exc}"
            ) from exc
    public_key = None
    if settings.public_key is not None:
        public_key = settings.public_key.read_text(encoding="ascii", errors="replace")
    store = open_store(args.db or settings.db, synchronous=config.collector.synchronous)
    limits = config.limits
    try:
        ingestor = Ingestor(
            store,
            limits=IngestLimits(
                max_body_bytes=limits.max_body_bytes, max_events=limits.max_events_per_batch
            ),
            clock=now_ms,
        )
        try:
            server = CollectorServer(
                store=store,
                ingestor=ingestor,
                limits=ServerLimits(
                    max_body_bytes=limits.max_body_bytes,
                    rate_events_per_second=limits.rate_events_per_second,
                    rate_burst_events=limits.rate_burst_events,
                    max_connections=limits.max_connections,
                    read_timeout=limits.read_timeout.total_seconds(),
                ),
                listen=listen,
                tls=tls,
                clock=now_ms,
                collector_public_key=public_key,
            )
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen_text}: {exc.strerror or exc}") from exc
        _serve_until_signalled(server)
    finally:
        store.close()
    return 0


def _serve_until_signalled(server: CollectorServer) -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        get_logger("collector").info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        _notify("READY=1")
        while not stop.wait(1.0):
            pass
        _notify("STOPPING=1")
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
