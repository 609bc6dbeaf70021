"""`weightwarden access grant|revoke|list` over a real store, in real processes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from collector.cli._access import parse_until
from collector.config import init_directory
from weightwarden.errors import UsageError

POLICY = """\
version = 1

[[assets]]
name = "frontier"
paths = ["/data/ckpt/frontier/**"]
sensitivity = "critical"
owners = ["dana", "lee"]
requires_grant = true

[[assets]]
name = "orphan"
paths = ["/data/ckpt/orphan/**"]

[[access]]
asset = "frontier"
users = ["alice"]
"""
DAY_MS = 86_400_000


@pytest.fixture
def setup(tmp_path):
    """A collector directory and a policy file beside it."""
    layout = init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    return layout.directory, policy


def grant(ww, directory, policy, **overrides):
    options = {
        "user": "alice",
        "asset": "frontier",
        "approver": "dana",
        "until": "7d",
        "reason": "eval sweep for the safety report",
        **overrides,
    }
    args = ["access", "grant", "--dir", directory]
    if policy is not None:
        args += ["--policy", policy]
    for key, value in options.items():
        if value is not None:
            args += [f"--{key}", value]
    return ww(*args)


def listed(ww, directory, *args):
    run = ww("access", "list", "--dir", directory, "--format", "json", *args)
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)


def test_grant_prints_an_id_that_list_shows_in_force(ww, setup):
    """A grant approved by an owner is kept; list shows it active until its expiry."""
    directory, policy = setup
    before = int(time.time() * 1000)
    run = grant(ww, directory, policy)
    assert run.code == 0, run.stderr
    grant_id = run.stdout.strip()
    assert len(grant_id) == 32
    [row] = listed(ww, directory)
    assert (row["id"], row["user"], row["asset"], row["approver"], row["state"]) == (
        grant_id,
        "alice",
        "frontier",
        "dana",
        "active",
    )
    assert row["reason"] == "eval sweep for the safety report"
    assert before + 7 * DAY_MS <= row["until"] <= int(time.time() * 1000) + 7 * DAY_MS
    table = ww("access", "list", "--dir", directory)
    assert table.code == 0
    assert grant_id in table.stdout
    assert "active" in table.stdout


def test_revoke_ends_a_grant_and_only_all_lists_it(ww, setup):
    """A revoked grant leaves the default list; --all shows it as revoked; revoke twice is 2."""
    directory, policy = setup
    grant_id = grant(ww, directory, policy).stdout.strip()
    run = ww("access", "revoke", "--dir", directory, grant_id)
    assert run.code == 0, run.stderr
    assert run.stdout.strip() == f"{grant_id}: revoked"
    assert listed(ww, directory) == []
    [row] = listed(ww, directory, "--all")
    assert row["state"] == "revoked"
    assert (
        "revoked already" in ww("access", "revoke", "--dir", directory, grant_id).one_line_error()
    )
    assert "no grant" in ww("access", "revoke", "--dir", directory, "nope").one_line_error()


def test_the_policy_may_come_from_collector_toml(ww, setup):
    """Without --policy, [detection] policy in DIR/collector.toml is used."""
    directory, policy = setup
    config = directory / "collector.toml"
    config.write_text(
        config.read_text()
        .replace("# policy = ", "policy = ")
        .replace('"/etc/weightwarden/policy.toml"', f'"{policy}"')
    )
    run = grant(ww, directory, None)
    assert run.code == 0, run.stderr
    assert len(listed(ww, directory)) == 1


def test_without_any_policy_grant_exits_78(ww, setup):
    """No --policy and none configured: a config error saying how to name one."""
    directory, _ = setup
    line = grant(ww, directory, None).one_line_error(78)
    assert "no policy file: pass --policy FILE, or set [detection] policy" in line


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"approver": "alice"}, "two-person rule: 'alice' cannot approve their own grant"),
        ({"approver": "mallory"}, "two-person rule: --approver 'mallory' is not an owner"),
        ({"asset": "frontier-7b"}, "--asset 'frontier-7b' is not an asset of the policy"),
        ({"asset": "orphan"}, "asset 'orphan' has no owners in the policy"),
        ({"reason": "   "}, "--reason is blank"),
        ({"reason": "x" * 1001}, "--reason: at most 1000 characters"),
        ({"user": ""}, "--user '': expected a name"),
        ({"user": "alice\x1b[2J"}, "--user"),
        ({"until": "tomorrow"}, "--until 'tomorrow': expected an RFC 3339 time"),
        ({"until": "2030-01-01T00:00:00"}, "expected an RFC 3339 time with its offset"),
        ({"until": "2001-01-01T00:00:00Z"}, "is not in the future"),
        ({"until": "0s"}, "is not in the future"),
        ({"until": "91d"}, "is more than 90 days away"),
        ({"until": None}, "--until"),
        ({"reason": None}, "--reason"),
    ],
)
def test_bad_grants_are_usage_errors_and_store_nothing(ww, setup, overrides, expected):
    """Every refusal is one line, exit 2, and leaves no grant behind."""
    directory, policy = setup
    line = grant(ww, directory, policy, **overrides).one_line_error(2)
    assert expected in line
    assert "\x1b" not in line
    assert listed(ww, directory, "--all") == []


def test_an_invalid_policy_refuses_the_grant_with_exit_78(ww, setup, tmp_path):
    """A policy that does not parse is a config error; nothing is stored."""
    directory, _ = setup
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n")
    assert "empty policy" in grant(ww, directory, bad).one_line_error(78)
    missing = grant(ww, directory, tmp_path / "absent.toml").one_line_error(78)
    assert "policy file not found" in missing
    assert listed(ww, directory, "--all") == []


def test_list_escapes_terminal_control_characters(ww, setup):
    """A hostile reason cannot drive the terminal."""
    directory, policy = setup
    assert grant(ww, directory, policy, reason="ok\x1b[2J").code == 0
    out = ww("access", "list", "--dir", directory).stdout
    assert "\x1b" not in out
    assert "\\x1b[2J" in out


def test_parse_until_reads_times_and_durations_within_90_days():
    """Durations count from now; times need their offset; the window is (now, now + 90d]."""
    now = 1_800_000_000_000
    assert parse_until("36h", now) == now + 36 * 3_600_000
    assert parse_until("90d", now) == now + 90 * DAY_MS
    moment = datetime(2027, 1, 20, tzinfo=UTC)
    at = int(moment.timestamp() * 1000)
    assert parse_until("2027-01-20T01:00:00+01:00", at - DAY_MS) == at
    for text in ("91d", "0s", "2027-01-20T00:00:00"):
        with pytest.raises(UsageError):
            parse_until(text, now)
    with pytest.raises(UsageError, match="more than 90 days"):
        parse_until((moment + timedelta(days=91)).isoformat(), at)
