from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from agent.attribution import (
    IoCounters,
    holders,
    mapped_rss,
    open_files,
    read_io,
    read_position,
)

if TYPE_CHECKING:
    from pathlib import Path

MIB = 1 << 20

MMAP_READER = """
import mmap, sys
with open(sys.argv[1], "rb") as f:  # closed at once: only the mapping holds the file
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
total = 0
for offset in range(0, len(m), mmap.PAGESIZE):
    total += m[offset]
print("ready", flush=True)
sys.stdin.read()
"""

HALF_READER = """
import sys
f = open(sys.argv[1], "rb", buffering=0)
half = int(sys.argv[2])
got = 0
while got < half:
    got += len(f.read(min(1 << 20, half - got)))
print("ready", flush=True)
sys.stdin.read()
"""

SMAPS = """\
7f0000000000-7f0001000000 r--s 00000000 fd:01 1234  /data/ckpt/model.safetensors
Size:              16384 kB
Rss:                8192 kB
Pss:                8192 kB
7f0001000000-7f0001100000 r--s 01000000 fd:01 1234  /data/ckpt/model.safetensors
Size:               1024 kB
Rss:                1024 kB
7f0002000000-7f0002100000 r--p 00000000 fd:01 99  /data/ckpt/model.safetensors.bak
Rss:                 512 kB
7f0003000000-7f0003100000 r--s 00000000 fd:01 77  /data/ckpt/old.bin (deleted)
Rss:                 256 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0  [stack]
Rss:                  64 kB
"""

IO = """\
rchar: 1073741824
wchar: 512
syscr: 1024
syscw: 3
read_bytes: 4096
write_bytes: 0
cancelled_write_bytes: 0
"""


def _write_file(path: Path, size: int) -> Path:
    chunk = bytes(range(256)) * (MIB // 256)
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(chunk)
    return path


def _start(script: str, *args: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


# --- real processes ---------------------------------------------------------------------------


def test_mmap_reader_that_touched_every_page_shows_the_whole_file_resident(
    world_dir: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """A child that mmaps 64 MiB and touches every page has ~64 MiB of the file in Rss."""
    path = _write_file(world_dir / "model.safetensors", 64 * MIB)
    child = _start(MMAP_READER, str(path))
    spawn.append(child)

    rss = mapped_rss(child.pid, path)

    assert 63 * MIB <= rss <= 64 * MIB
    # No read() happened: the offset (of the fd CPython's mmap keeps, if any) stays at 0.
    assert read_position(child.pid, path) in (None, 0)
    assert child.pid in holders([str(world_dir)])


def test_reader_that_read_half_a_file_is_at_half(
    world_dir: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """A child that read() half of a 16 MiB file has its descriptor at exactly half."""
    path = _write_file(world_dir / "shard-0001.bin", 16 * MIB)
    child = _start(HALF_READER, str(path), str(8 * MIB))
    spawn.append(child)

    assert read_position(child.pid, path) == 8 * MIB
    assert str(path) in dict(open_files(child.pid)).values()
    io = read_io(child.pid)
    assert io is not None
    assert io.rchar >= 8 * MIB
    assert mapped_rss(child.pid, path) == 0


def test_holders_match_whole_path_components(
    world_dir: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """A prefix /x/ckpt finds holders of /x/ckpt/f but not of /x/ckpt2/f."""
    (world_dir / "ckpt").mkdir()
    (world_dir / "ckpt2").mkdir()
    path = _write_file(world_dir / "ckpt" / "w.bin", MIB)
    child = _start(HALF_READER, str(path), str(MIB // 2))
    spawn.append(child)

    assert child.pid in holders([str(world_dir / "ckpt")])
    assert child.pid in holders(world_dir / "ckpt/")
    assert child.pid not in holders([str(world_dir / "ckpt2")])
    assert child.pid not in holders([str(world_dir / "ck")])


def test_file_deleted_while_open_is_still_found(
    world_dir: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Deleting a file a reader holds does not hide the read from us."""
    path = _write_file(world_dir / "stolen.bin", 2 * MIB)
    child = _start(HALF_READER, str(path), str(MIB))
    spawn.append(child)
    path.unlink()

    assert read_position(child.pid, path) == MIB
    assert child.pid in holders([str(world_dir)])


def test_exited_process_reports_nothing_held() -> None:
    """A pid that no longer exists gives no files, no position, no Rss and no counters."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert open_files(child.pid) == []
    assert read_position(child.pid, "/etc/passwd") is None
    assert mapped_rss(child.pid, "/etc/passwd") == 0
    assert read_io(child.pid) is None


# --- fixture /proc trees (the parsers, through the same functions) --------------------------


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A /proc with one process 4242 holding smaps and io fixture text."""
    process = tmp_path / "4242"
    process.mkdir()
    (process / "smaps").write_text(SMAPS)
    (process / "io").write_text(IO)
    return tmp_path


def test_rss_sums_every_mapping_of_the_file_and_nothing_else(fake_proc: Path) -> None:
    """Two mappings of the file add up; a file whose name extends it does not count."""
    rss = mapped_rss(4242, "/data/ckpt/model.safetensors", proc_root=fake_proc)
    assert rss == (8192 + 1024) * 1024


def test_rss_of_a_deleted_file_counts(fake_proc: Path) -> None:
    """A mapping shown as 'path (deleted)' counts for the path."""
    assert mapped_rss(4242, "/data/ckpt/old.bin", proc_root=fake_proc) == 256 * 1024


def test_io_counters_parse(fake_proc: Path) -> None:
    """Every /proc/PID/io counter is read."""
    assert read_io(4242, proc_root=fake_proc) == IoCounters(
        rchar=1 << 30,
        wchar=512,
        syscr=1024,
        syscw=3,
        read_bytes=4096,
        write_bytes=0,
        cancelled_write_bytes=0,
    )


def test_truncated_io_counters_are_none(tmp_path: Path) -> None:
    """An io file missing counters is unreadable, not zero."""
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "io").write_text("rchar: 5\n")
    assert read_io(7, proc_root=tmp_path) is None


def test_holders_finds_mapped_files_in_a_fixture_proc(fake_proc: Path) -> None:
    """A process whose maps name a file under the prefix holds it, even with no fds."""
    (fake_proc / "4242" / "maps").write_text(SMAPS)
    (fake_proc / "self").mkdir()  # non-numeric entries are not processes
    assert holders(["/data/ckpt"], proc_root=fake_proc) == [4242]
    assert holders(["/data/other"], proc_root=fake_proc) == []


def test_open_files_lists_real_descriptors_of_this_process(tmp_path: Path) -> None:
    """This process's open file is listed with its fd; sockets and pipes are not."""
    path = tmp_path / "held"
    path.write_bytes(b"x")
    read_end, write_end = os.pipe()
    try:
        with path.open("rb") as held:
            files = open_files(os.getpid())
            assert (held.fileno(), str(path)) in files
            assert all(target.startswith("/") for _, target in files)
            assert read_end not in dict(files)
    finally:
        os.close(read_end)
        os.close(write_end)
