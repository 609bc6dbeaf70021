"""User-day features: what one entity did on one UTC day, as numbers models can compare.

:class:`DayFeatures` aggregates a time-ordered stream of :class:`~detectors.access.Access`
into one row per entity and day with the features of :data:`FEATURES`. Events listed as
excluded (the evidence of alerts an analyst marked false positive) are left out, so a
dismissed alert does not teach the baseline that its behaviour is normal or abnormal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from detectors.access import AccessKind
from detectors.finding import DAY_MS, day_of
from weightwarden.events import Contribution

if TYPE_CHECKING:
    from collections.abc import Collection

    from numpy.typing import NDArray

    from detectors.access import Access
    from detectors.context import Context
    from detectors.links import ReadLinks

__all__ = ["FEATURES", "DayFeatures", "DayRow", "rising_features"]

FEATURES: Final = (
    "reads",
    "read_mib",
    "files",
    "checkpoints",
    "assets",
    "hosts",
    "programs",
    "active_hours",
    "egress_mib",
    "egress_destinations",
    "copies",
    "checkpoints_7d",
    "egress_mib_7d",
)
"""The feature columns, in order. ``egress_*`` count connections that follow a weights read
(:class:`~detectors.links.ReadLinks`) to destinations outside the organisation's networks,
approved outside services included (data sent there has left); ``copies`` are copies of
sealed weights outside their approved roots; ``*_7d`` are sums over the last seven days."""

_MIB: Final = float(1 << 20)
_ROLLING_DAYS: Final = 7
_HOUR_MS: Final = 3_600_000
_EVIDENCE_PER_DAY: Final = 400


@dataclass(slots=True)
class _Day:
    reads: int = 0
    read_bytes: int = 0
    files: set[str] = field(default_factory=set)
    checkpoints: set[str] = field(default_factory=set)
    assets: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    hours: set[int] = field(default_factory=set)
    egress_bytes: int = 0
    destinations: set[str] = field(default_factory=set)
    copies: int = 0
    first: int = 0
    last: int = 0
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class DayRow:
    """One entity's day.

    Attributes:
        entity: The user.
        day: Days since the epoch (UTC).
        values: The features, in :data:`FEATURES` order.
        first: Time of the day's first event.
        last: Time of the day's last event.
        evidence: Ids of the day's weights reads, connections out and copies (capped).
    """

    entity: str
    day: int
    values: NDArray[np.float64]
    first: int
    last: int
    evidence: tuple[str, ...]


class DayFeatures:
    """Aggregates accesses into per-entity, per-day feature rows."""

    def __init__(self, context: Context, links: ReadLinks, excluded: Collection[str] = ()) -> None:
        self._context = context
        self._links = links
        self._excluded = excluded
        self._days: dict[tuple[str, int], _Day] = {}

    def __call__(self, access: Access) -> None:
        """Count one access (in time order) into its entity's day."""
        if access.uid in self._excluded:
            return
        key = (access.user, day_of(access.time))
        day = self._days.get(key)
        if day is None:
            day = self._days[key] = _Day(first=access.time)
        day.last = access.time
        day.hours.add(access.time // _HOUR_MS)
        kind = access.kind
        if kind is AccessKind.READ:
            counted = self._read(day, access)
        elif kind is AccessKind.CONNECT:
            counted = not self._context.internal(access.dst_ip) and (
                self._links.linked(access) is not None
            )
            if counted:
                day.egress_bytes += access.bytes_out
                day.destinations.add(access.dst_host or access.dst_ip or "?")
        else:
            source = access.copy_source
            counted = (
                kind in (AccessKind.WRITE, AccessKind.RENAME)
                and source is not None
                and not self._context.approved_copy(source, access.path)
            )
            day.copies += counted
        if counted and len(day.evidence) < _EVIDENCE_PER_DAY:
            day.evidence.append(access.uid)

    def _read(self, day: _Day, access: Access) -> bool:
        asset = self._context.asset_key(access.path) if access.path else None
        if asset is None:
            return False
        if access.phase != "close":
            day.reads += 1
        day.read_bytes += access.bytes
        day.files.add(access.path)
        day.checkpoints.add(access.path.rpartition("/")[0])
        day.assets.add(asset)
        day.hosts.add(access.host)
        if access.program:
            day.programs.add(access.program)
        return True

    def rows(self) -> list[DayRow]:
        """Every entity-day seen, by entity then day, with the rolling features filled in."""
        by_entity: dict[str, list[tuple[int, _Day]]] = {}
        for (entity, day), data in self._days.items():
            by_entity.setdefault(entity, []).append((day, data))
        rows = []
        checkpoints = FEATURES.index("checkpoints")
        egress = FEATURES.index("egress_mib")
        for entity in sorted(by_entity):
            days = sorted(by_entity[entity], key=lambda pair: pair[0])
            recent: list[tuple[int, float, float]] = []
            for day, data in days:
                values = np.array(
                    [
                        data.reads,
                        data.read_bytes / _MIB,
                        len(data.files),
                        len(data.checkpoints),
                        len(data.assets),
                        len(data.hosts),
                        len(data.programs),
                        len(data.hours),
                        data.egress_bytes / _MIB,
                        len(data.destinations),
                        data.copies,
                        0.0,
                        0.0,
                    ],
                    dtype=np.float64,
                )
                recent = [r for r in recent if r[0] > day - _ROLLING_DAYS]
                recent.append((day, values[checkpoints], values[egress]))
                values[-2] = sum(r[1] for r in recent)
                values[-1] = sum(r[2] for r in recent)
                rows.append(
                    DayRow(
                        entity=entity,
                        day=day,
                        values=values,
                        first=data.first,
                        last=min(data.last, (day + 1) * DAY_MS - 1),
                        evidence=tuple(data.evidence),
                    )
                )
        return rows


def rising_features(
    row: DayRow, z: NDArray[np.float64], typical: NDArray[np.float64], top: int = 3
) -> tuple[tuple[Contribution, ...], str]:
    """The ``top`` features furthest above typical (z > 0) and a phrase naming them.

    Returns:
        The contributions (actual and typical values in the features' own units), and
        ``"files 62 against a typical 3, reads 40 against a typical 5"`` for titles.
    """
    order = [i for i in np.argsort(-z)[:top] if z[i] > 0]
    contributions = tuple(
        Contribution(
            feature=FEATURES[i],
            actual=float(row.values[i]),
            typical=round(float(typical[i]), 3),
        )
        for i in order
    )
    named = ", ".join(
        f"{c.feature} {c.actual:.4g} against a typical {c.typical:.4g}" for c in contributions
    )
    return contributions, named
