"""`alerts ack|resolve --suppress SCOPE`: triage feedback becomes a stored, scoped suppression."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collector.config import init_directory
from collector.ingest import IngestLimits, Ingestor
from collector.store import SqliteStore

DAY_MS = 86_400_000


@pytest.fixture
def collector(tmp_path, sim_agent, make):
    """A collector whose store holds a canary alert (evidence: alice's open) and a gap alert."""
    layout = init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))
    store = SqliteStore(layout.db)
    try:
        agent = sim_agent("gpu-01")
        store.register_agent(agent_id="gpu-01", public_key_pem=agent.public_pem, now=1)
        ticks = iter(range(1_000_000, 2_000_000, 1000))
        ingest = Ingestor(store, limits=IngestLimits(), clock=lambda: next(ticks)).ingest
        assert ingest(agent.seal(agent.record(make.canary_open("gpu-01")))).status == 200
        items = agent.record_opens(5)
        assert ingest(agent.seal(items[3:])).status == 200  # a gap: an integrity alert
    finally:
        store.close()
    return layout


def alerts(ww, layout):
    run = ww("alerts", "list", "--dir", layout.directory, "--format", "ocsf")
    assert run.code == 0, run.stderr
    found = {}
    for line in run.stdout.splitlines():
        obj = json.loads(line)
        found[obj["finding_info"]["analytic"]["uid"]] = obj["finding_info"]["uid"]
    return found


def stored_suppressions(layout):
    store = SqliteStore(layout.db)
    try:
        return store.suppressions()
    finally:
        store.close()


def canary(ww, layout):
    [(rule, alert_id)] = [(r, a) for r, a in alerts(ww, layout).items() if "canary" in r]
    return rule, alert_id


def test_a_false_positive_with_suppress_stores_a_scoped_suppression(ww, collector):
    """Resolve with --suppress user,program keeps the rule quiet for alice's program, 30 days."""
    rule, alert_id = canary(ww, collector)
    before = int(datetime.now(UTC).timestamp() * 1000)
    run = ww(
        "alerts", "resolve", "--dir", collector.directory, alert_id,
        "--disposition", "false_positive", "--note", "red team", "--suppress", "user,program",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"{alert_id}: resolved (false_positive)"
    assert lines[1].startswith(f"suppressed {rule} for user=alice, program=cat until ")
    [made] = stored_suppressions(collector)
    assert (made.rule, made.user, made.program, made.host, made.path) == (
        rule,
        "alice",
        "cat",
        None,
        None,
    )
    assert made.reason == f"false_positive on alert {alert_id}: red team"
    assert before + 30 * DAY_MS <= made.until <= before + 30 * DAY_MS + 120_000


def test_a_later_true_positive_verdict_lifts_the_suppression_an_earlier_one_made(ww, collector):
    """False positive with --suppress, then true positive: the suppression ends now."""
    _, alert_id = canary(ww, collector)
    directory = collector.directory
    ww(
        "alerts", "resolve", "--dir", directory, alert_id,
        "--disposition", "false_positive", "--suppress", "user",
    )  # fmt: skip
    run = ww("alerts", "resolve", "--dir", directory, alert_id, "--disposition", "true_positive")
    assert run.code == 0, run.stderr
    assert "lifted 1 suppression(s)" in run.stdout
    [lifted] = stored_suppressions(collector)
    assert lifted.until <= int(datetime.now(UTC).timestamp() * 1000)


def test_ack_benign_with_suppress_for_sets_the_expiry(ww, collector):
    """Ack as benign with --suppress host,path --suppress-for 7d lasts seven days."""
    _, alert_id = canary(ww, collector)
    before = int(datetime.now(UTC).timestamp() * 1000)
    run = ww(
        "alerts", "ack", "--dir", collector.directory, alert_id, "--disposition", "benign",
        "--suppress", "host,path", "--suppress-for", "7d",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    [made] = stored_suppressions(collector)
    assert (made.host, made.path) == ("gpu-01", "/weights/canary/model.safetensors")
    assert before + 7 * DAY_MS <= made.until <= before + 7 * DAY_MS + 120_000


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--disposition", "true_positive", "--suppress", "user"], "a true positive must keep"),
        (["--disposition", "benign", "--suppress", "rule"], "'rule' is not a scope"),
        (["--disposition", "benign", "--suppress", "user,user"], "named twice"),
        (["--disposition", "benign", "--suppress-for", "7d"], "--suppress-for goes with"),
        (["--disposition", "benign", "--suppress", "user", "--suppress-for", "2y"], "expected a"),
        (["--disposition", "benign", "--suppress", "user", "--suppress-for", "400d"], "365d"),
    ],
)
def test_bad_suppress_options_are_usage_errors_that_change_nothing(ww, collector, args, expected):
    """Each refusal is one line, exit 2; the alert stays new and nothing is suppressed."""
    _, alert_id = canary(ww, collector)
    line = ww("alerts", "resolve", "--dir", collector.directory, alert_id, *args).one_line_error()
    assert expected in line
    assert stored_suppressions(collector) == []
    assert len(_new(ww, collector)) == 2


def test_integrity_alerts_cannot_be_suppressed(ww, collector):
    """A chain gap stays loud: --suppress is refused and the alert is left as it was."""
    [gap] = [a for r, a in alerts(ww, collector).items() if r.startswith("weightwarden.integrity")]
    line = ww(
        "alerts", "resolve", "--dir", collector.directory, gap,
        "--disposition", "false_positive", "--suppress", "user",
    ).one_line_error()  # fmt: skip
    assert "never suppressed" in line
    assert stored_suppressions(collector) == []
    assert len(_new(ww, collector)) == 2


def test_suppress_for_an_unknown_alert_is_a_usage_error(ww, collector):
    """No such alert: exit 2, nothing stored."""
    line = ww(
        "alerts", "resolve", "--dir", collector.directory, "nothing-like-it",
        "--disposition", "benign", "--suppress", "user",
    ).one_line_error()  # fmt: skip
    assert "no alert" in line
    assert stored_suppressions(collector) == []


def _new(ww, layout):
    run = ww("alerts", "list", "--dir", layout.directory, "--format", "ocsf", "--status", "new")
    return run.stdout.splitlines()
