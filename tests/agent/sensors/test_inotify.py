"""The inotify fallback sensor against real files and real reader processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.sensors import InotifySensor, SensorEventKind, SensorRecord, SensorSource
from weightwarden.errors import UsageError, WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Iterator

OPEN = SensorEventKind.OPEN
CLOSE_NOWRITE = SensorEventKind.CLOSE_NOWRITE
CLOSE_WRITE = SensorEventKind.CLOSE_WRITE
WAIT_S = 10.0
CREATE = SensorEventKind.CREATE


@pytest.fixture
def sensor(weights: Path, recorder) -> Iterator[InotifySensor]:
    with InotifySensor(roots=[weights], sink=recorder) as running:
        yield running


def run(argv: list[str], user: int | None = None) -> None:
    """Run a child process to completion."""
    subprocess.run(argv, stdout=subprocess.DEVNULL, user=user, check=True, timeout=WAIT_S)


@pytest.mark.usefixtures("sensor")
def test_cat_is_seen_as_open_and_close_nowrite_without_pid(weights: Path, recorder) -> None:
    """A child `cat` yields OPEN and CLOSE_NOWRITE records with no pid."""
    model = weights / "model.safetensors"
    run(["cat", str(model)])
    opened = recorder.wait_for_kind(OPEN, model)
    recorder.wait_for_kind(CLOSE_NOWRITE, model)
    assert opened.pid is None
    assert opened.source is SensorSource.INOTIFY


@pytest.mark.usefixtures("sensor")
def test_reader_running_as_another_uid_is_seen(weights: Path, recorder) -> None:
    """A `cat` running as uid 65534 (nobody) is seen."""
    if os.geteuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    model = weights / "model.safetensors"
    run(["cat", str(model)], user=65534)
    recorder.wait_for_kind(OPEN, model)
    recorder.wait_for_kind(CLOSE_NOWRITE, model)


@pytest.mark.usefixtures("sensor")
def test_mmap_read_yields_only_open_and_close_nowrite(weights: Path, recorder, mmap_reader) -> None:
    """A child reading through mmap produces OPEN and CLOSE_NOWRITE, nothing else."""
    model = weights / "model.safetensors"
    run(mmap_reader(model))
    recorder.wait_for_kind(CLOSE_NOWRITE, model)
    assert {r.kind for r in recorder.matching(lambda r: r.path == model)} == {OPEN, CLOSE_NOWRITE}


@pytest.mark.usefixtures("sensor")
def test_write_is_seen_as_close_write(weights: Path, recorder) -> None:
    """A child writing into a weight file yields CLOSE_WRITE."""
    model = weights / "model.safetensors"
    run(["dd", "if=/dev/zero", f"of={model}", "bs=1k", "count=1", "conv=notrunc", "status=none"])
    recorder.wait_for_kind(CLOSE_WRITE, model)


@pytest.mark.usefixtures("sensor")
def test_create_rename_and_delete_are_seen_with_paths(weights: Path, recorder) -> None:
    """Creating, renaming and deleting a file yields CREATE, RENAME (both names) and DELETE."""
    tmp = weights / "shard.tmp"
    tmp.write_bytes(b"w")
    final = weights / "shard.bin"
    tmp.rename(final)
    final.unlink()
    recorder.wait_for_kind(CREATE, tmp)
    renamed = recorder.wait_for(lambda r: r.kind is SensorEventKind.RENAME and r.path == tmp)
    assert renamed.other_path == final
    recorder.wait_for_kind(SensorEventKind.DELETE, final)


@pytest.mark.usefixtures("sensor")
def test_new_subfolders_are_watched(weights: Path, recorder) -> None:
    """Folders made after start are watched: their files' opens are seen, nested ones too."""
    folder = weights / "ckpt-200"
    folder.mkdir()
    recorder.wait_for(lambda r: r.kind is CREATE and r.path == folder and r.is_dir)
    shard = folder / "shard.bin"
    shard.write_bytes(b"x")
    recorder.wait_for_kind(CLOSE_WRITE, shard)
    nested = folder / "a" / "b"
    nested.mkdir(parents=True)
    recorder.wait_for(lambda r: r.kind is CREATE and r.path == nested)
    leaf = nested / "w.bin"
    leaf.write_bytes(b"y")
    run(["cat", str(leaf)])
    recorder.wait_for_kind(CLOSE_NOWRITE, leaf)


@pytest.mark.usefixtures("sensor")
def test_a_renamed_folder_reports_its_new_paths(weights: Path, recorder) -> None:
    """After a watched folder is renamed, events inside it carry the new path."""
    old = weights / "old"
    old.mkdir()
    recorder.wait_for_kind(CREATE, old)
    new = weights / "new"
    old.rename(new)
    recorder.wait_for(lambda r: r.kind is SensorEventKind.RENAME and r.other_path == new)
    (new / "f").write_bytes(b"z")
    recorder.wait_for_kind(CLOSE_WRITE, new / "f")


@pytest.mark.usefixtures("sensor")
def test_renames_stay_whole_while_other_processes_work_in_the_tree(weights: Path, recorder) -> None:
    """Events of other processes can fall between a rename's two halves: still one RENAME.

    A reader lists the root and reads a file in a loop while folders and files are renamed
    back and forth; every rename must come out as one RENAME, never as a name that left
    the roots (MOVED_FROM) and another that arrived from outside (MOVED_TO).
    """
    renames = 300
    (weights / "d0").mkdir()
    (weights / "f0").write_bytes(b"f")
    recorder.wait_for_kind(CREATE, weights / "f0")
    stop = threading.Event()

    def busy() -> None:
        model = weights / "model.safetensors"
        while not stop.is_set():
            list(weights.iterdir())
            model.read_bytes()

    readers = [threading.Thread(target=busy) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for n in range(renames // 2):
            (weights / f"d{n}").rename(weights / f"d{n + 1}")
            (weights / f"f{n}").rename(weights / f"f{n + 1}")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    last = weights / f"f{renames // 2}"
    recorder.wait_for(lambda r: r.kind is SensorEventKind.RENAME and r.other_path == last)
    one_sided = recorder.matching(
        lambda r: r.kind in (SensorEventKind.MOVED_FROM, SensorEventKind.MOVED_TO)
    )
    assert one_sided == []
    assert len(recorder.matching(lambda r: r.kind is SensorEventKind.RENAME)) == renames


@pytest.mark.usefixtures("sensor")
def test_moves_across_the_root_boundary_are_reported_as_one_sided(
    weights: Path, outside: Path, recorder
) -> None:
    """A name moved out is MOVED_FROM; a folder moved in is MOVED_TO and gets watched."""
    model = weights / "model.safetensors"
    model.rename(outside / "x.bin")
    recorder.wait_for_kind(SensorEventKind.MOVED_FROM, model)
    incoming = outside / "incoming"
    incoming.mkdir()
    (incoming / "w.bin").write_bytes(b"w")
    arrived = weights / "incoming"
    incoming.rename(arrived)
    recorder.wait_for(lambda r: r.kind is SensorEventKind.MOVED_TO and r.path == arrived)
    run(["cat", str(arrived / "w.bin")])
    recorder.wait_for_kind(OPEN, arrived / "w.bin")


@pytest.mark.usefixtures("mount_namespace", "sensor")
def test_read_through_a_bind_mount_in_another_namespace_is_seen_under_the_root(
    weights: Path, outside: Path, recorder
) -> None:
    """A reader in its own mount namespace, reading via a bind mount, is reported at the root."""
    script = 'mount --bind "$1" "$2" && cat "$2/model.safetensors" >/dev/null'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    run([*argv, "sh", str(weights), str(outside)])
    recorder.wait_for_kind(OPEN, weights / "model.safetensors")


def test_queue_overflow_is_reported_and_the_tree_rescanned(weights: Path, recorder) -> None:
    """A stalled consumer overflows the inotify queue: OVERFLOW record, rescan, still watching."""
    stalled = threading.Event()
    release = threading.Event()

    def sink(record: SensorRecord) -> None:
        recorder(record)
        if not release.is_set():
            stalled.set()
            release.wait(60)

    model = weights / "model.safetensors"
    with InotifySensor(roots=[weights], sink=sink) as sensor:
        os.close(os.open(model, os.O_RDONLY))
        assert stalled.wait(WAIT_S)
        try:
            for _ in range(10_000):  # 20000 events > fs.inotify.max_queued_events (16384)
                os.close(os.open(model, os.O_RDONLY))
            (weights / "made-during-overflow").mkdir()
        finally:
            release.set()
        overflow = recorder.wait_for(lambda r: r.kind is SensorEventKind.OVERFLOW, timeout=60)
        assert overflow.count == 1
        assert overflow.path is None
        stats = sensor.stats()
        assert stats.overflows == 1
        assert stats.rescans == 1
        assert stats.watches == 2  # the rescan found the folder made during the overflow
        late = weights / "made-during-overflow" / "late.bin"
        late.write_bytes(b"x")
        recorder.wait_for_kind(CLOSE_WRITE, late)


def test_stop_returns_and_leaves_no_thread(weights: Path, recorder) -> None:
    """stop() ends the reader thread while no event arrives, and leaves no thread behind."""
    before = set(threading.enumerate())
    sensor = InotifySensor(roots=[weights], sink=recorder)
    sensor.start()
    assert sensor.running
    sensor.stop()
    assert not sensor.running
    assert sensor.failure is None
    assert set(threading.enumerate()) <= before


def test_a_failing_sink_is_counted_and_the_sensor_goes_on(weights: Path, recorder) -> None:
    """An exception in the sink is counted; later records still arrive."""
    failed: list[SensorRecord] = []

    def sink(record: SensorRecord) -> None:
        if not failed:
            failed.append(record)
            raise RuntimeError("consumer bug")
        recorder(record)

    model = weights / "model.safetensors"
    with InotifySensor(roots=[weights], sink=sink) as sensor:
        run(["cat", str(model)])
        recorder.wait_for_kind(CLOSE_NOWRITE, model)
        assert sensor.stats().sink_errors == 1
        assert sensor.running


def test_a_broken_inotify_descriptor_stops_the_sensor_with_the_error(
    weights: Path, recorder
) -> None:
    """When reading the inotify descriptor fails, the reader ends and keeps the error."""
    sensor = InotifySensor(roots=[weights], sink=recorder)
    sensor.start()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, sensor._fd)  # noqa: SLF001 - break the real descriptor under the reader
        for _ in range(100):
            os.close(os.open(weights / "model.safetensors", os.O_RDONLY))
            if sensor.wait(0.1):
                break
        assert sensor.wait(WAIT_S)
        assert isinstance(sensor.failure, OSError)
    finally:
        sensor.stop()
        os.close(devnull)


def test_self_test_sees_the_open(sensor: InotifySensor, weights: Path) -> None:
    """The self-test opens a weight file and finds its OPEN record."""
    assert sensor.self_test(weights / "model.safetensors") is True


def test_watch_limit_at_start_is_an_error_naming_the_limit(weights: Path, recorder) -> None:
    """More folders than the watch limit allows: start fails and says which limit to raise."""
    for name in ("a", "b", "c"):
        (weights / name).mkdir()
    sensor = InotifySensor(roots=[weights], sink=recorder, max_watches=2)
    with pytest.raises(WeightwardenError, match=r"watch limit reached.*max_watches=2"):
        sensor.start()
    assert not sensor.running


def test_watch_limit_while_running_reports_the_unwatched_folder(weights: Path, recorder) -> None:
    """A folder made when no watch is left is reported as UNWATCHED and counted."""
    with InotifySensor(roots=[weights], sink=recorder, max_watches=1) as sensor:
        folder = weights / "one-too-many"
        folder.mkdir()
        recorder.wait_for_kind(SensorEventKind.UNWATCHED, folder)
        assert sensor.stats().unwatched == 1
        assert sensor.running


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_kernel_watch_limit_in_a_user_namespace_is_an_error_naming_it(weights: Path) -> None:
    """With the kernel's per-namespace watch limit at 2, start fails and names the sysctl."""
    for name in ("a", "b", "c"):
        (weights / name).mkdir()
    code = """
import sys
from pathlib import Path
Path("/proc/sys/user/max_inotify_watches").write_text("2")
from agent.sensors import InotifySensor
from weightwarden.errors import WeightwardenError
try:
    InotifySensor(roots=[Path(sys.argv[1])], sink=lambda r: None).start()
except WeightwardenError as exc:
    print("RESULT", exc)
"""
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", code, str(weights)],
        capture_output=True,
        text=True,
        check=False,
        timeout=WAIT_S * 3,
    )
    if done.returncode != 0 and "RESULT" not in done.stdout:
        pytest.skip(f"user namespaces unavailable here: {done.stderr.strip()[-200:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    assert "watch limit reached" in line
    assert "max_user_watches" in line


def test_constructor_rejects_a_relative_root(recorder) -> None:
    """A relative root is a usage error."""
    with pytest.raises(UsageError, match="relative"):
        InotifySensor(roots=[Path("weights")], sink=recorder)
