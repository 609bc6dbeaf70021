"""The ingest benchmark runs end to end at a tiny scale and prints its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "ingest.py"

pytestmark = pytest.mark.slow


def run(*args: str) -> str:
    """The benchmark's output; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--events", "4000", "--agents", "2", "--clients", "1", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_sqlite_throughput_is_printed_with_every_batch_stored(tmp_path: Path) -> None:
    """A real collector takes every batch (all 200) and the figures and load are printed."""
    out = run("--stores", "sqlite", "--no-latency", "--dir", str(tmp_path))
    assert out.startswith("load average at start: ")
    line = next(x for x in out.splitlines() if x.startswith("sqlite "))
    assert re.search(r"4,000 events in +[\d.]+ s = +[\d,]+ events/s", line), line
    assert "answers {200: 4}" in line
    assert "WARNING" not in out
    assert "failed" not in out
    assert "load average at end: " in out
    assert list(tmp_path.iterdir()) == []  # nothing left behind without --keep


def test_workers_take_every_batch_and_the_cpu_of_every_process_is_printed(
    tmp_path: Path,
) -> None:
    """With --workers 2 every batch is stored; workers' CPU and the other processes' show."""
    out = run("--stores", "sqlite", "--no-latency", "--workers", "2", "--dir", str(tmp_path))
    line = next(x for x in out.splitlines() if x.startswith("sqlite "))
    assert "2 worker(s) each" in line, line
    assert "answers {200: 4}" in line, line
    assert "WARNING" not in out
    assert re.search(r"collectors \d+% of one core, client processes \d+%, postgres", out), out


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent's fanotify sensor needs root")
def test_latency_of_a_real_agents_opens_is_matched_in_the_store(tmp_path: Path) -> None:
    """A real agent's opens during the load are all found in the store by path."""
    out = run("--stores", "sqlite", "--open-interval", "0.02", "--dir", str(tmp_path))
    found = re.search(r"open -> stored, (\d+) opens every 20 ms \((\d+) not found\)", out)
    assert found, out
    assert int(found.group(2)) == 0, out
    assert "p95" in out
