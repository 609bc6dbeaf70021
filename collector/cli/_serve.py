"""``weightwarden collector serve``: run the HTTP(S) API until SIGTERM or SIGINT.

Settings come from ``DIR/collector.toml``; ``--listen`` and ``--db`` override it (with
``--db`` and no config file, the defaults apply). The first log line names the URL it
listens on (``--listen 127.0.0.1:0`` picks a free port). With ``$NOTIFY_SOCKET`` set
(systemd ``Type=notify``) it reports ``READY=1`` once listening and ``STOPPING=1`` on
the way out. SIGTERM and SIGINT stop it gracefully: requests in progress finish.

``--workers N`` (N > 1) forks N worker processes that accept from one listening socket,
each with its own store connection, so verification and indexing run on every core
instead of behind one interpreter lock. Ingest stays correct across processes: the store
compare-and-sets each agent's head in the same transaction as the events (SQLite's write
lock, PostgreSQL's ``SELECT ... FOR UPDATE``), and nonces and ``(agent, seq)`` are unique
keys, so a batch that lost a race is re-checked, never stored twice. The parent opens the
store once first (migrations, a clear error), reports ``READY=1`` when every worker
listens, passes SIGTERM and SIGINT on, and if a worker dies it stops the others and exits
70, so systemd restarts the whole service.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any

from collector.cli._common import add_store_options, collector_dir, now_ms
from collector.config import CollectorConfig, CollectorSettings, load_settings, parse_listen
from collector.http import (
    CollectorServer,
    ServerLimits,
    listening_socket,
    server_url,
    tls_context,
)
from collector.ingest import IngestLimits, Ingestor
from weightwarden.errors import ConfigError, UsageError
from weightwarden.log import get_logger
from weightwarden.stop_signals import StopSignals

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

_WORKER_START_SECONDS = 60.0
_INTERNAL = 70

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
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the listening socket, each with its own store "
        "connection (default 1; more use more cores)",
    )
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

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    settings = _settings(args)
    config = settings.config
    listen_text = args.listen or config.collector.listen
    try:
        listen = parse_listen(listen_text)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    tls, public_key = _tls_and_public_key(settings)
    db = args.db or settings.db

    def serve(sock: socket.socket | None) -> CollectorServer:
        store = open_store(db, synchronous=config.collector.synchronous)
        limits = config.limits
        try:
            return CollectorServer(
                store=store,
                ingestor=Ingestor(
                    store,
                    limits=IngestLimits(
                        max_body_bytes=limits.max_body_bytes,
                        max_events=limits.max_events_per_batch,
                    ),
                    clock=now_ms,
                ),
                limits=ServerLimits(
                    max_body_bytes=limits.max_body_bytes,
                    rate_events_per_second=limits.rate_events_per_second,
                    rate_burst_events=limits.rate_burst_events,
                    max_connections=limits.max_connections,
                    read_timeout=limits.read_timeout.total_seconds(),
                ),
                listen=listen,
                sock=sock,
                tls=tls,
                clock=now_ms,
                collector_public_key=public_key,
            )
        except BaseException:
            store.close()
            raise

    if args.workers == 1:
        try:
            server = serve(None)
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen_text}: {exc.strerror or exc}") from exc
        try:
            _serve_until_signalled(server)
        finally:
            server.store.close()
        return 0
    open_store(db, synchronous=config.collector.synchronous).close()  # migrate once, fail here
    try:
        sock = listening_socket(listen)
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen_text}: {exc.strerror or exc}") from exc
    with sock:
        return _Workers(
            sock, args.workers, serve, url=server_url(sock.getsockname(), tls=tls is not None)
        ).run()


def _tls_and_public_key(settings: CollectorSettings) -> tuple[ssl.SSLContext | None, str | None]:
    """The server TLS context and the collector's public key PEM, if configured.

    Raises:
        ConfigError: The certificate or key cannot be loaded.
    """
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
    return tls, public_key


def _serve_until_signalled(server: CollectorServer, *, notify: bool = True) -> None:
    with StopSignals() as signals:
        server.start()
        if notify:
            _notify("READY=1")
        while not signals.event.wait(1.0):
            pass
        get_logger("collector").info("stopping", signal=signals.received)
        if notify:
            _notify("STOPPING=1")
        server.stop()


_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (a SIGKILLed parent leaves no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: systemd's control group stops them
        return


class _Workers:
    """The parent of ``--workers N``: fork, wait until all listen, pass signals on, reap."""

    def __init__(
        self,
        sock: socket.socket,
        count: int,
        serve: Callable[[socket.socket], CollectorServer],
        *,
        url: str,
    ) -> None:
        self._sock = sock
        self._count = count
        self._serve = serve
        self._url = url
        self._pids: dict[int, int] = {}
        self._stop = threading.Event()
        self._log = get_logger("collector")

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or until a worker dies (70)."""
        ready_r, ready_w = os.pipe()
        with StopSignals(self._stop) as signals:
            try:
                for index in range(self._count):
                    self._fork(index, ready_r, ready_w)
                os.close(ready_w)
                code = self._wait_ready(ready_r)
                if code is None:
                    self._log.info("collector listening", url=self._url, workers=self._count)
                    _notify("READY=1")
                    code = self._supervise()
                    _notify("STOPPING=1")
                if signals.received is not None:
                    self._log.info("stopping", signal=signals.received)
            finally:
                os.close(ready_r)
                self._stop_all()
        return code

    def _fork(self, index: int, ready_r: int, ready_w: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self._pids[pid] = index
            return
        code = _INTERNAL
        try:  # the worker: never returns into the parent's code
            os.close(ready_r)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            _stop_with_parent()
            if os.getppid() != parent:  # the parent died before the line above
                code = 0
                return
            server = self._serve(self._sock)
            try:
                os.write(ready_w, b"r")
                os.close(ready_w)
                _serve_until_signalled(server, notify=False)
            finally:
                server.store.close()
            code = 0
        except BaseException:  # noqa: BLE001 -- the worker's error boundary: log, exit 70
            self._log.exception("collector worker failed", worker=index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _wait_ready(self, ready_r: int) -> int | None:
        """None once every worker listens; else the exit code to leave with."""
        ready = 0
        deadline = threading.Event()
        timer = threading.Timer(_WORKER_START_SECONDS, deadline.set)
        timer.start()
        try:
            while ready < self._count:
                if self._stop.is_set():
                    return 0
                if deadline.is_set():
                    self._log.error("collector workers did not start", ready=ready)
                    return _INTERNAL
                if self._reap():
                    return _INTERNAL
                readable, _, _ = select.select([ready_r], [], [], 0.2)
                if readable:
                    got = os.read(ready_r, self._count)
                    ready += len(got)
        finally:
            timer.cancel()
        return None

    def _supervise(self) -> int:
        while not self._stop.wait(0.2):
            if self._reap():
                return _INTERNAL
        return 0

    def _reap(self) -> bool:
        """Whether a worker has exited (it is logged and forgotten)."""
        died = False
        for pid, index in list(self._pids.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del self._pids[pid]
                self._log.error(
                    "collector worker exited",
                    worker=index,
                    status=os.waitstatus_to_exitcode(status),
                )
                died = True
        return died

    def _stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker left and wait for it (SIGKILL after ``timeout``)."""
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while self._pids and not deadline.wait(0.05):
                for pid in list(self._pids):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        del self._pids[pid]
        finally:
            timer.cancel()
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self._pids.clear()
