"""Off-hours access: weights read outside the reader's team's working hours.

Team hours come from the policy (days and a daily window in the team's UTC offset; a team
without hours, such as an on-call rotation, is never off-hours). One read outside hours is
weak evidence on its own (people work late), so it scores low and adds to the day's risk
rather than making an alert by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from detectors._text import who
from detectors.access import AccessKind
from detectors.finding import DAY_MS, Finding, finding_for
from weightwarden.events import Severity

if TYPE_CHECKING:
    from detectors.access import Access
    from detectors.context import Context
    from policies import Team, WorkingHours

__all__ = ["OFF_HOURS_RULE", "OffHoursRule", "within"]

OFF_HOURS_RULE: Final = "weightwarden.rule.off_hours"

_MINUTE_MS: Final = 60_000
_DAYS: Final = ("thu", "fri", "sat", "sun", "mon", "tue", "wed")
"""Weekday names by days since the epoch modulo 7 (1970-01-01 was a Thursday)."""


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    return int(hours) * 60 + int(minutes or 0)


def within(hours: WorkingHours, time: int) -> bool:
    """Whether ``time`` (ms since the epoch) falls in the working hours."""
    local = time + hours.utc_offset_minutes * _MINUTE_MS
    day, offset = divmod(local, DAY_MS)
    minute = offset // _MINUTE_MS
    start, end = _minutes(hours.start), _minutes(hours.end)
    if start <= end:
        return _DAYS[day % 7] in hours.days and start <= minute < end
    if minute >= start:
        return _DAYS[day % 7] in hours.days
    return minute < end and _DAYS[(day - 1) % 7] in hours.days


class OffHoursRule:
    """A weights read outside the team's hours (LOW, 10)."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self._teams: dict[str, Team | None] = {}

    def __call__(self, access: Access) -> list[Finding]:
        """The finding a read raises when it is outside the reader's hours."""
        policy = self._context.policy
        if policy is None or access.kind is not AccessKind.READ or not access.path:
            return []
        try:
            team = self._teams[access.user]
        except KeyError:
            team = self._teams[access.user] = policy.team_of(access.user)
        if team is None or team.hours is None or not self._context.is_weights(access.path):
            return []
        if within(team.hours, access.time):
            return []
        hours = team.hours
        return [
            finding_for(
                access,
                rule=OFF_HOURS_RULE,
                name="off-hours access",
                severity=Severity.LOW,
                score=10.0,
                title=f"{who(access)} read weights outside {team.name}'s hours",
                reason=(
                    f"Team {team.name} works {', '.join(hours.days)} {hours.start}-{hours.end} "
                    f"(UTC{hours.utc_offset_minutes / 60:+g}h); this read was outside them."
                ),
            )
        ]
