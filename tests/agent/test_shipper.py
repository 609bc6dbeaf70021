"""The shipper against a real collector peer on loopback (and a real NATS JetStream).

The spool is real, the shipper is real, the collector is a test peer speaking the
protocol over real sockets and verifying every batch's signature.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

import pytest

import agent.shipper
from agent.enroll import enroll
from agent.identity import AgentIdentity, load_or_create_identity
from agent.shipper import (
    HttpReply,
    HttpTransport,
    NatsTransport,
    Outcome,
    PinMismatchError,
    Shipper,
    interpret_reply,
)
from agent.spool import Spool, SpooledEvent
from weightwarden.batch import new_batch, open_batch, read_envelope, seal_batch
from weightwarden.crypto import verify_chain
from weightwarden.errors import UsageError
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    User,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

AGENT = "gpu-01"
T0 = 1_700_000_000_000
TOKEN = "tok-shipper"  # noqa: S105 -- a test token for a test peer
NATS_URL = "nats://127.0.0.1:4222"


def file_event(i: int) -> FileActivity:
    """A read of a checkpoint by a known process, numbered ``i`` (uid ``file-i``)."""
    user = User(uid=1000, name="alice")
    return FileActivity(
        uid=f"file-{i}",
        time=T0 + i,
        device=Device(hostname=AGENT, agent_id=AGENT),
        activity=FileActivityType.OPEN,
        actor=Actor(
            process=Process(
                pid=4000 + i,
                attribution=Attribution.FULL,
                exe="/usr/bin/python3",
                cmd_line="python3 train.py",
                user=user,
            ),
            user=user,
        ),
        file=FileRef(path=f"/weights/run-{i}/model.safetensors", size=1 << 20),
        bytes_read=1 << 19,
        fraction_read=0.5,
    )


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def append(spool: Spool, start: int, count: int) -> list[SpooledEvent]:
    return spool.append([file_event(i) for i in range(start, start + count)])


def uids(payloads: list[str]) -> list[str]:
    return [json.loads(p)["metadata"]["uid"] for p in payloads]


def titles(payloads: list[str]) -> list[str]:
    return [json.loads(p).get("finding_info", {}).get("title", "") for p in payloads]


@pytest.fixture
def identity(tmp_path: Path) -> AgentIdentity:
    return load_or_create_identity(tmp_path / "state")


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool", agent_id=AGENT, hostname=AGENT) as opened:
        yield opened


@pytest.fixture
def enrolled(collector_peer, identity):
    """The collector peer, with this agent enrolled through the real enrollment client."""
    collector_peer.add_token(TOKEN, AGENT)
    enroll(collector_peer.url, TOKEN, agent_id=AGENT, identity=identity)
    return collector_peer


@pytest.fixture
def make_shipper(spool, identity) -> Iterator[Callable[..., Shipper]]:
    """Build and start shippers with quick backoff; all are stopped (and must stop)."""
    shippers: list[Shipper] = []

    def make(transport, **kwargs) -> Shipper:
        options = {
            "batch_size": 100,
            "poll_interval": 0.02,
            "backoff_base": 0.02,
            "backoff_cap": 0.2,
            "device": Device(hostname=AGENT, agent_id=AGENT),
        }
        options.update(kwargs)
        shipper = Shipper(
            options.pop("spool", spool),
            agent_id=AGENT,
            identity=options.pop("identity", identity),
            transport=transport,
            **options,
        )
        shipper.start()
        shippers.append(shipper)
        return shipper

    yield make
    for shipper in shippers:
        assert shipper.stop(10), "the shipper thread did not stop"


def drained(spool: Spool, shipper: Shipper) -> Callable[[], bool]:
    """Everything in the spool, the shipper's own reports included, is confirmed."""
    return lambda: shipper.stats().acked_seq == spool.stats().head_seq


def held_in_spool(spool: Spool) -> list[SpooledEvent]:
    return spool.read_batch(after_seq=spool.stats().acked_seq, limit=10_000)


# ---------------------------------------------------------------------------- HTTP


def test_ships_everything_in_order_one_batch_at_a_time(enrolled, spool, make_shipper) -> None:
    """Appends made before and while shipping reach the collector whole, in seq order."""
    acked_at_arrival: list[tuple[int, int]] = []
    enrolled.on_batch = lambda _batch: acked_at_arrival.append(
        (spool.stats().acked_seq, enrolled.head())
    )
    appended = append(spool, 0, 250)
    connections = enrolled.connections  # enrollment's
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5))
    appended += append(spool, 250, 400)
    shipper.wake()
    appended += append(spool, 650, 90)
    wait_for(drained(spool, shipper), "the spool to drain")

    head = spool.stats().head_seq
    assert head == len(appended) == 740
    assert enrolled.seqs() == list(range(1, head + 1))
    assert enrolled.payloads() == [e.payload.decode() for e in appended]
    ranges = [(a.first_seq, a.last_seq) for a in enrolled.arrivals]
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in itertools.pairwise(ranges))
    assert all(last - first < 100 for first, last in ranges)
    assert enrolled.max_in_flight == 1
    assert enrolled.duplicates == 0
    assert enrolled.connections == connections + 1  # one keep-alive connection for all
    assert all(acked <= stored for acked, stored in acked_at_arrival)
    assert spool.stats().count == 0
    stats = shipper.stats()
    assert stats.acked_seq == head
    assert stats.events == head
    assert stats.retries == stats.refusals == 0
    assert shipper.failure is None


def test_collector_down_for_a_while_loses_nothing(enrolled, spool, make_shipper) -> None:
    """Collector stopped, events appended, collector back on its port: all arrive in order."""
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=2))
    append(spool, 0, 50)
    wait_for(drained(spool, shipper), "the first events to ship")
    enrolled.stop()
    held = append(spool, 50, 300)
    wait_for(lambda: shipper.stats().retries >= 4, "retries against the stopped collector")
    assert spool.stats().acked_seq == 50  # nothing confirmed, nothing trimmed
    assert [e.seq for e in held_in_spool(spool)][:300] == [e.seq for e in held]

    enrolled.start()
    wait_for(drained(spool, shipper), "the spool to drain after the collector came back")
    head = spool.stats().head_seq
    assert enrolled.seqs() == list(range(1, head + 1))
    payloads = enrolled.payloads()
    assert [u for u in uids(payloads) if u.startswith("file-")] == [f"file-{i}" for i in range(350)]
    shipped_titles = titles(payloads)
    assert "Collector unavailable: events are held in the spool" in shipped_titles
    assert "Collector confirming batches again" in shipped_titles
    assert verify_chain([(e.link(AGENT), e.payload.encode()) for e in enrolled.stored[AGENT]]).ok


def test_lost_answer_is_resent_and_not_trimmed_early(enrolled, spool, make_shipper) -> None:
    """A stored batch whose answer is lost is kept, resent and de-duplicated by the collector."""
    acked_at_arrival: list[int] = []
    enrolled.on_batch = lambda _batch: acked_at_arrival.append(spool.stats().acked_seq)
    enrolled.drop_next_answer()
    append(spool, 0, 60)
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5))
    wait_for(drained(spool, shipper), "the spool to drain")

    assert acked_at_arrival[:2] == [0, 0]  # the second arrival: still nothing trimmed
    first, second = enrolled.arrivals[:2]
    assert (first.first_seq, first.last_seq) == (second.first_seq, second.last_seq) == (1, 60)
    assert first.nonce != second.nonce  # a fresh signature, not a replay
    assert enrolled.duplicates == 60
    assert enrolled.seqs() == list(range(1, 61))
    assert shipper.stats().duplicates == 60
    assert enrolled.quarantined == 0


def test_quarantined_batch_is_acknowledged_and_reported(enrolled, spool, make_shipper) -> None:
    """A 409 (batch kept as evidence of a gap) is acknowledged, reported HIGH; shipping goes on."""
    append(spool, 0, 20)
    spool.ack(5)  # trimmed here but never stored by this collector: it sees a gap at 6
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5))
    wait_for(drained(spool, shipper), "the spool to drain")

    assert enrolled.arrivals[0].status == 409
    assert (enrolled.arrivals[0].first_seq, enrolled.arrivals[0].last_seq) == (6, 20)
    assert shipper.stats().quarantined == 1
    assert shipper.failure is None
    report = json.loads(enrolled.payloads()[-1])
    assert report["finding_info"]["title"] == "Collector quarantined batch seq 6-20"
    assert "q-1" in report["finding_info"]["desc"]
    assert report["severity_id"] == 4
    assert enrolled.seqs() == list(range(6, 22))


def test_revoked_agent_stops_shipping_with_a_failure(enrolled, spool, make_shipper) -> None:
    """A 403 (agent unknown or revoked) stops the shipper, sets failure, trims nothing."""
    del enrolled.keys[AGENT]
    append(spool, 0, 10)
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5))
    wait_for(lambda: not shipper.running, "the shipper to stop")
    assert isinstance(shipper.failure, UsageError)
    assert "re-enroll it with a new token" in str(shipper.failure).lower()
    stats = spool.stats()
    assert stats.acked_seq == 0
    assert stats.head_seq == 11  # the ten events, and the shipper's CRITICAL health event
    last = json.loads(held_in_spool(spool)[-1].payload)
    assert last["severity_id"] == 5
    assert "re-enrolled" in last["finding_info"]["title"]


def test_batches_signed_with_another_key_stop_shipping(
    enrolled, spool, tmp_path, make_shipper
) -> None:
    """A 401 (the signature does not verify with the enrolled key) stops shipping too."""
    impostor = load_or_create_identity(tmp_path / "other-state")
    append(spool, 0, 10)
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5), identity=impostor)
    wait_for(lambda: not shipper.running, "the shipper to stop")
    assert isinstance(shipper.failure, UsageError)
    assert "HTTP 401" in str(shipper.failure)
    assert enrolled.seqs() == []
    assert spool.stats().acked_seq == 0


def test_pin_mismatch_refuses_the_collector(
    tls_collector_peer, tls_files, identity, spool, make_shipper
) -> None:
    """A collector certificate other than the pinned one: no request, a hard failure."""
    tls_collector_peer.add_token(TOKEN, AGENT)
    enroll(
        tls_collector_peer.url,
        TOKEN,
        agent_id=AGENT,
        identity=identity,
        pinned_sha256=tls_collector_peer.tls.sha256,
    )
    requests = tls_collector_peer.requests
    append(spool, 0, 10)
    transport = HttpTransport(tls_collector_peer.url, pinned_sha256=tls_files("impostor").sha256)
    shipper = make_shipper(transport)
    wait_for(lambda: not shipper.running, "the shipper to stop")
    assert isinstance(shipper.failure, PinMismatchError)
    assert tls_collector_peer.requests == requests
    assert shipper.stats().attempts == 1  # never retried
    assert spool.stats().acked_seq == 0


def test_pinned_https_delivers(tls_collector_peer, identity, spool, make_shipper) -> None:
    """With the right pin, batches travel over HTTPS and are confirmed."""
    pin = tls_collector_peer.tls.sha256
    tls_collector_peer.add_token(TOKEN, AGENT)
    enroll(tls_collector_peer.url, TOKEN, agent_id=AGENT, identity=identity, pinned_sha256=pin)
    append(spool, 0, 120)
    shipper = make_shipper(HttpTransport(tls_collector_peer.url, pinned_sha256=pin, timeout=5))
    wait_for(drained(spool, shipper), "the spool to drain over HTTPS")
    assert tls_collector_peer.seqs() == list(range(1, 121))


def test_server_errors_and_rate_limits_are_retried(enrolled, spool, make_shipper) -> None:
    """503, 429 with Retry-After and 500 are retried with the same events until stored."""
    enrolled.fail_next(503)
    enrolled.fail_next(429, headers={"Retry-After": "0"})
    enrolled.fail_next(500)
    append(spool, 0, 30)
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5))
    wait_for(drained(spool, shipper), "the spool to drain")
    assert shipper.stats().retries == 3
    assert enrolled.seqs() == list(range(1, 33))  # the 30, then the outage's two reports
    assert titles(enrolled.payloads())[30:] == [
        "Collector unavailable: events are held in the spool",
        "Collector confirming batches again",
    ]
    assert shipper.failure is None


def test_refused_batch_is_reported_and_sent_again(enrolled, spool, make_shipper) -> None:
    """Another 4xx is not skipped: a health event, a pause, the same events again."""
    enrolled.fail_next(400, {"error": "collector schema too old"})
    append(spool, 0, 10)
    shipper = make_shipper(HttpTransport(enrolled.url, timeout=5))
    wait_for(drained(spool, shipper), "the spool to drain")
    assert shipper.stats().refusals == 1
    assert enrolled.seqs()[:10] == list(range(1, 11))
    shipped = titles(enrolled.payloads())
    assert "Collector refused batch seq 1-10" in shipped
    assert "Collector confirming batches again" in shipped


def test_too_large_batches_are_halved(new_collector_peer, identity, spool, make_shipper) -> None:
    """A 413 halves the batch until the collector takes it; nothing is lost or reordered."""
    peer = new_collector_peer(max_events=30)
    peer.add_token(TOKEN, AGENT)
    enroll(peer.url, TOKEN, agent_id=AGENT, identity=identity)
    append(spool, 0, 100)
    shipper = make_shipper(HttpTransport(peer.url, timeout=5))
    wait_for(drained(spool, shipper), "the spool to drain")
    assert shipper.stats().batch_limit == 25
    assert peer.seqs() == list(range(1, 101))


def test_restart_resumes_from_the_spools_acknowledgement(enrolled, tmp_path, make_shipper) -> None:
    """A new shipper on the reopened spool resumes at the spool's acked seq, resending nothing."""
    directory = tmp_path / "restart-spool"
    with Spool(directory, agent_id=AGENT, hostname=AGENT) as first:
        append(first, 0, 40)
        shipper = make_shipper(HttpTransport(enrolled.url, timeout=5), spool=first)
        wait_for(drained(first, shipper), "the first spool to drain")
        assert shipper.stop(10)
        append(first, 40, 25)
    with Spool(directory, agent_id=AGENT, hostname=AGENT) as reopened:
        assert reopened.stats().acked_seq == 40
        again = make_shipper(HttpTransport(enrolled.url, timeout=5), spool=reopened)
        wait_for(drained(reopened, again), "the reopened spool to drain")
    assert enrolled.seqs() == list(range(1, 66))
    assert enrolled.duplicates == 0


def test_public_surface_is_pinned() -> None:
    """agent.shipper exports exactly its documented API, and each name resolves."""
    assert sorted(agent.shipper.__all__) == [
        "CollectorUnreachableError",
        "HttpReply",
        "HttpTransport",
        "NatsTransport",
        "Outcome",
        "PinMismatchError",
        "SendResult",
        "Shipper",
        "ShipperStats",
        "Transport",
        "interpret_reply",
        "normalize_pin",
    ]
    for name in agent.shipper.__all__:
        assert getattr(agent.shipper, name) is not None


def test_shipper_refuses_another_agents_spool(spool, identity, enrolled) -> None:
    """The agent id must be the spool's, or the chain would belong to someone else."""
    with pytest.raises(ValueError, match="differs from the spool"):
        Shipper(spool, agent_id="gpu-02", identity=identity, transport=HttpTransport(enrolled.url))


def test_answer_sent_before_the_body_was_read_is_seen() -> None:
    """A 413 sent before the collector read a huge body is seen, not taken for a broken pipe."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer = b'{"error":"body too large"}'

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )
            connection.shutdown(socket.SHUT_WR)
            time.sleep(0.2)

    server = threading.Thread(target=serve)
    server.start()
    transport = HttpTransport(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10)
    try:
        reply = transport.post("/v1/batches", b"x" * (64 << 20))
    finally:
        transport.close()
        server.join()
        listener.close()
    assert reply.status == 413
    assert interpret_reply(reply).outcome is Outcome.TOO_LARGE


@pytest.mark.parametrize(
    ("status", "body", "headers", "outcome", "acked", "retry_after"),
    [
        (200, {"acked_seq": 9, "stored": 9, "duplicates": 0}, {}, Outcome.STORED, 9, None),
        (200, {"stored": 9}, {}, Outcome.REFUSED, None, None),
        (
            409,
            {"error": "gap", "acked_seq": 9, "quarantine_id": "q"},
            {},
            Outcome.QUARANTINED,
            9,
            None,
        ),
        (409, {"error": "no ack"}, {}, Outcome.REFUSED, None, None),
        (413, {"error": "big"}, {}, Outcome.TOO_LARGE, None, None),
        (429, {}, {"retry-after": "7"}, Outcome.RETRY, None, 7.0),
        (429, {}, {"retry-after": "9999"}, Outcome.RETRY, None, 300.0),
        (429, {}, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, Outcome.RETRY, None, None),
        (401, {"error": "bad signature"}, {}, Outcome.UNAUTHORIZED, None, None),
        (403, {"error": "revoked"}, {}, Outcome.UNAUTHORIZED, None, None),
        (400, {"error": "malformed"}, {}, Outcome.REFUSED, None, None),
        (502, {}, {}, Outcome.RETRY, None, None),
        (302, {}, {}, Outcome.REFUSED, None, None),
    ],
)
def test_answers_map_to_outcomes(  # noqa: PLR0917 -- one parameter per table column
    status, body, headers, outcome, acked, retry_after
) -> None:
    """Each collector answer means one thing to the shipper (the table in the module doc)."""
    result = interpret_reply(
        HttpReply(status=status, headers=headers, body=json.dumps(body).encode())
    )
    assert result.outcome is outcome
    assert result.acked_seq == acked
    assert result.retry_after == retry_after


# ---------------------------------------------------------------------------- NATS


def _nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def jetstream_stream() -> Iterator[tuple[str, str]]:
    """A fresh JetStream stream (name, subject prefix) on 127.0.0.1:4222, deleted after."""
    if not _nats_reachable():
        pytest.skip("no nats-server on 127.0.0.1:4222")
    nats = pytest.importorskip("nats")
    suffix = uuid.uuid4().hex[:12]
    name, prefix = f"WWTEST_{suffix}", f"wwtest.{suffix}"

    async def create() -> None:
        client = await nats.connect(NATS_URL)
        try:
            await client.jetstream().add_stream(name=name, subjects=[f"{prefix}.>"])
        finally:
            await client.close()

    try:
        asyncio.run(create())
    except Exception as exc:  # noqa: BLE001 -- any failure here means no JetStream to test
        pytest.skip(f"JetStream unavailable on {NATS_URL}: {exc}")
    yield name, prefix

    async def delete() -> None:
        client = await nats.connect(NATS_URL)
        try:
            await client.jetstream().delete_stream(name)
        finally:
            await client.close()

    asyncio.run(delete())


def _stream_messages(name: str) -> list[tuple[str, dict[str, str], bytes]]:
    import nats  # noqa: PLC0415 -- only where NATS is reachable

    async def read() -> list[tuple[str, dict[str, str], bytes]]:
        client = await nats.connect(NATS_URL)
        try:
            js = client.jetstream()
            info = await js.stream_info(name)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(name, seq)
                found.append((msg.subject, dict(msg.headers or {}), msg.data or b""))
            return found
        finally:
            await client.close()

    return asyncio.run(read())


def test_nats_transport_publishes_with_message_ids(
    jetstream_stream, spool, identity, make_shipper
) -> None:
    """Batches land in order, signed, with Nats-Msg-Id agent:first-last; PubAcks trim the spool."""
    name, prefix = jetstream_stream
    append(spool, 0, 25)
    transport = NatsTransport(NATS_URL, stream=name, subject_prefix=prefix)
    shipper = make_shipper(transport, batch_size=10)
    wait_for(drained(spool, shipper), "the spool to drain into JetStream")

    messages = _stream_messages(name)
    assert [h["Nats-Msg-Id"] for _, h, _ in messages] == [
        f"{AGENT}:1-10",
        f"{AGENT}:11-20",
        f"{AGENT}:21-25",
    ]
    assert {subject for subject, _, _ in messages} == {f"{prefix}.gpu-01"}
    keys = {AGENT: identity.public}
    seqs = [
        e.seq
        for _, _, body in messages
        for e in open_batch(read_envelope(body), keys.get, max_events=100).events
    ]
    assert seqs == list(range(1, 26))
    assert shipper.stats().acked_seq == 25
    assert shipper.failure is None


def test_nats_resend_of_a_batch_is_deduplicated(jetstream_stream, spool, identity) -> None:
    """The same events sent twice (a lost PubAck) are stored once by JetStream."""
    name, prefix = jetstream_stream
    events = append(spool, 0, 5)
    transport = NatsTransport(NATS_URL, stream=name, subject_prefix=prefix)
    try:
        results = []
        for _ in range(2):
            batch = new_batch(AGENT, [(e.link, e.payload) for e in events], sent_at=T0)
            results.append(transport.send(batch, seal_batch(batch, identity.key)))
    finally:
        transport.close()
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED]
    assert [(r.stored, r.duplicates) for r in results] == [(5, 0), (0, 5)]
    assert [r.acked_seq for r in results] == [5, 5]
    assert len(_stream_messages(name)) == 1


def test_nats_unreachable_is_retried_not_fatal(spool, identity) -> None:
    """No NATS server at the address: the attempt is a RETRY with a clear detail."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = NatsTransport(f"nats://127.0.0.1:{port}", stream="S", connect_timeout=1)
    events = append(spool, 0, 1)
    batch = new_batch(AGENT, [(e.link, e.payload) for e in events], sent_at=T0)
    try:
        result = transport.send(batch, seal_batch(batch, identity.key))
    finally:
        transport.close()
    assert result.outcome is Outcome.RETRY
    assert "cannot publish to NATS" in result.detail
