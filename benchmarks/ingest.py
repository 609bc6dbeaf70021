"""Collector ingest end to end: events/s over loopback HTTP, and open-to-stored latency.

For each store (SQLite, then PostgreSQL), on a fresh database:

1. **Throughput.** ``weightwarden collector serve --db TARGET`` runs as a subprocess with
   its defaults (SQLite ``synchronous=full``; one transaction per batch); --collectors > 1
   starts several on the one database, each agent sending to one of them. --clients
   client processes, each owning some of --agents agents, send pre-built signed batches
   of --batch realistic file-open events (~1.2 KB of canonical OCSF each; every agent has
   its own identity key and hash chain, and sends its batches in order) with keep-alive:
   one connection and one request in flight per agent (``--connection client``: one per
   client process, its agents taking turns). Building and signing is done before the
   clock starts; the figure is all events over the time from the first request to the
   last answer. Every answer must be 200, and afterwards the store must hold exactly the
   events sent (a WARNING line says otherwise). --workers N runs each collector as N
   worker processes on one listening socket (``collector serve --workers N``). Printed
   beside it: the collectors' own CPU time, workers included (from ``/proc``: events per
   CPU-second is what one core would sustain), the client processes' and PostgreSQL's, and
   how busy the whole machine was during the load (the rest is the kernel's and other
   people's work on a shared machine).
2. **Latency under that load.** A real agent (``weightwarden agent run --collector URL
   --enroll-token TOKEN``; fanotify, so it needs root) watches a folder of small files.
   While the load runs, a separate process opens one of them (reads 64 bytes, closes)
   every --open-interval seconds and notes the wall-clock time of each open. Afterwards
   each open is matched, by path, with the ``received_at`` the collector stored for the
   agent's open event, and p50 / p95 / max are printed. The event's ``time`` (when the
   agent saw the open) splits the latency into the agent's part (sensor and pipeline)
   and shipping (spool, shipper, HTTP, ingest up to the start of the store transaction).

Usage (as root for the latency part; without root it is skipped)::

    .venv/bin/python benchmarks/ingest.py [--events 300000] [--agents 4] [--clients 2]
        [--batch 1000] [--connection agent|client] [--collectors 1] [--workers 1]
        [--stores sqlite,postgresql] [--open-interval 0.05] [--no-latency]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--dir DIR] [--keep]

PostgreSQL runs in a throwaway database (``ww_bench_<random>``) created and dropped through
--postgres. The machine's load average is printed at the start and the end: on a shared
machine other work competes for the same cores, so compare cases from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from collector.store import open_store
from weightwarden.batch import CONTENT_TYPE, new_batch, seal_batch
from weightwarden.crypto import next_link
from weightwarden.crypto.keys import generate_key
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    SessionPhase,
    User,
    canonical_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.connection import Connection

WEIGHTWARDEN = str(Path(sys.executable).with_name("weightwarden"))
LATENCY_AGENT = "latency-agent"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def realistic_event(agent_id: str, i: int) -> FileActivity:
    """A training job's read of a checkpoint shard, attributed and sized (~1 KB of OCSF)."""
    user = User(uid=1000 + i % 7, name=f"researcher{i % 7}")
    return FileActivity(
        uid=secrets.token_hex(16),
        time=1_700_000_000_000 + i,
        device=Device(hostname=agent_id, agent_id=agent_id),
        activity=FileActivityType.OPEN,
        actor=Actor(
            process=Process(
                pid=10_000 + i % 5000,
                attribution=Attribution.FULL,
                exe="/opt/conda/envs/train/bin/python3.11",
                cmd_line=(
                    "python3 -m torch.distributed.run --nproc-per-node 8 train.py "
                    f"--config configs/llm-70b.yaml --resume /weights/run-{i % 9}/step-{i % 97}"
                ),
                user=user,
            ),
            user=user,
        ),
        file=FileRef(
            path=f"/weights/run-{i % 9}/step-{i % 97}/model-{i % 64:05d}-of-00064.safetensors",
            size=5 << 30,
        ),
        bytes_read=1 << 30,
        fraction_read=0.2,
        session_uid=secrets.token_hex(8),
        session_phase=SessionPhase.OPEN,
        sensor="fanotify",
    )


@dataclass(slots=True)
class AgentData:
    """One agent's key and its signed batches, in chain order."""

    agent_id: str
    public_pem: str
    bodies: list[bytes]
    events: int
    payload_bytes: int


def build_agent(agent_id: str, count: int, batch: int) -> AgentData:
    """``count`` chained events of one agent, sealed as batches of ``batch``."""
    key = generate_key()
    head = None
    bodies: list[bytes] = []
    payload_bytes = 0
    sent_at = 1_700_000_000_000
    for start in range(0, count, batch):
        items = []
        for i in range(start, min(start + batch, count)):
            payload = canonical_bytes(realistic_event(agent_id, i))
            payload_bytes += len(payload)
            head = next_link(head, agent_id, payload)
            items.append((head, payload))
        sent_at += 1
        bodies.append(seal_batch(new_batch(agent_id, items, sent_at=sent_at), key))
    return AgentData(
        agent_id=agent_id,
        public_pem=key.public.pem.decode(),
        bodies=bodies,
        events=count,
        payload_bytes=payload_bytes,
    )


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


def client_main(
    connection: Connection, agents: list[tuple[str, int]], batch: int, *, per_agent: bool
) -> None:
    """A client process: build its agents' batches, then send them whenever told to.

    With ``per_agent`` each agent sends on its own keep-alive connection from its own
    thread (agents in parallel, one request in flight each); otherwise the client's agents
    take turns on one connection. Either way an agent's batches go in chain order.

    Messages from the parent: ``("run", ports)`` sends everything once (agent ``bench-N``
    to ``ports[N % len(ports)]``; with one connection per client, all to the port of its
    first agent) and answers with ``(start, end, events, statuses)`` (``time.monotonic``,
    system-wide); ``("quit",)``.
    """
    data = [build_agent(agent_id, count, batch) for agent_id, count in agents]
    connection.send(
        [(d.agent_id, d.public_pem, len(d.bodies), d.events, d.payload_bytes) for d in data]
    )
    streams: list[list[tuple[bytes, int]]] = [
        [(body, min(batch, d.events - i * batch)) for i, body in enumerate(d.bodies)] for d in data
    ]
    numbers = [int(agent_id.rsplit("-", 1)[1]) for agent_id, _ in agents]
    if not per_agent:  # round-robin over the client's agents on one connection
        turns = [s[i] for i in range(max(map(len, streams))) for s in streams if i < len(s)]
        streams, numbers = [turns], numbers[:1]
    while True:
        message = connection.recv()
        if message[0] == "quit":
            return
        ports = message[1]
        results: list[tuple[float, float, int, dict[int, int]]] = []
        threads = [
            threading.Thread(target=send_into, args=(results, ports[number % len(ports)], stream))
            for number, stream in zip(numbers, streams, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses: dict[int, int] = {}
        for *_, counts in results:
            for status, n in counts.items():
                statuses[status] = statuses.get(status, 0) + n
        connection.send(
            (
                min(r[0] for r in results),
                max(r[1] for r in results),
                sum(r[2] for r in results),
                statuses,
            )
        )


def send_into(
    results: list[tuple[float, float, int, dict[int, int]]],
    port: int,
    order: list[tuple[bytes, int]],
) -> None:
    """:func:`send_all`, its result appended to ``results`` (a thread's target)."""
    results.append(send_all(port, order))


def send_all(port: int, order: list[tuple[bytes, int]]) -> tuple[float, float, int, dict[int, int]]:
    """POST every body in turn on one keep-alive connection; resend after 429 or 503."""
    statuses: dict[int, int] = {}
    sent = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": CONTENT_TYPE}
    start = time.monotonic()
    for body, events in order:
        while True:
            conn.request("POST", "/v1/batches", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.will_close:
                conn.close()
            if response.status in {429, 503}:
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            break
        if response.status == 200:
            sent += events
    end = time.monotonic()
    conn.close()
    return start, end, sent, statuses


@dataclass
class Clients:
    """The client processes and what they built."""

    procs: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    pipes: list[Connection] = field(default_factory=list)
    agents: list[tuple[str, str, int, int, int]] = field(default_factory=list)

    def run(self, ports: list[int]) -> tuple[float, int, dict[int, int]]:
        """Every client sends everything once; (seconds, events stored, statuses)."""
        for pipe in self.pipes:
            pipe.send(("run", ports))
        results = [pipe.recv() for pipe in self.pipes]
        start = min(r[0] for r in results)
        end = max(r[1] for r in results)
        statuses: dict[int, int] = {}
        for *_, counts in results:
            for status, n in counts.items():
                statuses[status] = statuses.get(status, 0) + n
        return end - start, sum(r[2] for r in results), statuses

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the client processes so far."""
        return sum(process_cpu(proc.pid) for proc in self.procs if proc.pid is not None)

    def close(self) -> None:
        """Tell every client to quit and wait for it."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("quit",))
        for proc in self.procs:
            proc.join(timeout=30)


def start_clients(total: int, agents: int, clients: int, batch: int, *, per_agent: bool) -> Clients:
    """Start the client processes; they build their data in parallel."""
    each = total // agents
    context = multiprocessing.get_context("fork")
    found = Clients()
    for c in range(clients):
        mine = [(f"bench-{a:02d}", each) for a in range(agents) if a % clients == c]
        ours, theirs = context.Pipe()
        proc = context.Process(
            target=client_main,
            args=(theirs, mine, batch),
            kwargs={"per_agent": per_agent},
            daemon=True,
        )
        proc.start()
        found.procs.append(proc)
        found.pipes.append(ours)
    for pipe in found.pipes:
        found.agents += pipe.recv()
    return found


# ---------------------------------------------------------------------------------------
# The collector
# ---------------------------------------------------------------------------------------


class Collector:
    """``weightwarden collector serve --db TARGET`` on a free loopback port."""

    def __init__(self, target: str, directory: Path, *, workers: int = 1) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "serve.log"
        env = {k: v for k, v in os.environ.items() if k != "WEIGHTWARDEN_COLLECTOR_DIR"}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    WEIGHTWARDEN,
                    "--log-format",
                    "json",
                    "collector",
                    "serve",
                    "--dir",
                    str(directory),
                    "--db",
                    target,
                    "--listen",
                    "127.0.0.1:0",
                    "--workers",
                    str(workers),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        self.url = self._wait_listening()
        self.port = int(self.url.rsplit(":", 1)[1])

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"collector exited: {self.log_path.read_text()[-2000:]}")
            for line in self.log_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == "collector listening":
                        return str(record["url"])
            time.sleep(0.05)
        raise SystemExit("the collector did not start listening within 60 s")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the collector process and its workers so far."""
        return process_cpu(self.proc.pid) + sum(process_cpu(pid) for pid in children(self.proc.pid))

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------
# The latency probe: a real agent and a file opened every few tens of milliseconds
# ---------------------------------------------------------------------------------------


OPENER = """
import os, signal, sys, time
folder, interval, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
i, next_at = 0, time.monotonic()
with open(out, "a", buffering=1) as log:
    while True:
        path = os.path.join(folder, f"shard-{i % 4000:05d}.bin")
        opened_ms = time.time_ns() // 1_000_000
        with open(path, "rb") as f:
            f.read(64)
        log.write(f"{path} {opened_ms}\\n")
        i += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
"""
"""Opens one file of FOLDER every INTERVAL seconds and appends ``PATH OPENED_MS`` to OUT,
until SIGTERM. A process of its own with no pipe to anyone: the agent watches the network
endpoints of whoever reads weights, of its descendants and of its pipe peers, so the reader
must not be related to the collector or the clients."""


class LatencyProbe:
    """A real agent watching a folder, and a process that opens its files at an interval."""

    def __init__(self, root: Path, collector: Collector, target: str, interval: float) -> None:
        self.root = root
        self.interval = interval
        self.opens: list[tuple[str, int]] = []
        self.record = root / "opens.txt"
        self._opener: subprocess.Popen[bytes] | None = None
        self.target = target
        watch = root / "weights"
        self.files = watch / "ckpt"
        self.files.mkdir(parents=True)
        for i in range(4000):
            (self.files / f"shard-{i:05d}.bin").write_bytes(b"w" * 256)
        token = subprocess.run(
            [WEIGHTWARDEN, "collector", "enroll", "--db", target, "--host", LATENCY_AGENT],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        config = root / "agent.toml"
        config.write_text(
            f"""
[agent]
weight_roots = ["{watch}"]
state_dir = "{root / "state"}"
agent_id = "{LATENCY_AGENT}"
copy_watch = []
progress_interval = "1h"
gpu_poll = "1h"
"""
        )
        self.log = (root / "agent.log").open("wb")
        self.proc = subprocess.Popen(
            [
                WEIGHTWARDEN,
                "--log-format",
                "json",
                "agent",
                "run",
                "--config",
                str(config),
                "--collector",
                collector.url,
                "--enroll-token",
                token,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self._wait_started()

    def _wait_started(self) -> None:
        """Until the agent's start-up event is in the collector's store."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = (self.root / "agent.log").read_text()[-3000:]
                raise SystemExit(f"the agent exited ({self.proc.returncode}): {tail}")
            with contextlib.closing(open_store(self.target)) as store:
                record = store.agent(LATENCY_AGENT)
                if record is not None and record.head_seq > 0:
                    return
            time.sleep(0.2)
        raise SystemExit("the agent's first events did not reach the collector within 90 s")

    def start(self) -> None:
        """Start the opener process (see :data:`OPENER`); return after its first open."""
        self._opener = subprocess.Popen(
            [sys.executable, "-c", OPENER, str(self.files), str(self.interval), str(self.record)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not (self.record.exists() and self.record.stat().st_size):
            if time.monotonic() > deadline:
                raise SystemExit("the opener process did not open a file within 30 s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop opening files; read what was opened when."""
        opener, self._opener = self._opener, None
        if opener is None:
            return
        opener.send_signal(signal.SIGTERM)
        opener.wait(timeout=30)
        for line in self.record.read_text().splitlines():
            path, _, opened = line.rpartition(" ")
            self.opens.append((path, int(opened)))

    def collect(self, timeout: float = 60.0) -> list[tuple[int, int, int]]:
        """(open ms, agent event time, stored received_at) of every open, once all arrived.

        Waits up to ``timeout`` seconds for the agent to ship the last opens; opens never
        seen are left out (and counted by the caller).
        """
        wanted = dict(self.opens)  # paths are unique: fewer than 4000 opens
        found: dict[str, tuple[int, int]] = {}
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.closing(open_store(self.target)) as store:
                for event in store.chain(LATENCY_AGENT):
                    obj = json.loads(event.payload)
                    path = obj.get("file", {}).get("path")
                    if path in wanted and obj.get("activity_id") == FileActivityType.OPEN:
                        found.setdefault(path, (event.time, event.received_at))
            if len(found) == len(wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return [
            (opened, found[path][0], found[path][1])
            for path, opened in wanted.items()
            if path in found
        ]

    def close(self) -> None:
        """SIGTERM the agent and wait."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process so far (with its reaped children: none)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the collector's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


def postgres_cpu() -> float:
    """User + system CPU seconds of every ``postgres`` process on this machine so far."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                total += process_cpu(int(entry.name))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    idle = fields[3] + fields[4]
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def percentile(values: list[int], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(share * len(ordered)) - 1)])


# ---------------------------------------------------------------------------------------
# Stores
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_target(root: Path) -> Iterator[str]:
    """A new SQLite file's path."""
    yield str(root / f"ingest-{secrets.token_hex(4)}.sqlite")


@contextlib.contextmanager
def postgres_target(url: str) -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards."""
    import psycopg  # noqa: PLC0415 -- only when PostgreSQL is measured

    name = f"ww_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def stored_by_agent(target: str, agents: list[str]) -> int:
    """The sum of the bench agents' stored heads."""
    with contextlib.closing(open_store(target)) as store:
        total = 0
        for agent_id in agents:
            record = store.agent(agent_id)
            total += record.head_seq if record is not None else 0
        return total


def run_case(
    label: str, target: str, root: Path, clients: Clients, args: argparse.Namespace
) -> None:
    """Register the agents, serve, load it (with the latency probe), print the figures."""
    with contextlib.closing(open_store(target)) as store:
        for agent_id, pem, *_ in clients.agents:
            store.register_agent(agent_id=agent_id, public_key_pem=pem, now=1)
    collectors: list[Collector] = []
    probe: LatencyProbe | None = None
    try:
        collectors.extend(
            Collector(target, root / f"collector-{label}-{n}", workers=args.workers)
            for n in range(args.collectors)
        )
        if args.latency:
            probe = LatencyProbe(root / f"agent-{label}", collectors[0], target, args.open_interval)
            probe.start()
        cpu_before, machine_before = sum(c.cpu_seconds() for c in collectors), machine_cpu()
        clients_before, db_before = clients.cpu_seconds(), postgres_cpu()
        seconds, events, statuses = clients.run([c.port for c in collectors])
        cpu = sum(c.cpu_seconds() for c in collectors) - cpu_before
        clients_cpu, db_cpu = clients.cpu_seconds() - clients_before, postgres_cpu() - db_before
        machine = machine_cpu()
        busy = (machine[0] - machine_before[0]) / (machine[1] - machine_before[1])
        if probe is not None:
            probe.stop()
        expected = sum(agent[3] for agent in clients.agents)
        stored = stored_by_agent(target, [agent[0] for agent in clients.agents])
        print(
            f"{label:<11} {events:>9,} events in {seconds:6.2f} s = {events / seconds:>9,.0f} "
            f"events/s   {len(collectors)} collector(s), CPU {cpu:5.1f} s "
            f"({events / cpu:,.0f} events per CPU-second), {args.workers} worker(s) each"
            f"   answers {dict(sorted(statuses.items()))}"
        )
        print(
            f"{'':<11} machine CPU busy {busy:.0%} of {os.cpu_count()} cores during the load "
            f"(collectors {cpu / seconds:.0%} of one core, client processes "
            f"{clients_cpu / seconds:.0%}, postgres processes {db_cpu / seconds:.0%}; the rest "
            "is the kernel's and other work's)"
        )
        if stored != expected or set(statuses) != {200}:
            print(f"{'':<11} WARNING: stored {stored:,} of {expected:,} events")
        if probe is not None:
            samples = probe.collect()
            missing = len(probe.opens) - len(samples)
            total = [received - opened for opened, _, received in samples]
            agent_part = [seen - opened for opened, seen, _ in samples]
            shipping = [received - seen for _, seen, received in samples]
            if total:
                print(
                    f"{'':<11} open -> stored, {len(total)} opens every "
                    f"{args.open_interval * 1000:.0f} ms ({missing} not found): "
                    f"p50 {percentile(total, 0.5):.0f} ms, p95 {percentile(total, 0.95):.0f} ms, "
                    f"max {max(total)} ms"
                )
                print(
                    f"{'':<11}   of which agent (open -> event time) p50 "
                    f"{percentile(agent_part, 0.5):.0f} / p95 {percentile(agent_part, 0.95):.0f} "
                    f"ms; shipping (event time -> received_at) p50 "
                    f"{percentile(shipping, 0.5):.0f} / p95 {percentile(shipping, 0.95):.0f} ms; "
                    f"mean {statistics.fmean(total):.0f} ms"
                )
            else:
                print(f"{'':<11} open -> stored: no open was found in the store")
    finally:
        if probe is not None:
            probe.stop()
            probe.close()
        for collector in collectors:
            collector.stop()


def main() -> None:
    """Build the data once, then measure each store in turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="events per store")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--connection",
        choices=("agent", "client"),
        default="agent",
        help="one keep-alive connection per agent (default) or per client process",
    )
    parser.add_argument(
        "--collectors",
        type=int,
        default=1,
        help="collector serve processes on the one database (each agent sends to one of them)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of each collector (collector serve --workers)",
    )
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--open-interval", type=float, default=0.05)
    parser.add_argument("--no-latency", dest="latency", action="store_false")
    parser.add_argument("--dir", type=Path, help="where SQLite files and logs go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the files and logs afterwards")
    args = parser.parse_args()
    if args.latency and os.geteuid() != 0:
        print("latency: skipped (the agent's fanotify sensor needs root)")
        args.latency = False
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    built = time.monotonic()
    clients = start_clients(
        args.events, args.agents, args.clients, args.batch, per_agent=args.connection == "agent"
    )
    payload = sum(a[4] for a in clients.agents)
    events = sum(a[3] for a in clients.agents)
    print(
        f"{events:,} events ({payload / events:.0f} bytes of OCSF each on average) from "
        f"{len(clients.agents)} agents in batches of {args.batch}, {args.clients} client "
        f"process(es), one keep-alive connection per {args.connection}; built and signed in "
        f"{time.monotonic() - built:.1f} s"
    )
    root = Path(tempfile.mkdtemp(prefix="ww-ingest-bench-", dir=args.dir))
    try:
        for name in [s.strip() for s in args.stores.split(",") if s.strip()]:
            if name == "sqlite":
                target_cm: contextlib.AbstractContextManager[str] = sqlite_target(root)
            elif name in {"postgresql", "postgres"}:
                target_cm = postgres_target(args.postgres)
            else:
                raise SystemExit(f"unknown store {name!r}: sqlite or postgresql")
            try:
                with target_cm as target:
                    run_case(name, target, root, clients, args)
            except Exception as exc:  # noqa: BLE001 -- report the case, go on with the next
                print(f"{name:<11} failed: {type(exc).__name__}: {' '.join(str(exc).split())}")
    finally:
        clients.close()
        if args.keep:
            print(f"files and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
