"""EventPipeline with its real parts, fed sensor records about real files and live readers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.actor import actor_from_attribution
from agent.attribution import Attributor, mapped_rss, read_position
from agent.canary import MIN_DECOY_SIZE, Canary, CanaryRegistry, plant
from agent.pipeline import HEALTH_ANALYTIC, EventPipeline, UsageProbe
from agent.sealer import SealPlanner
from agent.sensors import SensorEventKind, SensorRecord, SensorSource
from agent.sessions import SessionTracker
from weightwarden.events import (
    Actor,
    Attribution,
    DetectionFinding,
    Device,
    Event,
    FileActivity,
    FileActivityType,
    SessionPhase,
    Severity,
    decode,
    encode,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

SIZE = 1 << 20
PROGRESS_MS = 600_000
QUIET_MS = 120_000
REVERIFY_MS = 2_000
DEVICE = Device(hostname="gpu-07", agent_id="gpu-07")

_READER = """
import sys
f = open(sys.argv[1], "rb", buffering=0)
left = int(sys.argv[2])
while left > 0 and (chunk := f.read(left)):
    left -= len(chunk)
print("ready", flush=True)
sys.stdin.read()
"""

_MAPPER = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
total = sum(m[i] for i in range(0, len(m), 4096))
print("ready", flush=True)
sys.stdin.read()
"""

_WRITER = """
import sys
with open(sys.argv[1], "ab") as f:
    f.write(b"more")
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass(slots=True)
class WallClock:
    """The pipeline's wall clock, moved on by the test (the monotonic clock stays real)."""

    now_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def __call__(self) -> int:
        """The current time, milliseconds since the epoch."""
        return self.now_ms


@dataclass(slots=True, kw_only=True)
class Rig:
    """A pipeline wired as the daemon wires it, and what it hands out."""

    pipeline: EventPipeline
    sessions: SessionTracker
    planner: SealPlanner
    clock: WallClock
    root: Path
    checkpoint: Path
    model: Path
    outside: Path
    canary: Canary
    copy_checks: list[tuple[str, Actor, int]]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """A weight root with one checkpoint, a planted canary, and the pipeline over them."""
    root = (tmp_path / "weights").resolve()
    checkpoint = root / "step-100"
    checkpoint.mkdir(parents=True)
    model = checkpoint / "model.safetensors"
    model.write_bytes(os.urandom(SIZE))
    outside = tmp_path / "scratch"
    outside.mkdir()
    decoys = tmp_path / "decoys"
    decoys.mkdir()
    canaries = plant(decoys, size=MIN_DECOY_SIZE)
    canary = next(c for c in canaries if c.weights)
    sessions = SessionTracker(
        agent_id="gpu-07", progress_interval_ms=PROGRESS_MS, max_sessions=1000
    )
    planner = SealPlanner([str(root)], quiet_ms=QUIET_MS, reverify_ms=REVERIFY_MS)
    attributor = Attributor(cache=None)
    clock = WallClock()
    copy_checks: list[tuple[str, Actor, int]] = []
    pipeline = EventPipeline(
        device=DEVICE,
        roots=[str(root)],
        sensor_name="fanotify",
        sessions=sessions,
        attribute=lambda pid, at: actor_from_attribution(attributor.attribute(pid, at)),
        canaries=CanaryRegistry(canaries),
        usage=UsageProbe(
            read_position=read_position,
            mapped_rss=mapped_rss,
            alive=lambda pid: Path(f"/proc/{pid}").exists(),
        ),
        wall_ms=clock,
        monotonic=time.monotonic,
        planner=planner,
        submit_copy_check=lambda path, actor, when: copy_checks.append((path, actor, when)),
        own_pids=frozenset({os.getpid()}),
    )
    return Rig(
        pipeline=pipeline,
        sessions=sessions,
        planner=planner,
        clock=clock,
        root=root,
        checkpoint=checkpoint,
        model=model,
        outside=outside,
        canary=canary,
        copy_checks=copy_checks,
    )


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Children a test starts; their stdin closed (they exit), killed if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def _run(children: list[subprocess.Popen[str]], script: str, *args: str) -> int:
    """Start a Python child running ``script``; return its pid once it has done its access."""
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    return child.pid


def _finish(children: list[subprocess.Popen[str]], pid: int) -> None:
    """Let the child with ``pid`` exit, and reap it."""
    child = next(c for c in children if c.pid == pid)
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=10)


def _record(
    kind: SensorEventKind,
    path: Path | None,
    *,
    pid: int | None,
    other_path: Path | None = None,
    count: int = 0,
    source: SensorSource = SensorSource.FANOTIFY,
) -> SensorRecord:
    """A record as the fanotify sensor makes it: identity and size read from the file."""
    inode = device = size = None
    if path is not None and path.exists() and kind is not SensorEventKind.OVERFLOW:
        st = path.stat()
        inode, device, size = st.st_ino, st.st_dev, st.st_size
    return SensorRecord(
        kind=kind,
        source=source,
        monotonic=time.monotonic(),
        path=path,
        other_path=other_path,
        pid=pid,
        inode=inode,
        device=device,
        size=size,
        count=count,
    )


def _round_trip(events: list[Event]) -> list[Event]:
    """Every event encodes as OCSF and decodes back unchanged."""
    for event in events:
        assert decode(encode(event)) == event
    return events


def _one_file_event(events: list[Event]) -> FileActivity:
    _round_trip(events)
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, FileActivity)
    return event


def _pid_of(event: FileActivity) -> int | None:
    return event.actor.process.pid if event.actor.process is not None else None


def test_an_open_then_close_is_one_session_with_the_bytes_read(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """A reader of half the file: OPEN, then READ at close with the same session and 50 %."""
    pid = _run(children, _READER, str(rig.model), str(SIZE // 2))
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, rig.model, pid=pid)))
    assert opened.activity is FileActivityType.OPEN
    assert opened.session_phase is SessionPhase.OPEN
    assert opened.session_uid is not None
    assert opened.severity is Severity.INFORMATIONAL
    assert opened.sensor == "fanotify"
    assert opened.device == DEVICE
    assert opened.file.path == str(rig.model)
    assert opened.file.size == SIZE
    assert _pid_of(opened) == pid
    process = opened.actor.process
    assert process is not None
    assert process.attribution is Attribution.FULL
    assert process.exe == os.path.realpath(sys.executable)
    assert opened.actor.user is not None
    assert opened.actor.user.uid == os.getuid()
    closed = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, rig.model, pid=pid))
    )
    assert closed.activity is FileActivityType.READ
    assert closed.session_phase is SessionPhase.CLOSE
    assert closed.session_uid == opened.session_uid
    assert closed.bytes_read == SIZE // 2
    assert closed.fraction_read == 0.5
    assert closed.actor == opened.actor
    assert len(rig.sessions) == 0
    assert rig.pipeline.unmatched_closes == 0


def test_a_reader_that_read_nothing_has_zero_bytes_read_not_unknown(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """Opened and closed without a read: 0 bytes and 0 %, a measurement, not None."""
    pid = _run(children, _READER, str(rig.model), "0")
    _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, rig.model, pid=pid)))
    closed = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, rig.model, pid=pid))
    )
    assert closed.bytes_read == 0
    assert closed.fraction_read == 0.0


def test_a_mapped_file_counts_its_resident_pages(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """An mmap reader that touched every page: mmap_bytes is the file's size, 100 %."""
    pid = _run(children, _MAPPER, str(rig.model))
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, rig.model, pid=pid)))
    closed = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, rig.model, pid=pid))
    )
    assert closed.session_uid == opened.session_uid
    assert closed.mmap_bytes == SIZE
    assert closed.fraction_read == 1.0


def test_samples_taken_while_open_outlive_the_reader(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """A reader gone by its close keeps what the periodic sample saw while it held the file."""
    pid = _run(children, _READER, str(rig.model), str(SIZE // 4))
    _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, rig.model, pid=pid)))
    assert rig.pipeline.tick() == []
    _finish(children, pid)
    closed = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, rig.model, pid=pid))
    )
    assert closed.bytes_read == SIZE // 4
    assert closed.fraction_read == 0.25


def test_a_file_held_past_the_interval_yields_progress_events(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """A long hold gets one progress event per interval, in the same session, with its reads."""
    pid = _run(children, _READER, str(rig.model), str(SIZE // 2))
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, rig.model, pid=pid)))
    assert rig.pipeline.tick() == []
    rig.clock.now_ms += PROGRESS_MS
    progress = _one_file_event(rig.pipeline.tick())
    assert progress.session_phase is SessionPhase.PROGRESS
    assert progress.activity is FileActivityType.READ
    assert progress.session_uid == opened.session_uid
    assert progress.bytes_read == SIZE // 2
    assert progress.time == rig.clock.now_ms
    assert rig.pipeline.tick() == []
    rig.clock.now_ms += PROGRESS_MS
    assert len(_round_trip(rig.pipeline.tick())) == 1
    assert len(rig.sessions) == 1


def test_a_session_whose_reader_died_unseen_is_closed_at_its_next_report(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """Its close was lost (overflow): at the next interval it ends, never reported as held."""
    pid = _run(children, _READER, str(rig.model), str(SIZE // 2))
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, rig.model, pid=pid)))
    assert rig.pipeline.tick() == []
    _finish(children, pid)
    rig.clock.now_ms += PROGRESS_MS
    ended = _one_file_event(rig.pipeline.tick())
    assert ended.session_phase is SessionPhase.CLOSE
    assert ended.session_uid == opened.session_uid
    assert ended.bytes_read == SIZE // 2
    assert len(rig.sessions) == 0
    rig.clock.now_ms += PROGRESS_MS
    assert rig.pipeline.tick() == []


def test_opening_a_canary_is_critical(rig: Rig, children: list[subprocess.Popen[str]]) -> None:
    """Both the open and the closing read of a decoy are CRITICAL canary events."""
    canary = Path(rig.canary.path)
    pid = _run(children, _READER, str(canary), "4096")
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, canary, pid=pid)))
    assert opened.canary
    assert opened.severity is Severity.CRITICAL
    closed = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, canary, pid=pid))
    )
    assert closed.canary
    assert closed.severity is Severity.CRITICAL
    assert closed.bytes_read == 4096


def test_a_renamed_canary_is_still_recognised_by_its_inode(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """Moving a decoy does not hide it: the open is matched by (device, inode)."""
    moved = Path(rig.canary.path).with_name("renamed.safetensors")
    Path(rig.canary.path).rename(moved)
    pid = _run(children, _READER, str(moved), "1")
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, moved, pid=pid)))
    assert opened.canary
    assert opened.severity is Severity.CRITICAL


def test_a_close_after_write_under_a_root_is_an_update_and_a_seal_trigger(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """A writer's close: an UPDATE event naming it, and its checkpoint becomes due once quiet."""
    pid = _run(children, _WRITER, str(rig.model))
    event = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_WRITE, rig.model, pid=pid))
    )
    assert event.activity is FileActivityType.UPDATE
    assert event.severity is Severity.INFORMATIONAL
    assert _pid_of(event) == pid
    assert rig.copy_checks == []
    assert rig.planner.due_seals(event.time + QUIET_MS - 1) == []
    assert rig.planner.due_seals(event.time + QUIET_MS) == [str(rig.checkpoint)]


def test_a_write_inside_a_sealed_checkpoint_is_verified_with_the_writer(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """The change handed to the planner names the event and the process that wrote."""
    rig.planner.mark_sealed(str(rig.checkpoint))
    pid = _run(children, _WRITER, str(rig.model))
    event = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_WRITE, rig.model, pid=pid))
    )
    ((checkpoint, changes),) = rig.planner.due_verifications(event.time + REVERIFY_MS)
    assert checkpoint == str(rig.checkpoint)
    (change,) = changes
    assert change.path == str(rig.model)
    assert change.event_uid == event.uid
    assert change.actor == event.actor
    assert change.time == event.time


def test_a_rename_carries_the_new_name_and_touches_both_checkpoints(rig: Rig) -> None:
    """Moving a file between checkpoints: RENAME with file_result, both checkpoints changed."""
    other = rig.root / "step-200"
    other.mkdir()
    new = other / "model.safetensors"
    rig.model.rename(new)
    event = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.RENAME, rig.model, pid=None, other_path=new))
    )
    assert event.activity is FileActivityType.RENAME
    assert event.file.path == str(rig.model)
    assert event.file_result is not None
    assert event.file_result.path == str(new)
    assert event.actor == Actor(process=None, user=None)
    due = rig.planner.due_seals(event.time + QUIET_MS)
    assert sorted(due) == sorted([str(rig.checkpoint), str(other)])


def test_a_rename_into_a_root_from_outside_is_ours(rig: Rig) -> None:
    """A file moved in from a scratch folder is reported, though its old name is not ours."""
    source = rig.outside / "planted.bin"
    source.write_bytes(b"x")
    target = rig.checkpoint / "planted.bin"
    source.rename(target)
    event = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.RENAME, source, pid=None, other_path=target))
    )
    assert event.activity is FileActivityType.RENAME
    assert event.file_result is not None
    assert event.file_result.path == str(target)


@pytest.mark.parametrize(
    ("kind", "activity"),
    [
        (SensorEventKind.CREATE, FileActivityType.CREATE),
        (SensorEventKind.DELETE, FileActivityType.DELETE),
        (SensorEventKind.MOVED_FROM, FileActivityType.RENAME),
        (SensorEventKind.MOVED_TO, FileActivityType.RENAME),
    ],
)
def test_name_changes_under_a_root_are_events_and_seal_triggers(
    rig: Rig, kind: SensorEventKind, activity: FileActivityType
) -> None:
    """Create, delete and one-sided moves each give their activity and mark the checkpoint."""
    event = _one_file_event(rig.pipeline.handle(_record(kind, rig.model, pid=None)))
    assert event.activity is activity
    assert event.file_result is None
    assert rig.planner.due_seals(event.time + QUIET_MS) == [str(rig.checkpoint)]


def test_a_queue_overflow_is_a_high_health_finding(rig: Rig) -> None:
    """Lost records are never silent: a HIGH finding from the agent-health analytic."""
    (finding,) = _round_trip(
        rig.pipeline.handle(
            _record(SensorEventKind.OVERFLOW, None, pid=None, count=3, source=SensorSource.QUEUE)
        )
    )
    assert isinstance(finding, DetectionFinding)
    assert finding.severity is Severity.HIGH
    assert finding.analytic.uid == HEALTH_ANALYTIC
    assert "queue" in finding.title
    assert finding.description is not None
    assert "3 overflow" in finding.description
    assert finding.device == DEVICE


def test_an_unwatched_folder_is_a_high_health_finding(rig: Rig) -> None:
    """A folder the fallback sensor could not watch is reported by name."""
    (finding,) = _round_trip(
        rig.pipeline.handle(
            _record(
                SensorEventKind.UNWATCHED, rig.checkpoint, pid=None, source=SensorSource.INOTIFY
            )
        )
    )
    assert isinstance(finding, DetectionFinding)
    assert finding.severity is Severity.HIGH
    assert str(rig.checkpoint) in finding.title


def test_the_agents_own_accesses_are_ignored(rig: Rig) -> None:
    """The agent reading weights to seal them is not an access to report."""
    for kind in (SensorEventKind.OPEN, SensorEventKind.CLOSE_NOWRITE, SensorEventKind.CLOSE_WRITE):
        assert rig.pipeline.handle(_record(kind, rig.model, pid=os.getpid())) == []
    assert rig.pipeline.ignored == 3
    assert len(rig.sessions) == 0
    assert rig.planner.due_seals(rig.clock.now_ms + 10 * QUIET_MS) == []
    outside = rig.outside / "bundle.sig"
    outside.write_bytes(b"x")
    assert rig.pipeline.handle(_record(SensorEventKind.CLOSE_WRITE, outside, pid=os.getpid())) == []
    assert rig.copy_checks == []


def test_a_write_outside_the_roots_is_handed_to_the_copy_check(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """`cp` to a scratch folder: no event yet, a copy check with the writer and the time."""
    copy = rig.outside / "stolen.safetensors"
    copy.write_bytes(rig.model.read_bytes())
    pid = _run(children, _WRITER, str(copy))
    before = rig.clock.now_ms
    assert rig.pipeline.handle(_record(SensorEventKind.CLOSE_WRITE, copy, pid=pid)) == []
    ((path, actor, when),) = rig.copy_checks
    assert path == str(copy)
    assert actor.process is not None
    assert actor.process.pid == pid
    assert when <= before


def test_other_accesses_outside_the_roots_are_ignored(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """Opening or deleting files elsewhere is neither an event nor a copy check."""
    elsewhere = rig.outside / "notes.txt"
    elsewhere.write_text("hello")
    pid = _run(children, _READER, str(elsewhere), "1")
    assert rig.pipeline.handle(_record(SensorEventKind.OPEN, elsewhere, pid=pid)) == []
    assert rig.pipeline.handle(_record(SensorEventKind.DELETE, elsewhere, pid=pid)) == []
    assert rig.pipeline.ignored == 2
    assert rig.copy_checks == []
    assert len(rig.sessions) == 0


def test_a_sibling_folder_sharing_the_roots_prefix_is_not_ours(rig: Rig) -> None:
    """``/x/weights2`` is not under the root ``/x/weights``."""
    sibling = rig.root.with_name(rig.root.name + "2")
    sibling.mkdir()
    (sibling / "a.bin").write_bytes(b"x")
    assert rig.pipeline.handle(_record(SensorEventKind.OPEN, sibling / "a.bin", pid=None)) == []


def test_a_close_without_an_open_is_still_reported_and_counted(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """The open was lost (overflow, started mid-read): the read is kept, without a session."""
    pid = _run(children, _READER, str(rig.model), "10")
    event = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, rig.model, pid=pid))
    )
    assert event.activity is FileActivityType.READ
    assert event.session_phase is SessionPhase.CLOSE
    assert event.session_uid is None
    assert _pid_of(event) == pid
    assert rig.pipeline.unmatched_closes == 1


def test_an_open_without_a_pid_has_an_unknown_actor_and_no_session(rig: Rig) -> None:
    """The inotify fallback knows no pid: the event says so rather than guess."""
    event = _one_file_event(
        rig.pipeline.handle(
            _record(SensorEventKind.OPEN, rig.model, pid=None, source=SensorSource.INOTIFY)
        )
    )
    assert event.activity is FileActivityType.OPEN
    assert event.actor == Actor(process=None, user=None)
    assert event.session_uid is None
    assert len(rig.sessions) == 0


def test_a_reader_gone_before_its_open_is_handled_is_unknown_with_its_pid(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """A short-lived reader that exited (no exec cache here) keeps its pid, marked UNKNOWN."""
    pid = _run(children, _READER, str(rig.model), "10")
    record = _record(SensorEventKind.OPEN, rig.model, pid=pid)
    _finish(children, pid)
    event = _one_file_event(rig.pipeline.handle(record))
    assert event.actor.process is not None
    assert event.actor.process.pid == pid
    assert event.actor.process.attribution is Attribution.UNKNOWN


def test_an_undecodable_file_name_still_gives_an_event(
    rig: Rig, children: list[subprocess.Popen[str]]
) -> None:
    """A weight file named with non-UTF-8 bytes is reported with the bytes escaped."""
    odd = Path(os.fsdecode(os.fsencode(rig.checkpoint) + b"/w\xff.bin"))
    odd.write_bytes(b"1234")
    pid = _run(children, _READER, str(odd), "2")
    opened = _one_file_event(rig.pipeline.handle(_record(SensorEventKind.OPEN, odd, pid=pid)))
    assert opened.file.path == f"{rig.checkpoint}/w\\xff.bin"
    closed = _one_file_event(
        rig.pipeline.handle(_record(SensorEventKind.CLOSE_NOWRITE, odd, pid=pid))
    )
    assert closed.session_uid == opened.session_uid
    assert closed.bytes_read == 2
    assert closed.file.path == opened.file.path
