"""A signed batch read straight into columns, its chain checked in the same pass.

The collector's hot path. :func:`weightwarden.batch.open_batch` builds a
:class:`~weightwarden.batch.BatchEvent` per event and
:func:`~weightwarden.crypto.chain.verify_chain` a :class:`~weightwarden.crypto.chain.ChainLink`
per event; with 1,000-event batches that was a third of the collector's CPU.
:func:`read_verified` verifies the signature first (nothing inside is read before), then
reads the framing of :mod:`weightwarden.batch` into one tuple per field and, event by
event, checks what a clean stretch of chain needs: the payload hashes to its
``payload_hash``, the link hashes to its ``link_hash`` (the encoding of
:func:`~weightwarden.crypto.chain.compute_link_hash`, fed the raw bytes the frame already
holds), and each event follows the one before it (``seq`` + 1, ``prev_hash`` = its
``link_hash``). The result says whether all of that held (:attr:`VerifiedBatch.linked`);
whether the first event continues the stored head is for ingest to check.

It answers only for batches it reads completely and that every store can keep (UTF-8
text without NUL characters): anything else, and a signature that does not verify, is
None, and the caller falls back to :func:`~weightwarden.batch.open_batch`, whose answers
(and refusals, with their statuses) are authoritative. A property test holds the two
readers to the same result for any body.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from weightwarden.batch import MAGIC, Batch, BatchEvent

if TYPE_CHECKING:
    from weightwarden.batch import SignedBatch
    from weightwarden.crypto.keys import PublicKey

__all__ = ["VerifiedBatch", "read_verified"]

# The framing of weightwarden.batch (its module docstring), big-endian.
_AGENT_LENGTH: Final = struct.Struct(">H")
_HEAD_TAIL: Final = struct.Struct(">16sQI")  # nonce, sent_at, count
_EVENT: Final = struct.Struct(">Q32s32s32sI")  # seq, prev, payload hash, link, payload length
_MAX_SEQ: Final = 2**63 - 1

# The link hash's fixed parts (weightwarden.crypto.chain): F(x) = u64 length || x.
_DOMAIN: Final = b"weightwarden/chain/v1"
_HEX_FIELD: Final = (64).to_bytes(8, "big")
"""The length prefix of a SHA-256 hex field (``prev_hash``, ``payload_hash``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedBatch:
    """A batch whose signature verified, as columns: field ``f`` of event ``i`` is ``f[i]``.

    Attributes:
        agent_id: The agent whose key signed it.
        nonce: The send attempt's nonce (hex).
        sent_at: When the agent sent it (ms since the epoch).
        seq: Sequence numbers, in batch order.
        payload: Canonical payloads (UTF-8 text, no NUL character); their UTF-8 bytes
            are what the hashes cover.
        prev_hash: Each event's ``prev_hash`` (lower-case hex).
        payload_hash: Each event's ``payload_hash`` (lower-case hex).
        link_hash: Each event's ``link_hash`` (lower-case hex).
        linked: Every payload and link hash recomputes and every event follows the one
            before it: the batch is one unbroken stretch of its agent's chain, starting
            after the link ``prev_hash[0]`` names.
    """

    agent_id: str
    nonce: str
    sent_at: int
    seq: tuple[int, ...]
    payload: tuple[str, ...]
    prev_hash: tuple[str, ...]
    payload_hash: tuple[str, ...]
    link_hash: tuple[str, ...]
    linked: bool

    def __len__(self) -> int:
        return len(self.seq)

    def to_batch(self) -> Batch:
        """The same batch as :func:`~weightwarden.batch.open_batch` gives it (one object each)."""
        return Batch(
            agent_id=self.agent_id,
            nonce=self.nonce,
            sent_at=self.sent_at,
            events=tuple(
                BatchEvent(
                    seq=seq, payload=payload, prev_hash=prev, payload_hash=ph, link_hash=link
                )
                for seq, payload, prev, ph, link in zip(
                    self.seq,
                    self.payload,
                    self.prev_hash,
                    self.payload_hash,
                    self.link_hash,
                    strict=True,
                )
            ),
        )


def read_verified(signed: SignedBatch, key: PublicKey, *, max_events: int) -> VerifiedBatch | None:
    """Verify the signature with ``key``, then read the batch into columns.

    Returns:
        The batch, or None if the signature does not verify or the batch is malformed,
        empty, over ``max_events``, or holds a payload with a NUL character: ask
        :func:`~weightwarden.batch.open_batch` what to answer then.
    """
    data = signed.batch_bytes
    if not key.verify(signed.signature, data):
        return None
    agent = signed.agent_id.encode("utf-8")
    offset = len(MAGIC) + _AGENT_LENGTH.size + len(agent)
    if offset + _HEAD_TAIL.size > len(data):
        return None
    nonce, sent_at, count = _HEAD_TAIL.unpack_from(data, offset)
    if not 0 < count <= max_events:
        return None
    link_prefix = b"".join(
        (len(_DOMAIN).to_bytes(8, "big"), _DOMAIN, len(agent).to_bytes(8, "big"), agent)
    ) + (8).to_bytes(8, "big")
    read = _read_events(data, offset + _HEAD_TAIL.size, count, link_prefix)
    if read is None:
        return None
    seq, payload, prev_hash, payload_hash, link_hash, linked = read
    return VerifiedBatch(
        agent_id=signed.agent_id,
        nonce=nonce.hex(),
        sent_at=sent_at,
        seq=seq,
        payload=payload,
        prev_hash=prev_hash,
        payload_hash=payload_hash,
        link_hash=link_hash,
        linked=linked,
    )


_Columns: TypeAlias = tuple[
    tuple[int, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], bool
]


def _read_events(data: bytes, offset: int, count: int, link_prefix: bytes) -> _Columns | None:
    """(seq, payload, prev_hash, payload_hash, link_hash, linked) of ``count`` events.

    ``link_prefix`` is the link hash's input up to the seq: the domain, the agent id and
    the seq's length prefix. The loop is the collector's hottest code: one unpack, two
    SHA-256 and a few comparisons per event; once a link fails, hashing stops (the
    caller's fallback verifies everything again and reports each problem).
    """
    unpack, frame, sha256, size = _EVENT.unpack_from, _EVENT.size, hashlib.sha256, len(data)
    seqs: list[int] = []
    payloads: list[str] = []
    prevs: list[str] = []
    hashes: list[str] = []
    links: list[str] = []
    linked = True
    last_seq, last_link = -1, b""
    for _ in range(count):
        if offset + frame > size:
            return None
        seq, prev, payload_hash, link, length = unpack(data, offset)
        start = offset + frame
        offset = start + length
        if offset > size or not 1 <= seq <= _MAX_SEQ:
            return None
        raw = data[start:offset]
        if b"\x00" in raw:
            return None
        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        prev_hex = prev.hex()
        hash_hex = payload_hash.hex()
        if linked:
            linked = (
                (last_seq < 0 or (seq == last_seq + 1 and prev == last_link))
                and sha256(raw).digest() == payload_hash
                and sha256(
                    b"".join(
                        (
                            link_prefix,
                            data[start - frame : start - frame + 8],  # seq, u64 big-endian
                            _HEX_FIELD,
                            prev_hex.encode("ascii"),
                            _HEX_FIELD,
                            hash_hex.encode("ascii"),
                        )
                    )
                ).digest()
                == link
            )
            last_seq, last_link = seq, link
        seqs.append(seq)
        payloads.append(payload)
        prevs.append(prev_hex)
        hashes.append(hash_hex)
        links.append(link.hex())
    if offset != size:
        return None
    return tuple(seqs), tuple(payloads), tuple(prevs), tuple(hashes), tuple(links), linked
