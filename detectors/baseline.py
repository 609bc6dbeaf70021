"""Robust z-scores of each user-day against the entity's own history and its peers.

For every feature (:data:`~detectors.features.FEATURES`, compared as ``log1p`` so a
doubling counts the same at any scale), a day is compared with

* the entity's own previous active days within :data:`HISTORY_DAYS` (above their 85th
  percentile, in units of their MAD once there are :data:`MIN_HISTORY` of them, of the
  peers' before), and above what it did on the same weekday in earlier weeks: what it
  does every week is its normal, however spiky,
* its peer group (the role of its team) over the whole run (median and MAD), and
* every entity's days over the whole run.

A feature is unusual when it is above *all three* (the least of the z-scores): busy people
stay busy, a new project's ramp-up that looks like the rest of the team is not theft, and an
administrator who rarely reads weights reading a few is still reading far less than the
people who work with them every day.
An entity with fewer than two earlier days is judged against its peers alone; until it has
:data:`MIN_HISTORY`, at a higher bar.
Only increases count; a quiet day is not a risk. The finding names the three features that
contributed most with their typical (entity median, else peer median) and actual values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from detectors.features import FEATURES, rising_features
from detectors.finding import Finding
from weightwarden.events import AnalyticType, Severity

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from numpy.typing import NDArray

    from detectors.features import DayRow

__all__ = ["HISTORY_DAYS", "MIN_HISTORY", "Z_RULE", "robust_scale", "robust_z_findings"]

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
_WEEK: Final = 7
_MIN_PRIOR: Final = 2
"""With fewer earlier days than this an entity is judged against its peers alone."""
_USUAL_HIGH: Final = 0.85
"""A day is compared with the entity's usual high (this quantile of its recent days), not
its median: what it does every week (a backup, a sweep) is not unusual for it."""


_ROLLING: Final = tuple(
    (FEATURES.index(name), FEATURES.index(name.removesuffix("_7d")))
    for name in FEATURES
    if name.endswith("_7d")
)


def quiet_rolling(raw: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which features are seven-day sums whose daily part is zero today.

    A week's total stays high for six days after one busy day; only a day that adds to it
    can be unusual because of it (else one incident echoes for a week).
    """
    mask = np.zeros(len(FEATURES), dtype=bool)
    for rolling, daily in _ROLLING:
        mask[rolling] = raw[daily] <= 0
    return mask


def robust_scale(mad: NDArray[np.float64]) -> NDArray[np.float64]:
    """The spread a median absolute deviation stands for, never below :data:`_MIN_SCALE`."""
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
        "*": robust_scale(np.median(np.abs(values - everyone), axis=0))
    }
    for role in np.unique(roles):
        block = values[roles == role]
        median = np.median(block, axis=0)
        peer_median[str(role)] = median
        peer_scale[str(role)] = robust_scale(np.median(np.abs(block - median), axis=0))
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
        earlier = days[: index - start]
        history = values[start:index][earlier >= row.day - HISTORY_DAYS]
        weekly = values[start:index][(row.day - earlier) % _WEEK == 0]
        if len(weekly):
            # The same weekday in earlier weeks: a weekly job is its own baseline.
            z_peer = np.minimum(z_peer, (x - weekly.max(axis=0)) / peer_scale[role])
        if len(history) >= _MIN_PRIOR:
            # Compared with what it did before: above its usual high, in units of its own
            # spread once it has enough days, else of its peers'.
            median = np.median(history, axis=0)
            usual_high = np.maximum(median, np.quantile(history, _USUAL_HIGH, axis=0))
            scale = (
                robust_scale(np.median(np.abs(history - median), axis=0))
                if len(history) >= MIN_HISTORY
                else peer_scale[role]
            )
            z = np.minimum((x - usual_high) / scale, z_peer)
            typical = np.expm1(median)
            threshold = _THRESHOLD if len(history) >= MIN_HISTORY else _PEER_ONLY_THRESHOLD
        else:
            z = z_peer
            typical = np.expm1(peer_median[role])
            threshold = _PEER_ONLY_THRESHOLD
        z = np.where(quiet_rolling(row.values), 0.0, z)
        top = float(z.max())
        if top < threshold:
            continue
        contributions, named = rising_features(row, z, typical, _TOP)
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
                title=f"{row.entity}: unusual day: {named}",
                reason=(
                    "The day lies far above the user's own recent days and same weekdays, the "
                    "peers in the same role and everyone (smallest of the robust z-scores, "
                    f"largest feature: {top:.1f}): {named}."
                ),
                contributions=contributions,
                evidence=row.evidence,
            )
        )
    return found
