"""One simulation run: the organisation, its incidents, and every event in time order.

:func:`simulate` is pure apart from the ``write`` callable it is given: it builds the
organisation, plans the incidents (which may change the routine: departures, trips), plays
them, then runs the routine day by day and hands each event, encoded as one OCSF JSON
line, to ``write`` in time order. Events are kept in a heap only until no later day can
produce an earlier event (people's local days start at most 14 hours before UTC's), so
memory holds about two days of events whatever the period.

Each concern draws from its own generator, seeded from ``seed`` and the concern's name
(``random.Random`` seeds a string through SHA-512, independent of ``PYTHONHASHSEED``), so
the same specification always gives the same bytes.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Final

from collector.simulation._emit import Emitter
from collector.simulation._org import DAY_MS, GrantRecord, build_organisation
from collector.simulation._policy import policy_toml
from collector.simulation._scenarios import Incident, Recorder, Scenarios
from collector.simulation._schedule import Routine
from weightwarden.errors import UsageError, WeightwardenError
from weightwarden.events import epoch_ms, to_json_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from weightwarden.events import Event

__all__ = ["DEFAULT_START", "MIN_USERS", "Simulated", "SimulationSpec", "simulate"]

DEFAULT_START: Final = date(2026, 1, 5)
"""A Monday."""
MIN_USERS: Final = 10
MAX_USERS: Final = 100_000
MAX_WEEKS: Final = 52


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationSpec:
    """What to simulate: how many people, how long, from when, with which seed."""

    users: int
    weeks: int
    seed: int
    start: date = DEFAULT_START

    def check(self) -> None:
        """Refuse a specification the simulator cannot honour.

        Raises:
            UsageError: Too few or too many users or weeks.
        """
        if not MIN_USERS <= self.users <= MAX_USERS:
            msg = f"--users must be {MIN_USERS} to {MAX_USERS}, got {self.users}"
            raise UsageError(msg)
        if not 1 <= self.weeks <= MAX_WEEKS:
            msg = f"--weeks must be 1 to {MAX_WEEKS}, got {self.weeks}"
            raise UsageError(msg)

    @property
    def start_ms(self) -> int:
        """Midnight UTC of the first day, ms since the epoch."""
        return epoch_ms(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC))

    @property
    def end_ms(self) -> int:
        """Midnight UTC after the last day."""
        return self.start_ms + self.weeks * 7 * DAY_MS

    def rng(self, concern: str) -> random.Random:
        """The generator of one concern (organisation, plan, routine, events)."""
        return random.Random(f"weightwarden-simulate/1:{self.seed}:{concern}")  # noqa: S311 -- simulation, not secrets


@dataclass(frozen=True, slots=True, kw_only=True)
class Simulated:
    """What a run produced besides the events themselves."""

    events: int
    incidents: tuple[Incident, ...]
    grants: tuple[GrantRecord, ...]
    entities: int
    policy: str
    """The organisation's policy file text."""


def simulate(spec: SimulationSpec, write: Callable[[str], None]) -> Simulated:
    """Run the simulation, passing each event's JSON line (no newline) to ``write`` in order.

    Raises:
        UsageError: The specification is out of range.
        WeightwardenError: An incident's event fell outside the period (a simulator bug).
    """
    spec.check()
    start, end = spec.start_ms, spec.end_ms
    days = spec.weeks * 7
    org = build_organisation(spec.rng("organisation"), users=spec.users, start=start, days=days)
    heap: list[tuple[int, int, Event]] = []
    order = itertools.count()

    def keep(event: Event) -> None:
        heapq.heappush(heap, (event.time, next(order), event))

    recorder = Recorder(keep)
    emit = Emitter(spec.rng("events"), org.hosts, recorder)
    scenarios = Scenarios(org, spec.rng("plan"), per_scenario=max(2, spec.users // 250))
    scenarios.plan()
    routine = Routine(
        org,
        emit,
        spec.rng("routine"),
        departures=scenarios.departures,
        absences=scenarios.absences,
    )
    incidents = scenarios.play(routine, emit, recorder)
    labelled = {uid for incident in incidents for uid in incident.events}
    written = 0
    lost = 0

    def flush(before: int) -> None:
        nonlocal written, lost
        while heap and heap[0][0] < before:
            time, _, event = heapq.heappop(heap)
            if start <= time < end:
                write(to_json_line(event))
                written += 1
            elif event.uid in labelled:
                lost += 1

    for day in range(days):
        routine.day(day)
        flush(start + (day - 1) * DAY_MS)
    flush(end + DAY_MS * 365)
    if lost:
        msg = f"simulator bug: {lost} labelled event(s) fell outside the period"
        raise WeightwardenError(msg)
    return Simulated(
        events=written,
        incidents=tuple(incidents),
        grants=tuple(org.grants),
        entities=len(emit.entities),
        policy=policy_toml(org),
    )
