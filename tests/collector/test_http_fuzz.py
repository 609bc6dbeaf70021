"""Fuzzing the HTTP API: malformed, garbage, oversized and signed-but-wrong requests.

Hypothesis builds requests byte by byte (request line, headers, body) and sends each on a
fresh TCP connection to a real collector. The property: no answer is 5xx, and afterwards
the collector still serves (health, and a real agent's batch is stored). The number of
requests is a parameter: 1,000 in the quick suite, 10,000 under ``slow``.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import string
import struct
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.http import CollectorServer, ServerLimits
from collector.ingest import IngestLimits, Ingestor
from collector.store import SqliteStore
from weightwarden.batch import CONTENT_TYPE as BATCH_TYPE
from weightwarden.batch import new_batch, seal_batch

if TYPE_CHECKING:
    from collections.abc import Iterator

LIMIT = 64 * 1024
PATHS = ["/v1/batches", "/v1/enroll", "/v1/health", "/openapi.json"]


@dataclasses.dataclass
class Target:
    """The running collector and the agents the fuzzer signs with."""

    server: CollectorServer
    store: SqliteStore
    fuzz_agent: object
    statuses: dict[int, int]


@pytest.fixture(scope="module")
def target(tmp_path_factory, sim_agent) -> Iterator[Target]:
    """One collector for the module, with an enrolled agent whose key signs fuzzed batches."""
    store = SqliteStore(tmp_path_factory.mktemp("fuzz") / "c.sqlite", synchronous="normal")
    clock = iter(range(1_800_000_000_000, 1_900_000_000_000)).__next__
    server = CollectorServer(
        store=store,
        ingestor=Ingestor(store, limits=IngestLimits(max_body_bytes=LIMIT), clock=clock),
        limits=ServerLimits(max_body_bytes=LIMIT, max_enroll_bytes=4096, read_timeout=5.0),
        clock=clock,
    )
    agent = sim_agent("gpu-fuzz")
    store.register_agent(agent_id="gpu-fuzz", public_key_pem=agent.public_pem, now=1)
    server.start()
    try:
        yield Target(server=server, store=store, fuzz_agent=agent, statuses={})
    finally:
        server.stop(timeout=5)
        store.close()


# -- strategies --------------------------------------------------------------------------

_TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-_!~", min_size=1, max_size=15)
_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _signed_batch(draw, agent) -> bytes:
    """Framed bytes the enrolled agent really signed, with every field fuzzed."""
    agent_id = draw(st.sampled_from([b"gpu-fuzz", b"other", b"gpu-\x00fuzz"]))
    count = draw(st.integers(min_value=0, max_value=4))
    declared = draw(st.sampled_from([count, count, count + 1, max(0, count - 1), 2**32 - 1]))
    parts = [
        b"WWB2",
        struct.pack(">H", len(agent_id)),
        agent_id,
        draw(st.binary(min_size=16, max_size=16)),
        struct.pack(">Q", draw(st.integers(min_value=0, max_value=2**64 - 1))),
        struct.pack(">I", declared),
    ]
    base = draw(st.integers(min_value=0, max_value=2**64 - 5))
    for i in range(count):
        payload = draw(
            st.binary(max_size=60)
            | _JSON.map(lambda value: json.dumps(value, ensure_ascii=False).encode())
        )
        length = draw(st.sampled_from([len(payload)] * 4 + [len(payload) + 7, 2**32 - 1]))
        parts.append(
            struct.pack(">Q", base + i)
            + draw(st.binary(min_size=96, max_size=96))
            + struct.pack(">I", length)
            + payload
        )
    parts.append(draw(st.binary(max_size=8)))
    signed = b"".join(parts)
    signature = agent.key.sign(signed)
    prefix = draw(st.sampled_from([len(signed)] * 4 + [len(signed) + 1, 0, 2**32 - 1]))
    return struct.pack(">I", prefix) + signed + signature


@st.composite
def _mutated_chain(draw, agent) -> bytes:
    """A real chained batch of the agent with at most one thing broken."""
    items = agent.record_opens(draw(st.integers(1, 3)))
    batch = new_batch(agent.agent_id, items, sent_at=1)
    events = list(batch.events)
    index = draw(st.integers(0, len(events) - 1))
    mutation = draw(st.sampled_from(["none", "payload", "seq", "prev", "dup", "drop", "order"]))
    event = events[index]
    if mutation == "payload":
        events[index] = dataclasses.replace(event, payload=event.payload + " ")
    elif mutation == "seq":
        events[index] = dataclasses.replace(event, seq=event.seq + draw(st.integers(1, 5)))
    elif mutation == "prev":
        events[index] = dataclasses.replace(event, prev_hash="0" * 64)
    elif mutation == "dup":
        events.append(event)
    elif mutation == "drop" and len(events) > 1:
        events.pop(index)
    elif mutation == "order":
        events.reverse()
    return seal_batch(dataclasses.replace(batch, events=tuple(events)), agent.key)


def _body(agent):
    return st.one_of(
        st.binary(max_size=300),
        _JSON.map(lambda value: json.dumps(value).encode()),
        st.integers(min_value=LIMIT + 1, max_value=LIMIT * 2).map(lambda n: b"x" * n),
        _signed_batch(agent),
        _mutated_chain(agent),
        st.fixed_dictionaries(
            {"token": st.text(max_size=20), "host": _TOKEN, "public_key": st.text(max_size=40)}
        ).map(lambda value: json.dumps(value).encode()),
    )


def _length_headers(draw, body: bytes) -> list[tuple[bytes, bytes]]:
    """Content-Length: mostly right, sometimes missing, wrong, junk or given twice."""
    kind = draw(
        st.sampled_from(["right", "right", "right", "missing", "short", "long", "junk", "two"])
    )
    if kind == "missing":
        return []
    if kind == "junk":
        junk = [
            b"-1",
            b"1e3",
            b"0x10",
            b"",
            b"99999999999999999999",
            b" 5",
            "٣".encode(),
            "²".encode("latin-1"),
        ]
        return [(b"Content-Length", draw(st.sampled_from(junk)))]
    size = {"right": len(body), "short": max(0, len(body) - 3), "long": len(body) + 5}
    if kind == "two":
        return [(b"Content-Length", str(len(body)).encode()), (b"Content-Length", b"1")]
    return [(b"Content-Length", str(size[kind]).encode())]


@st.composite
def requests(draw, agent) -> bytes:
    """Raw HTTP/1.x request bytes: mostly plausible, sometimes plain garbage."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=500))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]) | _TOKEN)
    path = draw(
        st.sampled_from(PATHS)
        | st.sampled_from(PATHS).map(lambda p: p + "?x=1")
        | st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=40).map(
            lambda t: "/" + t.replace(" ", "%20")
        )
    )
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/x", ""]))
    body = draw(_body(agent))
    headers: list[tuple[bytes, bytes]] = []
    content_type = draw(
        st.sampled_from(
            [
                BATCH_TYPE,
                BATCH_TYPE,
                "application/json",
                "application/json; charset=utf-8",
                "text/plain",
                "",
                None,
            ]
        )
    )
    if content_type is not None:
        headers.append((b"Content-Type", content_type.encode()))
    headers += _length_headers(draw, body)
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"Transfer-Encoding", b"chunked"))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(_TOKEN).encode()
        value = draw(st.binary(max_size=40)).replace(b"\r", b"").replace(b"\n", b"")
        headers.append((name, value))
    if draw(st.integers(0, 19)) == 0:
        headers.append((b"Broken header line without colon", b""))
    head = f"{method} {path} {version}".rstrip().encode("utf-8", "surrogatepass") + b"\r\n"
    head += b"".join(n + (b": " + v if v or b":" not in n else b"") + b"\r\n" for n, v in headers)
    return head + b"\r\n" + body


# -- the property ------------------------------------------------------------------------


def _status(server: CollectorServer, data: bytes) -> int | None:
    """Send ``data`` on a fresh connection, end our side, return the answer's status."""
    with socket.create_connection(server.address, timeout=20) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse a body it decided on from the headers
        received = b""
        try:
            while len(received) < 65536 and b"\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
    if not received:
        return None
    line = received.split(b"\r\n", 1)[0].split(b" ")
    assert line[0].startswith(b"HTTP/1."), received[:200]
    return int(line[1])


def run_fuzz(target: Target, examples: int) -> None:
    """Send ``examples`` generated requests; fail on any 5xx; check the server still works."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=requests(target.fuzz_agent))
    def send(data: bytes) -> None:
        status = _status(target.server, data)
        key = 0 if status is None else status
        target.statuses[key] = target.statuses.get(key, 0) + 1
        assert status is None or status < 500, (status, data[:300])

    send()
    assert sum(target.statuses.values()) >= examples
    _still_serving(target)


def _still_serving(target: Target) -> None:
    assert _status(target.server, b"GET /v1/health HTTP/1.1\r\n\r\n") == 200
    from collector.http import openapi_document  # noqa: PLC0415

    assert openapi_document()["openapi"] == "3.1.0"
    agent_class = type(target.fuzz_agent)
    name = f"gpu-check-{len(target.store.agents())}"
    checker = agent_class(name)
    target.store.register_agent(agent_id=name, public_key_pem=checker.public_pem, now=1)
    body = checker.seal(checker.record_opens(3))
    request = (
        f"POST /v1/batches HTTP/1.1\r\nContent-Type: {BATCH_TYPE}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert _status(target.server, request) == 200
    assert target.store.agent(name).head_seq == 3


def test_a_thousand_fuzzed_requests_get_no_5xx_and_the_server_still_serves(target):
    """1,000 malformed, garbage, oversized or mis-signed requests: no 5xx, still serving."""
    run_fuzz(target, 1000)
    four_xx = sum(n for status, n in target.statuses.items() if 400 <= status < 500)
    assert four_xx > 500, target.statuses


@pytest.mark.slow
def test_ten_thousand_fuzzed_requests_get_no_5xx_and_the_server_still_serves(target):
    """10,000 fuzzed requests (the issue's figure): no 5xx, still serving."""
    target.statuses.clear()
    run_fuzz(target, 10_000)
