"""HTTP(S) to the collector: one keep-alive connection, the certificate optionally pinned."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from agent.shipper._result import (
    CollectorUnreachableError,
    Outcome,
    PinMismatchError,
    SendResult,
    clip,
)
from weightwarden.batch import CONTENT_TYPE
from weightwarden.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from weightwarden.batch import Batch

__all__ = ["HttpReply", "HttpTransport", "interpret_reply", "normalize_pin"]

_MAX_REPLY_BYTES: Final = 1 << 20
_MAX_RETRY_AFTER_S: Final = 300.0
_USER_AGENT: Final = "weightwarden-agent/1"
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpReply:
    """A collector's answer: status, lower-cased headers and body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None if it is not one."""
        try:
            obj = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None
        return obj if isinstance(obj, dict) else None

    def error_text(self) -> str:
        """The collector's ``error`` message, or the start of the body."""
        obj = self.json_object()
        text = obj.get("error") if obj is not None else None
        if not isinstance(text, str):
            text = self.body[:1000].decode("utf-8", "replace")
        return f"HTTP {self.status}: {clip(text) or http.client.responses.get(self.status, '')}"


def normalize_pin(pin: str) -> str:
    """A certificate pin as 64 lower-case hex digits.

    Accepts upper case, ``:`` separators (as ``openssl x509 -fingerprint -sha256`` prints)
    and a ``sha256:`` prefix.

    Raises:
        ConfigError: Not a SHA-256 digest.
    """
    text = pin.strip().lower().removeprefix("sha256:").removeprefix("sha256/")
    text = text.replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigError(
            "collector pinned_sha256 must be the SHA-256 of the collector's DER certificate: "
            "64 hex digits, colons allowed (openssl x509 -noout -fingerprint -sha256 -in CERT)"
        )
    return text


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that checks the server certificate's SHA-256 after the handshake."""

    def __init__(
        self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext, pin: str
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._pin = pin

    def connect(self) -> None:
        super().connect()
        sock = self.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        seen = hashlib.sha256(der).hexdigest() if der else "no certificate"
        if not hmac.compare_digest(seen, self._pin):
            self.close()
            raise PinMismatchError(
                f"the collector at {self.host}:{self.port} presented a certificate with "
                f"SHA-256 {seen}, not the pinned {self._pin}: refusing to talk to it. If the "
                "collector's certificate was replaced on purpose, update pinned_sha256"
            )


def _tls_context(ca_file: Path | None, pin: str | None) -> ssl.SSLContext:
    """Verify against ``ca_file`` (or the system CAs); with only a pin, the pin decides."""
    if ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"collector ca_file {ca_file} cannot be used: {reason}") from exc
    elif pin is not None:
        # The pin authenticates the server (a self-signed collector certificate needs no CA):
        # the handshake is not verified, the certificate's digest is, before any request.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpTransport:
    """HTTP(S) to the collector's API, one keep-alive connection at a time.

    Args:
        url: The collector's base URL (``https://collector:8443``, optionally with a path
            prefix); requests go to ``{url}/v1/...``.
        ca_file: PEM bundle to verify the collector's certificate against (default: the
            system's CAs, unless only a pin is given).
        pinned_sha256: SHA-256 of the collector's DER certificate; the connection is
            refused, before anything is sent, if the certificate differs. With a pin and
            no ``ca_file`` the pin alone authenticates the collector (self-signed works).
        timeout: Seconds to connect, and to wait for each read.

    Raises:
        ConfigError: The URL is not http(s), a pin is given for plain HTTP, the pin is not
            a SHA-256 digest, or ``ca_file`` cannot be loaded.

    Not thread-safe: one thread sends (the shipper's).
    """

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        pinned_sha256: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"collector url {url!r} must be http://HOST[:PORT] or https://HOST[:PORT]"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(
                f"collector url {url!r} must not carry credentials, a query or a fragment"
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"collector url {url!r} has an invalid port") from None
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = port
        self.tls = parts.scheme == "https"
        self.pin = normalize_pin(pinned_sha256) if pinned_sha256 is not None else None
        if self.pin is not None and not self.tls:
            raise ConfigError(f"collector url {url!r}: a certificate pin needs an https:// URL")
        self.timeout = timeout
        self._prefix = parts.path.rstrip("/")
        self._context = _tls_context(ca_file, self.pin) if self.tls else None
        self._connection: http.client.HTTPConnection | None = None
        self._reused = False

    @property
    def encrypted(self) -> bool:
        """Whether requests travel over TLS."""
        return self.tls

    @property
    def loopback(self) -> bool:
        """Whether the collector is on this host (plain HTTP is acceptable there)."""
        return _is_loopback(self.host)

    def _open(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._context is None:
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
            elif self.pin is not None:
                self._connection = _PinnedHTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._context, pin=self.pin
                )
            else:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._context
                )
            self._reused = False
        return self._connection

    def post(self, path: str, body: bytes, *, content_type: str = "application/json") -> HttpReply:
        """POST a JSON ``body`` to ``{url}{path}`` and read the whole answer.

        Raises:
            PinMismatchError: The collector's certificate is not the pinned one (nothing
                was sent).
            CollectorUnreachableError: No answer: refused, reset, timed out, TLS failure,
                or an answer over 1 MiB.
        """
        connection = self._open()
        reused = self._reused
        self._reused = True
        answered = False
        try:
            # The collector may answer (413) and close before reading the whole body: the
            # send then fails but its answer can still be waiting. If not, getresponse raises.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                connection.request(
                    "POST",
                    self._prefix + path,
                    body=body,
                    headers={
                        "Content-Type": content_type,
                        "Accept": "application/json",
                        "User-Agent": _USER_AGENT,
                    },
                )
            response = connection.getresponse()
            answered = True
            data = response.read(_MAX_REPLY_BYTES + 1)
            headers = {name.lower(): value for name, value in response.getheaders()}
        except PinMismatchError:
            self.close()
            raise
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise CollectorUnreachableError(
                f"the collector at {self.url} presented a certificate that does not verify "
                f"({exc.verify_message}): check ca_file or pinned_sha256"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            stale = (
                reused
                and not answered
                and isinstance(
                    exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                )
            )
            raise CollectorUnreachableError(
                f"cannot reach the collector at {self.url}: {_describe(exc)}", stale=stale
            ) from exc
        if len(data) > _MAX_REPLY_BYTES:
            self.close()
            raise CollectorUnreachableError(
                f"the collector at {self.url} answered with over {_MAX_REPLY_BYTES} bytes"
            )
        if response.will_close or not response.isclosed():
            self.close()
        return HttpReply(status=response.status, headers=headers, body=data)

    def send(self, batch: Batch, body: bytes) -> SendResult:  # noqa: ARG002 -- the body says it all
        """POST the signed batch to ``/v1/batches`` and interpret the answer."""
        try:
            reply = self.post("/v1/batches", body, content_type=CONTENT_TYPE)
        except PinMismatchError as exc:
            return SendResult(outcome=Outcome.PIN_MISMATCH, detail=str(exc))
        except CollectorUnreachableError as exc:
            return SendResult(
                outcome=Outcome.RETRY, retry_after=0.0 if exc.stale else None, detail=str(exc)
            )
        return interpret_reply(reply)

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the connection closed without an answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return clip(str(exc)) or type(exc).__name__


def _int_field(obj: Mapping[str, Any] | None, name: str) -> int | None:
    value = obj.get(name) if obj is not None else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds only), capped at 5 minutes."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative  # noqa: PLR0124
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


def interpret_reply(reply: HttpReply) -> SendResult:  # noqa: PLR0911 -- one return per status class
    """What a collector's answer to ``POST /v1/batches`` means for the shipper (pure)."""
    status = reply.status
    obj = reply.json_object()
    if status == http.HTTPStatus.OK:
        acked = _int_field(obj, "acked_seq")
        if acked is None:
            return SendResult(
                outcome=Outcome.REFUSED,
                status=status,
                detail=f"no valid acked_seq in the answer ({reply.error_text()})",
            )
        return SendResult(
            outcome=Outcome.STORED,
            status=status,
            acked_seq=acked,
            stored=_int_field(obj, "stored") or 0,
            duplicates=_int_field(obj, "duplicates") or 0,
        )
    if status == http.HTTPStatus.CONFLICT:
        acked = _int_field(obj, "acked_seq")
        if acked is None:
            return SendResult(outcome=Outcome.REFUSED, status=status, detail=reply.error_text())
        quarantine = obj.get("quarantine_id") if obj is not None else None
        return SendResult(
            outcome=Outcome.QUARANTINED,
            status=status,
            acked_seq=acked,
            quarantine_id=str(quarantine) if quarantine is not None else None,
            detail=reply.error_text(),
        )
    if status == http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        return SendResult(outcome=Outcome.TOO_LARGE, status=status, detail=reply.error_text())
    if status == http.HTTPStatus.TOO_MANY_REQUESTS:
        return SendResult(
            outcome=Outcome.RETRY,
            status=status,
            retry_after=_retry_after(reply.headers.get("retry-after")),
            detail=reply.error_text(),
        )
    if status in {http.HTTPStatus.UNAUTHORIZED, http.HTTPStatus.FORBIDDEN}:
        return SendResult(outcome=Outcome.UNAUTHORIZED, status=status, detail=reply.error_text())
    if status >= http.HTTPStatus.INTERNAL_SERVER_ERROR:
        return SendResult(outcome=Outcome.RETRY, status=status, detail=reply.error_text())
    return SendResult(outcome=Outcome.REFUSED, status=status, detail=reply.error_text())
