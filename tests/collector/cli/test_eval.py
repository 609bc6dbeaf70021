"""`weightwarden eval` over a simulated organisation, in real processes."""

from __future__ import annotations

import json
import subprocess

import pytest


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, ww):
    """A small organisation, two weeks, written by the real simulate command."""
    directory = tmp_path_factory.mktemp("sim")
    run = ww(
        "simulate",
        "--users",
        "40",
        "--weeks",
        "2",
        "--seed",
        "3",
        "--out",
        directory / "events.jsonl",
        "--labels",
        directory / "labels.json",
    )
    assert run.code == 0, run.stderr
    return directory


def test_eval_reports_every_scenario_at_both_budgets_and_ranks_incidents_first(simulated, ww):
    """--json carries recall per scenario at 5 and 10 a day per 1,000 entities.

    46 entities get one alert a day at either budget, so several incidents of one day
    compete for it; what must hold is that the alerts read are incidents (precision) and
    that incidents rank above the rest (AUC-PR), and that no canary is missed.
    """
    run = ww(
        "eval",
        "--events",
        simulated / "events.jsonl",
        "--labels",
        simulated / "labels.json",
        "--json",
    )
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert [b["budget"] for b in report["budgets"]] == [5.0, 10.0]
    assert report["policy"] is True
    scenarios = {s["scenario"]: s for s in report["budgets"][1]["scenarios"]}
    assert len(scenarios) == 12
    canaries = scenarios["canary_touch"]
    assert canaries["same_day"] == canaries["incidents"] > 0
    assert report["budgets"][0]["alerts"] > 0
    assert report["budgets"][0]["true_alerts"] / report["budgets"][0]["alerts"] >= 0.8
    assert report["auc_pr"] >= 0.8
    assert report["events"] > 1000


def test_eval_prints_a_table_with_precision_and_the_time_detection_took(simulated, ww):
    """The default output is a table a person reads."""
    run = ww("eval", "--events", simulated / "events.jsonl", "--labels", simulated / "labels.json")
    assert run.code == 0, run.stderr
    assert "detection took" in run.stdout
    assert "precision" in run.stdout
    assert "canary_touch" in run.stdout


def test_eval_rejects_a_bad_events_line_naming_the_file_and_line(simulated, tmp_path, ww):
    """A line that is not JSON is exit 2 with its number."""
    events = tmp_path / "events.jsonl"
    lines = (simulated / "events.jsonl").read_text().splitlines()[:5]
    events.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n")
    error = ww("eval", "--events", events, "--labels", simulated / "labels.json").one_line_error()
    assert f"{events}:4" in error


def test_eval_rejects_labels_that_are_not_a_labels_file(simulated, tmp_path, ww):
    """Labels must be simulate's format; anything else is one line, exit 2."""
    labels = tmp_path / "labels.json"
    labels.write_text('{"format": "something else"}')
    error = ww("eval", "--events", simulated / "events.jsonl", "--labels", labels).one_line_error()
    assert "not a labels file" in error
    missing = ww("eval", "--events", simulated / "events.jsonl", "--labels", tmp_path / "none")
    assert "no such file" in missing.one_line_error()


def test_eval_fails_closed_when_the_labelled_policy_is_missing_unless_told_otherwise(
    simulated, tmp_path, ww
):
    """A labels file whose policy is gone is a configuration error; --no-policy runs."""
    doc = json.loads((simulated / "labels.json").read_text())
    doc["policy"] = "gone.toml"
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(doc))
    events = simulated / "events.jsonl"
    error = ww("eval", "--events", events, "--labels", labels).one_line_error(78)
    assert "gone.toml" in error
    run = ww("eval", "--events", events, "--labels", labels, "--no-policy", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["policy"] is False


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly(simulated, ww_argv):
    """`weightwarden eval ... | head -0`: exit 141 (SIGPIPE), no traceback, no error line."""
    args = ["eval", "--events", simulated / "events.jsonl", "--labels", simulated / "labels.json"]
    proc = subprocess.Popen(
        [*ww_argv, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the command writes anything: its first write fails
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert stderr == b""


def test_eval_through_a_store_finds_what_it_finds_from_the_file(simulated, tmp_path, ww):
    """--db imports the events first and detects from the store: the same incidents caught."""
    args = ["--events", simulated / "events.jsonl", "--labels", simulated / "labels.json", "--json"]
    direct = json.loads(ww("eval", *args).stdout)
    run = ww("eval", *args, "--db", tmp_path / "eval.sqlite")
    assert run.code == 0, run.stderr
    stored = json.loads(run.stdout)
    assert stored["events"] == direct["events"]
    assert stored["budgets"] == direct["budgets"]


def test_eval_refuses_events_that_hold_none_of_the_labelled_ones(simulated, tmp_path, make, ww):
    """Events from another run (no labelled event among them) are a usage error, not 0 %."""
    from weightwarden.events import to_json_line  # noqa: PLC0415

    other = tmp_path / "other.jsonl"
    other.write_text(to_json_line(make.file_open("gpu-01")) + "\n")
    error = ww("eval", "--events", other, "--labels", simulated / "labels.json").one_line_error()
    assert "none of the" in error
