"""The pure rules that turn an agent's own events into signals to alert on."""

from __future__ import annotations

import dataclasses

from detectors.agent_signals import (
    AGENT_FINDING_RULE,
    AGENT_HEALTH_RULE,
    CANARY_RULE,
    COPY_RULE,
    RULES,
    SEAL_RULE,
    signals,
)
from weightwarden.events import (
    Actor,
    Analytic,
    AnalyticType,
    Attribution,
    DetectionFinding,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    SealInfo,
    SealStatus,
    Severity,
    User,
)

HOST = Device(hostname="gpu-01", agent_id="gpu-01")
BOB = User(uid=1001, name="bob")


def opened(**changes) -> FileActivity:
    event = FileActivity(
        uid="e1",
        time=7,
        device=HOST,
        activity=FileActivityType.OPEN,
        actor=Actor(
            process=Process(pid=77, attribution=Attribution.FULL, exe="/usr/bin/python3"),
            user=BOB,
        ),
        file=FileRef(path="/weights/m.safetensors"),
    )
    return dataclasses.replace(event, **changes)


def finding(severity: Severity, analytic_uid: str | None) -> DetectionFinding:
    return DetectionFinding(
        uid="f1",
        time=7,
        severity=severity,
        finding_uid="f1",
        title="Agent spool full: 12 events dropped",
        analytic=Analytic(name="spool", kind=AnalyticType.RULE, uid=analytic_uid),
        device=HOST,
    )


def test_an_ordinary_access_raises_nothing():
    """Reading weights is normal: no rule fires."""
    assert signals(opened()) == ()


def test_a_canary_touch_is_critical_and_names_who_and_where():
    """Any activity on a canary is CRITICAL, grouped by its session."""
    [signal] = signals(opened(canary=True, session_uid="s9"))
    assert (signal.rule, signal.severity, signal.group) == (CANARY_RULE, Severity.CRITICAL, "s9")
    assert signal.title == "Canary touched: /weights/m.safetensors by bob (python3[77]) on gpu-01"
    assert signal.evidence_uid == "e1"


def test_a_tampered_seal_is_high_and_grouped_by_seal():
    """Tampered content is CRITICAL; events of one seal share a group."""
    event = opened(seal=SealInfo(status=SealStatus.TAMPERED, seal_uid="root", detail="modified"))
    [signal] = signals(event)
    assert (signal.rule, signal.severity, signal.group) == (SEAL_RULE, Severity.CRITICAL, "root")
    assert "modified" in signal.description


def test_an_unverifiable_seal_alerts_only_when_the_agent_rated_it_high():
    """UNVERIFIED at HIGH (re-verification failed) alerts; a routine UNVERIFIED does not."""
    unverified = SealInfo(status=SealStatus.UNVERIFIED, detail="too large")
    assert signals(opened(seal=unverified)) == ()
    [signal] = signals(opened(seal=unverified, severity=Severity.HIGH))
    assert signal.title.startswith("Seal re-verification failed")
    assert signals(opened(seal=SealInfo(status=SealStatus.INTACT))) == ()


def test_copies_are_high_and_critical_to_removable_media():
    """A copy of sealed weights is HIGH; one the agent rated CRITICAL (removable) stays so."""
    [plain] = signals(opened(copy_source="/weights/a", severity=Severity.HIGH))
    [usb] = signals(opened(copy_source="/weights/a", severity=Severity.CRITICAL))
    assert (plain.rule, plain.severity) == (COPY_RULE, Severity.HIGH)
    assert usb.severity == Severity.CRITICAL


def test_agent_findings_alert_from_high_upwards():
    """Health findings at HIGH or above alert as health; other findings as agent findings."""
    assert signals(finding(Severity.MEDIUM, "weightwarden.agent.spool.drop")) == ()
    [health] = signals(finding(Severity.HIGH, "weightwarden.agent.spool.drop"))
    assert (health.rule, health.severity) == (AGENT_HEALTH_RULE, Severity.HIGH)
    assert health.title == "gpu-01: Agent spool full: 12 events dropped"
    [other] = signals(finding(Severity.CRITICAL, None))
    assert other.rule == AGENT_FINDING_RULE
    assert signals(finding(Severity.OTHER, None)) == ()


def test_rules_are_pure_functions_of_the_event():
    """The same event always gives the same signals (no clock, no state)."""
    event = opened(canary=True, copy_source="/weights/a")
    assert signals(event) == signals(event)
    assert len(signals(event)) == 2
    assert len(RULES) == 4


def test_the_shards_of_one_copy_share_a_group_and_other_folders_do_not():
    """Copying a checkpoint's shards into one folder is one copy: one group, one alert."""
    first, second, elsewhere = (
        signals(opened(copy_source="/weights/a", file=FileRef(path=path)))[0].group
        for path in ("/home/eve/ckpt/a.safetensors", "/home/eve/ckpt/b.safetensors", "/srv/x/a")
    )
    assert first == second == "/home/eve/ckpt"
    assert elsewhere == "/srv/x"
