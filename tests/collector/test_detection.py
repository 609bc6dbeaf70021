"""Batch detection over a real SQLite store: alerts that explain themselves, once each."""

from __future__ import annotations

import pytest

from collector.alerts import alerts_for_events
from collector.detection import accesses_from_lines, run_detection
from collector.store import StoredEvent
from detectors.baseline import Z_RULE
from detectors.integrity import CANARY_RULE
from policies import Suppression, parse_policy
from weightwarden.events import (
    Severity,
    canonical_bytes,
    from_json_line,
)

DAY = 86_400_000
HOUR = 3_600_000
MONDAY = 1_767_571_200_000
"""2026-01-05T00:00:00Z."""

POLICY = parse_policy(
    """
version = 1

[[assets]]
name = "frontier"
paths = ["/data/ckpt/frontier/**"]
sensitivity = "critical"
owners = ["carol"]

[[groups]]
name = "research"
members = ["r0", "r1", "r2", "r3", "r4", "r5"]

[[access]]
asset = "frontier"
groups = ["research"]
programs = ["python3*"]

[[teams]]
name = "research"
role = "researcher"
members = ["r0", "r1", "r2", "r3", "r4", "r5"]
""",
    "test-policy.toml",
)


def store_events(store, events) -> None:
    store.import_events(
        [
            StoredEvent(
                agent_id="import:test",
                seq=0,
                payload=canonical_bytes(event).decode(),
                prev_hash="",
                payload_hash="",
                link_hash="",
                uid=event.uid,
                time=event.time,
                class_uid=1001,
                activity_id=int(event.activity),
                severity_id=int(event.severity),
                received_at=event.time,
            )
            for event in events
        ],
        (),
    )


def ordinary_days(read, days: int) -> list:
    """Six researchers each loading two shards of the latest checkpoint every weekday."""
    events = []
    for day in range(days):
        for n in range(6):
            for shard in range(2):
                at = MONDAY + day * DAY + (9 + n) * HOUR + shard * 120_000
                path = f"/data/ckpt/frontier/step-{day}/model-{shard}.safetensors"
                events += read(f"r{n}", path, at)
    return events


@pytest.fixture
def record(sqlite_store, make):
    """Ten ordinary days, then day 10: an outsider's read, a canary touch, a heavy reader."""
    read = make.read_session
    events = ordinary_days(read, 10)
    day10 = MONDAY + 10 * DAY
    events += read("mallory", "/data/ckpt/frontier/step-9/model-0.safetensors", day10 + 3 * HOUR)
    events += read("r1", "/data/ckpt/old/decoy.safetensors", day10 + 11 * HOUR, canary=True)
    for step in range(10):
        for shard in range(2):
            path = f"/data/ckpt/frontier/step-{step}/model-{shard}.safetensors"
            events += read("r2", path, day10 + 14 * HOUR + step * 1000 + shard)
    store_events(sqlite_store, events)
    return sqlite_store


def detect_day10(store, budget=1000.0):
    """Detect over day 10; the default budget lets every risky day through (8 entities)."""
    day10 = MONDAY + 10 * DAY
    return run_detection(
        store, POLICY, since=day10, until=day10 + DAY, now=day10 + DAY, budget=budget
    )


def test_an_outsider_a_canary_and_a_heavy_reader_are_the_days_alerts_and_explain_why(record):
    """Each alert names its rule, its reason, and cites the events it rests on."""
    run = detect_day10(record)
    by_entity = {risk.entity: risk for risk in run.alerted}
    assert set(by_entity) == {"mallory", "r1", "r2"}
    assert by_entity["r1"].findings[0].rule == CANARY_RULE
    assert by_entity["mallory"].findings[0].name == "unauthorised principal"
    heavy = {f.rule: f for f in by_entity["r2"].findings}
    assert "weightwarden.rule.bulk_read" in heavy
    assert Z_RULE in heavy
    features = {c.feature for c in heavy[Z_RULE].contributions}
    assert features & {"files", "checkpoints", "reads"}
    stored = {alert.id: alert for alert in record.alerts()}
    canary_alert = stored[run.alerts[[r.entity for r in run.alerted].index("r1")].id]
    assert canary_alert.severity_id == Severity.CRITICAL
    assert canary_alert.rule == CANARY_RULE
    assert set(canary_alert.evidence) <= {e.uid for e in record.events()}
    assert "canary" in decode_finding_text(canary_alert)


def decode_finding_text(alert) -> str:
    finding = from_json_line(alert.finding)
    return f"{finding.title} {finding.description} {finding.explanation.rule}".lower()


def test_running_detection_twice_over_a_period_raises_nothing_twice(record):
    """Alert ids come from entity and day: the second run finds the same and adds none."""
    first = detect_day10(record)
    second = detect_day10(record)
    assert first.new_alerts == len(first.alerts) > 0
    assert second.new_alerts == 0
    assert len(record.alerts()) == len(first.alerts)


STEP8 = "/data/ckpt/frontier/step-8/model-1.safetensors"


def test_a_later_run_brings_an_open_alert_up_to_date_and_keeps_its_triage(record, make):
    """Mallory reads again that afternoon: the next run adds the new evidence to her alert."""
    first = detect_day10(record)
    alert = first.alerts[[r.entity for r in first.alerted].index("mallory")]
    record.update_alert(alert.id, status="acknowledged", disposition="benign", note="?", now=1)
    afternoon = MONDAY + 10 * DAY + 16 * HOUR
    later = make.read_session("mallory", STEP8, afternoon)
    store_events(record, later)

    again = detect_day10(record)

    assert (again.new_alerts, again.updated_alerts) == (0, 1)
    refreshed = record.alert(alert.id)
    assert set(alert.evidence) < set(refreshed.evidence)
    assert {event.uid for event in later} & set(refreshed.evidence)
    assert (refreshed.created_at, refreshed.status, refreshed.note) == (
        alert.created_at,
        "acknowledged",
        "?",
    )
    assert detect_day10(record).updated_alerts == 0  # nothing new: nothing touched


def test_a_resolved_alert_is_left_as_it_was_closed(record, make):
    """Evidence that arrives after an alert was resolved does not reopen or rewrite it."""
    first = detect_day10(record)
    alert = first.alerts[[r.entity for r in first.alerted].index("mallory")]
    closed = record.update_alert(
        alert.id, status="resolved", disposition="true_positive", note="done", now=1
    )
    afternoon = MONDAY + 10 * DAY + 16 * HOUR
    store_events(
        record,
        make.read_session("mallory", STEP8, afternoon),
    )

    assert detect_day10(record).updated_alerts == 0
    assert record.alert(alert.id) == closed


def test_hourly_runs_never_raise_more_than_the_days_budget(sqlite_store, make):
    """The morning run fills the day's one slot; the afternoon's riskier reader waits."""
    read = make.read_session
    day10 = MONDAY + 10 * DAY
    store_events(sqlite_store, ordinary_days(read, 10))
    store_events(sqlite_store, read("mallory", STEP8, day10 + 3 * HOUR))
    morning = detect_day10(sqlite_store, budget=0.001)
    assert [risk.entity for risk in morning.alerted] == ["mallory"]
    store_events(
        sqlite_store,
        [
            event
            for step in range(10)
            for shard in range(2)
            for event in read(
                "r2",
                f"/data/ckpt/frontier/step-{step}/model-{shard}.safetensors",
                day10 + 14 * HOUR + step * 1000 + shard,
            )
        ],
    )

    afternoon = run_detection(  # the timer's run at 18:00: since 06:00, after mallory's read
        sqlite_store,
        POLICY,
        since=day10 + 6 * HOUR,
        until=day10 + 18 * HOUR,
        now=day10 + 18 * HOUR,
        budget=0.001,
    )

    risk = {r.entity: r.score for r in afternoon.detection.risks}
    assert risk["r2"] > risk["mallory"]  # r2 would take the slot if it were free
    assert [r.entity for r in afternoon.alerted] == ["mallory"]
    assert [alert.id for alert in sqlite_store.alerts()] == [morning.alerts[0].id]


def test_a_budget_keeps_the_riskiest_days_and_never_drops_a_critical_one(record):
    """A budget of one alert a day keeps the canary (CRITICAL) and the riskiest other day."""
    run = detect_day10(record, budget=0.001)
    assert run.daily_budget == 1
    assert "r1" in {risk.entity for risk in run.alerted}


def test_a_false_positive_keeps_its_events_out_of_the_next_runs_baselines(record):
    """r2's heavy day is dispositioned false positive: the z-score no longer sees it."""
    run = detect_day10(record)
    heavy = run.alerts[[r.entity for r in run.alerted].index("r2")]
    record.update_alert(
        heavy.id, status="resolved", disposition="false_positive", note="migration", now=1
    )
    again = detect_day10(record)
    rules = {f.rule for f in again.detection.findings if f.entity == "r2"}
    assert Z_RULE not in rules
    assert "weightwarden.rule.bulk_read" in rules  # rules still judge; suppressions silence them


def test_a_stored_suppression_silences_its_rule_for_its_scope_only(record):
    """A suppression of the canary rule for r1 silences r1's canary alert, nothing else."""
    record.add_suppression(
        Suppression(rule=CANARY_RULE, reason="red-team exercise", user="r1"),
        suppression_id="sup-1",
        created_at=1,
    )
    run = detect_day10(record)
    assert "r1" not in {risk.entity for risk in run.alerted}
    assert {"mallory", "r2"} <= {risk.entity for risk in run.alerted}
    assert run.detection.suppressed >= 1


def test_lines_that_are_not_activity_are_skipped_when_reading_events(make):
    """Garbage, findings and other JSON are not accesses; a file activity is."""
    [event] = make.read_session("r0", "/data/ckpt/frontier/a.safetensors", MONDAY)[:1]
    lines = [b"not json", b"[]", b'{"class_uid": 2004}', canonical_bytes(event)]
    [access] = accesses_from_lines(lines)
    assert (access.uid, access.user, access.program) == (event.uid, "r0", "python3.11")


def test_a_day_whose_evidence_an_ingest_alert_already_cites_is_not_raised_again(record):
    """The canary alert raised when the events arrived stands; detect does not repeat it."""
    canary_events = [
        from_json_line(event.payload)
        for event in record.events()
        if '"canary":true' in event.payload
    ]
    record.add_alerts(alerts_for_events(canary_events, agent_id="import:test", now=1))
    run = detect_day10(record)
    assert "r1" not in {risk.entity for risk in run.alerted}
    assert run.already_alerted == 1
    assert {"mallory", "r2"} <= {risk.entity for risk in run.alerted}
