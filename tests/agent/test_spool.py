"""The durable spool: batches, the chain, trims, bounds, crashes and concurrent readers."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import agent.spool
from agent.spool import (
    DB_NAME,
    ROW_OVERHEAD,
    SPOOL_DROP_ANALYTIC,
    DropLedger,
    FullPolicy,
    Spool,
    SpooledEvent,
    SpoolReader,
    drop_report,
)
from weightwarden.crypto import GENESIS, verify_chain
from weightwarden.errors import ConfigError, UsageError, WeightwardenError
from weightwarden.events import (
    Actor,
    Attribution,
    DetectionFinding,
    Device,
    Endpoint,
    FileActivity,
    FileActivityType,
    FileRef,
    NetworkActivity,
    NetworkActivityType,
    Process,
    User,
    canonical_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from weightwarden.crypto import ChainLink

REPO = Path(__file__).resolve().parents[2]
AGENT = "agent-1"
HOST = "gpu-01"
T0 = 1_700_000_000_000


def file_event(i: int, *, path: str | None = None) -> FileActivity:
    """A file open by a known process, numbered ``i``."""
    user = User(uid=1000, name="alice")
    return FileActivity(
        uid=f"file-{i}",
        time=T0 + i,
        device=Device(hostname=HOST, agent_id=AGENT),
        activity=FileActivityType.OPEN,
        actor=Actor(
            process=Process(
                pid=4000 + i,
                attribution=Attribution.FULL,
                exe="/usr/bin/cat",
                cmd_line="cat model.safetensors",
                user=user,
            ),
            user=user,
        ),
        file=FileRef(path=path or f"/weights/run-{i}/model.safetensors", size=1 << 20),
        bytes_read=1 << 19,
        fraction_read=0.5,
    )


def network_event(i: int) -> NetworkActivity:
    """An outbound connection, numbered ``i``."""
    return NetworkActivity(
        uid=f"net-{i}",
        time=T0 + i,
        device=Device(hostname=HOST, agent_id=AGENT),
        activity=NetworkActivityType.OPEN,
        actor=Actor(),
        src_endpoint=Endpoint(ip="10.0.0.2", port=40000 + i),
        dst_endpoint=Endpoint(ip="203.0.113.9", port=443),
    )


def chain_ok(spooled: Sequence[SpooledEvent], after: ChainLink | None = None) -> bool:
    return verify_chain([(s.link, s.payload) for s in spooled], after=after).ok


def read_all(source: Spool | SpoolReader) -> list[SpooledEvent]:
    out: list[SpooledEvent] = []
    after = 0
    while batch := source.read_batch(after, 500):
        out.extend(batch)
        after = batch[-1].seq
    return out


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        """The time the test set."""
        return self.now


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as opened:
        yield opened


# ---------------------------------------------------------------------------------------
# Appending, reading, acknowledging
# ---------------------------------------------------------------------------------------


def test_public_api_is_pinned() -> None:
    """The package exports exactly its documented names."""
    assert sorted(agent.spool.__all__) == sorted(
        [
            "DB_NAME",
            "DEFAULT_MAX_BYTES",
            "DEFAULT_MAX_EVENTS",
            "ROW_OVERHEAD",
            "SPOOL_DROP_ANALYTIC",
            "DropLedger",
            "FullPolicy",
            "Spool",
            "SpoolReader",
            "SpoolStats",
            "SpooledEvent",
            "Synchronous",
            "drop_report",
            "wall_clock_ms",
        ]
    )


def test_append_numbers_a_batch_from_one_and_chains_it_from_genesis(spool: Spool) -> None:
    """A batch gets seq 1..n, each link over the event's canonical bytes, starting at GENESIS."""
    events = [file_event(i) for i in range(5)]
    stored = spool.append(events)
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    assert [s.payload for s in stored] == [canonical_bytes(e) for e in events]
    assert [s.event for s in stored] == events
    assert stored[0].link.prev_hash == GENESIS
    assert all(s.link.agent_id == AGENT for s in stored)
    assert chain_ok(stored)
    assert spool.head == stored[-1].link


def test_read_batch_returns_held_events_in_seq_order_after_the_given_seq(spool: Spool) -> None:
    """read_batch pages through the spool in seq order, limit at a time."""
    spool.append([file_event(i) for i in range(10)])
    spool.append([network_event(i) for i in range(10, 15)])
    assert [s.seq for s in spool.read_batch(0, 4)] == [1, 2, 3, 4]
    assert [s.seq for s in spool.read_batch(4, 100)] == list(range(5, 16))
    assert spool.read_batch(15, 10) == []
    everything = read_all(spool)
    assert isinstance(everything[-1].event, NetworkActivity)
    assert chain_ok(everything)


def test_stats_count_held_events_bytes_and_seq_range(spool: Spool) -> None:
    """stats() reports count, bytes (payload plus per-row overhead), seq range and acked seq."""
    events = [file_event(i) for i in range(3)]
    spool.append(events)
    stats = spool.stats()
    assert (stats.count, stats.oldest_seq, stats.newest_seq, stats.head_seq) == (3, 1, 3, 3)
    assert stats.bytes == sum(len(canonical_bytes(e)) + ROW_OVERHEAD for e in events)
    assert stats.acked_seq == 0
    assert stats.dropped_total == 0
    assert SpoolReader(spool.directory).stats() == stats


def test_ack_trims_only_confirmed_events_and_the_chain_continues_from_the_anchor(
    spool: Spool,
) -> None:
    """After ack(n) only seq > n are held; the anchor lets the rest verify as a continuation."""
    first = spool.append([file_event(i) for i in range(10)])
    assert spool.ack(6) == 6
    assert spool.ack(6) == 0  # acknowledging again changes nothing
    assert spool.ack(3) == 0
    held = read_all(spool)
    assert [s.seq for s in held] == [7, 8, 9, 10]
    anchor = spool.anchor()
    assert anchor == first[5].link
    later = spool.append([file_event(i) for i in range(10, 13)])
    assert [s.seq for s in later] == [11, 12, 13]
    assert chain_ok(read_all(spool), after=anchor)
    stats = spool.stats()
    assert (stats.count, stats.oldest_seq, stats.acked_seq, stats.head_seq) == (7, 7, 6, 13)


def test_ack_beyond_the_newest_seq_is_refused(spool: Spool) -> None:
    """No collector can have confirmed an event that was never appended."""
    spool.append([file_event(0)])
    with pytest.raises(ValueError, match="newest is 1"):
        spool.ack(2)


def test_reopening_continues_the_chain_without_gap_or_fork(spool_dir: Path) -> None:
    """The head comes back from the database: seq and prev_hash carry on after a restart."""
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        spool.append([file_event(i) for i in range(4)])
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        assert spool.head is not None
        assert spool.head.seq == 4
        spool.append([file_event(i) for i in range(4, 6)])
        everything = read_all(spool)
    assert [s.seq for s in everything] == [1, 2, 3, 4, 5, 6]
    assert chain_ok(everything)


def test_synchronous_normal_is_accepted_and_durable_across_a_clean_close(spool_dir: Path) -> None:
    """synchronous=normal trades power-loss durability for speed; a clean close keeps all."""
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST, synchronous="normal") as spool:
        spool.append([file_event(i) for i in range(3)])
    with SpoolReader(spool_dir) as reader:
        assert [s.seq for s in read_all(reader)] == [1, 2, 3]


def test_a_spool_trimmed_empty_continues_from_its_anchor_after_reopening(spool_dir: Path) -> None:
    """With every event acknowledged, the kept anchor still fixes the next seq and prev_hash."""
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        stored = spool.append([file_event(i) for i in range(3)])
        spool.ack(3)
        assert spool.stats().count == 0
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        assert spool.head == stored[-1].link
        (next_event,) = spool.append([file_event(3)])
        assert next_event.seq == 4
        assert next_event.link.prev_hash == stored[-1].link.link_hash
        assert chain_ok([next_event], after=spool.anchor())


# ---------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------


def health_findings(spooled: Sequence[SpooledEvent]) -> list[DetectionFinding]:
    return [
        s.event
        for s in spooled
        if isinstance(s.event, DetectionFinding) and s.event.analytic.uid == SPOOL_DROP_ANALYTIC
    ]


def dropped_counts(finding: DetectionFinding) -> dict[str, int]:
    assert finding.explanation is not None
    return {c.feature: int(c.actual) for c in finding.explanation.contributions}


def test_a_full_spool_refuses_counts_per_class_and_reports_the_loss_once_there_is_room(
    spool_dir: Path,
) -> None:
    """drop_new: the prefix that fits is stored, the rest counted, then chained as a report."""
    clock = Clock()
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST, max_events=5, clock=clock) as spool:
        stored = spool.append([file_event(i) for i in range(4)])
        assert len(stored) == 4
        clock.now = T0 + 1_000
        stored = spool.append([file_event(4), file_event(5), network_event(6)])
        assert [s.seq for s in stored] == [5]
        clock.now = T0 + 2_000
        assert spool.append([network_event(7)]) == []
        stats = spool.stats()
        assert dict(stats.dropped) == {"FileActivity": 1, "NetworkActivity": 2}
        assert (stats.unreported_drops, stats.reported_drops, stats.count) == (3, 0, 5)

        clock.now = T0 + 3_000
        spool.ack(2)  # room again: the report goes in with the trim
        held = read_all(spool)
        assert [s.seq for s in held] == [3, 4, 5, 6]
        (report,) = health_findings(held)
        assert held[-1].event == report
        assert dropped_counts(report) == {
            "dropped.FileActivity": 1,
            "dropped.NetworkActivity": 2,
            "dropped.total": 3,
        }
        assert report.time == T0 + 3_000
        assert report.device == Device(hostname=HOST, agent_id=AGENT)
        assert report.description is not None
        assert "2023-11-14T22:13:21.000Z and 2023-11-14T22:13:22.000Z" in report.description
        stats = spool.stats()
        assert (stats.unreported_drops, stats.reported_drops, stats.dropped_total) == (0, 3, 3)

        (after,) = spool.append([file_event(8)])
        assert after.seq == 7
        assert chain_ok(read_all(spool), after=spool.anchor())


def test_max_bytes_bounds_the_spool_like_max_events(spool_dir: Path) -> None:
    """An event that would take the held bytes past max_bytes is refused and counted."""
    size = len(canonical_bytes(file_event(0))) + ROW_OVERHEAD
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST, max_bytes=size * 2 + size // 2) as spool:
        stored = spool.append([file_event(i) for i in range(5)])
        assert [s.seq for s in stored] == [1, 2]
        assert spool.stats().bytes <= spool.max_bytes
        assert dict(spool.stats().dropped) == {"FileActivity": 3}


def test_refusals_survive_a_restart_and_are_reported_first_after_it(spool_dir: Path) -> None:
    """The drop counters are persistent: a restart with more room reports them before new events."""
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST, max_events=2) as spool:
        spool.append([file_event(i) for i in range(6)])
        assert spool.stats().unreported_drops == 4
    assert SpoolReader(spool_dir).stats().unreported_drops == 4
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST, max_events=100) as spool:
        (stored,) = spool.append([file_event(6)])
        held = read_all(spool)
    assert [s.seq for s in held] == [1, 2, 3, 4]
    assert stored.seq == 4
    (report,) = health_findings(held)
    assert held[2].event == report
    assert dropped_counts(report)["dropped.total"] == 4
    assert chain_ok(held)


def test_block_policy_stores_the_batch_once_an_ack_makes_room(spool_dir: Path) -> None:
    """block: append waits for the shipper's ack instead of refusing."""
    with Spool(
        spool_dir,
        agent_id=AGENT,
        hostname=HOST,
        max_events=3,
        full_policy=FullPolicy.BLOCK,
        block_timeout=60,
    ) as spool:
        spool.append([file_event(i) for i in range(3)])
        result: list[list[SpooledEvent]] = []
        writer = threading.Thread(target=lambda: result.append(spool.append([file_event(3)])))
        writer.start()
        time.sleep(0.1)  # let it start waiting (correct either way)
        spool.ack(1)
        writer.join(timeout=30)
        assert not writer.is_alive()
        assert [s.seq for s in result[0]] == [4]
        assert spool.stats().dropped_total == 0


def test_block_policy_refuses_and_counts_when_no_room_comes_in_time(spool_dir: Path) -> None:
    """block: after block_timeout the events are refused and counted like drop_new."""
    with Spool(
        spool_dir,
        agent_id=AGENT,
        hostname=HOST,
        max_events=2,
        full_policy="block",
        block_timeout=0.05,
    ) as spool:
        spool.append([file_event(0), file_event(1)])
        assert spool.append([file_event(2), network_event(3)]) == []
        assert dict(spool.stats().dropped) == {"FileActivity": 1, "NetworkActivity": 1}


def test_drop_ledger_counts_per_class_and_keeps_the_window() -> None:
    """refuse() adds per class and remembers first and last times; mark_reported() clears."""
    ledger = DropLedger().refuse(["FileActivity", "FileActivity"], 10).refuse(["X"], 20)
    assert dict(ledger.pending) == {"FileActivity": 2, "X": 1}
    assert (ledger.first_ms, ledger.last_ms, ledger.pending_total) == (10, 20, 3)
    done = ledger.mark_reported()
    assert (done.pending_total, done.reported, dict(done.totals)) == (
        0,
        3,
        {"FileActivity": 2, "X": 1},
    )
    with pytest.raises(ValueError, match="no refused events"):
        drop_report(
            done,
            uid="u",
            now_ms=30,
            device=Device(hostname=HOST),
            max_events=1,
            max_bytes=1,
            policy="drop_new",
        )


def mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_full_disk_refuses_and_counts_instead_of_failing(tmp_path: Path) -> None:
    """SQLITE_FULL is handled like a full spool: the batch is refused and counted, not raised."""
    mount = tmp_path / "small-fs"
    if os.geteuid() != 0 or not mount_tmpfs(mount, "512k"):
        pytest.skip("needs root and the right to mount a small tmpfs")
    try:
        spool = Spool(mount / "spool", agent_id=AGENT, hostname=HOST)
        refused = 0
        for batch in range(200):
            events = [file_event(batch * 50 + i) for i in range(50)]
            if not spool.append(events):
                refused = len(events)
                break
        assert refused, "the small filesystem never filled up"
        stats = spool.stats()
        assert stats.unreported_drops >= refused
        assert stats.dropped_total == stats.unreported_drops
        assert chain_ok(read_all(spool))
        spool.close()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# ---------------------------------------------------------------------------------------
# Files, permissions, single writer
# ---------------------------------------------------------------------------------------


def test_spool_directory_is_private_and_database_files_owner_only(spool_dir: Path) -> None:
    """The directory is created 0700, the database and its WAL files 0600."""
    spool_dir.mkdir(mode=0o755)
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        spool.append([file_event(0)])
        assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
            assert stat.S_IMODE((spool_dir / name).stat().st_mode) == 0o600, name


def test_a_second_writer_is_refused_while_the_first_is_open(spool: Spool) -> None:
    """Two writers would fork the chain: the second fails with a message naming the holder."""
    with pytest.raises(WeightwardenError, match=f"pid {os.getpid()}"):
        Spool(spool.directory, agent_id=AGENT, hostname=HOST)


def test_the_spool_of_another_agent_is_a_config_error(spool_dir: Path) -> None:
    """A spool keeps the agent it was created for."""
    Spool(spool_dir, agent_id=AGENT, hostname=HOST).close()
    with pytest.raises(ConfigError, match="belongs to agent 'agent-1'"):
        Spool(spool_dir, agent_id="agent-2", hostname=HOST)


def test_a_database_that_is_not_a_spool_is_a_config_error_for_the_writer(spool_dir: Path) -> None:
    """The writer will not adopt a foreign SQLite file or garbage."""
    spool_dir.mkdir()
    (spool_dir / DB_NAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a usable weightwarden spool"):
        Spool(spool_dir, agent_id=AGENT, hostname=HOST)


def test_reader_rejects_a_missing_directory_an_empty_one_and_foreign_databases(
    tmp_path: Path,
) -> None:
    """SpoolReader raises a UsageError that says what DIR is instead."""
    with pytest.raises(UsageError, match="no such directory"):
        SpoolReader(tmp_path / "missing")
    with pytest.raises(UsageError, match=f"holds no {DB_NAME}"):
        SpoolReader(tmp_path)
    (tmp_path / DB_NAME).write_bytes(b"garbage" * 1000)
    with pytest.raises(UsageError, match="not a weightwarden spool"):
        SpoolReader(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    connection = sqlite3.connect(other / DB_NAME)
    connection.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(UsageError, match="not a weightwarden spool"):
        SpoolReader(other)


def test_reader_creates_no_file_in_a_closed_spool(spool_dir: Path) -> None:
    """A closed spool has no -wal/-shm; reading it must not create them (or anything)."""
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        spool.append([file_event(i) for i in range(3)])
    before = sorted(spool_dir.iterdir())
    with SpoolReader(spool_dir) as reader:
        assert [s.seq for s in read_all(reader)] == [1, 2, 3]
        assert reader.stats().count == 3
        assert reader.head() is not None
    assert sorted(spool_dir.iterdir()) == before


# ---------------------------------------------------------------------------------------
# Crashes and concurrent readers: real processes
# ---------------------------------------------------------------------------------------

_APPENDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.spool import Spool
    from weightwarden.events import Actor, Device, FileActivity, FileActivityType, FileRef

    spool = Spool(Path(sys.argv[1]), agent_id="agent-1", hostname="gpu-01")
    batch_size, batches = int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    for n in range(batches):
        events = [
            FileActivity(
                uid=f"child-{n}-{i}",
                time=1_700_000_000_000 + n,
                device=Device(hostname="gpu-01", agent_id="agent-1"),
                activity=FileActivityType.OPEN,
                actor=Actor(),
                file=FileRef(path=f"/weights/{n}/{i}"),
            )
            for i in range(batch_size)
        ]
        stored = spool.append(events)
        print(stored[-1].seq, flush=True)
    spool.close()
    """
)


def start_appender(spool_dir: Path, batch_size: int, batches: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(spool_dir), str(batch_size), str(batches)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def test_every_acknowledged_append_survives_kill_9_and_the_chain_continues(
    spool_dir: Path,
) -> None:
    """SIGKILL a child mid-stream, three times: what append() returned is there, seq contiguous."""
    rng = random.Random(7)  # noqa: S311 -- a reproducible test schedule, not cryptography
    confirmed = 0
    for _round in range(3):
        child = start_appender(spool_dir, batch_size=7, batches=100_000)
        assert child.stdout is not None
        for _ in range(rng.randint(3, 40)):
            confirmed = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        with SpoolReader(spool_dir) as reader:
            everything = read_all(reader)
        seqs = [s.seq for s in everything]
        assert seqs[-1] >= confirmed
        assert seqs == list(range(1, seqs[-1] + 1))
        assert chain_ok(everything)
    with Spool(spool_dir, agent_id=AGENT, hostname=HOST) as spool:
        (after,) = spool.append([file_event(0)])
    assert after.seq == everything[-1].seq + 1
    assert after.link.prev_hash == everything[-1].link.link_hash


def test_a_reader_process_sees_a_contiguous_verified_chain_while_the_writer_appends(
    spool_dir: Path,
) -> None:
    """A read-only reader beside a live writer process sees whole batches, in order, chained."""
    child = start_appender(spool_dir, batch_size=20, batches=60)
    seen: list[SpooledEvent] = []
    try:
        with SpoolReader(spool_dir) as reader:
            deadline = time.monotonic() + 60
            while len(seen) < 1200 and time.monotonic() < deadline:
                batch = reader.read_batch(seen[-1].seq if seen else 0, 97)
                if batch:
                    after = seen[-1].link if seen else None
                    assert verify_chain([(s.link, s.payload) for s in batch], after=after).ok
                    seen.extend(batch)
    finally:
        assert child.wait(timeout=60) == 0
        assert child.stdout is not None
        child.stdout.close()
    assert [s.seq for s in seen] == list(range(1, 1201))


def test_a_reading_thread_never_sees_a_partial_batch(spool: Spool) -> None:
    """The shipper's thread reads while the daemon appends: it sees whole transactions only."""
    stop = threading.Event()
    sizes: list[int] = []

    def read() -> None:
        while True:
            sizes.append(len(read_all(spool)))
            if stop.is_set():
                break

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(40):
        spool.append([file_event(n * 25 + i) for i in range(25)])
    stop.set()
    reader.join(timeout=30)
    assert sizes
    assert all(size % 25 == 0 for size in sizes)
    assert len(read_all(spool)) == 1000
