"""Enrollment: a one-time token lets a new agent register its own identity key.

``weightwarden collector enroll --host gpu-01`` calls :func:`issue_token`: a random token
(256 bits, shown once, never stored: the store keeps its SHA-256), bound to one host name
and expiring (24 h by default). The agent sends it with its public key to
``POST /v1/enroll`` (:func:`parse_request`, then :func:`enroll`): the store redeems the
token atomically (unused, unexpired, same host) and registers the key under the agent id,
which is the host name. From then on the agent signs its batches with that key.

Refusals (:class:`EnrollmentError`, with the HTTP status): 400 a malformed request or a
key weightwarden does not accept; 403 a token that is unknown, used, expired or issued for
another host (the answer does not say which, so it cannot be used to probe tokens); 409
the host is enrolled and not revoked (``weightwarden collector revoke HOST`` first; the
token is then spent).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from collector.ingest import public_key_from_pem
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collector.store import Store

__all__ = [
    "DEFAULT_TOKEN_TTL_MS",
    "TOKEN_PREFIX",
    "EnrollRequest",
    "Enrolled",
    "EnrollmentError",
    "IssuedToken",
    "enroll",
    "hash_token",
    "issue_token",
    "parse_request",
    "valid_host",
]

TOKEN_PREFIX: Final = "wwe_"  # noqa: S105 -- the visible prefix of every token, not a secret
DEFAULT_TOKEN_TTL_MS: Final = 24 * 3600 * 1000
_HOST: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?")
_MAX_TOKEN: Final = 256
_MAX_PEM: Final = 16 * 1024


class EnrollmentError(UsageError):
    """An enrollment the collector refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedToken:
    """A token as issued: the secret itself is only ever in this value and on screen."""

    token: str
    host: str
    expires_at: int

    def __repr__(self) -> str:
        return f"IssuedToken(host={self.host!r}, expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollRequest:
    """What an agent sends to enroll: ``{"token", "host", "public_key"}`` (PEM)."""

    token: str
    host: str
    public_key_pem: str

    def __repr__(self) -> str:
        return f"EnrollRequest(host={self.host!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolled:
    """A registered agent: the response body of a successful enrollment."""

    agent_id: str
    enrolled_at: int
    collector_public_key: str | None = None

    def to_json(self) -> dict[str, object]:
        """``{"agent_id", "enrolled_at", "collector_public_key"?}``."""
        body: dict[str, object] = {"agent_id": self.agent_id, "enrolled_at": self.enrolled_at}
        if self.collector_public_key is not None:
            body["collector_public_key"] = self.collector_public_key
        return body


def valid_host(host: str) -> bool:
    """Whether ``host`` can name an agent: a DNS-like name of letters, digits, ``.-_``."""
    return bool(_HOST.fullmatch(host))


def hash_token(token: str) -> str:
    """The SHA-256 hex under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(store: Store, *, host: str, ttl_ms: int, now: int) -> IssuedToken:
    """Create a one-time token for ``host``, valid ``ttl_ms`` from ``now``; keep only its hash.

    Raises:
        UsageError: ``host`` is not a valid agent name or ``ttl_ms`` is not positive.
    """
    if not valid_host(host):
        raise UsageError(
            f"--host {host!r}: use the agent's host name (letters, digits, '.', '-', '_'; "
            "at most 255 characters)"
        )
    if ttl_ms <= 0:
        raise UsageError("--ttl must be positive, like 24h or 30m")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + ttl_ms
    store.add_token(token_hash=hash_token(token), host=host, expires_at=expires_at)
    return IssuedToken(token=token, host=host, expires_at=expires_at)


def parse_request(body: bytes) -> EnrollRequest:
    """Read an enrollment request body.

    Raises:
        EnrollmentError: (400) not a JSON object with exactly ``token``, ``host`` and
            ``public_key`` strings, a bad host name, or a public key weightwarden does not
            accept (ECDSA P-256/384/521 or Ed25519, PEM).
    """
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EnrollmentError("enrollment request is not valid JSON", status=400) from None
    if not isinstance(obj, dict) or set(obj) != {"token", "host", "public_key"}:
        raise EnrollmentError(
            "enrollment request must be a JSON object with exactly token, host, public_key",
            status=400,
        )
    token, host, pem = obj["token"], obj["host"], obj["public_key"]
    if not all(isinstance(value, str) for value in (token, host, pem)):
        raise EnrollmentError("token, host and public_key must be strings", status=400)
    if not token or len(token) > _MAX_TOKEN:
        raise EnrollmentError("token must be a non-empty string", status=400)
    if not valid_host(host):
        raise EnrollmentError(
            "host must be a host name (letters, digits, '.', '-', '_')", status=400
        )
    if len(pem) > _MAX_PEM or public_key_from_pem(pem) is None:
        raise EnrollmentError(
            "public_key must be a PEM public key: ECDSA P-256, P-384, P-521 or Ed25519",
            status=400,
        )
    return EnrollRequest(token=token, host=host, public_key_pem=pem)


def enroll(
    store: Store,
    request: EnrollRequest,
    *,
    now: int,
    collector_public_key: str | None = None,
) -> Enrolled:
    """Redeem the request's token and register its key under the host name.

    Raises:
        EnrollmentError: 403 the token is unknown, used, expired or for another host;
            409 the host is enrolled and not revoked.
    """
    if not store.redeem_token(token_hash=hash_token(request.token), host=request.host, now=now):
        raise EnrollmentError(
            "enrollment token is not valid for this host (unknown, used or expired): "
            "ask for a new one (weightwarden collector enroll --host HOST)",
            status=403,
        )
    key = public_key_from_pem(request.public_key_pem)
    assert key is not None  # noqa: S101 -- parse_request checked it
    try:
        store.register_agent(agent_id=request.host, public_key_pem=key.pem.decode("ascii"), now=now)
    except UsageError as exc:
        raise EnrollmentError(
            f"agent {request.host!r} is already enrolled: revoke it first "
            f"(weightwarden collector revoke {request.host}), then issue a new token ({exc})",
            status=409,
        ) from None
    return Enrolled(
        agent_id=request.host, enrolled_at=now, collector_public_key=collector_public_key
    )
