"""Fixtures of the sensor tests: a recording sink, world-readable weight roots, readers."""

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

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agent.sensors import SensorEventKind, SensorRecord

WAIT_S = 10.0

_MMAP_READER = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
total = sum(m[i] for i in range(0, len(m), 4096))
m.close()
"""


class Recorder:
    """A sink that keeps every record and lets a test wait for one."""

    def __init__(self) -> None:
        self.records: list[SensorRecord] = []
        self._changed = threading.Condition()

    def __call__(self, record: SensorRecord, /) -> None:
        """Keep one record and wake waiters."""
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[SensorRecord], bool], timeout: float = WAIT_S
    ) -> SensorRecord:
        """Return the first record that matches, waiting for it; fail the test if none comes."""
        found: list[SensorRecord] = []
        scanned = 0

        def match() -> bool:
            nonlocal scanned
            for record in self.records[scanned:]:
                scanned += 1
                if predicate(record):
                    found.append(record)
                    return True
            return False

        with self._changed:
            if not self._changed.wait_for(match, timeout):
                recent = "\n".join(map(repr, self.records[-20:]))
                pytest.fail(f"no matching record within {timeout} s; last records:\n{recent}")
        return found[0]

    def wait_for_kind(
        self, kind: SensorEventKind, path: Path, pid: int | None = None
    ) -> SensorRecord:
        """Wait for a record of ``kind`` on ``path`` (and by ``pid`` when given)."""
        return self.wait_for(
            lambda r: r.kind is kind and r.path == path and (pid is None or r.pid == pid)
        )

    def matching(self, predicate: Callable[[SensorRecord], bool]) -> list[SensorRecord]:
        """The records kept so far that match."""
        with self._changed:
            return [r for r in self.records if predicate(r)]


def _world_readable_dir(prefix: str) -> Path:
    """A fresh directory in the temp dir that any uid can enter (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir())).resolve()
    path.chmod(0o755)
    return path


@pytest.fixture
def recorder() -> Recorder:
    """A sink that keeps every record."""
    return Recorder()


@pytest.fixture
def weights() -> Iterator[Path]:
    """A weight root holding model.safetensors (64 KiB), readable by every uid."""
    root = _world_readable_dir("ww-weights-")
    model = root / "model.safetensors"
    model.write_bytes(os.urandom(64 * 1024))
    model.chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory on the same filesystem as the roots, but not under them."""
    path = _world_readable_dir("ww-outside-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mmap_reader() -> Callable[[Path], list[str]]:
    """The argv of a child Python that reads a whole file through mmap, never read(2)."""
    return lambda path: [sys.executable, "-I", "-c", _MMAP_READER, str(path)]


@pytest.fixture(scope="session")
def mount_namespace() -> None:
    """Skip unless a child can get its own mount namespace (to bind-mount in)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare")
    done = subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True, text=True, check=False, timeout=10
    )
    if done.returncode != 0:
        pytest.skip(f"cannot make a mount namespace (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
