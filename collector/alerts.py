"""Alerts: what the security team triages, built from agent events and integrity findings.

Two sources:

* **Agent events.** :func:`alerts_for_payloads` runs the pure rules of
  :mod:`detectors.agent_signals` over a batch's stored payloads. It is on the ingest hot
  path, so a payload is decoded only when it holds a key that a rule needs (``"canary"``,
  ``"seal"``, ``"copy_source"``, ``"finding_info"``); a batch with none of them costs one
  scan of its joined text for each key. Signals of one rule and one group in one batch
  become one alert.
  :func:`alerts_for_events` does the same for events already decoded (import).
* **The record itself.** :func:`integrity_alert` reports a gap, fork, replay or broken
  link in an agent's chain (built by :mod:`collector.ingest`).

Every alert carries its OCSF Detection Finding (2004, canonical JSON): the ids of the
evidence events, an :class:`~weightwarden.events.Explanation` whose ``rule`` says why it
fired, and the analytic (the rule's name and uid). Alerts derived from events get a
deterministic id from the rule and its first evidence event (the same events give the same
alert id, so importing them again, under any source name, does not duplicate them);
integrity alerts get a fresh one, since each bad batch is its own incident.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Final

from collector.store import Alert
from detectors.agent_signals import signals
from weightwarden.errors import EventFormatError
from weightwarden.events import (
    Analytic,
    AnalyticType,
    DetectionFinding,
    Device,
    Explanation,
    Severity,
    from_json_line,
    to_json_line,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from detectors.agent_signals import Signal
    from weightwarden.events import Event

__all__ = [
    "INTEGRITY_RULES",
    "alert_from_finding",
    "alerts_for_events",
    "alerts_for_payloads",
    "decode_finding",
    "integrity_alert",
]


_RULE_KEYS: Final = ('"canary"', '"seal"', '"copy_source"', '"finding_info"')
"""Keys without one of which no rule of the detectors can fire."""


def _candidate(payload: str) -> bool:
    """Whether the payload holds a key without which no rule of the detectors can fire."""
    return any(key in payload for key in _RULE_KEYS)


_MAX_TITLE_EXTRA: Final = 3

INTEGRITY_RULES: Final = {
    "gap": "weightwarden.integrity.gap",
    "fork": "weightwarden.integrity.fork",
    "replay": "weightwarden.integrity.replay",
    "late": "weightwarden.integrity.late",
    "broken": "weightwarden.integrity.broken_chain",
    "unreadable": "weightwarden.integrity.unreadable_event",
}
"""Analytic uid of each kind of integrity finding, by kind."""


def alert_from_finding(finding: DetectionFinding, *, agent_id: str | None, now: int) -> Alert:
    """The new alert that carries ``finding`` (its id is the finding's ``finding_uid``)."""
    return Alert(
        id=finding.finding_uid,
        created_at=now,
        updated_at=now,
        severity_id=int(finding.severity),
        title=finding.title,
        rule=finding.analytic.uid or finding.analytic.name,
        status="new",
        disposition=None,
        note=None,
        agent_id=agent_id,
        evidence=finding.evidence_uids,
        finding=to_json_line(finding),
    )


def _merge(found: Iterable[Signal], *, agent_id: str | None, now: int) -> list[Alert]:
    groups: dict[tuple[str, str], list[Signal]] = {}
    for signal in found:
        groups.setdefault((signal.rule, signal.group), []).append(signal)
    alerts = []
    for (rule, group), members in groups.items():
        first = members[0]
        evidence = tuple(dict.fromkeys(s.evidence_uid for s in members))
        extra = len(evidence) - 1
        title = first.title if not extra else f"{first.title} (+{extra} more events)"
        descriptions = list(dict.fromkeys(s.description for s in members))
        description = " ".join(descriptions[: _MAX_TITLE_EXTRA + 1])
        if len(descriptions) > _MAX_TITLE_EXTRA + 1:
            description += f" ... and {len(descriptions) - _MAX_TITLE_EXTRA - 1} more."
        key = "\x1f".join((rule, group, evidence[0]))  # event uids are unique: any source
        finding_uid = "ww-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        finding = DetectionFinding(
            uid=finding_uid,
            time=now,
            severity=max(s.severity for s in members),
            finding_uid=finding_uid,
            title=title,
            analytic=Analytic(name=first.name, kind=AnalyticType.RULE, uid=rule),
            description=description,
            evidence_uids=evidence,
            explanation=Explanation(rule=first.reason),
            device=first.device,
        )
        alerts.append(alert_from_finding(finding, agent_id=agent_id, now=now))
    return alerts


def alerts_for_payloads(payloads: Iterable[str], *, agent_id: str | None, now: int) -> list[Alert]:
    """The alerts the rules raise on these OCSF payloads (canonical JSON text).

    A payload that cannot be decoded raises nothing here (ingest reports it separately).
    """
    texts = payloads if isinstance(payloads, list | tuple) else list(payloads)
    if not _candidate("\x00".join(texts)):
        return []  # the usual batch: one scan of the whole instead of four per event
    found: list[Signal] = []
    for payload in texts:
        if not _candidate(payload):
            continue
        try:
            event = from_json_line(payload)
        except EventFormatError:
            continue
        found.extend(signals(event))
    return _merge(found, agent_id=agent_id, now=now) if found else []


def alerts_for_events(events: Iterable[Event], *, agent_id: str | None, now: int) -> list[Alert]:
    """The alerts the rules raise on decoded events (``collector import``)."""
    found = [signal for event in events for signal in signals(event)]
    return _merge(found, agent_id=agent_id, now=now) if found else []


def integrity_alert(
    *,
    kind: str,
    agent_id: str,
    title: str,
    description: str,
    reason: str,
    severity: Severity,
    evidence: Sequence[str],
    now: int,
    hostname: str | None = None,
) -> Alert:
    """An alert about the record itself: a gap, fork, replay or broken link in a chain.

    Args:
        kind: A key of :data:`INTEGRITY_RULES`.
        agent_id: The agent whose chain is affected.
        title: One line, naming the agent and the sequence numbers.
        description: What was found, and where the evidence is (the quarantine id).
        reason: Why this is an integrity problem (the explanation).
        severity: How bad it is.
        evidence: Uids of the events concerned (stored or quarantined).
        now: Creation time, ms since the epoch.
        hostname: The agent's host, if known.
    """
    finding_uid = uuid.uuid4().hex
    finding = DetectionFinding(
        uid=finding_uid,
        time=now,
        severity=severity,
        finding_uid=finding_uid,
        title=title,
        analytic=Analytic(
            name=f"chain integrity ({kind})", kind=AnalyticType.RULE, uid=INTEGRITY_RULES[kind]
        ),
        description=description,
        evidence_uids=tuple(dict.fromkeys(evidence)),
        explanation=Explanation(rule=reason),
        device=Device(hostname=hostname or agent_id, agent_id=agent_id),
    )
    return alert_from_finding(finding, agent_id=agent_id, now=now)


def decode_finding(alert: Alert) -> DetectionFinding | None:
    """The alert's Detection Finding, or None if its stored JSON is not one."""
    try:
        event = from_json_line(alert.finding)
    except EventFormatError:
        return None
    return event if isinstance(event, DetectionFinding) else None
