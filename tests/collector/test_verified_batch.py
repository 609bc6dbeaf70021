"""The column reader agrees with open_batch and verify_chain on every body, valid or not."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.verified_batch import read_verified
from weightwarden.batch import Batch, BatchError, BatchEvent, open_batch, read_envelope
from weightwarden.crypto.chain import ChainLink, compute_link_hash, verify_chain
from weightwarden.crypto.keys import generate_key

KEY = generate_key()
OTHER = generate_key()
MAX_EVENTS = 5


def chained(agent_id: str, first_seq: int, prev_hash: str, payloads: list[bytes]) -> Batch:
    """A batch of linked events from ``first_seq`` on, after the link ``prev_hash``."""
    events = []
    for offset, payload in enumerate(payloads):
        seq = first_seq + offset
        payload_hash = hashlib.sha256(payload).hexdigest()
        link = compute_link_hash(
            agent_id=agent_id, seq=seq, prev_hash=prev_hash, payload_hash=payload_hash
        )
        events.append(
            BatchEvent(
                seq=seq,
                payload=payload.decode("utf-8", "surrogateescape"),
                prev_hash=prev_hash,
                payload_hash=payload_hash,
                link_hash=link,
            )
        )
        prev_hash = link
    return Batch(agent_id=agent_id, nonce="ab" * 16, sent_at=7, events=tuple(events))


def signed_bytes(batch: Batch, raw_payloads: list[bytes]) -> bytes:
    """The framing of ``batch`` with the payload bytes given (which may not be UTF-8)."""
    agent = batch.agent_id.encode()
    parts = [
        b"WWB2",
        struct.pack(">H", len(agent)),
        agent,
        struct.pack(">16sQI", bytes.fromhex(batch.nonce), batch.sent_at, len(batch.events)),
    ]
    for event, payload in zip(batch.events, raw_payloads, strict=True):
        parts.append(
            struct.pack(
                ">Q32s32s32sI",
                event.seq,
                bytes.fromhex(event.prev_hash),
                bytes.fromhex(event.payload_hash),
                bytes.fromhex(event.link_hash),
                len(payload),
            )
        )
        parts.append(payload)
    return b"".join(parts)


def agree(signed: bytes, *, key_is_right: bool = True) -> None:
    """read_verified takes the body exactly as open_batch + verify_chain see it, or says None."""
    body = struct.pack(">I", len(signed)) + signed + (KEY if key_is_right else OTHER).sign(signed)
    try:
        envelope = read_envelope(body)
    except (BatchError, struct.error):
        return  # ingest refuses it (400) before either reader runs
    columns = read_verified(envelope, KEY.public, max_events=MAX_EVENTS)
    try:
        batch = open_batch(envelope, lambda _agent: KEY.public, max_events=MAX_EVENTS)
    except BatchError:
        assert columns is None
        return
    if any("\x00" in event.payload for event in batch.events):
        assert columns is None  # no store keeps it: ingest's own check refuses it (400)
        return
    assert columns is not None
    assert columns.to_batch() == batch
    first = batch.events[0]
    anchor = ChainLink(
        agent_id=batch.agent_id,
        seq=first.seq - 1,
        prev_hash="",
        payload_hash="",
        link_hash=first.prev_hash,
    )
    report = verify_chain(
        ((event.link(batch.agent_id), event.payload.encode()) for event in batch.events),
        after=anchor,
    )
    assert columns.linked == report.ok


payload_bytes = st.one_of(
    st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)
MUTATIONS = ("none", "payload", "payload_hash", "link", "prev", "seq", "swap", "repeat")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    agent=st.text(min_size=1, max_size=8).filter(lambda a: "\x00" not in a and a.isprintable()),
    first_seq=st.one_of(st.integers(1, 50), st.integers(2**63 - 8, 2**63 + 2)),
    payloads=st.lists(payload_bytes, min_size=0, max_size=MAX_EVENTS + 1),
    mutation=st.sampled_from(MUTATIONS),
    where=st.integers(0, MAX_EVENTS),
    cut=st.one_of(st.none(), st.integers(0, 400)),
    extra=st.binary(max_size=3),
)
def test_the_column_reader_agrees_with_open_batch_and_verify_chain(
    *,
    agent: str,
    first_seq: int,
    payloads: list[bytes],
    mutation: str,
    where: int,
    cut: int | None,
    extra: bytes,
) -> None:
    """Valid, tampered, truncated and padded batches: the same events and the same verdict."""
    # the chain itself stays within 1..2**63-1; the "seq" mutation may leave it
    batch = chained(agent, min(first_seq, 2**63 - 1 - len(payloads)), "0" * 64, payloads)
    events = list(batch.events)
    raw = list(payloads)
    if events:
        i = where % len(events)
        e = events[i]
        if mutation == "payload":
            raw[i] = raw[i] + b"x"
        elif mutation == "payload_hash":
            events[i] = BatchEvent(
                seq=e.seq, payload=e.payload, prev_hash=e.prev_hash,
                payload_hash="1" * 64, link_hash=e.link_hash,
            )  # fmt: skip
        elif mutation == "link":
            events[i] = BatchEvent(
                seq=e.seq, payload=e.payload, prev_hash=e.prev_hash,
                payload_hash=e.payload_hash, link_hash="2" * 64,
            )  # fmt: skip
        elif mutation == "prev":
            events[i] = BatchEvent(
                seq=e.seq, payload=e.payload, prev_hash="3" * 64,
                payload_hash=e.payload_hash, link_hash=e.link_hash,
            )  # fmt: skip
        elif mutation == "seq":
            events[i] = BatchEvent(
                seq=first_seq + 7, payload=e.payload, prev_hash=e.prev_hash,
                payload_hash=e.payload_hash, link_hash=e.link_hash,
            )  # fmt: skip
        elif mutation == "swap" and len(events) > 1:
            events[0], events[-1] = events[-1], events[0]
            raw[0], raw[-1] = raw[-1], raw[0]
        elif mutation == "repeat":
            events.append(events[i])
            raw.append(raw[i])
    signed = signed_bytes(
        Batch(agent_id=agent, nonce=batch.nonce, sent_at=batch.sent_at, events=tuple(events)), raw
    )
    if cut is not None:
        signed = signed[:cut]
    agree(signed + extra)


def test_a_body_signed_by_another_key_is_not_read() -> None:
    """The signature is checked before anything inside is read."""
    payloads = [b'{"a":1}', b'{"b":2}']
    batch = chained("gpu-01", 1, "0" * 64, payloads)
    agree(signed_bytes(batch, payloads), key_is_right=False)
    body = signed_bytes(batch, payloads)
    envelope = read_envelope(struct.pack(">I", len(body)) + body + OTHER.sign(body))
    assert read_verified(envelope, KEY.public, max_events=MAX_EVENTS) is None


@pytest.mark.parametrize("count", [1, 3])
def test_a_clean_batch_is_read_as_linked_columns(count: int) -> None:
    """A batch straight from an agent: linked, with every field in batch order."""
    payloads = [f'{{"n":{n}}}'.encode() for n in range(count)]
    batch = chained("gpu-01", 41, "f" * 64, payloads)
    body = signed_bytes(batch, payloads)
    envelope = read_envelope(struct.pack(">I", len(body)) + body + KEY.sign(body))
    columns = read_verified(envelope, KEY.public, max_events=MAX_EVENTS)
    assert columns is not None
    assert columns.linked
    assert columns.seq == tuple(range(41, 41 + count))
    assert columns.prev_hash[0] == "f" * 64
    assert columns.link_hash[-1] == batch.events[-1].link_hash
    assert columns.payload == tuple(p.decode() for p in payloads)
