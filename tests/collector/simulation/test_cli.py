"""``weightwarden simulate`` in real processes: files written, bad input refused in one line."""

from __future__ import annotations

import json

import pytest

from collector.simulation import SimulationSpec, write_simulation


def test_simulate_writes_events_labels_and_the_default_policy(ww, tmp_path):
    """The command writes all three files and says what it wrote."""
    run = ww(
        "simulate", "--users", "20", "--weeks", "1", "--seed", "5",
        "--out", tmp_path / "ev.jsonl", "--labels", tmp_path / "lab.json",
        "--start", "2026-03-02",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "incidents" in run.stdout
    labels = json.loads((tmp_path / "lab.json").read_text())
    assert labels["policy"] == "lab.policy.toml"
    assert (tmp_path / "lab.policy.toml").is_file()
    assert labels["start"] == 1_772_409_600_000  # 2026-03-02T00:00:00Z
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    assert len(lines) > 1000


def test_an_explicit_policy_path_is_referenced_relative_to_the_labels(ww, tmp_path):
    """--policy elsewhere: the labels file points to it by a relative path."""
    (tmp_path / "out").mkdir()
    (tmp_path / "pol").mkdir()
    run = ww(
        "simulate", "--users", "10", "--weeks", "1", "--seed", "1",
        "--out", tmp_path / "out/e.jsonl", "--labels", tmp_path / "out/l.json",
        "--policy", tmp_path / "pol/org.toml",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    labels = json.loads((tmp_path / "out/l.json").read_text())
    assert labels["policy"] == "../pol/org.toml"
    assert (tmp_path / "pol/org.toml").is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--users", "9", "--weeks", "1"], "--users"),
        (["--users", "10", "--weeks", "0"], "--weeks"),
        (["--users", "ten", "--weeks", "1"], "--users"),
        (["--users", "10", "--weeks", "1", "--start", "2026-02-30"], "--start"),
        (["--users", "10", "--weeks", "1", "--out", "missing/e.jsonl"], "does not exist"),
        (["--users", "10", "--weeks", "1", "--out", "same.json", "--labels", "same.json"],
         "different"),
        (["--users", "10", "--weeks", "1", "--policy", "."], "is a folder"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line(ww, tmp_path, args, says):
    """Each mistake is one line on stderr naming it, exit 2, and nothing written."""
    defaults = {"--seed": "1", "--out": "e.jsonl", "--labels": "l.json"}
    for key, value in defaults.items():
        if key not in args:
            args = [*args, key, value]
    args = [str(tmp_path / a) if a.endswith((".json", ".jsonl")) else a for a in args]
    line = ww("simulate", *args).one_line_error()
    assert says in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_separate_process_writes_the_same_bytes(ww, tmp_path):
    """Another interpreter (another hash seed) gives byte-identical files to an in-process run."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "api").mkdir()
    run = ww(
        "simulate", "--users", "12", "--weeks", "1", "--seed", "9",
        "--out", tmp_path / "cli/e.jsonl", "--labels", tmp_path / "cli/l.json",
        env={"PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert run.code == 0, run.stderr
    write_simulation(
        SimulationSpec(users=12, weeks=1, seed=9),
        events=tmp_path / "api/e.jsonl",
        labels=tmp_path / "api/l.json",
    )
    for name in ("e.jsonl", "l.json", "l.policy.toml"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()


@pytest.mark.slow
def test_the_collector_imports_the_events(ww, tmp_path):
    """``collector import --format ocsf`` stores every simulated event."""
    events = tmp_path / "e.jsonl"
    assert ww(
        "simulate", "--users", "10", "--weeks", "1", "--seed", "4",
        "--out", events, "--labels", tmp_path / "l.json",
    ).code == 0  # fmt: skip
    assert ww("collector", "init", "--dir", tmp_path / "c").code == 0
    run = ww("collector", "import", events, "--format", "ocsf", "--dir", tmp_path / "c")
    assert run.code == 0, run.stderr
    count = len(events.read_text().splitlines())
    assert f"imported {count} new events" in run.stdout
