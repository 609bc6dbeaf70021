"""Spool throughput: events/s appended in batches, against the cost of encoding them.

Cases (one run each, on a fresh spool in --dir):
  1. ``canonical_bytes`` + ``next_link`` alone for N events: the kernel's share, paid
     whatever the storage.
  2. ``Spool.append`` of N events in batches of --batch, synchronous=full (the default)
     and synchronous=normal: the whole write path, one transaction per batch.
  3. ``Spool.append`` one event at a time, synchronous=full, for --single events: why
     every producer must batch (DESIGN.md decision 5).
  4. ``Spool.read_batch`` of the N events, 1,000 at a time (what the shipper does), and
     ``ack`` of all of them.

Usage:

    .venv/bin/python benchmarks/spool.py [--events 100000] [--batch 1000] [--dir DIR]

Figures depend on the disk (fsync latency) and the CPU; compare cases from one run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from agent.spool import Spool
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

AGENT = "bench-agent"


def make_events(count: int) -> list[FileActivity]:
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
            file=FileRef(
                path=f"/weights/run-7/model-{i % 64:05d}-of-00064.safetensors", size=1 << 32
            ),
            bytes_read=1 << 30,
            mmap_bytes=0,
            fraction_read=0.25,
            sensor="fanotify",
        )
        for i in range(count)
    ]


def rate(count: int, seconds: float) -> str:
    """Events per second, with the time and count behind it."""
    return f"{count / seconds:>12,.0f} events/s  ({seconds:.2f} s for {count:,})"


def bench_encode(events: list[FileActivity]) -> None:
    """Case 1: what encoding and chaining cost before any storage."""
    start = time.perf_counter()
    head = None
    for event in events:
        head = next_link(head, AGENT, canonical_bytes(event))
    print(f"encode + link only              {rate(len(events), time.perf_counter() - start)}")


def bench_append(root: Path, events: list[FileActivity], batch: int, synchronous: str) -> Path:
    """Cases 2 and 3: append ``events`` in batches of ``batch``; return the spool's folder."""
    directory = root / f"spool-{synchronous}-{batch}"
    with Spool(directory, agent_id=AGENT, hostname="gpu-01", synchronous=synchronous) as spool:
        start = time.perf_counter()
        for offset in range(0, len(events), batch):
            spool.append(events[offset : offset + batch])
        elapsed = time.perf_counter() - start
        size = spool.stats().bytes
    label = f"append, batch {batch}, {synchronous}"
    print(f"{label:<32}{rate(len(events), elapsed)}  {size / len(events):.0f} B/event")
    return directory


def bench_read_and_ack(directory: Path, count: int) -> None:
    """Case 4: read everything back as the shipper would, then trim it."""
    with Spool(directory, agent_id=AGENT, hostname="gpu-01") as spool:
        start = time.perf_counter()
        after, read = 0, 0
        while batch := spool.read_batch(after, 1000):
            read += len(batch)
            after = batch[-1].seq
        print(f"{'read_batch, 1000 at a time':<32}{rate(read, time.perf_counter() - start)}")
        start = time.perf_counter()
        spool.ack(after)
        print(f"{'ack (trim) all':<32}{rate(count, time.perf_counter() - start)}")


def main() -> None:
    """Run every case once and print events/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--single", type=int, default=300, help="events appended one at a time")
    parser.add_argument("--dir", type=Path, help="where the spools go (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ww-spool-bench-", dir=args.dir))
    try:
        events = make_events(args.events)
        bench_encode(events)
        full = bench_append(root, events, args.batch, "full")
        bench_append(root, events, args.batch, "normal")
        bench_append(root, events[: args.single], 1, "full")
        bench_read_and_ack(full, len(events))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
