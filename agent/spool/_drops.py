"""Events the spool refused while full: counted per class, then reported as a health event.

A full spool never drops silently. Each refusal is counted in a :class:`DropLedger`
(persisted with the spool, so a restart does not forget it), and as soon as there is room
the spool appends :func:`drop_report`: a Detection Finding, chained like every other
event, that says how many events of which class were refused and between which times.
The loss itself is then part of the tamper-evident record, and the collector raises it as
an alert.

Until the kernel has an event class for the monitor's own health (OCSF Event Log
Activity, 1008, would fit), the report is a Detection Finding whose analytic uid is
:data:`SPOOL_DROP_ANALYTIC`; its explanation carries the counts as contributions named
``dropped.<EventClass>`` and ``dropped.total`` (``actual`` the count, ``typical`` 0).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping  # noqa: TC003 - dataclass fields resolve at runtime
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from weightwarden.events import (
    Analytic,
    AnalyticType,
    Contribution,
    DetectionFinding,
    Device,
    Explanation,
    Severity,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["SPOOL_DROP_ANALYTIC", "DropLedger", "drop_report"]

SPOOL_DROP_ANALYTIC: Final = "weightwarden.agent.spool.drop"
"""``analytic.uid`` of the health finding that reports events a full spool refused."""

_RULE: Final = (
    "The spool refuses new events while it holds max_events events or max_bytes bytes; "
    "every refusal is counted and reported in this record once there is room."
)


def _frozen(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted((k, v) for k, v in counts.items() if v)))


@dataclass(frozen=True, slots=True, kw_only=True)
class DropLedger:
    """What a full spool refused: per event class, pending (unreported) and in total.

    Attributes:
        pending: Refused events not yet in a health event, by event class name.
        totals: Refused events since the spool was created, by event class name.
        first_ms: Wall-clock time of the first pending refusal (ms since the epoch).
        last_ms: Wall-clock time of the latest pending refusal.
        reported: Refused events that health events already report.
    """

    pending: Mapping[str, int] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None
    reported: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pending", _frozen(self.pending))
        object.__setattr__(self, "totals", _frozen(self.totals))

    def __hash__(self) -> int:
        return hash((tuple(self.pending.items()), tuple(self.totals.items()), self.reported))

    @property
    def pending_total(self) -> int:
        """Refused events still waiting for their report."""
        return sum(self.pending.values())

    def refuse(self, classes: Iterable[str], now_ms: int) -> DropLedger:
        """Return the ledger with one refusal per item of ``classes`` (event class names)."""
        refused = Counter(classes)
        if not refused:
            return self
        pending = Counter(self.pending)
        pending.update(refused)
        totals = Counter(self.totals)
        totals.update(refused)
        return DropLedger(
            pending=pending,
            totals=totals,
            first_ms=now_ms if self.first_ms is None else self.first_ms,
            last_ms=now_ms,
            reported=self.reported,
        )

    def mark_reported(self) -> DropLedger:
        """Return the ledger after a health event reported every pending refusal."""
        return DropLedger(totals=self.totals, reported=self.reported + self.pending_total)


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def drop_report(
    ledger: DropLedger,
    *,
    uid: str,
    now_ms: int,
    device: Device,
    max_events: int,
    max_bytes: int,
    policy: str,
) -> DetectionFinding:
    """Return the health finding that reports ``ledger``'s pending refusals.

    Raises:
        ValueError: Nothing is pending: there is nothing to report.
    """
    if ledger.first_ms is None or ledger.last_ms is None or not ledger.pending_total:
        raise ValueError("no refused events to report")
    total = ledger.pending_total
    per_class = ", ".join(f"{name} {count}" for name, count in ledger.pending.items())
    plural = "event was" if total == 1 else "events were"
    description = (
        f"The agent's spool was full (policy {policy}; bounds {max_events} events, "
        f"{max_bytes} bytes): {total} {plural} refused between {_iso(ledger.first_ms)} and "
        f"{_iso(ledger.last_ms)} ({per_class}). Those events are lost; this record is their "
        "only trace. Check that the shipper reaches the collector, or raise the bounds."
    )
    counts = [*ledger.pending.items(), ("total", total)]
    contributions = tuple(
        Contribution(feature=f"dropped.{name}", actual=float(count), typical=0.0)
        for name, count in counts
    )
    return DetectionFinding(
        uid=uid,
        time=now_ms,
        severity=Severity.HIGH,
        finding_uid=uid,
        title=f"Agent spool full: {total} {'event' if total == 1 else 'events'} dropped",
        analytic=Analytic(name="agent spool full", kind=AnalyticType.RULE, uid=SPOOL_DROP_ANALYTIC),
        description=description,
        explanation=Explanation(rule=_RULE, contributions=contributions),
        device=device,
    )
