"""Enrollment: the agent registers its identity key with the collector, once.

``weightwarden collector enroll --host NAME`` prints a one-time, expiring token bound to
that host. On its first start the agent sends it with its public key
(``POST {url}/v1/enroll``, ``{"host": agent_id, "token": token, "public_key": PEM}``); the
collector registers the key and from then on accepts only batches it signed. The agent
then writes ``STATE_DIR/enrollment.json`` (collector URL, agent id, time, the certificate
pin used and the key's fingerprint) so later starts skip enrollment:
:func:`ensure_enrolled` re-enrolls only when that record is missing or was made for
another collector, agent id or key.

The token is a secret: it is never logged or written anywhere, and with a pin
configured the collector's certificate is checked before the token is sent. Over plain
HTTP to anything but loopback a warning says the token travels unencrypted.

Errors:
    :class:`~weightwarden.errors.UsageError` (exit 2): the collector refused the token
        (403: unknown, used, expired or for another host) or the request (other 4xx), the
        agent is not enrolled and has no token, or ``enrollment.json`` is unreadable.
    :class:`agent.shipper.PinMismatchError` (a ``UsageError``): the certificate is not the
        pinned one; nothing was sent.
    :class:`agent.shipper.CollectorUnreachableError` (exit 70): no answer; the agent
        retries on its next start (systemd restarts it).
    :class:`~weightwarden.errors.WeightwardenError` (exit 70): the collector failed (5xx,
        429) or answered nonsense.
"""

from __future__ import annotations

import contextlib
import http
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from agent.shipper import HttpTransport, normalize_pin
from weightwarden.errors import UsageError, WeightwardenError
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent.identity import AgentIdentity

__all__ = ["ENROLLMENT_NAME", "Enrollment", "enroll", "ensure_enrolled", "load_enrollment"]

ENROLLMENT_NAME: Final = "enrollment.json"
_FORMAT: Final = 1
_MAX_FILE_BYTES: Final = 64 * 1024

log = get_logger("agent.enroll")


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrollment:
    """The record of a successful enrollment (``STATE_DIR/enrollment.json``).

    Attributes:
        collector_url: The collector the agent enrolled with.
        agent_id: The agent's name there (the token's host).
        enrolled_at: When the collector accepted the key (UTC).
        pinned_sha256: The certificate pin in force at enrollment, if any.
        key_sha256: SHA-256 hex of the identity public key PEM that was registered.
    """

    collector_url: str
    agent_id: str
    enrolled_at: datetime
    pinned_sha256: str | None
    key_sha256: str

    def matches(self, collector_url: str, agent_id: str, identity: AgentIdentity) -> bool:
        """Whether this record covers that collector, agent id and key."""
        return (
            self.collector_url == collector_url.rstrip("/")
            and self.agent_id == agent_id
            and self.key_sha256 == identity.fingerprint
        )

    def to_json(self) -> str:
        """The file's content."""
        return json.dumps(
            {
                "format": _FORMAT,
                "collector_url": self.collector_url,
                "agent_id": self.agent_id,
                "enrolled_at": self.enrolled_at.isoformat().replace("+00:00", "Z"),
                "pinned_sha256": self.pinned_sha256,
                "key_sha256": self.key_sha256,
            },
            indent=2,
            sort_keys=True,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def enroll(
    collector_url: str,
    token: str,
    *,
    agent_id: str,
    identity: AgentIdentity,
    ca_file: Path | None = None,
    pinned_sha256: str | None = None,
    timeout: float = 10.0,
    now: Callable[[], datetime] = _now,
) -> Enrollment:
    """Register ``identity``'s public key with the collector and record it.

    Writes ``identity.state_dir/enrollment.json`` (mode 0600, atomically) on success.

    Raises:
        UsageError: 403 (token unknown, used, expired or for another host), another 4xx,
            or the collector enrolled a different agent id.
        PinMismatchError: The certificate is not the pinned one (the token was not sent).
        CollectorUnreachableError: No answer from the collector.
        WeightwardenError: 5xx or 429, an unreadable answer, or the record cannot be written.
        ConfigError: A malformed URL, pin or CA file.
    """
    if not token:
        raise UsageError("the enrollment token is empty: pass the token `collector enroll` printed")
    transport = HttpTransport(
        collector_url, ca_file=ca_file, pinned_sha256=pinned_sha256, timeout=timeout
    )
    if not transport.encrypted and not transport.loopback:
        log.warning(
            "enrolling over plain HTTP: the one-time token travels unencrypted",
            collector=transport.url,
        )
    body = json.dumps(
        {"host": agent_id, "token": token, "public_key": identity.public.pem.decode("ascii")}
    ).encode("utf-8")
    try:
        reply = transport.post("/v1/enroll", body)
    finally:
        transport.close()
    status = reply.status
    if status == http.HTTPStatus.FORBIDDEN:
        raise UsageError(
            "enrollment refused: token unknown, used, expired or for another host "
            f"({reply.error_text()}); ask for a new one with "
            f"`weightwarden collector enroll --host {agent_id}`"
        )
    if (
        status == http.HTTPStatus.TOO_MANY_REQUESTS
        or status >= http.HTTPStatus.INTERNAL_SERVER_ERROR
    ):
        raise WeightwardenError(
            f"the collector at {transport.url} could not enroll this agent now "
            f"({reply.error_text()}); the agent tries again when it restarts"
        )
    if status != http.HTTPStatus.OK:
        raise UsageError(
            f"the collector at {transport.url} refused enrollment ({reply.error_text()})"
        )
    answer = reply.json_object()
    enrolled_as = answer.get("agent_id") if answer is not None else None
    if not isinstance(enrolled_as, str):
        raise WeightwardenError(
            f"the collector at {transport.url} accepted enrollment but its answer names no "
            f"agent_id ({reply.error_text()})"
        )
    if enrolled_as != agent_id:
        raise UsageError(
            f"the collector enrolled this key as agent {enrolled_as!r}, not {agent_id!r}: "
            "set agent_id in the agent configuration to the name the token was made for"
        )
    enrollment = Enrollment(
        collector_url=transport.url,
        agent_id=agent_id,
        enrolled_at=now().astimezone(UTC),
        pinned_sha256=normalize_pin(pinned_sha256) if pinned_sha256 is not None else None,
        key_sha256=identity.fingerprint,
    )
    _write_atomically(identity.state_dir / ENROLLMENT_NAME, enrollment.to_json().encode())
    log.info(
        "agent enrolled",
        collector=transport.url,
        agent_id=agent_id,
        key_sha256=identity.fingerprint,
    )
    return enrollment


def load_enrollment(state_dir: Path) -> Enrollment | None:
    """Read ``state_dir/enrollment.json``; None if the agent never enrolled.

    Raises:
        UsageError: The file exists but is unreadable or not an enrollment record.
    """
    path = state_dir / ENROLLMENT_NAME
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise UsageError(f"{path} is too large to be an enrollment record")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    broken = UsageError(
        f"{path} is not a valid enrollment record: delete it and enroll again with a new "
        "token (weightwarden collector enroll --host NAME)"
    )
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise broken from None
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise broken
    names = ("collector_url", "agent_id", "enrolled_at", "key_sha256")
    fields = {name: obj.get(name) for name in names}
    strings = {name: value for name, value in fields.items() if isinstance(value, str) and value}
    pin = obj.get("pinned_sha256")
    if len(strings) != len(fields) or not (pin is None or isinstance(pin, str)):
        raise broken
    url, agent_id, at, key = (
        strings["collector_url"],
        strings["agent_id"],
        strings["enrolled_at"],
        strings["key_sha256"],
    )
    try:
        enrolled_at = datetime.fromisoformat(at)
    except ValueError:
        raise broken from None
    return Enrollment(
        collector_url=url,
        agent_id=agent_id,
        enrolled_at=enrolled_at,
        pinned_sha256=pin,
        key_sha256=key,
    )


def ensure_enrolled(
    collector_url: str,
    token: str | None,
    *,
    agent_id: str,
    identity: AgentIdentity,
    ca_file: Path | None = None,
    pinned_sha256: str | None = None,
    timeout: float = 10.0,
) -> Enrollment:
    """Return the agent's enrollment with this collector, enrolling first if needed.

    A recorded enrollment for the same collector URL, agent id and identity key is used
    as is (no request). Otherwise ``token`` is required and :func:`enroll` runs.

    Raises:
        UsageError: Not enrolled with this collector and no token given; or see
            :func:`enroll`.
    """
    existing = load_enrollment(identity.state_dir)
    if existing is not None and existing.matches(collector_url, agent_id, identity):
        return existing
    if token is None:
        if existing is None:
            why = "this agent is not enrolled yet"
        else:
            why = (
                f"this agent is enrolled with {existing.collector_url} as "
                f"{existing.agent_id!r} (key {existing.key_sha256[:16]}…), not with "
                f"{collector_url.rstrip('/')} as {agent_id!r} with this key"
            )
        raise UsageError(
            f"{why}: pass --enroll-token with a token from "
            f"`weightwarden collector enroll --host {agent_id}`"
        )
    return enroll(
        collector_url,
        token,
        agent_id=agent_id,
        identity=identity,
        ca_file=ca_file,
        pinned_sha256=pinned_sha256,
        timeout=timeout,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` (0600) through a temporary file and a rename, then sync the folder."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
                out.flush()
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise WeightwardenError(
            f"enrolled, but cannot write {path}: {exc.strerror or exc}; the next start "
            "needs a new token"
        ) from exc
