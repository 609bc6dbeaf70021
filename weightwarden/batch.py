"""The signed batch: how an agent's spooled events travel to the collector (HTTP or NATS).

Wire body (JSON, UTF-8)::

    {"v": 1, "agent_id": "gpu-01", "batch": "<batch JSON as a string>", "sig": "<base64>"}

``sig`` is the agent identity key's signature over the exact UTF-8 bytes of ``batch``, so
the collector verifies before it parses anything inside. The inner batch::

    {"agent_id": "gpu-01", "nonce": "<32 hex>", "sent_at": <ms>,
     "events": [{"seq": 41, "payload": "<canonical OCSF JSON>",
                 "prev_hash": "<hex>", "payload_hash": "<hex>", "link_hash": "<hex>"}, ...]}

Each event carries its hash-chain link (:mod:`weightwarden.crypto.chain`); ``payload`` is
the event's canonical bytes, exactly what ``payload_hash`` covers. ``nonce`` and
``sent_at`` are fresh for every send attempt: a retry after a lost acknowledgement is a
new signed message with the same events (the collector de-duplicates it), while a
captured message sent again has a nonce the collector has already seen (a replay).

An agent sends consecutive events (``seq`` increasing by one, each ``prev_hash`` the
previous ``link_hash``); the collector checks that, and the first against its stored head.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightwarden.crypto.chain import ChainLink
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from weightwarden.crypto.keys import PrivateKey, PublicKey

__all__ = [
    "WIRE_VERSION",
    "Batch",
    "BatchError",
    "BatchEvent",
    "SignedBatch",
    "new_batch",
    "open_batch",
    "read_envelope",
    "seal_batch",
]

WIRE_VERSION = 1
_HEX = frozenset("0123456789abcdef")


class BatchError(UsageError):
    """A batch the collector must refuse; ``status`` is the HTTP status to answer with.

    400 malformed, 401 bad signature, 403 unknown or revoked agent, 413 too large.
    """

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchEvent:
    """One spooled event with its chain link."""

    seq: int
    payload: str
    prev_hash: str
    payload_hash: str
    link_hash: str

    def link(self, agent_id: str) -> ChainLink:
        """The event's :class:`ChainLink`."""
        return ChainLink(
            agent_id=agent_id,
            seq=self.seq,
            prev_hash=self.prev_hash,
            payload_hash=self.payload_hash,
            link_hash=self.link_hash,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Consecutive events of one agent, as signed for one send attempt."""

    agent_id: str
    nonce: str
    sent_at: int
    events: tuple[BatchEvent, ...]

    @property
    def first_seq(self) -> int:
        """The first event's sequence number."""
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        """The last event's sequence number."""
        return self.events[-1].seq

    def to_json(self) -> str:
        """The inner batch JSON (what gets signed)."""
        return json.dumps(
            {
                "agent_id": self.agent_id,
                "nonce": self.nonce,
                "sent_at": self.sent_at,
                "events": [
                    {
                        "seq": e.seq,
                        "payload": e.payload,
                        "prev_hash": e.prev_hash,
                        "payload_hash": e.payload_hash,
                        "link_hash": e.link_hash,
                    }
                    for e in self.events
                ],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedBatch:
    """A wire envelope whose signature has not been checked yet."""

    agent_id: str
    batch_bytes: bytes
    signature: bytes


def new_batch(
    agent_id: str, links_and_payloads: Sequence[tuple[ChainLink, bytes]], *, sent_at: int
) -> Batch:
    """A batch of spooled events with a fresh nonce."""
    return Batch(
        agent_id=agent_id,
        nonce=secrets.token_hex(16),
        sent_at=sent_at,
        events=tuple(
            BatchEvent(
                seq=link.seq,
                payload=payload.decode("utf-8"),
                prev_hash=link.prev_hash,
                payload_hash=link.payload_hash,
                link_hash=link.link_hash,
            )
            for link, payload in links_and_payloads
        ),
    )


def seal_batch(batch: Batch, key: PrivateKey) -> bytes:
    """The wire body: the batch JSON signed with the agent's identity key."""
    inner = batch.to_json()
    signature = key.sign(inner.encode("utf-8"))
    return json.dumps(
        {
            "v": WIRE_VERSION,
            "agent_id": batch.agent_id,
            "batch": inner,
            "sig": base64.b64encode(signature).decode(),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def _object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BatchError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BatchError(f"{what} is not a JSON object")
    return obj


def read_envelope(body: bytes) -> SignedBatch:
    """Parse the outer envelope only; nothing inside the batch is trusted yet.

    Raises:
        BatchError: (400) not JSON, wrong version, missing or mistyped fields.
    """
    obj = _object(body, "batch envelope")
    if obj.get("v") != WIRE_VERSION:
        raise BatchError(f"unsupported batch version {obj.get('v')!r}; expected {WIRE_VERSION}")
    unknown = set(obj) - {"v", "agent_id", "batch", "sig"}
    if unknown:
        raise BatchError(f"unknown field(s) in batch envelope: {sorted(unknown)}")
    agent_id, inner, sig = obj.get("agent_id"), obj.get("batch"), obj.get("sig")
    if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 255:  # noqa: PLR2004
        raise BatchError("batch envelope: agent_id must be a non-empty string")
    if not isinstance(inner, str) or not isinstance(sig, str):
        raise BatchError("batch envelope: batch and sig must be strings")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise BatchError("batch envelope: sig is not base64") from None
    return SignedBatch(agent_id=agent_id, batch_bytes=inner.encode("utf-8"), signature=signature)


def _hex64(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or not _HEX.issuperset(value):  # noqa: PLR2004
        raise BatchError(f"{where} must be 64 lower-case hex digits")
    return value


def _event(raw: object, index: int) -> BatchEvent:
    where = f"events[{index}]"
    if not isinstance(raw, dict) or set(raw) != {
        "seq",
        "payload",
        "prev_hash",
        "payload_hash",
        "link_hash",
    }:
        raise BatchError(
            f"{where} must have exactly seq, payload, prev_hash, payload_hash, link_hash"
        )
    seq, payload = raw["seq"], raw["payload"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63:
        raise BatchError(f"{where}.seq must be a positive integer")
    if not isinstance(payload, str):
        raise BatchError(f"{where}.payload must be a string")
    return BatchEvent(
        seq=seq,
        payload=payload,
        prev_hash=_hex64(raw["prev_hash"], f"{where}.prev_hash"),
        payload_hash=_hex64(raw["payload_hash"], f"{where}.payload_hash"),
        link_hash=_hex64(raw["link_hash"], f"{where}.link_hash"),
    )


def open_batch(
    signed: SignedBatch,
    key_for: Callable[[str], PublicKey | None],
    *,
    max_events: int,
) -> Batch:
    """Verify the signature with the agent's registered key, then parse the batch.

    Raises:
        BatchError: 403 unknown or revoked agent; 401 bad signature; 413 too many events;
            400 malformed batch or an agent_id that differs from the envelope's. Whether the
            events continue the agent's chain is the collector's check (gaps, forks and
            replays are integrity findings, not refusals).
    """
    key = key_for(signed.agent_id)
    if key is None:
        raise BatchError(f"agent {signed.agent_id!r} is not enrolled or was revoked", status=403)
    if not key.verify(signed.signature, signed.batch_bytes):
        raise BatchError(
            f"batch signature does not verify for agent {signed.agent_id!r}", status=401
        )
    obj = _object(signed.batch_bytes, "batch")
    if set(obj) != {"agent_id", "nonce", "sent_at", "events"}:
        raise BatchError("batch must have exactly agent_id, nonce, sent_at, events")
    if obj["agent_id"] != signed.agent_id:
        raise BatchError("batch agent_id differs from the envelope's")
    nonce, sent_at, raw_events = obj["nonce"], obj["sent_at"], obj["events"]
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:  # noqa: PLR2004
        raise BatchError("batch nonce must be a string of 16 to 64 characters")
    if not isinstance(sent_at, int) or isinstance(sent_at, bool) or sent_at < 0:
        raise BatchError("batch sent_at must be milliseconds since the epoch")
    if not isinstance(raw_events, list) or not raw_events:
        raise BatchError("batch events must be a non-empty array")
    if len(raw_events) > max_events:
        raise BatchError(
            f"batch holds {len(raw_events)} events; the limit is {max_events}", status=413
        )
    events = tuple(_event(raw, i) for i, raw in enumerate(raw_events))
    return Batch(agent_id=signed.agent_id, nonce=nonce, sent_at=sent_at, events=events)
