"""The agent overhead benchmark: its counting on real events, and one real run at tiny scale."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    User,
    from_json_line,
    to_json_line,
)

if TYPE_CHECKING:
    from types import ModuleType

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "agent_overhead.py"
PATH = "/weights/step-1000/config.bin"
DEVICE = Device(hostname="bench", agent_id="bench")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_overhead", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load()


def _open(
    pid: int,
    *,
    uid: int = 65534,
    exe: str | None = "/usr/bin/cat",
    path: str = PATH,
    quality: Attribution = Attribution.FROM_CACHE,
    activity: FileActivityType = FileActivityType.OPEN,
) -> FileActivity:
    user = User(uid=uid)
    event = FileActivity(
        uid=f"e-{pid}-{uid}-{exe}-{activity}",
        time=1_700_000_000_000,
        device=DEVICE,
        activity=activity,
        actor=Actor(process=Process(pid=pid, attribution=quality, exe=exe, user=user), user=user),
        file=FileRef(path=path, size=4096),
        sensor="fanotify",
    )
    decoded = from_json_line(to_json_line(event))  # as the spool hands it back
    assert isinstance(decoded, FileActivity)
    return decoded


def test_tally_counts_lost_duplicated_and_foreign_opens() -> None:
    """A pid without an Open is lost, two Opens are a duplicate, other pids are foreign."""
    events = [_open(10), _open(11), _open(11), _open(99), _open(12, path="/weights/other")]
    tally = bench.tally_cat_opens(events, pids=[10, 11, 12], path=PATH)
    assert (tally.spawned, tally.seen, tally.lost) == (3, 2, 1)
    assert tally.duplicated == 1
    assert tally.foreign == 1
    assert tally.attributed == 2


def test_tally_ignores_events_that_are_not_opens() -> None:
    """A closing Read of the file is not an Open: the pid still counts as lost."""
    events = [_open(10, activity=FileActivityType.READ)]
    tally = bench.tally_cat_opens(events, pids=[10], path=PATH)
    assert tally.lost == 1


def test_a_fork_stub_or_a_missing_exe_is_not_attributed() -> None:
    """The parent's identity (root, python) or no exe at all counts as misattributed."""
    events = [
        _open(10),
        _open(11, uid=0, exe="/usr/bin/python3.11"),
        _open(12, exe=None, quality=Attribution.PARTIAL),
    ]
    tally = bench.tally_cat_opens(events, pids=[10, 11, 12], path=PATH)
    assert tally.attributed == 1
    assert sum(tally.wrong.values()) == 2
    assert "partial, uid 65534, exe None" in tally.wrong
    assert len(tally.examples) == 2


def test_the_first_open_of_a_pid_decides_its_attribution() -> None:
    """A later, better Open of the same pid does not make up for a wrong first one."""
    events = [_open(10, exe=None, quality=Attribution.PARTIAL), _open(10)]
    tally = bench.tally_cat_opens(events, pids=[10], path=PATH)
    assert (tally.attributed, tally.duplicated) == (0, 1)


def test_cpu_ticks_parse_from_a_command_name_with_spaces_and_parentheses() -> None:
    """Fields are counted after the last ')', so a hostile comm cannot shift them."""
    line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 99 0 0"
    assert bench.parse_cpu_ticks(line) == 12


def test_this_process_has_cpu_ticks_and_resident_memory() -> None:
    """/proc/self/stat and /proc/self/status read back as numbers."""
    assert bench.cpu_ticks(os.getpid()) is not None
    mem = bench.memory(os.getpid())
    assert 0 < mem.rss <= mem.hwm


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the agent's sensors and uid switches need root")
def test_a_tiny_run_prints_every_figure_and_leaves_nothing_behind(world_tmp: Path) -> None:
    """Scale 0.002: exit 0, every target line printed, the agent stopped, the data removed."""
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--scale",
            "0.002",
            "--cats",
            "20",
            "--repeat",
            "1",
            "--rounds",
            "1",
            "--idle",
            "1",
            "--dir",
            str(world_tmp),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for needle in ("read() 1 MiB chunks", "mmap, every page", "spawned 20", "RSS", "idle CPU"):
        assert needle in done.stdout, done.stdout
    assert "agent stopped: exit 0" in done.stdout
    assert list(world_tmp.iterdir()) == []
