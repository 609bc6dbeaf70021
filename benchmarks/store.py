"""Collector store throughput: events/s that ``Store.ingest`` takes in batches of 1,000.

Cases (each on a fresh database; events are real OCSF file opens, ~940 bytes of canonical
JSON, chained and indexed exactly as ingest stores them; building them is not timed):
  1. SQLite, one thread, ``ingest`` only: synchronous=full (the default) and normal.
  2. SQLite, --threads threads, each one agent, the whole store side of ingest per batch
     (``agent``, ``nonce_seen``, ``stored_links``, ``ingest``): reads on their own
     connections (the default, readers=4) against reads sharing the writer's
     connection and lock (readers=0).
  3. PostgreSQL (binary COPY), the same two shapes: one thread ``ingest`` only, and
     --threads threads with the whole store side of ingest. Skipped if unreachable.

Usage:

    .venv/bin/python benchmarks/store.py [--events 100000] [--batch 1000] [--threads 4]
        [--repeat 3] [--dir DIR] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Each case runs --repeat times, the cases interleaved, each run on a fresh database; the
median and the best run are printed.

PostgreSQL runs in a throwaway database (``ww_bench_<random>``) created and dropped through
the given URL. Figures depend on the disk (fsync latency) and the CPU, and the collector
target (>= 50,000 events/s end to end) includes signature checks and HTTP on top: compare
cases from one run. "CPU-bound" divides by this process's CPU time instead of the wall
clock: for SQLite (in-process) it is what a quiet machine would approach; PostgreSQL's
server work is not in it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg

from collector.store import PostgresStore, SqliteStore, StoredEvent
from weightwarden.crypto import next_link
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    User,
    canonical_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    from collector.store import Store

Batch = tuple[int, int, str, list[StoredEvent]]
"""(expected head seq, new head seq, new head hash, events)"""


def make_batches(agent_id: str, count: int, batch: int) -> list[Batch]:
    """``count`` realistic file opens of one agent, chained, as ``ingest`` batches."""
    user = User(uid=1000, name="alice")
    device = Device(hostname=agent_id, agent_id=agent_id)
    head = None
    events: list[StoredEvent] = []
    for i in range(count):
        event = FileActivity(
            uid=secrets.token_hex(16),
            time=1_700_000_000_000 + i,
            device=device,
            activity=FileActivityType.OPEN,
            actor=Actor(
                process=Process(
                    pid=10_000 + i % 5000,
                    attribution=Attribution.FULL,
                    exe="/usr/bin/python3",
                    cmd_line="python3 train.py",
                    user=user,
                ),
                user=user,
            ),
            file=FileRef(path=f"/weights/run-7/model-{i % 64:05d}.safetensors", size=1 << 32),
            sensor="fanotify",
        )
        payload = canonical_bytes(event)
        head = next_link(head, agent_id, payload)
        events.append(
            StoredEvent(
                agent_id=agent_id,
                seq=head.seq,
                payload=payload.decode(),
                prev_hash=head.prev_hash,
                payload_hash=head.payload_hash,
                link_hash=head.link_hash,
                uid=event.uid,
                time=event.time,
                class_uid=1001,
                activity_id=int(event.activity),
                severity_id=int(event.severity),
                received_at=1_700_000_000_000 + i,
            )
        )
    return [
        (offset, events[end - 1].seq, events[end - 1].link_hash, events[offset:end])
        for offset in range(0, count, batch)
        for end in [min(offset + batch, count)]
    ]


def ingest_only(store: Store, agent_id: str, batches: list[Batch]) -> None:
    """``ingest`` each batch, nothing else."""
    for expected, new, new_hash, events in batches:
        store.ingest(
            agent_id=agent_id,
            nonce=secrets.token_hex(16),
            expected_head_seq=expected,
            new_head_seq=new,
            new_head_hash=new_hash,
            events=events,
            alerts=(),
        )


def ingest_path(store: Store, agent_id: str, batches: list[Batch]) -> None:
    """What ``collector.ingest`` asks of the store for each new batch, then ``ingest``."""
    for expected, new, new_hash, events in batches:
        nonce = secrets.token_hex(16)
        store.agent(agent_id)
        store.nonce_seen(nonce)
        store.stored_links(agent_id, events[0].seq - 1, events[0].seq - 1)
        store.ingest(
            agent_id=agent_id,
            nonce=nonce,
            expected_head_seq=expected,
            new_head_seq=new,
            new_head_hash=new_hash,
            events=events,
            alerts=(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One measured configuration: how to open a fresh store, and what to run on it."""

    label: str
    open_store: Callable[[], AbstractContextManager[Store]]
    work: Callable[[Store, str, list[Batch]], None]
    agents: list[tuple[str, list[Batch]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """One run's events/s, by the wall clock and by this process's CPU time."""

    wall: float
    cpu: float


def run(case: Case) -> Rate:
    """Register the agents, run the work for each in its own thread on a fresh store."""
    with case.open_store() as store:
        for agent_id, _ in case.agents:
            store.register_agent(agent_id=agent_id, public_key_pem="bench", now=1)
        threads = [
            threading.Thread(target=case.work, args=(store, agent_id, batches))
            for agent_id, batches in case.agents
        ]
        count = sum(len(events) for _, batches in case.agents for *_, events in batches)
        start, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        stored = store.count_events()
    if stored != count:
        raise SystemExit(f"{case.label}: {stored} events stored, not {count}")
    return Rate(wall=count / elapsed, cpu=count / cpu)


@contextlib.contextmanager
def sqlite_store(root: Path, *, synchronous: str = "full", readers: int = 4) -> Iterator[Store]:
    """A SqliteStore on a new file under ``root``."""
    path = root / f"{secrets.token_hex(4)}.sqlite"
    with SqliteStore(path, synchronous=synchronous, readers=readers) as store:
        yield store


@contextlib.contextmanager
def postgres_store(admin: psycopg.Connection[Any], url: str) -> Iterator[Store]:
    """A PostgresStore on a throwaway database, dropped afterwards."""
    name = f"ww_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with PostgresStore(urlsplit(url)._replace(path=f"/{name}").geturl()) as store:
            yield store
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def cases(
    root: Path,
    admin: psycopg.Connection[Any] | None,
    url: str,
    one: list[Batch],
    many: list[tuple[str, list[Batch]]],
) -> list[Case]:
    """Every case (PostgreSQL ones only with an admin connection)."""
    single = [("a-0", one)]
    threads = len(many)
    found = [
        Case(
            label=f"sqlite ingest, 1 thread, {sync}",
            open_store=functools.partial(sqlite_store, root, synchronous=sync),
            work=ingest_only,
            agents=single,
        )
        for sync in ("full", "normal")
    ] + [
        Case(
            label=f"sqlite ingest path, {threads} threads, full, readers={readers}",
            open_store=functools.partial(sqlite_store, root, readers=readers),
            work=ingest_path,
            agents=many,
        )
        for readers in (4, 0)
    ]
    if admin is not None:
        found += [
            Case(
                label="postgresql ingest (COPY), 1 thread",
                open_store=functools.partial(postgres_store, admin, url),
                work=ingest_only,
                agents=single,
            ),
            Case(
                label=f"postgresql ingest path (COPY), {threads} threads",
                open_store=functools.partial(postgres_store, admin, url),
                work=ingest_path,
                agents=many,
            ),
        ]
    return found


def main() -> None:
    """Run every case --repeat times, interleaved, and print the median and best events/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where the SQLite files go (default: temp)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    one = make_batches("a-0", args.events, args.batch)
    share = args.events // args.threads
    many = [(f"a-{i}", make_batches(f"a-{i}", share, args.batch)) for i in range(args.threads)]
    sizes = [len(event.payload.encode()) for *_, events in one for event in events]
    print(
        f"payload: {sum(sizes) / len(sizes):.0f} bytes on average, batches of {args.batch}, "
        f"{args.events:,} events per run, {args.repeat} runs per case (median / best)"
    )
    try:
        admin = psycopg.connect(args.postgres, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(f"postgresql: skipped ({' '.join(str(exc).split())})")
        admin = None
    root = Path(tempfile.mkdtemp(prefix="ww-store-bench-", dir=args.dir))
    try:
        todo = cases(root, admin, args.postgres, one, many)
        rates: dict[str, list[Rate]] = {case.label: [] for case in todo}
        for _ in range(args.repeat):
            for case in todo:
                rates[case.label].append(run(case))
        for case in todo:
            wall = sorted(rate.wall for rate in rates[case.label])
            cpu = sorted(rate.cpu for rate in rates[case.label])
            print(
                f"{case.label:<52}{statistics.median(wall):>9,.0f} / {wall[-1]:>7,.0f} events/s"
                f"   CPU-bound: {statistics.median(cpu):>9,.0f} / {cpu[-1]:>9,.0f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if admin is not None:
            admin.close()


if __name__ == "__main__":
    main()
