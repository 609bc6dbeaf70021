"""The detection benchmark runs end to end at a tiny scale and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "detect.py"

pytestmark = pytest.mark.slow


def test_detection_speed_recall_and_the_store_path_are_printed(tmp_path: Path) -> None:
    """One tiny seed: speed, precision, the store path, hourly runs, the targets table."""
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--users",
            "30",
            "--weeks",
            "1",
            "--seeds",
            "5",
            "--store",
            "--hourly",
            "12",
            "--hourly-days",
            "2",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"seed 5: [\d,]+ events, \d+ entities: detection [\d.]+ s", out), out
    assert "budget 5/1,000/day" in out
    assert "budget 10/1,000/day" in out
    assert re.search(r"store path: import [\d.]+ s; detect over [\d,]+ stored events", out), out
    assert re.search(r"hourly: \d+ runs of detect --since 24h, every 12 h", out), out
    assert re.search(r"  \d{4}-\d{2}-\d{2}: \d+ alerts \+ \d+ CRITICAL: within budget", out), out
    assert "OVER budget" not in out
    assert "canary_touch" in out
    assert "target same day >= 100%" in out
    assert "load average at end: " in out
