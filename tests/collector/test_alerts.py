"""Alerts from events and integrity findings: OCSF Detection Findings with evidence and why."""

from __future__ import annotations

from collector.alerts import (
    INTEGRITY_RULES,
    alerts_for_events,
    alerts_for_payloads,
    decode_finding,
    integrity_alert,
)
from weightwarden.events import FindingStatus, Severity, to_json_line


def test_payloads_without_candidate_keys_are_never_decoded(make):
    """Ordinary events raise nothing; text that is not even JSON is skipped, not fatal."""
    payloads = [to_json_line(make.file_open("gpu-01")), "not json at all", '{"canary": true}']
    assert alerts_for_payloads(payloads, agent_id="gpu-01", now=1) == []


def test_signals_of_one_rule_and_group_merge_into_one_alert(make):
    """Two canary events of one session: one alert, both as evidence, the title says +1."""
    first, second = make.canary_open("gpu-01"), make.canary_open("gpu-01")
    other = make.canary_open("gpu-01", session="s-2")
    alerts = alerts_for_payloads(
        [to_json_line(e) for e in (first, second, other)], agent_id="gpu-01", now=9
    )
    assert [a.evidence for a in alerts] == [(first.uid, second.uid), (other.uid,)]
    assert alerts[0].title.endswith("(+1 more events)")
    assert (alerts[0].created_at, alerts[0].status, alerts[0].disposition) == (9, "new", None)


def test_an_alert_carries_its_detection_finding(make):
    """The stored finding is OCSF 2004 with analytic, evidence, explanation and device."""
    event = make.copied("gpu-01", removable=True)
    [alert] = alerts_for_events([event], agent_id="gpu-01", now=5)
    finding = decode_finding(alert)
    assert finding is not None
    assert (finding.severity, finding.status) == (Severity.CRITICAL, FindingStatus.NEW)
    assert finding.analytic.uid == alert.rule == "weightwarden.rule.weights_copied"
    assert finding.evidence_uids == (event.uid,)
    assert finding.explanation is not None
    assert "removable" in finding.explanation.rule
    assert finding.device is not None
    assert finding.device.hostname == "gpu-01"


def test_integrity_alerts_name_their_kind_and_get_fresh_ids():
    """Each integrity finding is its own alert, with the rule uid of its kind."""
    one, two = (
        integrity_alert(
            kind="fork",
            agent_id="gpu-01",
            title="Chain fork: agent gpu-01 sent a different event 2",
            description="d",
            reason="r",
            severity=Severity.HIGH,
            evidence=["u1", "u1", "u2"],
            now=3,
        )
        for _ in range(2)
    )
    assert one.id != two.id
    assert one.rule == INTEGRITY_RULES["fork"]
    assert one.evidence == ("u1", "u2")
    finding = decode_finding(one)
    assert finding is not None
    assert finding.title == one.title
