"""What in an agent's own events a person must look at: the rules behind the first alerts.

Each rule is a pure function of one decoded event that returns a :class:`Signal` or
``None``; :func:`signals` applies every rule. The collector pre-filters the stream cheaply
(only events that can match are decoded) and turns signals into alerts, merging the
signals of one rule and one :attr:`Signal.group` from one batch into a single alert.

==================  ========  =====================================================
rule                severity  fires on
==================  ========  =====================================================
canary touch        CRITICAL  a File System Activity on a canary (honeypot) file
seal tampered       CRITICAL  a file whose content no longer matches its seal (the
                    HIGH      sealed weights were rewritten); HIGH for a seal
                              re-verification that failed (reported HIGH)
weights copied      HIGH      a file written outside the weights whose content is a
                    CRITICAL  sealed file's; CRITICAL when the agent rated the copy
                              CRITICAL (a removable-media destination); the copies
                              into one folder from one batch are one alert
agent health        >= HIGH   a Detection Finding the agent raised about itself
                              (sensor overflow, spool or queue drops) at HIGH or above
agent finding       >= HIGH   any other Detection Finding in the stream at HIGH or above
==================  ========  =====================================================

No rule reads the clock, a file or the network; the same events give the same signals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from weightwarden.events import (
    DetectionFinding,
    FileActivity,
    SealStatus,
    Severity,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from weightwarden.events import Actor, Device, Event

__all__ = [
    "AGENT_FINDING_RULE",
    "AGENT_HEALTH_RULE",
    "CANARY_RULE",
    "COPY_RULE",
    "RULES",
    "SEAL_RULE",
    "Signal",
    "agent_finding",
    "canary_touch",
    "seal_tampered",
    "signals",
    "weights_copied",
]

CANARY_RULE: Final = "weightwarden.rule.canary_touch"
SEAL_RULE: Final = "weightwarden.rule.seal_tampered"
COPY_RULE: Final = "weightwarden.rule.weights_copied"
AGENT_HEALTH_RULE: Final = "weightwarden.rule.agent_health"
AGENT_FINDING_RULE: Final = "weightwarden.rule.agent_finding"

_AGENT_ANALYTICS: Final = "weightwarden.agent."
"""Prefix of the analytic uids of the findings an agent raises about its own health."""

_CANARY_REASON: Final = (
    "A canary is a decoy weights file that no legitimate job uses: any open, read or "
    "change of it is treated as an intrusion."
)
_TAMPER_REASON: Final = (
    "The file's content no longer matches the signed seal made when the checkpoint was "
    "finished: sealed weights are never rewritten in place."
)
_UNVERIFIED_REASON: Final = (
    "The agent could not re-verify the checkpoint against its seal after a change; until "
    "it can, the weights must be treated as possibly tampered."
)
_COPY_REASON: Final = (
    "The file just written has exactly the content of a sealed weights file: a copy "
    "outside the checkpoint folder is how weights leave. The agent rates a copy to "
    "removable media CRITICAL, any other copy HIGH."
)
_HEALTH_REASON: Final = (
    "The agent reported a problem with itself at HIGH or above: events were lost or a "
    "part of the host is not watched, so the record has a hole an intruder could use."
)
_FINDING_REASON: Final = "The agent raised a finding of severity HIGH or above."


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """One event's reason to alert.

    Attributes:
        rule: The rule's analytic uid (one of the ``*_RULE`` constants).
        name: The rule's analytic name, for people.
        severity: How bad it is.
        title: One line for the alert list.
        description: What was seen, in sentences.
        reason: Why the rule fires on this (the alert's explanation).
        group: Signals of one rule with equal groups, from one batch, form one alert
            (one canary session, one tampered checkpoint, one copy).
        evidence_uid: The uid of the event that fired.
        time: The event's time (ms since the epoch).
        device: The host the event came from.
    """

    rule: str
    name: str
    severity: Severity
    title: str
    description: str
    reason: str
    group: str
    evidence_uid: str
    time: int
    device: Device | None


def _who(actor: Actor) -> str:
    """``alice (cat[4242])``, or what is known of it."""
    user = actor.user or (actor.process.user if actor.process else None)
    person = None if user is None else (user.name or f"uid {user.uid}")
    process = actor.process
    program = None
    if process is not None:
        exe = process.exe.rstrip("/").rpartition("/")[2] if process.exe else "pid"
        program = f"{exe}[{process.pid}]"
    if person and program:
        return f"{person} ({program})"
    return person or program or "an unknown actor"


def _host(device: Device | None) -> str:
    return "an unknown host" if device is None else device.hostname


def canary_touch(event: Event) -> Signal | None:
    """A File System Activity on a canary file: CRITICAL, one alert per access session."""
    if not isinstance(event, FileActivity) or not event.canary:
        return None
    who = _who(event.actor)
    what = event.activity.name.lower().replace("_", " ")
    return Signal(
        rule=CANARY_RULE,
        name="canary touch",
        severity=Severity.CRITICAL,
        title=f"Canary touched: {event.file.path} by {who} on {_host(event.device)}",
        description=(
            f"{who} performed '{what}' on the canary file {event.file.path} on "
            f"{_host(event.device)}."
        ),
        reason=_CANARY_REASON,
        group=event.session_uid or event.file.path,
        evidence_uid=event.uid,
        time=event.time,
        device=event.device,
    )


def seal_tampered(event: Event) -> Signal | None:
    """A sealed file changed (CRITICAL), or a re-verification reported HIGH failed (HIGH)."""
    if not isinstance(event, FileActivity) or event.seal is None:
        return None
    seal = event.seal
    detail = f" ({seal.detail})" if seal.detail else ""
    if seal.status is SealStatus.TAMPERED:
        title = (
            f"Sealed weights changed: {event.file.path} by {_who(event.actor)} "
            f"on {_host(event.device)}"
        )
        reason = _TAMPER_REASON
        severity = Severity.CRITICAL
    elif seal.status is SealStatus.UNVERIFIED and Severity.HIGH <= event.severity <= Severity.FATAL:
        title = f"Seal re-verification failed: {event.file.path} on {_host(event.device)}"
        reason = _UNVERIFIED_REASON
        severity = Severity.HIGH
    else:
        return None
    return Signal(
        rule=SEAL_RULE,
        name="seal tampered",
        severity=severity,
        title=title,
        description=(
            f"{event.file.path} on {_host(event.device)}: seal {seal.status.value}{detail}; "
            f"last changed by {_who(event.actor)}."
        ),
        reason=reason,
        group=seal.seal_uid or event.file.path,
        evidence_uid=event.uid,
        time=event.time,
        device=event.device,
    )


def weights_copied(event: Event) -> Signal | None:
    """A copy of sealed weights: HIGH, CRITICAL where the agent rated it so (removable)."""
    if not isinstance(event, FileActivity) or event.copy_source is None:
        return None
    rated_critical = event.severity in (Severity.CRITICAL, Severity.FATAL)
    severity = Severity.CRITICAL if rated_critical else Severity.HIGH
    who = _who(event.actor)
    return Signal(
        rule=COPY_RULE,
        name="weights copied",
        severity=severity,
        title=f"Sealed weights copied to {event.file.path} by {who} on {_host(event.device)}",
        description=(
            f"{who} wrote {event.file.path} on {_host(event.device)}, a copy of the sealed "
            f"file {event.copy_source}"
            + (
                f" (same content as {len(event.related_paths)} sealed files)."
                if len(event.related_paths) > 1
                else "."
            )
        ),
        reason=_COPY_REASON,
        group=event.file.path.rpartition("/")[0] or event.file.path,  # one copy job, one alert
        evidence_uid=event.uid,
        time=event.time,
        device=event.device,
    )


def agent_finding(event: Event) -> Signal | None:
    """A Detection Finding of severity HIGH or above in an agent's stream, as it stands."""
    if not isinstance(event, DetectionFinding) or not (
        Severity.HIGH <= event.severity <= Severity.FATAL
    ):
        return None
    health = (event.analytic.uid or "").startswith(_AGENT_ANALYTICS)
    return Signal(
        rule=AGENT_HEALTH_RULE if health else AGENT_FINDING_RULE,
        name="agent health" if health else "agent finding",
        severity=event.severity,
        title=f"{_host(event.device)}: {event.title}",
        description=event.description or event.title,
        reason=_HEALTH_REASON if health else _FINDING_REASON,
        group=event.uid,
        evidence_uid=event.uid,
        time=event.time,
        device=event.device,
    )


RULES: Final[tuple[Callable[[Event], Signal | None], ...]] = (
    canary_touch,
    seal_tampered,
    weights_copied,
    agent_finding,
)
"""Every rule, in the order :func:`signals` applies them."""


def signals(event: Event) -> tuple[Signal, ...]:
    """Every rule's signal for ``event`` (usually none)."""
    return tuple(signal for rule in RULES if (signal := rule(event)) is not None)
