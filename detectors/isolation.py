"""IsolationForest per role: days whose mix of features is unlike the rest of the peer group.

The robust z-score judges features one at a time; an isolation forest finds combinations
none of which is extreme alone (many hosts *and* a new program *and* some egress). One
forest per role is fitted on that role's user-days (a few thousand rows fit in well under a
second) and refitted on every run: nothing is persisted, so nothing is unpickled. The
days in the top :data:`TAIL` of anomaly scores become low-scored findings that add to the
day's risk; they rarely make an alert alone. Only days with some feature well above the
role's median are reported (a quiet day is isolated too, and is no risk); the explanation
lists the features furthest above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from detectors.baseline import robust_scale
from detectors.features import rising_features
from detectors.finding import Finding
from weightwarden.events import AnalyticType, Severity

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from detectors.features import DayRow

__all__ = ["FOREST_RULE", "TAIL", "forest_findings"]

FOREST_RULE: Final = "weightwarden.ml.isolation_forest"
TAIL: Final = 0.005
"""Share of each role's days reported as anomalous."""
_MIN_ROWS: Final = 50
_TOP: Final = 3
_SEED: Final = 0
_MIN_RISE: Final = 2.0
"""A day is reported only if some feature is this many robust deviations above the role's
median: forests also isolate unusually quiet days, which are no risk."""


def forest_findings(rows: Sequence[DayRow], role_of: Callable[[str], str]) -> list[Finding]:
    """The most isolated entity-days of each role (roles with at least 50 days)."""
    from sklearn.ensemble import IsolationForest  # noqa: PLC0415 -- 1.7 s import, only when fitting

    if not rows:
        return []
    values = np.log1p(np.stack([row.values for row in rows]))
    roles = np.array([role_of(row.entity) for row in rows])
    found = []
    for role in np.unique(roles):
        index = np.flatnonzero(roles == role)
        if len(index) < _MIN_ROWS:
            continue
        block = values[index]
        forest = IsolationForest(n_estimators=100, random_state=_SEED, n_jobs=1)
        forest.fit(block)
        anomaly = -forest.score_samples(block)
        cut = np.quantile(anomaly, 1.0 - TAIL)
        median = np.median(block, axis=0)
        spread = robust_scale(np.median(np.abs(block - median), axis=0))
        peak = float(anomaly.max())
        for position in np.flatnonzero(anomaly >= cut):
            row = rows[int(index[position])]
            z = (block[position] - median) / spread
            if float(z.max()) < _MIN_RISE:
                continue  # isolated by being quiet: a day off is no risk
            contributions, named = rising_features(row, z, np.expm1(median), _TOP)
            strength = (float(anomaly[position]) - cut) / max(peak - cut, 1e-9)
            found.append(
                Finding(
                    rule=FOREST_RULE,
                    name="isolated day (IsolationForest)",
                    kind=AnalyticType.LEARNING,
                    entity=row.entity,
                    time=row.first,
                    severity=Severity.LOW,
                    score=float(10.0 + 20.0 * strength),
                    title=f"{row.entity}: day unlike other {role} days: {named}",
                    reason=(
                        f"Among the {len(index)} days of role {role}, this one is in the most "
                        f"isolated {TAIL:.1%}; furthest from the role's median: {named}."
                    ),
                    contributions=contributions,
                    evidence=row.evidence,
                )
            )
    return found
