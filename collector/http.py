"""The collector's HTTP API on the standard library's ``ThreadingHTTPServer``.

======  ===============  ==================================================================
POST    /v1/enroll       ``{"token", "host", "public_key"}``: register an agent (200)
POST    /v1/batches      a signed batch (:mod:`weightwarden.batch`): verify and store (200)
                         (``Content-Type: application/vnd.weightwarden.batch``)
GET     /v1/health       ``{"status": "ok"}`` while the store answers (503 otherwise)
GET     /openapi.json    the OpenAPI 3.1 description of exactly these endpoints
======  ===============  ==================================================================

Every answer is JSON; every refusal is ``{"error": "<what to do>", ...}`` with a 4xx status:
400 malformed (also a malformed request line or header), 401 bad signature, 403 unknown or
revoked agent or bad enrollment token, 404 no such path, 405 wrong method (with
``Allow``), 408 a body that stopped arriving, 409 an integrity refusal (replay, fork,
broken chain; with ``acked_seq``) or an agent enrolled twice, 411 no ``Content-Length``
(chunked bodies are not accepted), 413 a body or batch over the limits (decided from
``Content-Length`` before reading a byte), 415 another ``Content-Type`` than the endpoint's
(``application/json`` to enroll, the batch type to send), 429 an agent over
its rate (token bucket per agent, with ``Retry-After``). A 5xx means the collector itself
failed: 503 the store is unavailable or all connection slots are taken (with
``Retry-After``), 500 a bug (logged with its traceback). Bad input never gets a 5xx.

Bounds: at most ``max_connections`` connections are served at once (one thread each; more
are answered 503 and closed), a client silent for ``read_timeout`` is disconnected, and
the per-agent rate buckets are only created for agents whose signature verified.

HTTPS: pass an :class:`ssl.SSLContext` (:func:`tls_context` builds one from the
certificate and key ``collector init --tls`` wrote). The TLS handshake runs in the
connection's thread, so a client that never finishes it cannot stall the others.

:meth:`CollectorServer.stop` stops gracefully: no new connections, requests in progress
finish (up to a deadline), idle keep-alive connections are closed.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias, cast

from collector.enrollment import EnrollmentError, enroll, parse_request
from collector.store import StoreError
from weightwarden.batch import CONTENT_TYPE as BATCH_TYPE
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from collector.ingest import Ingestor
    from collector.store import Store

__all__ = [
    "API_VERSION",
    "CollectorServer",
    "RateLimiter",
    "ServerLimits",
    "listening_socket",
    "openapi_document",
    "server_url",
    "tls_context",
]

API_VERSION: Final = "1.0.0"
_JSON: Final = "application/json"
_MAX_REQUEST_LINE: Final = 8192
_DRAIN_BYTES: Final = 4 << 20
"""Unread request bytes swallowed after a refusal, so the client can read the answer."""
_DRAIN_SECONDS: Final = 2.0
_CLIENT_GONE: Final = (ConnectionError, ssl.SSLError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """What one request, one agent and all clients together may use.

    Attributes:
        max_body_bytes: Largest batch body; larger is 413 before a byte is read.
        max_enroll_bytes: Largest enrollment body.
        rate_events_per_second: Each agent's sustained rate, in events.
        rate_burst_events: Each agent's burst (bucket size), in events.
        max_connections: Connections served at once; more are answered 503.
        read_timeout: Seconds a client may stay silent (mid-request or idle keep-alive).
    """

    max_body_bytes: int = 16 << 20
    max_enroll_bytes: int = 64 << 10
    rate_events_per_second: float = 100_000.0
    rate_burst_events: int = 200_000
    max_connections: int = 64
    read_timeout: float = 30.0


class RateLimiter:
    """A token bucket per key (agent id): ``rate`` tokens a second, at most ``burst``.

    Thread-safe. A request costing more than ``burst`` is charged ``burst`` (a lone large
    batch still gets through once the bucket is full). The number of buckets is bounded
    by ``max_keys``; past it, full buckets are forgotten (a full bucket is the default).
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, cost: int) -> float | None:
        """Charge ``cost`` tokens to ``key``: None if granted, else seconds until it would be."""
        cost_f = min(float(cost), self._burst)
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - stamp) * self._rate)
            if tokens < cost_f:
                self._buckets[key] = (tokens, now)
                return (cost_f - tokens) / self._rate
            self._buckets[key] = (tokens - cost_f, now)
            if len(self._buckets) > self._max_keys:
                self._forget_full(now)
            return None

    def _forget_full(self, now: float) -> None:
        for key, (tokens, stamp) in list(self._buckets.items()):
            if tokens + (now - stamp) * self._rate >= self._burst:
                del self._buckets[key]


def tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from PEM certificate and key files.

    Raises:
        ssl.SSLError, OSError: The files are missing, unreadable or do not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=certificate, keyfile=key)
    return context


# ---------------------------------------------------------------------------------------
# OpenAPI
# ---------------------------------------------------------------------------------------


def _error_response(description: str, schema: str = "Error") -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before sending again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}

_COMMON_POST_ERRORS: Final = {
    "400": _error_response("Malformed request: not JSON, missing or mistyped fields."),
    "405": _error_response("Method not allowed on this path; see the Allow header."),
    "408": _error_response("The request body stopped arriving before Content-Length bytes."),
    "411": _error_response("No Content-Length (chunked request bodies are not accepted)."),
    "413": _error_response("Body larger than the collector accepts (known from Content-Length)."),
    "415": _error_response("Content-Type is not the endpoint's media type."),
    "500": _error_response("Internal fault of the collector (a bug); logged."),
    "503": {
        **_error_response("The store is unavailable or all connection slots are taken."),
        "headers": _RETRY_AFTER,
    },
}


def openapi_document(*, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API this module serves."""
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "What went wrong and what to do."}
            },
            "additionalProperties": True,
        },
        "EnrollRequest": {
            "type": "object",
            "required": ["token", "host", "public_key"],
            "additionalProperties": False,
            "properties": {
                "token": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "description": "One-time token from `weightwarden collector enroll`.",
                },
                "host": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9]([A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$",
                    "description": "The host name the token was issued for; the agent id.",
                },
                "public_key": {
                    "type": "string",
                    "maxLength": 16384,
                    "description": "The agent's identity key, PEM SubjectPublicKeyInfo: "
                    "ECDSA P-256, P-384, P-521 or Ed25519.",
                },
            },
        },
        "Enrolled": {
            "type": "object",
            "required": ["agent_id", "enrolled_at"],
            "properties": {
                "agent_id": {"type": "string"},
                "enrolled_at": {"type": "integer", "description": "ms since the epoch"},
                "collector_public_key": {
                    "type": "string",
                    "description": "The collector's own public key (PEM), to pin.",
                },
            },
        },
        "SignedBatch": {
            "type": "string",
            "format": "binary",
            "contentMediaType": BATCH_TYPE,
            "description": (
                "weightwarden batch wire format v2 (weightwarden.batch), big-endian: "
                "u32 signed_len || signed || signature; signed = 'WWB2' || u16 len || "
                "agent_id (UTF-8) || nonce (16 bytes) || u64 sent_at || u32 count || "
                "event * count; event = u64 seq || prev_hash (32) || payload_hash (32) || "
                "link_hash (32) || u32 len || payload (canonical OCSF JSON, UTF-8). The "
                "signature is the agent identity key's over `signed`."
            ),
        },
        "BatchAccepted": {
            "type": "object",
            "required": ["message", "acked_seq", "stored", "duplicates"],
            "properties": {
                "message": {"type": "string"},
                "acked_seq": {
                    "type": "integer",
                    "description": "Every event of the agent up to this seq is stored: "
                    "trim the spool up to it.",
                },
                "stored": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "quarantine_id": {
                    "type": "string",
                    "description": "Set when a gap was reported; a copy of the batch is kept.",
                },
            },
        },
        "BatchRefused": {
            "allOf": [{"$ref": "#/components/schemas/Error"}],
            "type": "object",
            "required": ["error", "acked_seq"],
            "properties": {
                "error": {"type": "string"},
                "acked_seq": {
                    "type": "integer",
                    "description": "The agent's stored head; events up to it are stored.",
                },
                "quarantine_id": {"type": "string"},
            },
        },
        "RateLimited": {
            "type": "object",
            "required": ["error", "retry_after"],
            "properties": {
                "error": {"type": "string"},
                "retry_after": {"type": "number", "minimum": 0},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
        },
    }
    batch_body = {
        "required": True,
        "content": {BATCH_TYPE: {"schema": {"$ref": "#/components/schemas/SignedBatch"}}},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "weightwarden collector",
            "version": API_VERSION,
            "description": "Agents enroll with a one-time token and send signed, "
            "hash-chained batches of OCSF events. Every error body is "
            '{"error": "..."}; bad input is always answered 4xx.',
        },
        "paths": {
            "/v1/enroll": {
                "post": {
                    "operationId": "enroll",
                    "summary": "Register an agent's identity key with a one-time token.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {"schema": {"$ref": "#/components/schemas/EnrollRequest"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Enrolled.",
                            "content": {
                                _JSON: {"schema": {"$ref": "#/components/schemas/Enrolled"}}
                            },
                        },
                        "403": _error_response(
                            "The token is unknown, used, expired or for another host."
                        ),
                        "409": _error_response("The host is enrolled and not revoked."),
                        **_COMMON_POST_ERRORS,
                    },
                }
            },
            "/v1/batches": {
                "post": {
                    "operationId": "ingestBatch",
                    "summary": "Verify and store a signed batch of an agent's events.",
                    "requestBody": batch_body,
                    "responses": {
                        "200": {
                            "description": "Stored, or already stored (duplicates).",
                            "content": {
                                _JSON: {"schema": {"$ref": "#/components/schemas/BatchAccepted"}}
                            },
                        },
                        "401": _error_response("The signature does not verify."),
                        "403": _error_response("The agent is not enrolled or was revoked."),
                        "409": _error_response(
                            "Integrity refusal (replay, fork, broken chain, late events): the "
                            "batch is quarantined and an alert raised.",
                            "BatchRefused",
                        ),
                        "413": _error_response(
                            "Body larger than the limit (from Content-Length) or too many "
                            "events in the batch."
                        ),
                        "429": {
                            **_error_response("The agent is over its rate.", "RateLimited"),
                            "headers": _RETRY_AFTER,
                        },
                        **{k: v for k, v in _COMMON_POST_ERRORS.items() if k != "413"},
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Whether the collector and its store answer.",
                    "responses": {
                        "200": {
                            "description": "Serving.",
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Health"}}},
                        },
                        "405": _COMMON_POST_ERRORS["405"],
                        "503": _COMMON_POST_ERRORS["503"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document.",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        "405": _COMMON_POST_ERRORS["405"],
                    },
                }
            },
        },
        "components": {"schemas": schemas},
    }
    if server_url is not None:
        document["servers"] = [{"url": server_url}]
    return document


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------


_Answer: TypeAlias = tuple[int, dict[str, Any], dict[str, str], dict[str, object]]
"""An endpoint's status, JSON body, extra headers and fields for the request's log line."""


class _Refusal(Exception):  # noqa: N818 -- control flow inside one request, never escapes
    """Answer this request with an error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.close = close


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests in turn (HTTP/1.1 keep-alive), each answered with JSON."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # garbage still gets a status line, not HTTP/0.9
    server_version = "weightwarden-collector"
    sys_version = ""
    _ROUTES: ClassVar[dict[str, dict[str, str]]] = {
        "/v1/batches": {"POST": "_batches"},
        "/v1/enroll": {"POST": "_enroll"},
        "/v1/health": {"GET": "_health"},
        "/openapi.json": {"GET": "_openapi"},
    }

    server: _HttpServer
    _unread: bool = False
    _body_read: bool = False
    _broken: bool = False

    # -- connection ----------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.owner.limits.read_timeout)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except _CLIENT_GONE as exc:
                self._broken = True
                self.server.owner.log.info("TLS handshake failed", error=str(exc)[:200])

    def handle(self) -> None:
        if self._broken:
            return
        try:
            super().handle()
        except _CLIENT_GONE:
            self.close_connection = True

    def handle_one_request(self) -> None:
        """Read one request and answer it; what the standard library does, but JSON."""
        owner = self.server.owner
        owner.set_idle(self.connection, idle=True)
        self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE + 1)
        owner.set_idle(self.connection, idle=False)
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > _MAX_REQUEST_LINE:
            self.requestline = ""
            self.request_version = "HTTP/1.1"
            self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            self._drain()
            return
        if not self.parse_request():
            self._drain()
            return
        if self.headers.defects:
            self.send_error(HTTPStatus.BAD_REQUEST, "malformed header section")
            self._drain()
            return
        started = time.monotonic()
        self._unread = self._body_read = False
        status, detail = self._dispatch()
        with contextlib.suppress(*_CLIENT_GONE):
            self.wfile.flush()
        if self._unread:
            self._drain()
        if owner.stopping:
            self.close_connection = True
        owner.log_request_done(
            method=self.command[:20],
            path=self.path[:200],
            status=int(status),
            ms=round((time.monotonic() - started) * 1000, 1),
            **detail,
        )

    def _drain(self) -> None:
        """Close after an answer that left the body unread, without losing the answer.

        Closing a socket with unread input resets the connection, and the reset can
        destroy our answer before the client reads it. So: end our side (the client
        sees the answer, then end of stream), swallow what it still sends (at most the
        declared length, a few MiB, for a few seconds), then close.
        """
        self.close_connection = True
        headers = getattr(self, "headers", None)
        declared = ((headers.get("Content-Length") if headers else None) or "").strip()
        numeric = declared.isascii() and declared.isdigit()
        left = min(int(declared), _DRAIN_BYTES) if numeric else _DRAIN_BYTES
        with contextlib.suppress(*_CLIENT_GONE):
            self.wfile.flush()
            if not isinstance(self.connection, ssl.SSLSocket):
                self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_DRAIN_SECONDS)
            deadline = time.monotonic() + _DRAIN_SECONDS
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)

    # -- answers -------------------------------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the standard library detects (bad request line, headers) answered as JSON."""
        del explain
        status = HTTPStatus.BAD_REQUEST if code >= HTTPStatus.INTERNAL_SERVER_ERROR else code
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        text = message or phrase
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            text = f"unsupported HTTP version: {text}"
        self.close_connection = True
        self._send_json(status, {"error": text}, close=True)

    def _send_json(
        self,
        status: int,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        with contextlib.suppress(*_CLIENT_GONE):
            self.send_response(status)
            self.send_header("Content-Type", _JSON)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if close:
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401 -- stdlib signature
        """The standard library's per-request line is replaced by one structured line."""
        del format, args

    # -- routing -------------------------------------------------------------------------

    def _dispatch(self) -> tuple[int, dict[str, object]]:
        """Route, answer, and map failures: 4xx refusals, 503 store down, 500 bugs."""
        path = self.path.partition("?")[0]
        try:
            status, body, headers, detail = getattr(self, self._route(path))()
        except _Refusal as refusal:
            self._unread = self._has_body() and not self._body_read
            self._send_json(
                refusal.status,
                {"error": refusal.message},
                headers=refusal.headers,
                close=refusal.close or self._unread,
            )
            return refusal.status, {"error": refusal.message[:200]}
        except StoreError as exc:
            self.server.owner.log.exception("store unavailable", error=str(exc))
            self._send_json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": f"the collector's store is unavailable: {exc}"},
                headers={"Retry-After": "5"},
                close=True,
            )
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)[:200]}
        except Exception:  # the request's error boundary: log, answer, keep serving
            self.server.owner.log.exception("request failed", method=self.command, path=path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "internal error in the collector; it is logged"},
                close=True,
            )
            return HTTPStatus.INTERNAL_SERVER_ERROR, {}
        self._send_json(status, body, headers=headers)
        return status, detail

    def _route(self, path: str) -> str:
        """The method that answers this request.

        Raises:
            _Refusal: 404 no such path, 405 not this method (with ``Allow``).
        """
        methods = self._ROUTES.get(path)
        if methods is None:
            raise _Refusal(HTTPStatus.NOT_FOUND, f"no such path: {path[:100]}")
        name = methods.get(self.command)
        if name is None:
            allowed = ", ".join(methods)
            raise _Refusal(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command[:20]} is not allowed on {path}; use {allowed}",
                headers={"Allow": allowed},
            )
        return name

    def _has_body(self) -> bool:
        return "Content-Length" in self.headers or "Transfer-Encoding" in self.headers

    def _read_body(self, limit: int, media_type: str) -> bytes:
        """The request body, after checking its declared length and type.

        Raises:
            _Refusal: 411, 400, 413, 415 (the connection then closes), or 408.
        """
        if "Transfer-Encoding" in self.headers:
            raise _Refusal(
                HTTPStatus.LENGTH_REQUIRED,
                "chunked request bodies are not accepted: send Content-Length",
                close=True,
            )
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required", close=True)
        declared = lengths[0].strip()
        if len(set(lengths)) != 1 or not (declared.isascii() and declared.isdigit()):
            raise _Refusal(HTTPStatus.BAD_REQUEST, "Content-Length is malformed", close=True)
        length = int(declared)
        if length > limit:
            raise _Refusal(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes; the limit is {limit}",
                close=True,
            )
        media = (self.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if media != media_type:
            raise _Refusal(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type must be {media_type}, got {media[:60] or 'nothing'!r}",
                close=True,
            )
        try:
            body = self.rfile.read(length)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            body = b""  # the client stalled or left: answered 408 if it still listens
        self._body_read = True
        if len(body) != length:
            raise _Refusal(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body ended after {len(body)} of {length} bytes",
                close=True,
            )
        return body

    # -- endpoints -----------------------------------------------------------------------

    def _batches(self) -> _Answer:
        owner = self.server.owner
        body = self._read_body(owner.limits.max_body_bytes, BATCH_TYPE)
        result = owner.ingestor.ingest(body, admit=owner.rate.admit)
        headers = {}
        if result.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
        detail: dict[str, object] = {
            "agent": result.agent_id,
            "stored": result.stored,
            "duplicates": result.duplicates,
            "acked_seq": result.acked_seq,
        }
        if result.quarantine_id:
            detail["quarantine_id"] = result.quarantine_id
        if result.status >= HTTPStatus.BAD_REQUEST:
            detail["error"] = result.message[:200]
        return result.status, result.to_json(), headers, detail

    def _enroll(self) -> _Answer:
        owner = self.server.owner
        body = self._read_body(owner.limits.max_enroll_bytes, _JSON)
        try:
            request = parse_request(body)
            enrolled = enroll(
                owner.store,
                request,
                now=owner.clock(),
                collector_public_key=owner.collector_public_key,
            )
        except EnrollmentError as exc:
            raise _Refusal(exc.status, str(exc)) from None
        return HTTPStatus.OK, enrolled.to_json(), {}, {"agent": enrolled.agent_id}

    def _health(self) -> _Answer:
        self.server.owner.store.agent("-health-check-")
        return HTTPStatus.OK, {"status": "ok", "version": API_VERSION}, {}, {}

    def _openapi(self) -> _Answer:
        return HTTPStatus.OK, self.server.owner.openapi, {}, {}


def listening_socket(listen: tuple[str, int]) -> socket.socket:
    """A TCP socket bound to ``listen`` and listening, for worker processes to share.

    Raises:
        OSError: The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(listen)
        sock.listen(_HttpServer.request_queue_size)
    except BaseException:
        sock.close()
        raise
    return sock


def server_url(address: tuple[str, int], *, tls: bool) -> str:
    """``http(s)://HOST:PORT`` of a bound address (an IPv6 host in brackets)."""
    host, port = str(address[0]), int(address[1])
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


class _HttpServer(ThreadingHTTPServer):
    """The listening socket: a bounded number of connection threads, TLS in the thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self, owner: CollectorServer, address: tuple[str, int], sock: socket.socket | None
    ) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler, bind_and_activate=sock is None)
        if sock is not None:  # a socket shared with other worker processes
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()
            # Workers race for each connection; the loser must not block in accept().
            sock.settimeout(0.0)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer.server_bind`` does."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: Any,  # noqa: ANN401 -- socketserver's own annotation
    ) -> None:
        """Serve the connection in its own thread, or answer 503 if every slot is taken."""
        conn = cast("socket.socket", request)
        if not self.owner.slots.acquire(blocking=False):
            self.owner.refused_connections += 1
            with contextlib.suppress(OSError):
                conn.settimeout(1.0)
                if self.owner.tls is None:
                    body = b'{"error":"too many connections; retry shortly"}'
                    conn.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                        + str(len(body)).encode()
                        + b"\r\n\r\n"
                        + body
                    )
            self.shutdown_request(conn)
            return
        if self.owner.tls is not None:
            try:
                conn = self.owner.tls.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ValueError):
                self.owner.slots.release()
                self.shutdown_request(conn)
                return
        thread = threading.Thread(
            target=self._serve, args=(conn, client_address), daemon=True, name="collector-conn"
        )
        thread.start()

    def _serve(self, conn: socket.socket, client_address: Any) -> None:  # noqa: ANN401
        owner = self.owner
        owner.track(conn, add=True)
        try:
            self.finish_request(conn, client_address)
        except Exception:  # one connection's fault must never reach the server
            owner.log.exception("connection failed")
        finally:
            owner.track(conn, add=False)
            self.shutdown_request(conn)
            owner.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        """Log (socketserver calls this inside its ``except``) instead of printing to stderr."""
        del request, client_address
        self.owner.log.error(
            "connection failed",
            exc_info=True,  # noqa: LOG014 -- socketserver calls this from inside its except
        )


class CollectorServer:
    """The collector's HTTP(S) API over one store (see the module doc).

    Args:
        store: The collector's store (shared by the connection threads; thread-safe).
        ingestor: Verifies and stores batches.
        limits: Bounds on requests, agents and connections.
        listen: Host and port; port 0 picks a free one (see :attr:`address`).
        sock: A socket already listening (from :func:`listening_socket`), shared with other
            worker processes that accept from it too; ``listen`` is then not bound.
        tls: A server TLS context for HTTPS, or None for plain HTTP.
        clock: Milliseconds since the epoch (enrollment times).
        collector_public_key: The collector's public key PEM, returned to enrolling agents.

    Raises:
        OSError: The address cannot be bound.
    """

    def __init__(
        self,
        *,
        store: Store,
        ingestor: Ingestor,
        limits: ServerLimits,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], int],
        collector_public_key: str | None = None,
    ) -> None:
        self.store = store
        self.ingestor = ingestor
        self.limits = limits
        self.tls = tls
        self.clock = clock
        self.collector_public_key = collector_public_key
        self.rate = RateLimiter(rate=limits.rate_events_per_second, burst=limits.rate_burst_events)
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.refused_connections = 0
        self.stopping = False
        self.log = get_logger("collector.http")
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, bool] = {}
        self._thread: threading.Thread | None = None
        self._started = False
        self._httpd = _HttpServer(self, listen, sock)
        self.openapi = openapi_document()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http(s)://HOST:PORT``."""
        return server_url(self.address, tls=self.tls is not None)

    # -- bookkeeping for the connection threads ------------------------------------------

    def track(self, conn: socket.socket, *, add: bool) -> None:
        """Remember (or forget) an open connection."""
        with self._lock:
            if add:
                self._connections[conn] = True
            else:
                self._connections.pop(conn, None)

    def set_idle(self, conn: socket.socket, *, idle: bool) -> None:
        """Mark a connection as waiting for its next request (idle) or busy with one."""
        with self._lock:
            if conn in self._connections:
                self._connections[conn] = idle
            stop_now = idle and self.stopping
        if stop_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def log_request_done(self, **fields: object) -> None:
        """One line per request."""
        self.log.info("request", **fields)

    # -- lifecycle -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop` (blocks)."""
        self._started = True
        self.log.info("collector listening", url=self.url)
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve in a background thread."""
        self._started = True
        self._thread = threading.Thread(
            target=self.serve_forever, name="collector-http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to ``timeout``), close the rest."""
        if self.stopping:
            return
        self.stopping = True
        if self._started:  # shutdown() waits for serve_forever, which must have been asked for
            self._httpd.shutdown()
        self._httpd.server_close()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                idle = [c for c, is_idle in self._connections.items() if is_idle]
                busy = len(self._connections) - len(idle)
            for conn in idle:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            if not busy and not idle:
                break
            if time.monotonic() >= deadline:
                with self._lock:
                    remaining = list(self._connections)
                for conn in remaining:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                break
            time.sleep(0.05)
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.log.info("collector stopped", refused_connections=self.refused_connections)
