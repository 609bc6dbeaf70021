"""A collector peer for the agent's link tests, and the helpers around it.

:class:`CollectorPeer` is a real HTTP(S) server on 127.0.0.1 that speaks the collector's
protocol: ``POST /v1/enroll`` with one-time tokens bound to a host, ``POST /v1/batches``
verified with :func:`weightwarden.batch.open_batch` against the enrolled key, nonces
remembered (a replay is refused), events stored once per (agent, seq) with their chain
links checked (a resend is counted as duplicates; a gap or fork is stored and answered
409 with a quarantine id, as the collector does). It is a test peer, not a mock: the
agent code under test talks to it over real sockets. A script of actions lets a test
make the next batch requests fail in chosen ways (an answer lost after storing, a 5xx, a
429).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from weightwarden.batch import Batch, BatchError, BatchEvent, open_batch, read_envelope
from weightwarden.crypto import GENESIS, PublicKey, compute_link_hash

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

AGENT = "gpu-01"


@dataclass(frozen=True, slots=True)
class _Reply:
    """Script action: answer the next batch request with this, without storing it."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _DropAfterStore:
    """Script action: store the next batch, then close the connection without an answer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """A batch request the peer verified: its range, nonce and the answer it got."""

    first_seq: int
    last_seq: int
    nonce: str
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    peer: CollectorPeer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base's name
        """Keep test output quiet."""

    def setup(self) -> None:
        super().setup()
        self.server.peer.track(self.connection)

    def do_POST(self) -> None:
        peer = self.server.peer
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with peer.lock:
            peer.requests += 1
        if self.path == "/v1/enroll":
            self._answer(*peer.handle_enroll(body))
        elif self.path == "/v1/batches":
            self._batches(peer, body)
        else:
            self._answer(404, {"error": "no such endpoint"})

    def _batches(self, peer: CollectorPeer, body: bytes) -> None:
        with peer.lock:
            peer.in_flight += 1
            peer.max_in_flight = max(peer.max_in_flight, peer.in_flight)
            action = peer.script.popleft() if peer.script else None
        try:
            if isinstance(action, _Reply):
                self._answer(action.status, action.body, action.headers)
                return
            status, answer = peer.handle_batch(body)
            if isinstance(action, _DropAfterStore):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._answer(status, answer)
        finally:
            with peer.lock:
                peer.in_flight -= 1

    def _answer(
        self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class CollectorPeer:
    """A collector on 127.0.0.1 speaking the enroll and batch protocol (see the module doc)."""

    def __init__(self, *, tls: TlsFiles | None = None, max_events: int = 10_000) -> None:
        self.tls = tls
        self.max_events = max_events
        self.lock = threading.Lock()
        self.tokens: dict[str, str] = {}
        self.keys: dict[str, PublicKey] = {}
        self.stored: dict[str, list[BatchEvent]] = {}
        self.nonces: set[str] = set()
        self.arrivals: list[Arrival] = []
        self.script: deque[_Reply | _DropAfterStore] = deque()
        self.on_batch: Callable[[Batch], None] | None = None
        self.requests = 0
        self.connections = 0
        self.duplicates = 0
        self.quarantined = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        """The base URL agents are configured with."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (on the same port as before, after a stop) and serve in a thread."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.peer = self
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut every open connection (the collector went down)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def track(self, sock: socket.socket) -> None:
        """Remember an accepted connection so :meth:`stop` can cut it."""
        with self.lock:
            self.connections += 1
            self._sockets.append(sock)

    def fail_next(
        self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next unscripted batch request with ``status``, storing nothing."""
        with self.lock:
            self.script.append(
                _Reply(status, body or {"error": f"scripted {status}"}, headers or {})
            )

    def drop_next_answer(self) -> None:
        """Store the next unscripted batch request, then close the connection unanswered."""
        with self.lock:
            self.script.append(_DropAfterStore())

    def add_token(self, token: str, host: str) -> None:
        """Issue a one-time enrollment token for ``host``."""
        with self.lock:
            self.tokens[token] = host

    def head(self, agent_id: str = AGENT) -> int:
        """The newest stored seq of ``agent_id`` (0 before any)."""
        with self.lock:
            events = self.stored.get(agent_id, [])
            return events[-1].seq if events else 0

    def seqs(self, agent_id: str = AGENT) -> list[int]:
        """Stored sequence numbers, in storage order."""
        with self.lock:
            return [e.seq for e in self.stored.get(agent_id, [])]

    def payloads(self, agent_id: str = AGENT) -> list[str]:
        """Stored payloads, in storage order."""
        with self.lock:
            return [e.payload for e in self.stored.get(agent_id, [])]

    def handle_enroll(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Register the key if the token is known, unused and for this host."""
        try:
            obj = json.loads(body)
            host, token, pem = obj["host"], obj["token"], obj["public_key"]
            key = PublicKey(serialization.load_pem_public_key(pem.encode()))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "malformed enrollment request"}
        with self.lock:
            if self.tokens.get(token) != host:
                return 403, {"error": "token unknown, used, expired or for another host"}
            del self.tokens[token]
            self.keys[host] = key
        return 200, {"agent_id": host}

    def handle_batch(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Verify, de-duplicate and store a batch; 409 for a gap, fork, bad link or replay."""
        try:
            batch = open_batch(read_envelope(body), self.keys.get, max_events=self.max_events)
        except BatchError as exc:
            return exc.status, {"error": str(exc)}
        if self.on_batch is not None:
            self.on_batch(batch)
        with self.lock:
            status, answer = self._store(batch)
            self.arrivals.append(
                Arrival(
                    first_seq=batch.first_seq,
                    last_seq=batch.last_seq,
                    nonce=batch.nonce,
                    status=status,
                )
            )
        return status, answer

    def _store(self, batch: Batch) -> tuple[int, dict[str, Any]]:
        events = self.stored.setdefault(batch.agent_id, [])
        head = events[-1].seq if events else 0
        if batch.nonce in self.nonces:
            self.quarantined += 1
            return 409, {
                "error": "replayed nonce",
                "acked_seq": head,
                "quarantine_id": f"q-{self.quarantined}",
            }
        self.nonces.add(batch.nonce)
        by_seq = {e.seq: e for e in events}
        problem = None
        stored = duplicates = 0
        for event in batch.events:
            if event.seq in by_seq:
                if by_seq[event.seq].link_hash == event.link_hash:
                    duplicates += 1
                else:
                    problem = problem or f"fork at seq {event.seq}"
                continue
            payload_hash = hashlib.sha256(event.payload.encode()).hexdigest()
            link_hash = compute_link_hash(
                agent_id=batch.agent_id,
                seq=event.seq,
                prev_hash=event.prev_hash,
                payload_hash=payload_hash,
            )
            if payload_hash != event.payload_hash or link_hash != event.link_hash:
                problem = problem or f"broken link at seq {event.seq}"
                continue
            expected_prev = events[-1].link_hash if events else GENESIS
            if event.seq != head + 1 or event.prev_hash != expected_prev:
                problem = problem or f"gap before seq {event.seq}"
            events.append(event)
            by_seq[event.seq] = event
            head = event.seq
            stored += 1
        self.duplicates += duplicates
        if problem is not None:
            self.quarantined += 1
            return 409, {
                "error": problem,
                "acked_seq": head,
                "quarantine_id": f"q-{self.quarantined}",
            }
        return 200, {"acked_seq": head, "stored": stored, "duplicates": duplicates}


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files), with its pin."""

    cert: Path
    key: Path
    sha256: str


def make_tls(directory: Path, name: str = "collector") -> TlsFiles:
    """Write a fresh self-signed certificate for 127.0.0.1 into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sha256 = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return TlsFiles(cert=cert_path, key=key_path, sha256=sha256)


@pytest.fixture
def new_collector_peer() -> Iterator[Callable[..., CollectorPeer]]:
    """Start collector peers (``CollectorPeer(**kwargs)``); all are stopped afterwards."""
    peers: list[CollectorPeer] = []

    def start(**kwargs: Any) -> CollectorPeer:
        server = CollectorPeer(**kwargs)
        server.start()
        peers.append(server)
        return server

    yield start
    for server in peers:
        server.stop()


@pytest.fixture
def collector_peer(new_collector_peer: Callable[..., CollectorPeer]) -> CollectorPeer:
    """A running plain-HTTP collector peer on 127.0.0.1."""
    return new_collector_peer()


@pytest.fixture
def tls_files(tmp_path: Path) -> Callable[[str], TlsFiles]:
    """Write self-signed certificates for 127.0.0.1 (one per name) and return them."""
    return lambda name: make_tls(tmp_path / "tls", name)


@pytest.fixture
def tls_collector_peer(
    new_collector_peer: Callable[..., CollectorPeer], tls_files: Callable[[str], TlsFiles]
) -> CollectorPeer:
    """A running HTTPS collector peer with a self-signed certificate (``peer.tls``)."""
    return new_collector_peer(tls=tls_files("collector"))
