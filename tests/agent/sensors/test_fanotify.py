"""The fanotify sensor against real files and real reader processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.sensors import (
    FanotifySensor,
    SensorEventKind,
    SensorRecord,
    SensorSource,
    probe_fanotify,
)
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

OPEN = SensorEventKind.OPEN
CLOSE_NOWRITE = SensorEventKind.CLOSE_NOWRITE
CLOSE_WRITE = SensorEventKind.CLOSE_WRITE
WAIT_S = 10.0

_SUPPORT = probe_fanotify([Path(tempfile.gettempdir())]) if os.geteuid() == 0 else None
pytestmark = pytest.mark.skipif(
    _SUPPORT is None or not _SUPPORT.usable,
    reason=f"fanotify unusable here: {_SUPPORT.reason if _SUPPORT else 'not root'}",
)
needs_names = pytest.mark.skipif(
    _SUPPORT is None or not _SUPPORT.names,
    reason=f"fanotify FID mode unusable here: {_SUPPORT.reason if _SUPPORT else 'not root'}",
)


@pytest.fixture
def sensor(weights: Path, recorder) -> Iterator[FanotifySensor]:
    with FanotifySensor(roots=[weights], sink=recorder) as running:
        yield running


def run(argv: list[str], user: int | None = None) -> int:
    """Run a reader to completion and return its pid."""
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, user=user) as child:
        assert child.wait(timeout=WAIT_S) == 0
        return child.pid


@pytest.mark.usefixtures("sensor")
def test_cat_is_seen_as_open_and_close_nowrite_with_its_pid(weights: Path, recorder) -> None:
    """A child `cat` of a weight file yields OPEN and CLOSE_NOWRITE carrying cat's pid."""
    model = weights / "model.safetensors"
    pid = run(["cat", str(model)])
    opened = recorder.wait_for_kind(OPEN, model, pid)
    recorder.wait_for_kind(CLOSE_NOWRITE, model, pid)
    st = model.stat()
    assert opened.source is SensorSource.FANOTIFY
    assert (opened.inode, opened.device, opened.size) == (st.st_ino, st.st_dev, st.st_size)
    assert not opened.is_dir
    assert opened.other_path is None


@pytest.mark.usefixtures("sensor")
def test_reader_running_as_another_uid_is_seen_with_its_pid(weights: Path, recorder) -> None:
    """A `cat` running as uid 65534 (nobody) is reported with its own pid."""
    model = weights / "model.safetensors"
    pid = run(["cat", str(model)], user=65534)
    recorder.wait_for_kind(OPEN, model, pid)
    recorder.wait_for_kind(CLOSE_NOWRITE, model, pid)


@pytest.mark.usefixtures("sensor")
def test_mmap_read_yields_only_open_and_close_nowrite(weights: Path, recorder, mmap_reader) -> None:
    """A child reading the file through mmap produces OPEN and CLOSE_NOWRITE, nothing else."""
    model = weights / "model.safetensors"
    pid = run(mmap_reader(model))
    recorder.wait_for_kind(CLOSE_NOWRITE, model, pid)
    kinds = {r.kind for r in recorder.matching(lambda r: r.path == model and r.pid == pid)}
    assert kinds == {OPEN, CLOSE_NOWRITE}


@pytest.mark.usefixtures("sensor")
def test_write_is_seen_as_close_write(weights: Path, recorder) -> None:
    """A child writing into a weight file yields CLOSE_WRITE with its pid."""
    model = weights / "model.safetensors"
    argv = ["dd", "if=/dev/zero", f"of={model}", "bs=1k", "count=1", "conv=notrunc", "status=none"]
    pid = run(argv)
    recorder.wait_for_kind(CLOSE_WRITE, model, pid)


def test_files_outside_the_roots_are_ignored_and_counted(
    sensor: FanotifySensor, weights: Path, outside: Path, recorder
) -> None:
    """Opens outside the roots (same filesystem) produce no record but raise `filtered`."""
    stray = outside / "notes.txt"
    stray.write_text("not a weight")
    run(["cat", str(stray)])
    model = weights / "model.safetensors"
    pid = run(["cat", str(model)])  # a barrier: read after the stray open
    recorder.wait_for_kind(CLOSE_NOWRITE, model, pid)
    assert recorder.matching(lambda r: r.path is not None and weights not in r.path.parents) == []
    assert sensor.stats().filtered > 0


@needs_names
@pytest.mark.usefixtures("sensor")
def test_create_rename_and_delete_are_seen_with_paths(weights: Path, recorder) -> None:
    """Creating, renaming and deleting files and folders yields records with full paths."""
    pid = os.getpid()
    folder = weights / "ckpt-100"
    folder.mkdir()
    recorder.wait_for(lambda r: r.kind is SensorEventKind.CREATE and r.path == folder and r.is_dir)
    tmp = folder / "shard.tmp"
    tmp.write_bytes(b"w" * 10)
    final = folder / "shard.bin"
    tmp.rename(final)
    renamed = recorder.wait_for(lambda r: r.kind is SensorEventKind.RENAME and r.path == tmp)
    assert (renamed.other_path, renamed.pid, renamed.is_dir) == (final, pid, False)
    recorder.wait_for_kind(SensorEventKind.CREATE, tmp, pid)
    final.unlink()
    recorder.wait_for_kind(SensorEventKind.DELETE, final, pid)
    moved = weights / "ckpt-100-final"
    folder.rename(moved)
    recorder.wait_for(
        lambda r: r.kind is SensorEventKind.RENAME and r.other_path == moved and r.is_dir
    )


@needs_names
@pytest.mark.usefixtures("sensor")
def test_recursive_delete_reports_paths_in_folders_already_gone(weights: Path, recorder) -> None:
    """`rm -rf` of a tree reports each deleted name, though its folder is gone when read."""
    deep = weights / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "w.bin").write_bytes(b"x")
    recorder.wait_for_kind(SensorEventKind.CREATE, deep / "w.bin")
    pid = run(["rm", "-rf", str(weights / "a")])
    for path in (deep / "w.bin", deep, weights / "a"):
        recorder.wait_for_kind(SensorEventKind.DELETE, path, pid)


@needs_names
@pytest.mark.usefixtures("sensor")
def test_moving_a_weight_file_out_of_the_roots_is_reported(
    weights: Path, outside: Path, recorder
) -> None:
    """A rename out of the roots is a RENAME whose new name lies outside them."""
    model = weights / "model.safetensors"
    staged = outside / "x.bin"
    model.rename(staged)
    recorder.wait_for(lambda r: r.kind is SensorEventKind.RENAME and r.other_path == staged)


@pytest.mark.usefixtures("sensor")
def test_read_through_a_hard_link_outside_the_roots_names_the_weight_file(
    weights: Path, outside: Path, recorder
) -> None:
    """Reading a weight file through a hard link elsewhere reports the weight file's path."""
    model = weights / "model.safetensors"
    link = outside / "innocent.txt"
    link.hardlink_to(model)
    pid = run(["cat", str(link)])
    seen = recorder.wait_for_kind(OPEN, model, pid)
    assert seen.other_path == link


@pytest.mark.usefixtures("mount_namespace", "sensor")
def test_read_through_a_bind_mount_in_another_namespace_names_the_weight_file(
    weights: Path, outside: Path, recorder
) -> None:
    """A reader in its own mount namespace, reading via a bind mount, is resolved to the root."""
    script = 'mount --bind "$1" "$2" && cat "$2/model.safetensors" >/dev/null'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    run([*argv, "sh", str(weights), str(outside)])
    recorder.wait_for(
        lambda r: (
            r.kind is OPEN
            and r.path == weights / "model.safetensors"
            and r.pid is not None
            and r.pid != os.getpid()
        )
    )


def test_self_test_sees_our_own_open(sensor: FanotifySensor, weights: Path) -> None:
    """The self-test opens a weight file and finds its own OPEN record with our pid."""
    assert sensor.self_test(weights / "model.safetensors") is True


def test_self_test_refuses_a_file_outside_the_roots(sensor: FanotifySensor, outside: Path) -> None:
    """The self-test refuses a file that no root covers."""
    stray = outside / "f"
    stray.write_text("x")
    with pytest.raises(UsageError, match="not under a weight root"):
        sensor.self_test(stray)


def test_stop_returns_and_leaves_no_thread(weights: Path, recorder) -> None:
    """stop() ends the reader thread while no event arrives, and leaves no thread behind."""
    before = set(threading.enumerate())
    sensor = FanotifySensor(roots=[weights], sink=recorder)
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
    with FanotifySensor(roots=[weights], sink=sink) as sensor:
        run(["cat", str(model)])
        pid = run(["cat", str(model)])
        recorder.wait_for_kind(CLOSE_NOWRITE, model, pid)
        assert sensor.stats().sink_errors == 1
        assert sensor.running


def test_a_broken_fanotify_descriptor_stops_the_sensor_with_the_error(
    weights: Path, recorder
) -> None:
    """When reading the fanotify descriptor fails, the reader ends and keeps the error."""
    sensor = FanotifySensor(roots=[weights], sink=recorder)
    sensor.start()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        # Swap a descriptor that reads end-of-file in under the running reader.
        os.dup2(devnull, sensor._content_fd)  # noqa: SLF001 - break the real descriptor
        for _ in range(100):
            os.close(os.open(weights / "model.safetensors", os.O_RDONLY))
            if sensor.wait(0.1):
                break
        assert sensor.wait(WAIT_S)
        assert isinstance(sensor.failure, OSError)
        assert not sensor.running
    finally:
        sensor.stop()
        os.close(devnull)


@pytest.mark.slow
@needs_names
def test_kernel_queue_overflow_is_reported_as_an_overflow_record(weights: Path, recorder) -> None:
    """A stalled consumer lets the kernel queue overflow; the sensor emits OVERFLOW records."""
    stalled = threading.Event()
    release = threading.Event()

    def sink(record: SensorRecord) -> None:
        recorder(record)
        if not release.is_set():
            stalled.set()
            release.wait(60)

    burst = weights / "burst"
    burst.mkdir()
    with FanotifySensor(roots=[weights], sink=sink) as sensor:
        os.close(os.open(weights / "model.safetensors", os.O_RDONLY))
        assert stalled.wait(WAIT_S)
        try:
            for i in range(20_000):  # more than fs.fanotify.max_queued_events (16384)
                os.close(os.open(burst / str(i), os.O_CREAT | os.O_WRONLY, 0o644))
        finally:
            release.set()
        overflow = recorder.wait_for(lambda r: r.kind is SensorEventKind.OVERFLOW, timeout=60)
        assert overflow.count >= 1
        assert overflow.path is None
        assert sensor.stats().overflows >= 1
        assert sensor.running


def test_constructor_rejects_a_missing_root(tmp_path: Path, recorder) -> None:
    """A root that does not exist is a usage error naming it."""
    with pytest.raises(UsageError, match="cannot be resolved"):
        FanotifySensor(roots=[tmp_path / "absent"], sink=recorder)


def test_probe_without_cap_sys_admin_says_what_is_missing() -> None:
    """Without CAP_SYS_ADMIN the probe says fanotify is unusable and names the capability."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux setpriv to drop a capability")
    code = (
        "import tempfile; from pathlib import Path; from agent.sensors import probe_fanotify; "
        "s = probe_fanotify([Path(tempfile.gettempdir())]); print('RESULT', s.usable, s.reason)"
    )
    out = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT_S,
    ).stdout
    out = next(line for line in out.splitlines() if line.startswith("RESULT "))
    assert out.startswith("RESULT False")
    assert "CAP_SYS_ADMIN" in out


@needs_names
def test_without_file_handles_the_sensor_degrades_to_open_and_close(weights: Path) -> None:
    """Without CAP_DAC_READ_SEARCH the names group is off, said so, and opens still arrive."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux setpriv to drop a capability")
    code = """
import sys
from pathlib import Path
from agent.sensors import FanotifySensor
root = Path(sys.argv[1])
with FanotifySensor(roots=[root], sink=lambda r: None) as s:
    print("RESULT", s.support.names, s.self_test(root / "model.safetensors"), s.support.reason)
"""
    out = subprocess.run(
        ["setpriv", "--bounding-set=-dac_read_search", sys.executable, "-c", code, str(weights)],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT_S * 3,
    ).stdout
    out = next(line for line in out.splitlines() if line.startswith("RESULT "))
    assert out.startswith("RESULT False True")
    assert "CAP_DAC_READ_SEARCH" in out


def test_starting_twice_is_refused(sensor: FanotifySensor) -> None:
    """A started sensor cannot be started again."""
    with pytest.raises(UsageError):
        sensor.start()


def test_stop_of_a_never_started_sensor_is_harmless(weights: Path, recorder) -> None:
    """stop() on a sensor that never started does nothing."""
    sensor = FanotifySensor(roots=[weights], sink=recorder)
    sensor.stop()
    assert not sensor.running


def test_start_failure_is_a_weightwarden_error(weights: Path) -> None:
    """A sensor that cannot start raises the project's error type with a reason."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux setpriv to drop a capability")
    code = """
import sys
from pathlib import Path
from agent.sensors import FanotifySensor
from weightwarden.errors import WeightwardenError
try:
    FanotifySensor(roots=[Path(sys.argv[1])], sink=lambda r: None).start()
except WeightwardenError as exc:
    print("RESULT error:", exc)
"""
    out = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", sys.executable, "-c", code, str(weights)],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT_S,
    ).stdout
    out = next(line for line in out.splitlines() if line.startswith("RESULT "))
    assert out.startswith("RESULT error:")
    assert "CAP_SYS_ADMIN" in out
