"""Shared fixtures: a world-readable directory and children running as ``nobody``."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator

NOBODY = 65534


@pytest.fixture
def as_root() -> None:
    """Skip unless the test runs as root (CI does)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: starts processes as uid 65534 and reads their /proc files")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory that uid 65534 can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ww-attribution-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Collect children a test starts, and kill and reap any still running afterwards."""
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        child.wait(timeout=10)


def _wait_for_exec(pid: int, exe_name: str) -> None:
    """Wait until ``pid`` has finished exec'ing ``exe_name`` (argv and environment in place)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            exe = str(Path(f"/proc/{pid}/exe").readlink())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            exe, argv, env = "", b"", b""
        if Path(exe).name == exe_name and argv and env:
            return
        time.sleep(0.01)
    pytest.fail(f"pid {pid} did not exec {exe_name}")


@pytest.fixture
def wait_exec() -> Callable[[int, str], None]:
    """Wait until a child has exec'd a program (exe names it and argv is set up).

    The exe link changes before the new argv and environment are in place, so a test
    that reads them must wait for both.
    """
    return _wait_for_exec
