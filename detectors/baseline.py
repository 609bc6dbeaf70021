"""Robust z-scores of each user-day against the entity's own history and its peers.

For every feature (:data:`~detectors.features.FEATURES`, compared as ``log1p`` so a
doubling counts the same at any scale), a day is compared with

* the entity's own previous active days within :data:`HISTORY_DAYS` (median and MAD;
  needs :data:`MIN_HISTORY` of them),
* its peer group (the role of its team) over the whole run (median and MAD), and
* every entity's days over the whole run.

A feature is unusual when it is above *all three* (the least of the z-scores): busy people
stay busy, a new project's ramp-up that looks like the rest of the team is not theft, and an
administrator who rarely reads weights reading a few is still reading far less than the
people who work with them every day.
An entity without enough history is judged against its peers alone, at a higher bar.
Only increases count; a quiet day is not a risk. The finding names the three features that
contributed most with their typical (entity median, else peer median) and actual values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from detectors.features import FEATURES
from detectors.finding import Finding
from weightwarden.events import AnalyticType, Contribution, Severity

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

    from detectors.features import DayRow

__all__ = ["HISTORY_DAYS", "MIN_HISTORY", "Z_RULE", "robust_z_findings"]

Z_RULE: Final = "weightwarden.ml.robust_z"
HISTORY_DAYS: Final = 28
MIN_HISTORY: Final = 5
_THRESHOLD: Final = 3.5
_PEER_ONLY_THRESHOLD: Final = 5.0
_MAD_TO_SIGMA: Final = 1.4826
_MIN_SCALE: Final = 0.25
"""Smallest spread (in log1p units) a baseline is credited with: a perfectly regular
entity must not turn one extra read into an infinite z-score."""
_TOP: Final = 3


def _scale(mad: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.maximum(_MAD_TO_SIGMA * mad, _MIN_SCALE)


def robust_z_findings(rows: Sequence[DayRow], role_of: Callable[[str], str]) -> list[Finding]:
    """The unusual entity-days among ``rows`` (sorted by entity, then day)."""
    if not rows:
        return []
    values = np.log1p(np.stack([row.values for row in rows]))
    roles = np.array([role_of(row.entity) for row in rows])
    everyone = np.median(values, axis=0)
    peer_median: dict[str, NDArray[np.float64]] = {"*": everyone}
    peer_scale: dict[str, NDArray[np.float64]] = {
        "*": _scale(np.median(np.abs(values - everyone), axis=0))
    }
    for role in np.unique(roles):
        block = values[roles == role]
        median = np.median(block, axis=0)
        peer_median[str(role)] = median
        peer_scale[str(role)] = _scale(np.median(np.abs(block - median), axis=0))
    findings = []
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end].entity == rows[start].entity:
            end += 1
        findings.extend(
            _entity_findings(
                rows,
                values=values,
                start=start,
                end=end,
                peer_median=peer_median,
                peer_scale=peer_scale,
                role=str(roles[start]),
            )
        )
        start = end
    return findings


def _entity_findings(
    rows: Sequence[DayRow],
    *,
    values: NDArray[np.float64],
    start: int,
    end: int,
    peer_median: dict[str, NDArray[np.float64]],
    peer_scale: dict[str, NDArray[np.float64]],
    role: str,
) -> list[Finding]:
    found = []
    days = np.array([row.day for row in rows[start:end]])
    for index in range(start, end):
        row = rows[index]
        x = values[index]
        z_peer = np.minimum(
            (x - peer_median[role]) / peer_scale[role], (x - peer_median["*"]) / peer_scale["*"]
        )
        history = values[start:index][days[: index - start] >= row.day - HISTORY_DAYS]
        if len(history) >= MIN_HISTORY:
            median = np.median(history, axis=0)
            z_own = (x - median) / _scale(np.median(np.abs(history - median), axis=0))
            z = np.minimum(z_own, z_peer)
            typical = np.expm1(median)
            threshold = _THRESHOLD
        else:
            z = z_peer
            typical = np.expm1(peer_median[role])
            threshold = _PEER_ONLY_THRESHOLD
        top = float(z.max())
        if top < threshold:
            continue
        order = np.argsort(-z)[:_TOP]
        contributions = tuple(
            Contribution(
                feature=FEATURES[i],
                actual=float(row.values[i]),
                typical=round(float(typical[i]), 3),
            )
            for i in order
            if z[i] > 0
        )
        named = ", ".join(
            f"{c.feature} {c.actual:g} (typical {c.typical:g})" for c in contributions
        )
        score = float(min(60.0, 15.0 + 9.0 * (top - threshold)))
        found.append(
            Finding(
                rule=Z_RULE,
                name="unusual day (robust z-score)",
                kind=AnalyticType.STATISTICAL,
                entity=row.entity,
                time=row.first,
                severity=Severity.MEDIUM if score >= 40 else Severity.LOW,  # noqa: PLR2004 -- the upper third of the scale
                score=score,
                title=f"{row.entity}: unusual day ({named})",
                reason=(
                    "The day lies far above both the user's own recent days and the peers in "
                    f"the same role (largest robust z-score {top:.1f}): {named}."
                ),
                contributions=contributions,
                evidence=row.evidence,
            )
        )
    return found
