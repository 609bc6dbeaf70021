"""Collector workers on a real NATS JetStream (127.0.0.1:4222) with real stores.

Agents publish through the real spool, shipper and ``NatsTransport`` (or, where a test
needs one exact message, sign and publish a batch themselves); workers share one durable
pull consumer; SQLite lives in a temp dir and PostgreSQL in a throwaway database on
127.0.0.1:5432 (user postgres). Each test has its own stream, subjects and consumer.
Tests skip, saying why, when NATS or PostgreSQL cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

nats = pytest.importorskip("nats")

from nats.js.api import (  # noqa: E402 -- after the importorskip above
    AckPolicy,
    ConsumerConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from agent.identity import load_or_create_identity  # noqa: E402
from agent.shipper import HttpTransport, NatsTransport, Shipper  # noqa: E402
from agent.spool import Spool  # noqa: E402
from collector.cli import _nats as nats_cli  # noqa: E402
from collector.http import CollectorServer, ServerLimits  # noqa: E402
from collector.ingest import IngestLimits, Ingestor  # noqa: E402
from collector.nats_worker import (  # noqa: E402
    DEFAULT_DURABLE,
    DEFAULT_SUBJECT_PREFIX,
    NatsWorker,
    NatsWorkerStats,
    ensure_stream,
    serve_nats,
)
from collector.store import SqliteStore, open_store  # noqa: E402
from collector.verify_log import verify_log  # noqa: E402
from weightwarden.errors import ConfigError, WeightwardenError  # noqa: E402
from weightwarden.events import (  # noqa: E402
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
    from collections.abc import Callable, Coroutine, Iterator
    from pathlib import Path

    from nats.aio.msg import Msg

    from agent.identity import AgentIdentity
    from collector.store import Store

NATS_URL = "nats://127.0.0.1:4222"
PG_ADMIN = os.environ.get(
    "WEIGHTWARDEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T0 = 1_700_000_000_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def file_event(agent: str, i: int) -> FileActivity:
    """A checkpoint read by a training process, numbered ``i``."""
    user = User(uid=1000, name="alice")
    return FileActivity(
        uid=f"{agent}-file-{i}",
        time=T0 + i,
        device=Device(hostname=agent, agent_id=agent),
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
        file=FileRef(path=f"/weights/run/shard-{i}.safetensors", size=1 << 20),
        bytes_read=1 << 19,
        fraction_read=0.5,
    )


# -- NATS ------------------------------------------------------------------------------------


class Js:
    """A NATS connection on its own loop thread, for the test's side of the stream."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self.run(nats.connect(url, connect_timeout=2, allow_reconnect=False))
        self.js = self.client.jetstream(timeout=5)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run ``coro`` on the connection's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Close the connection and stop the loop."""
        with contextlib.suppress(Exception):
            self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Names:
    """One test's stream, subject prefix and durable consumer, all fresh."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.stream = f"WWNATS_{suffix}"
        self.prefix = f"wwtest.{suffix}"
        self.durable = f"workers_{suffix}"

    def subject(self, agent: str) -> str:
        """The subject ``NatsTransport`` publishes the agent's batches to."""
        return f"{self.prefix}.{agent}"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[Js]:
    """A connection to the JetStream server on loopback, or a skip saying why not."""
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        pytest.skip(f"no nats-server on {NATS_URL}")
    js = Js(NATS_URL)
    try:
        js.run(js.js.account_info())
    except Exception as exc:  # noqa: BLE001 -- any failure here means no JetStream to test
        js.close()
        pytest.skip(f"JetStream is not enabled on {NATS_URL}: {exc}")
    yield js
    js.close()


@pytest.fixture
def names(nats_server: Js) -> Iterator[Names]:
    """Fresh stream, prefix and durable names; the stream is deleted afterwards."""
    fresh = Names()
    yield fresh
    with contextlib.suppress(Exception):
        nats_server.run(nats_server.js.delete_stream(fresh.stream))


def publish(js: Js, subject: str, body: bytes, msg_id: str | None = None) -> bool:
    """Publish one message; whether JetStream called it a duplicate."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    ack = js.run(js.js.publish(subject, body, headers=headers))
    return bool(ack.duplicate)


def consumer(js: Js, names: Names) -> Any:
    """The durable consumer's info."""
    return js.run(js.js.consumer_info(names.stream, names.durable))


def settled(js: Js, names: Names) -> Callable[[], bool]:
    """Nothing left to deliver and nothing delivered but unacknowledged."""

    def check() -> bool:
        info = consumer(js, names)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    return check


class Holder:
    """Another consumer of the durable: takes messages and keeps them unacknowledged."""

    def __init__(self, js: Js, names: Names) -> None:
        self.js = js
        self.sub = js.run(js.js.pull_subscribe_bind(consumer=names.durable, stream=names.stream))
        self.held: list[Msg] = []

    def take(self, count: int = 1) -> list[Msg]:
        """Fetch ``count`` messages and keep them unacknowledged."""
        msgs: list[Msg] = self.js.run(self.sub.fetch(count, timeout=5))
        self.held.extend(msgs)
        return msgs

    def give_back(self) -> None:
        """NAK every held message: JetStream redelivers them at once."""
        for msg in self.held:
            self.js.run(msg.nak())
        self.held.clear()


def make_stream_and_consumer(js: Js, names: Names, *, ack_wait: float = 30) -> None:
    """The stream and consumer exactly as a worker makes them (for a Holder to go first)."""
    js.run(ensure_stream(js.js, names.stream, [f"{names.prefix}.>"], duplicate_window=120.0))
    js.run(
        js.js.add_consumer(
            names.stream,
            ConsumerConfig(
                durable_name=names.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=-1,
                filter_subject=f"{names.prefix}.>",
            ),
        )
    )


# -- stores ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for the session (dropped at its end), or a skip."""
    psycopg = pytest.importorskip("psycopg")
    from urllib.parse import urlsplit  # noqa: PLC0415

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN}: {' '.join(str(exc).split())}")
    name = f"ww_nats_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(PG_ADMIN)._replace(path=f"/{name}").geturl()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def ingestor(store: Store) -> Ingestor:
    return Ingestor(store, limits=IngestLimits(), clock=now_ms)


def total(workers: list[NatsWorker]) -> NatsWorkerStats:
    out = NatsWorkerStats()
    for worker in workers:
        out += worker.stats()
    return out


class SignedAgent:
    """An enrolled agent that seals its own batches (real key, real chain, no daemon)."""

    def __init__(self, sim: Any, store: Store) -> None:
        self.sim = sim
        self.agent_id: str = sim.agent_id
        store.register_agent(agent_id=self.agent_id, public_key_pem=sim.public_pem, now=1)

    def batches(self, count: int, size: int) -> list[bytes]:
        """``count`` consecutive batches of ``size`` events, each sealed once."""
        return [self.sim.seal(self.sim.record_opens(size)) for _ in range(count)]


class Bench:
    """One test's world: the JetStream connection and names, a SQLite store, workers.

    Everything it opens or starts is closed by :meth:`close`, which also checks that every
    worker stopped when told and did not fail.
    """

    def __init__(self, *, js: Js, names: Names, target: str, sim_agent: Any) -> None:
        self.js = js
        self.names = names
        self.target = target
        self._sim_agent = sim_agent
        self._stores: list[Store] = []
        self._workers: list[NatsWorker] = []
        self.store = self.open_store(target)

    def open_store(self, target: str) -> Store:
        """Another store on ``target`` (its own connections)."""
        store = open_store(target, synchronous="normal")
        self._stores.append(store)
        return store

    def start(self, store: Store, **options: Any) -> NatsWorker:
        """Start a worker on the bench's stream and durable, quick to fetch and retry."""
        settings: dict[str, Any] = {
            "stream": self.names.stream,
            "durable": self.names.durable,
            "subject_prefix": self.names.prefix,
            "batch": 4,
            "fetch_timeout": 0.2,
            "hold_delay": 0.05,
            "backoff_base": 0.05,
            "backoff_cap": 0.5,
            "connect_timeout": 3.0,
            "name": f"test-worker-{len(self._workers) + 1}",
        }
        settings.update(options)
        worker = NatsWorker(NATS_URL, ingestor=ingestor(store), store=store, **settings)
        worker.start()
        self._workers.append(worker)
        return worker

    def agent(self, store: Store | None = None) -> SignedAgent:
        """A new agent, enrolled in the bench's store (or ``store``)."""
        return SignedAgent(self.unenrolled(f"gpu-{uuid.uuid4().hex[:8]}"), store or self.store)

    def unenrolled(self, agent_id: str) -> Any:
        """An agent with its own key that no store knows."""
        return self._sim_agent(agent_id)

    def publish(self, agent: SignedAgent, body: bytes, msg_id: str | None = None) -> bool:
        """Publish to the agent's subject; whether JetStream called it a duplicate."""
        return publish(self.js, self.names.subject(agent.agent_id), body, msg_id)

    def holder(self, *, ack_wait: float = 30) -> Holder:
        """Create the stream and consumer as a worker would, and a Holder on them."""
        make_stream_and_consumer(self.js, self.names, ack_wait=ack_wait)
        return Holder(self.js, self.names)

    def settle(self) -> None:
        """Wait until every message is acknowledged (or terminated)."""
        wait_for(settled(self.js, self.names), "every message answered")

    def close(self) -> None:
        """Stop every worker (each must stop, without a failure); close every store."""
        try:
            for worker in self._workers:
                assert worker.stop(10), f"{worker.name} did not stop"
                assert worker.failure is None, worker.failure
        finally:
            for store in self._stores:
                store.close()


@pytest.fixture
def bench(nats_server: Js, names: Names, tmp_path: Path, sim_agent: Any) -> Iterator[Bench]:
    """A fresh stream and consumer name, a SQLite store, and worker and agent factories."""
    opened = Bench(
        js=nats_server, names=names, target=str(tmp_path / "collector.sqlite"), sim_agent=sim_agent
    )
    yield opened
    opened.close()


def seqs(store: Store, agent_id: str) -> list[int]:
    return [e.seq for e in store.chain(agent_id)]


def rows(store: Store, agent_id: str) -> list[tuple[object, ...]]:
    """Everything stored about each event except when it was received."""
    return [
        (
            e.agent_id,
            e.seq,
            e.payload,
            e.prev_hash,
            e.payload_hash,
            e.link_hash,
            e.uid,
            e.time,
            e.class_uid,
            e.activity_id,
            e.severity_id,
        )
        for e in store.chain(agent_id)
    ]


# -- the whole path --------------------------------------------------------------------------


def stored_over_http(
    bench: Bench,
    tmp_path: Path,
    identity: AgentIdentity,
    events: list[FileActivity],
    shipper_options: dict[str, Any],
) -> Store:
    """The reference: the same events through a spool and shipper to the HTTP API."""
    agent = events[0].device.agent_id
    assert agent is not None
    http_store = bench.open_store(str(tmp_path / "http.sqlite"))
    http_store.register_agent(agent_id=agent, public_key_pem=identity.public.pem.decode(), now=1)
    server = CollectorServer(
        store=http_store, ingestor=ingestor(http_store), limits=ServerLimits(), clock=now_ms
    )
    server.start()
    with Spool(tmp_path / "spool-http", agent_id=agent, hostname=agent) as spool:
        spool.append(events)
        shipper = Shipper(
            spool,
            agent_id=agent,
            identity=identity,
            transport=HttpTransport(server.url, timeout=10),
            batch_size=20,
            **shipper_options,
        )
        shipper.start()
        try:
            wait_for(lambda: shipper.stats().acked_seq == len(events), "the HTTP shipper to drain")
        finally:
            assert shipper.stop(10)
            server.stop()
    return http_store


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_three_workers_store_exactly_what_http_stores(
    backend: str, bench: Bench, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Spool, shipper, JetStream, 3 competing workers: every event stored once, as over HTTP."""
    target = bench.target if backend == "sqlite" else request.getfixturevalue("pg_database")
    agent = f"gpu-{uuid.uuid4().hex[:8]}"
    count = 400
    events = [file_event(agent, i) for i in range(count)]
    identity = load_or_create_identity(tmp_path / "state")
    pem = identity.public.pem.decode()
    device = Device(hostname=agent, agent_id=agent)
    quick: dict[str, Any] = {
        "poll_interval": 0.02,
        "backoff_base": 0.02,
        "backoff_cap": 0.2,
        "device": device,
    }

    http_store = stored_over_http(bench, tmp_path, identity, events, quick)

    # NATS: three workers, each with its own store connections, on one durable consumer.
    stores = [bench.open_store(target) for _ in range(3)]
    stores[0].register_agent(agent_id=agent, public_key_pem=pem, now=1)
    workers = [bench.start(store) for store in stores]
    names = bench.names
    with Spool(tmp_path / "spool-nats", agent_id=agent, hostname=agent) as spool:
        spool.append(events)
        transport = NatsTransport(NATS_URL, stream=names.stream, subject_prefix=names.prefix)
        shipper = Shipper(
            spool, agent_id=agent, identity=identity, transport=transport, batch_size=20, **quick
        )
        shipper.start()
        try:
            wait_for(lambda: shipper.stats().acked_seq == count, "the NATS shipper to drain")
            wait_for(lambda: len(seqs(stores[0], agent)) == count, "the workers to store it all")
            bench.settle()
        finally:
            assert shipper.stop(10)
        assert shipper.failure is None

    store = stores[0]
    assert rows(store, agent) == rows(http_store, agent)
    assert seqs(store, agent) == list(range(1, count + 1))
    assert store.agent(agent) == http_store.agent(agent)
    report = verify_log(store)
    assert report.ok, report.problems
    assert store.quarantined() == []
    assert [a.rule for a in store.alerts()] == [a.rule for a in http_store.alerts()]
    stats = total(workers)
    assert stats.stored == count  # each event newly stored by exactly one worker
    assert (stats.refused, stats.quarantined, stats.gaps, stats.errors) == (0, 0, 0, 0)


def test_serve_nats_runs_workers_until_stopped(bench: Bench) -> None:
    """serve_nats (what the command runs): N workers store everything, stop on the event."""
    agent = bench.agent()
    stop = threading.Event()
    ready = threading.Event()
    outcome: list[NatsWorkerStats | BaseException] = []

    def serve() -> None:
        try:
            outcome.append(
                serve_nats(
                    [NATS_URL],
                    stream=bench.names.stream,
                    durable=bench.names.durable,
                    subject_prefix=bench.names.prefix,
                    db=bench.target,
                    stop=stop,
                    workers=2,
                    synchronous="normal",
                    on_ready=ready.set,
                )
            )
        except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        wait_for(lambda: ready.is_set() or outcome, "the workers to start")
        assert ready.is_set(), outcome
        for body in agent.batches(5, 4):
            bench.publish(agent, body)
        wait_for(lambda: len(seqs(bench.store, agent.agent_id)) == 20, "every batch stored")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    (stats,) = outcome
    assert isinstance(stats, NatsWorkerStats), stats
    assert (stats.stored, stats.batches, stats.gaps, stats.refused) == (20, 5, 0, 0)
    bench.settle()


# -- order ----------------------------------------------------------------------------------


def test_batch_ahead_of_an_unacknowledged_one_waits_instead_of_a_gap(bench: Bench) -> None:
    """Batch 2 while batch 1 is in another worker's hands waits, then is stored right after it."""
    agent = bench.agent()
    holder = bench.holder()
    for body in agent.batches(2, 5):
        bench.publish(agent, body)
    assert len(holder.take()) == 1  # batch 1, in flight elsewhere

    worker = bench.start(bench.store, hold_for=600.0)
    wait_for(lambda: worker.stats().held == 1, "batch 2 to wait")
    assert seqs(bench.store, agent.agent_id) == []
    holder.give_back()
    wait_for(lambda: len(seqs(bench.store, agent.agent_id)) == 10, "both batches stored")
    bench.settle()

    assert seqs(bench.store, agent.agent_id) == list(range(1, 11))
    assert bench.store.quarantined() == []
    assert bench.store.alerts() == []
    stats = worker.stats()
    assert (stats.gaps, stats.quarantined, stats.batches, stats.stored) == (0, 0, 2, 10)
    assert (stats.fetched, stats.held) == (2, 1)  # batch 2 waited here, never redelivered


def test_batches_beyond_the_park_limit_come_back_later_and_are_stored_in_order(
    bench: Bench,
) -> None:
    """With room for one waiting batch, the next is NAK'd and redelivered; none is lost."""
    agent = bench.agent()
    holder = bench.holder()
    for body in agent.batches(4, 3):
        bench.publish(agent, body)
    holder.take()  # batch 1

    worker = bench.start(bench.store, park_limit=1, hold_for=600.0)
    wait_for(lambda: worker.stats().held >= 3, "batches 3 and 4 sent back at least once")
    holder.give_back()
    wait_for(lambda: len(seqs(bench.store, agent.agent_id)) == 12, "all four batches stored")
    bench.settle()

    assert seqs(bench.store, agent.agent_id) == list(range(1, 13))
    stats = worker.stats()
    assert stats.fetched > 4  # redeliveries of what found no room
    assert (stats.gaps, stats.quarantined, stats.stored) == (0, 0, 12)
    assert bench.store.quarantined() == []


@pytest.mark.slow
def test_a_waiting_batch_is_kept_from_redelivery_past_ack_wait(bench: Bench) -> None:
    """A batch waiting longer than ack_wait is beaten in_progress, so it is delivered once."""
    agent = bench.agent()
    holder = bench.holder(ack_wait=1.0)
    for body in agent.batches(2, 3):
        bench.publish(agent, body)
    (first,) = holder.take()
    worker = bench.start(bench.store, hold_for=600.0)
    wait_for(lambda: worker.stats().held == 1, "batch 2 to wait")
    for _ in range(6):  # batch 1 stays in the holder's hands for 3 ack_waits
        bench.js.run(first.in_progress())
        time.sleep(0.5)
    holder.give_back()
    wait_for(lambda: len(seqs(bench.store, agent.agent_id)) == 6, "both batches stored")
    bench.settle()

    stats = worker.stats()
    assert (stats.fetched, stats.held, stats.gaps) == (2, 1, 0)


def test_stopping_gives_waiting_batches_back_to_the_stream(bench: Bench) -> None:
    """A stopped worker NAKs what it kept aside; the next worker stores it all, in order."""
    agent = bench.agent()
    holder = bench.holder()
    for body in agent.batches(3, 2):
        bench.publish(agent, body)
    holder.take()
    first = bench.start(bench.store, hold_for=600.0)
    wait_for(lambda: first.stats().held == 2, "batches 2 and 3 to wait")
    assert first.stop(10)

    second = bench.start(bench.store, hold_for=600.0)
    holder.give_back()
    # Well before ack_wait (30 s) would have redelivered batches 2 and 3 on its own.
    wait_for(lambda: len(seqs(bench.store, agent.agent_id)) == 6, "all three stored", 10)
    bench.settle()
    assert seqs(bench.store, agent.agent_id) == list(range(1, 7))
    assert (first.stats().stored, second.stats().stored, second.stats().gaps) == (0, 6, 0)


def test_batch_held_too_long_is_stored_with_a_gap_and_the_late_one_quarantined(
    bench: Bench,
) -> None:
    """Past hold_for, ingest reports the gap; the earlier batch arriving later is quarantined."""
    agent = bench.agent()
    holder = bench.holder()
    for body in agent.batches(2, 5):
        bench.publish(agent, body)
    holder.take()  # batch 1 is stuck somewhere

    worker = bench.start(bench.store, hold_for=0.3)
    wait_for(lambda: worker.stats().gaps == 1, "batch 2 stored with a gap")
    assert seqs(bench.store, agent.agent_id) == list(range(6, 11))
    holder.give_back()
    wait_for(lambda: worker.stats().quarantined == 1, "batch 1 quarantined as late")
    bench.settle()

    assert seqs(bench.store, agent.agent_id) == list(range(6, 11))
    reasons = sorted(q.reason.split(":")[0] for q in bench.store.quarantined())
    assert reasons == ["gap", "late"]
    titles = sorted(a.title.split(":")[0] for a in bench.store.alerts())
    assert titles == ["Chain gap", "Late events"]
    assert worker.stats().held == 1


def test_a_real_gap_is_stored_at_once_when_nothing_earlier_is_pending(bench: Bench) -> None:
    """A batch whose predecessor is not in the stream at all does not wait: the gap is reported."""
    agent = bench.agent()
    _lost, second = agent.batches(2, 5)
    worker = bench.start(bench.store, hold_for=600.0)
    bench.publish(agent, second)
    wait_for(lambda: worker.stats().gaps == 1, "the gap reported")
    bench.settle()

    assert seqs(bench.store, agent.agent_id) == list(range(6, 11))
    assert worker.stats().held == 0
    assert [q.reason.split(":")[0] for q in bench.store.quarantined()] == ["gap"]


# -- duplicates and replays ------------------------------------------------------------------


def test_redelivery_after_the_store_committed_is_a_duplicate_not_a_replay(bench: Bench) -> None:
    """A worker that stored a batch and died before its ack: the redelivery is acknowledged."""
    agent = bench.agent()
    (body,) = agent.batches(1, 5)
    holder = bench.holder()
    bench.publish(agent, body)
    (msg,) = holder.take()
    assert ingestor(bench.store).ingest(msg.data).status == 200  # stored, never acknowledged
    holder.give_back()

    worker = bench.start(bench.store)
    wait_for(lambda: worker.stats().batches == 1, "the redelivery acknowledged")
    bench.settle()
    stats = worker.stats()
    assert (stats.duplicates, stats.stored, stats.quarantined) == (5, 0, 0)
    assert seqs(bench.store, agent.agent_id) == [1, 2, 3, 4, 5]
    assert bench.store.quarantined() == []
    assert bench.store.alerts() == []


def test_resends_are_deduplicated_and_a_replayed_message_is_quarantined(bench: Bench) -> None:
    """Same msg id: dropped by JetStream; new signature: de-duplicated; same bytes: a replay."""
    agent = bench.agent()
    items = agent.sim.record_opens(5)
    body = agent.sim.seal(items)
    msg_id = f"{agent.agent_id}:1-5"
    worker = bench.start(bench.store)

    assert bench.publish(agent, body, msg_id) is False
    assert bench.publish(agent, agent.sim.seal(items), msg_id) is True  # within the window
    wait_for(lambda: worker.stats().batches == 1, "the batch stored")
    assert bench.publish(agent, agent.sim.seal(items), "after-the-window") is False
    wait_for(lambda: worker.stats().batches == 2, "the resend acknowledged")
    assert bench.publish(agent, body, "captured") is False
    wait_for(lambda: worker.stats().quarantined == 1, "the replay quarantined")
    bench.settle()

    stats = worker.stats()
    assert (stats.fetched, stats.stored, stats.duplicates, stats.refused) == (3, 5, 5, 0)
    assert seqs(bench.store, agent.agent_id) == [1, 2, 3, 4, 5]
    assert [q.reason.split(":")[0] for q in bench.store.quarantined()] == ["replay"]
    assert [a.title.split(":")[0] for a in bench.store.alerts()] == ["Replayed batch"]


# -- refusals and failures -------------------------------------------------------------------


def test_refused_batches_are_terminated_never_redelivered(bench: Bench) -> None:
    """Garbage, an unknown agent and a wrong key are terminated and counted; the next is stored."""
    agent = bench.agent()
    stranger = bench.unenrolled("stranger")
    impostor = bench.unenrolled(agent.agent_id)  # the agent's id, another key
    worker = bench.start(bench.store)
    bench.publish(agent, b"\x00\x00\x00\x10not a batch at all")
    bench.publish(agent, stranger.seal(stranger.record_opens(2)))
    bench.publish(agent, impostor.seal(impostor.record_opens(2)))
    wait_for(lambda: worker.stats().refused == 3, "three refusals")
    (good,) = agent.batches(1, 3)
    bench.publish(agent, good)
    wait_for(lambda: worker.stats().batches == 1, "the good batch stored")
    bench.settle()

    info = consumer(bench.js, bench.names)
    assert info.num_redelivered == 0
    stats = worker.stats()
    assert (stats.fetched, stats.refused, stats.stored, stats.errors) == (4, 3, 3, 0)
    assert "refused (4" in (stats.last_error or "")
    assert seqs(bench.store, agent.agent_id) == [1, 2, 3]


def test_a_locked_database_is_retried_until_the_batch_is_stored(bench: Bench) -> None:
    """Another process holds SQLite's write lock: NAK with backoff, stored once it lets go."""
    store = SqliteStore(bench.target, synchronous="normal", busy_timeout=0.2)
    try:
        agent = bench.agent(store)
        worker = bench.start(store)
        blocker = sqlite3.connect(bench.target, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for body in agent.batches(2, 5):
                bench.publish(agent, body)
            wait_for(lambda: worker.stats().retried >= 2, "retries while the database is locked")
            assert seqs(store, agent.agent_id) == []
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for(lambda: len(seqs(store, agent.agent_id)) == 10, "both batches stored")
        bench.settle()
        stats = worker.stats()
        assert "locked" in (stats.last_error or "") or "busy" in (stats.last_error or "")
        assert (stats.stored, stats.gaps, stats.quarantined) == (10, 0, 0)
        assert verify_log(store).ok
    finally:
        store.close()


@pytest.mark.slow
@contextlib.contextmanager
def worker_process(
    bench: Bench, ww_argv: list[str], log_path: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`collector nats-worker` on the bench's stream, consuming when yielded, killed after."""
    names = bench.names
    argv = [
        *ww_argv,
        *("collector", "nats-worker", "--servers", NATS_URL, "--stream", names.stream),
        *("--durable", names.durable, "--subject-prefix", names.prefix, "--db", bench.target),
        *options,
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:

        def consuming() -> bool:
            assert proc.poll() is None, log_path.read_text()
            with contextlib.suppress(Exception):  # no stream until the worker makes it
                return consumer(bench.js, names) is not None
            return False

        wait_for(consuming, "the worker process to create the consumer")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_killed_worker_process_loses_nothing_and_duplicates_nothing(
    bench: Bench, tmp_path: Path, ww_argv: list[str]
) -> None:
    """`collector nats-worker` SIGKILLed holding unacknowledged batches: others store them once."""
    store, names = bench.store, bench.names
    agent = bench.agent()
    batches = agent.batches(20, 10)
    options = ("--ack-wait", "2", "--batch", "5")
    with worker_process(bench, ww_argv, tmp_path / "worker.log", *options) as proc:
        for body in batches[:10]:
            bench.publish(agent, body)
        wait_for(lambda: len(seqs(store, agent.agent_id)) == 100, "the first half stored")

        blocker = sqlite3.connect(bench.target, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the worker's next write waits here
        try:
            for body in batches[10:]:
                bench.publish(agent, body)
            wait_for(
                lambda: consumer(bench.js, names).num_ack_pending > 0,
                "the worker to hold unacknowledged batches",
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

    workers = [bench.start(bench.open_store(bench.target)) for _ in range(2)]
    wait_for(lambda: len(seqs(store, agent.agent_id)) == 200, "the redelivered batches stored")
    bench.settle()
    assert seqs(store, agent.agent_id) == list(range(1, 201))
    assert verify_log(store).ok
    assert store.quarantined() == []
    assert store.alerts() == []
    stats = total(workers)
    assert stats.stored == 100
    assert (stats.refused, stats.gaps, stats.quarantined) == (0, 0, 0)


def test_the_worker_command_stops_on_sigterm_storing_what_it_took_and_exits_0(
    bench: Bench, tmp_path: Path, ww_argv: list[str]
) -> None:
    """`collector nats-worker` given SIGTERM twice, as systemd and a parent's death may: exit 0."""
    agent = bench.agent()
    log_path = tmp_path / "worker.log"
    with worker_process(bench, ww_argv, log_path) as proc:
        for body in agent.batches(3, 10):
            bench.publish(agent, body)
        wait_for(lambda: len(seqs(bench.store, agent.agent_id)) == 30, "the batches stored")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    assert "SIGTERM" in log_path.read_text()
    assert seqs(bench.store, agent.agent_id) == list(range(1, 31))


# -- stream, consumer, start ----------------------------------------------------------------


def test_ensure_stream_creates_a_durable_work_queue(nats_server: Js, names: Names) -> None:
    """A new stream stores on file, as a work queue, refusing new batches when full."""
    subjects = [f"{names.prefix}.>"]
    info = nats_server.run(
        ensure_stream(nats_server.js, names.stream, subjects, duplicate_window=90.0)
    )
    assert info.config.subjects == subjects
    assert info.config.storage == StorageType.FILE
    assert info.config.retention == RetentionPolicy.WORK_QUEUE
    assert info.config.discard == "new"
    assert info.config.duplicate_window == 90.0
    again = nats_server.run(
        ensure_stream(nats_server.js, names.stream, subjects, duplicate_window=90.0)
    )
    assert again.config == info.config


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"storage": StorageType.MEMORY}, "in memory"),
        ({"subjects_other": True}, "listens on"),
        ({"max_age": 3600.0}, "may delete batches"),
        ({"max_msgs": 10}, "may delete batches"),
    ],
)
def test_ensure_stream_refuses_a_stream_that_can_lose_batches(
    nats_server: Js, names: Names, config: dict[str, Any], complaint: str
) -> None:
    """Memory storage, other subjects, an age limit or discard-old: a ConfigError naming it."""
    other = config.pop("subjects_other", False)
    subjects = [f"{names.prefix}.other.>"] if other else [f"{names.prefix}.>"]
    settings: dict[str, Any] = {"storage": StorageType.FILE, **config}
    nats_server.run(
        nats_server.js.add_stream(StreamConfig(name=names.stream, subjects=subjects, **settings))
    )
    with pytest.raises(ConfigError, match=complaint):
        nats_server.run(
            ensure_stream(
                nats_server.js, names.stream, [f"{names.prefix}.>"], duplicate_window=120.0
            )
        )


def test_a_consumer_that_gives_up_after_n_deliveries_is_refused(bench: Bench) -> None:
    """max_deliver would drop batches during a database outage: start() raises ConfigError."""
    nats_server, names = bench.js, bench.names
    make_stream_and_consumer(nats_server, names)
    nats_server.run(nats_server.js.delete_consumer(names.stream, names.durable))
    nats_server.run(
        nats_server.js.add_consumer(
            names.stream,
            ConsumerConfig(
                durable_name=names.durable,
                ack_policy=AckPolicy.EXPLICIT,
                max_deliver=5,
                filter_subject=f"{names.prefix}.>",
            ),
        )
    )
    with pytest.raises(ConfigError, match="max_deliver"):
        bench.start(bench.store)


def free_nats_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{sock.getsockname()[1]}"


def test_unreachable_nats_fails_start_naming_the_server(tmp_path: Path) -> None:
    """No server at the URL: start() raises, naming it, instead of hanging."""
    url = free_nats_url()
    store = SqliteStore(tmp_path / "collector.sqlite")
    try:
        worker = NatsWorker(
            url, stream="S", ingestor=ingestor(store), store=store, connect_timeout=1.0
        )
        with pytest.raises(WeightwardenError, match=f"cannot connect to NATS {url}"):
            worker.start()
        assert not worker.running
    finally:
        store.close()


def test_cli_without_nats_exits_70_naming_the_server(
    ww: Callable[..., Any], tmp_path: Path
) -> None:
    """`collector nats-worker` with no server there: exit 70 naming it (systemd restarts)."""
    url = free_nats_url()
    result = ww(
        "collector",
        "nats-worker",
        "--servers",
        url,
        "--stream",
        "S",
        "--db",
        tmp_path / "collector.sqlite",
        "--connect-timeout",
        "1",
    )
    assert result.code == 70, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("weightwarden: error: cannot connect to NATS"), result.stderr
    assert url in last


def test_cli_defaults_match_the_worker() -> None:
    """The command's defaults are the module's (kept apart so --help does not import nats)."""
    assert nats_cli._DEFAULT_PREFIX == DEFAULT_SUBJECT_PREFIX  # noqa: SLF001 -- pinning them
    assert nats_cli._DEFAULT_DURABLE == DEFAULT_DURABLE  # noqa: SLF001
