"""`weightwarden detect` over a real collector directory, in real processes."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.config import init_directory
from weightwarden.events import to_json_line

DAY = 86_400_000
HOUR = 3_600_000

POLICY = """\
version = 1

[[assets]]
name = "frontier"
paths = ["/data/ckpt/frontier/**"]

[[access]]
asset = "frontier"
users = ["alice"]
"""


@pytest.fixture
def collector(tmp_path, make, ww):
    """A collector directory holding yesterday's reads: alice's, and mallory's."""
    layout = init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))
    now = int(datetime.now(UTC).timestamp() * 1000)
    events = make.read_session("alice", "/data/ckpt/frontier/s1/a.safetensors", now - 20 * HOUR)
    events += make.read_session("mallory", "/data/ckpt/frontier/s1/a.safetensors", now - HOUR)
    records = tmp_path / "events.jsonl"
    records.write_text("".join(to_json_line(event) + "\n" for event in events))
    imported = ww("collector", "import", records, "--format", "ocsf", "--dir", layout.directory)
    assert imported.code == 0, imported.stderr
    (tmp_path / "policy.toml").write_text(POLICY)
    return layout.directory


def test_detect_raises_the_unauthorised_read_and_says_what_it_examined(collector, tmp_path, ww):
    """One alert: mallory's read; the summary counts events, entities and alerts."""
    run = ww("detect", "--dir", collector, "--policy", tmp_path / "policy.toml")
    assert run.code == 0, run.stderr
    assert "4 events from 2 entities" in run.stdout
    assert "mallory" in run.stdout
    assert "without being allowed to" in run.stdout
    listed = ww("alerts", "list", "--dir", collector, "--format", "ocsf")
    [alert] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert alert["finding_info"]["analytic"]["uid"] == "weightwarden.rule.unauthorised_principal"
    policy = tmp_path / "policy.toml"
    again = ww("detect", "--dir", collector, "--policy", policy, "--format", "json")
    assert json.loads(again.stdout)["new_alerts"] == 0
    assert json.loads(again.stdout)["updated_alerts"] == 0


def test_detect_without_a_policy_fails_closed_unless_told_to_run_without_one(collector, ww):
    """No policy is a configuration error (78); --no-policy runs and says what it skipped."""
    missing = ww("detect", "--dir", collector)
    assert "no policy file" in missing.one_line_error(78)
    run = ww("detect", "--dir", collector, "--no-policy")
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("no policy: authorisation, grant and team-hours rules")


def test_detect_refuses_an_invalid_policy_with_its_file_and_line(collector, tmp_path, ww):
    """A policy that does not parse stops detection: exit 78 naming file:line."""
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[[assets]]\nname = "x"\npaths = "/not-a-list"\n')
    error = ww("detect", "--dir", collector, "--policy", bad).one_line_error(78)
    assert f"{bad}:4" in error


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--since", "1d", "--until", "2d"), "must be after --since"),
        (("--since", "yesterday"), "--since"),
        (("--budget", "0"), "--budget"),
        (("--budget", "lots"), "--budget"),
        (("--no-policy", "--policy", "p.toml"), "contradict"),
    ],
)
def test_detect_rejects_bad_arguments_in_one_line(collector, ww, args, expected):
    """Bad input is one line and exit 2."""
    assert expected in ww("detect", "--dir", collector, *args).one_line_error(2)


def test_the_detect_timers_command_line_is_one_detect_accepts(tmp_path, ww):
    """systemd/weightwarden-detect.service's ExecStart parses; without a policy it exits 78."""
    unit = Path(__file__).parents[3] / "systemd" / "weightwarden-detect.service"
    [exec_start] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1:4] == ["detect", "--dir", "/var/lib/weightwarden-collector"]
    layout = init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))
    args = [
        layout.directory if arg == "/var/lib/weightwarden-collector" else arg for arg in argv[2:]
    ]
    assert "set [detection] policy in" in ww("detect", *args).one_line_error(78)
    timer = unit.with_suffix(".timer").read_text()
    assert "OnUnitActiveSec=1h" in timer
