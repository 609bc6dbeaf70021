"""The signed batch wire format: round trip, and every kind of damage refused cleanly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightwarden.batch import MAGIC, BatchError, new_batch, open_batch, read_envelope, seal_batch
from weightwarden.crypto.chain import next_link
from weightwarden.crypto.keys import generate_key

KEY = generate_key()
OTHER = generate_key()


def _links(n: int, agent: str = "gpu-01") -> list:
    out, prev = [], None
    for i in range(n):
        payload = f'{{"class_uid":1001,"n":{i},"path":"/w/é"}}'.encode()
        prev = next_link(prev, agent, payload)
        out.append((prev, payload))
    return out


def _body(n: int = 3, agent: str = "gpu-01") -> bytes:
    return seal_batch(new_batch(agent, _links(n, agent), sent_at=1_700_000_000_000), KEY)


def test_a_sealed_batch_opens_with_the_agents_key_to_the_same_events():
    """Round trip: agent id, nonce, time and every event with its link survive the wire."""
    batch = new_batch("gpu-01", _links(5), sent_at=123)
    opened = open_batch(read_envelope(seal_batch(batch, KEY)), lambda _a: KEY.public, max_events=10)
    assert opened == batch
    assert (opened.first_seq, opened.last_seq) == (1, 5)
    assert opened.events[2].link("gpu-01").seq == 3


def test_each_send_has_a_fresh_nonce():
    """Two batches of the same events differ in nonce (a retry is not a replay)."""
    links = _links(2)
    assert new_batch("a", links, sent_at=1).nonce != new_batch("a", links, sent_at=1).nonce


def test_an_unknown_agent_is_403_and_a_wrong_key_is_401():
    """The key lookup decides: no key → 403; a signature by another key → 401."""
    signed = read_envelope(_body())
    with pytest.raises(BatchError) as unknown:
        open_batch(signed, lambda _a: None, max_events=10)
    assert unknown.value.status == 403
    with pytest.raises(BatchError) as forged:
        open_batch(signed, lambda _a: OTHER.public, max_events=10)
    assert forged.value.status == 401


def test_too_many_events_is_413():
    """The event-count limit is checked before the events are parsed."""
    with pytest.raises(BatchError) as exc:
        open_batch(read_envelope(_body(5)), lambda _a: KEY.public, max_events=4)
    assert exc.value.status == 413


BODY = _body(3)


@settings(max_examples=200)
@given(st.data())
def test_any_damaged_byte_is_refused_as_a_batch_error(data):
    """Flip, truncate or extend anywhere: a BatchError (400/401), never anything else."""
    body = bytearray(BODY)
    action = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if action == "flip":
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        body = body[: data.draw(st.integers(0, len(body) - 1))]
    else:
        body += data.draw(st.binary(min_size=1, max_size=16))
    with pytest.raises(BatchError) as refused:
        open_batch(read_envelope(bytes(body)), lambda _a: KEY.public, max_events=10)
    assert refused.value.status in (400, 401)


@given(st.binary(max_size=64))
def test_garbage_is_a_400(garbage):
    """Random bytes never pass the envelope, and never raise anything but BatchError."""
    with pytest.raises(BatchError):
        open_batch(read_envelope(garbage), lambda _a: KEY.public, max_events=10)


def test_a_signed_part_that_ends_after_the_magic_is_a_400():
    """Framing that holds the magic and nothing else is refused, not a struct error."""
    body = len(MAGIC).to_bytes(4, "big") + MAGIC + b"signature"
    with pytest.raises(BatchError, match="the signed part ends in its header"):
        read_envelope(body)
