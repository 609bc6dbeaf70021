"""Shipper throughput: events/s from the spool to a collector that verifies every batch.

Cases (one run each, on a fresh spool in --dir holding --events events appended first):
  1. ``new_batch`` + ``seal_batch`` of --batch events alone: the agent's CPU share per
     batch (encoding and one ECDSA P-256 signature), as events/s.
  2. HTTP: a :class:`Shipper` with :class:`HttpTransport` draining the spool into a
     loopback sink in a child process (stdlib ``ThreadingHTTPServer``, keep-alive) that
     checks each body with ``read_envelope`` + ``open_batch`` (signature and parse) and
     answers 200 with ``acked_seq``; no storage, so this is the link's ceiling, not the
     collector's.
  3. NATS (when a nats-server with JetStream answers on --nats): the same spool drained
     into a fresh stream (deleted afterwards), one publish and PubAck per batch.

Each drain is timed from ``start()`` until the shipper has acknowledged the last event;
acknowledgement trims the spool (one SQLite transaction per batch), so that cost is in.

Usage:

    .venv/bin/python benchmarks/shipper.py [--events 200000] [--batch 1000] [--dir DIR]
        [--nats nats://127.0.0.1:4222]

Figures depend on the CPU and the disk; compare cases from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from agent.identity import load_or_create_identity
from agent.shipper import HttpTransport, NatsTransport, Shipper
from agent.spool import Spool, Synchronous
from weightwarden.batch import new_batch, open_batch, read_envelope, seal_batch
from weightwarden.crypto import PublicKey
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
    from multiprocessing.connection import Connection

    from agent.identity import AgentIdentity
    from agent.shipper import Transport

AGENT = "bench-agent"


def make_events(start: int, count: int) -> list[FileActivity]:
    """``count`` realistic file opens (~900 bytes of OCSF each)."""
    user = User(uid=1000, name="alice")
    device = Device(hostname="gpu-01", agent_id=AGENT)
    return [
        FileActivity(
            uid=f"bench-{i}",
            time=1_700_000_000_000 + i,
            device=device,
            activity=FileActivityType.OPEN,
            actor=Actor(
                process=Process(
                    pid=10_000 + i % 5000,
                    attribution=Attribution.FULL,
                    exe="/usr/bin/python3",
                    cmd_line="python3 train.py --resume /weights/run-7",
                    user=user,
                ),
                user=user,
            ),
            file=FileRef(path=f"/weights/run-7/model-{i % 64:05d}.safetensors", size=5 << 30),
            bytes_read=1 << 30,
            fraction_read=0.2,
        )
        for i in range(start, start + count)
    ]


def fill_spool(directory: Path, events: int) -> Spool:
    """A spool (synchronous=normal, to fill it fast) holding ``events`` events."""
    spool = Spool(directory, agent_id=AGENT, hostname="gpu-01", synchronous=Synchronous.NORMAL)
    for start in range(0, events, 5000):
        spool.append(make_events(start, min(5000, events - start)))
    return spool


class _Sink(ThreadingHTTPServer):
    daemon_threads = True
    key: PublicKey
    max_events: int


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Sink

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the base's name
        """Quiet."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        batch = open_batch(
            read_envelope(body),
            lambda agent: self.server.key if agent == AGENT else None,
            max_events=self.server.max_events,
        )
        data = json.dumps(
            {"acked_seq": batch.last_seq, "stored": len(batch.events), "duplicates": 0}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_sink(public_pem: bytes, max_events: int, ports: Connection) -> None:
    """The verifying sink, run in a child process (its own interpreter, its own GIL)."""
    sink = _Sink(("127.0.0.1", 0), _SinkHandler)
    sink.key = PublicKey(serialization.load_pem_public_key(public_pem))  # type: ignore[arg-type]
    sink.max_events = max_events
    ports.send(sink.server_address[1])
    sink.serve_forever()


def drain(spool: Spool, identity: AgentIdentity, transport: Transport, batch: int) -> float:
    """Seconds for a shipper to acknowledge everything in ``spool``."""
    head = spool.stats().head_seq
    shipper = Shipper(
        spool,
        agent_id=AGENT,
        identity=identity,
        transport=transport,
        batch_size=batch,
        poll_interval=0.005,
        device=Device(hostname="gpu-01", agent_id=AGENT),
    )
    started = time.perf_counter()
    shipper.start()
    while shipper.stats().acked_seq < head:
        if shipper.failure is not None or not shipper.running:
            raise SystemExit(f"shipper failed: {shipper.failure} ({shipper.stats()})")
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    shipper.stop()
    return elapsed


def seal_only(spool: Spool, identity: AgentIdentity, batch: int) -> float:
    """Events/s through ``new_batch`` + ``seal_batch`` alone."""
    events = spool.read_batch(after_seq=0, limit=batch)
    rounds = 50
    started = time.perf_counter()
    for _ in range(rounds):
        sealed = new_batch(AGENT, [(e.link, e.payload) for e in events], sent_at=0)
        seal_batch(sealed, identity.key)
    return rounds * len(events) / (time.perf_counter() - started)


def nats_case(args: argparse.Namespace, root: Path, identity: AgentIdentity) -> None:
    """Drain a fresh spool into a fresh JetStream stream, if a server answers."""
    host, _, port = args.nats.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=1).close()
    except OSError:
        print(f"  NATS: no server at {args.nats}, skipped")
        return
    import nats  # noqa: PLC0415 -- only when a server answers

    suffix = uuid.uuid4().hex[:10]
    name, prefix = f"WWBENCH_{suffix}", f"wwbench.{suffix}"

    async def admin(*, create: bool) -> None:
        client = await nats.connect(args.nats)
        try:
            js = client.jetstream()
            if create:
                await js.add_stream(name=name, subjects=[f"{prefix}.>"])
            else:
                await js.delete_stream(name)
        finally:
            await client.close()

    asyncio.run(admin(create=True))
    try:
        spool = fill_spool(root / "spool-nats", args.events)
        with spool:
            transport = NatsTransport(args.nats, stream=name, subject_prefix=prefix)
            seconds = drain(spool, identity, transport, args.batch)
        print(f"  NATS JetStream: {args.events / seconds:>10,.0f} events/s ({seconds:.2f} s)")
    finally:
        asyncio.run(admin(create=False))


def main() -> None:
    """Run the cases and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ww-bench-shipper-", dir=args.dir))
    try:
        identity = load_or_create_identity(root / "state")
        print(f"shipper: {args.events:,} events, batches of {args.batch}")
        with fill_spool(root / "spool-http", args.events) as spool:
            print(f"  seal only:      {seal_only(spool, identity, args.batch):>10,.0f} events/s")
            receive, send = multiprocessing.Pipe(duplex=False)
            child = multiprocessing.get_context("spawn").Process(
                target=serve_sink, args=(identity.public.pem, args.batch, send), daemon=True
            )
            child.start()
            try:
                url = f"http://127.0.0.1:{receive.recv()}"
                seconds = drain(spool, identity, HttpTransport(url), args.batch)
            finally:
                child.terminate()
                child.join()
            print(f"  HTTP loopback:  {args.events / seconds:>10,.0f} events/s ({seconds:.2f} s)")
        nats_case(args, root, identity)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
