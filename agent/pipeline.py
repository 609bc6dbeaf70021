r"""From sensor records to security events: attribution, sessions, canaries, seal triggers.

:class:`EventPipeline` is called from the daemon's one pipeline thread. ``handle`` turns one
:class:`~agent.sensors.SensorRecord` into zero or more events; ``tick`` does the periodic
work (usage samples, progress events for long-held files). Heavy work (hashing a possible
copy, sealing, re-verifying) is not done here: the pipeline hands it to the daemon's
worker through the ``submit`` callable, so one large file never stalls the event stream.

What becomes an event:
- an open under a weight root: ``Open``, with the actor; a canary is CRITICAL;
- a close without write: ``Read`` with the session's bytes read, mapped bytes and fraction;
- a close after write, create, delete, rename under a root: ``Update``/``Create``/
  ``Delete``/``Rename`` (a rename carries the new path), and a seal trigger;
- a close after write elsewhere on a watched filesystem (``/tmp``, ``/dev/shm``, home): a
  copy check, reported only when the content matches a sealed file;
- sensor overflow or an unwatched folder: a HIGH health finding, because events were lost.

Paths stay as the kernel gave them inside the agent (sessions, usage probes, seal triggers,
copy checks all need the real name); only the events spell undecodable bytes as ``\xNN``
(:func:`agent.actor.event_text`), so a file named to be unencodable is still reported.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from agent.actor import event_text, unknown_actor
from agent.sealer import Change
from agent.sensors import SensorEventKind
from weightwarden.events import (
    Actor,
    Analytic,
    AnalyticType,
    DetectionFinding,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    SessionPhase,
    Severity,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from agent.canary import CanaryRegistry
    from agent.egress import EgressWatcher
    from agent.sealer import SealPlanner
    from agent.sensors import SensorRecord
    from agent.sessions import Session, SessionTracker
    from weightwarden.events import Event

__all__ = ["HEALTH_ANALYTIC", "EventPipeline", "UsageProbe", "health_finding"]

HEALTH_ANALYTIC = "weightwarden.agent.health"

_WRITE_KINDS = {
    SensorEventKind.CLOSE_WRITE: FileActivityType.UPDATE,
    SensorEventKind.CREATE: FileActivityType.CREATE,
    SensorEventKind.DELETE: FileActivityType.DELETE,
    SensorEventKind.RENAME: FileActivityType.RENAME,
    SensorEventKind.MOVED_FROM: FileActivityType.RENAME,
    SensorEventKind.MOVED_TO: FileActivityType.RENAME,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageProbe:
    """How the pipeline measures a session's reads (``/proc`` readers, passed in)."""

    read_position: Callable[[int, str], int | None]
    mapped_rss: Callable[[int, str], int]
    alive: Callable[[int], bool]


def health_finding(
    *, device: Device, now_ms: int, title: str, description: str, severity: Severity
) -> DetectionFinding:
    """A finding about the monitor itself (lost events, a dead sensor), kept in the record."""
    uid = uuid.uuid4().hex
    return DetectionFinding(
        uid=uid,
        time=now_ms,
        severity=severity,
        finding_uid=uid,
        title=title,
        analytic=Analytic(name="agent health", kind=AnalyticType.RULE, uid=HEALTH_ANALYTIC),
        description=description,
        device=device,
    )


class EventPipeline:
    """Turns sensor records into events; one thread calls it (see the module doc)."""

    def __init__(
        self,
        *,
        device: Device,
        roots: Sequence[str],
        sensor_name: str,
        sessions: SessionTracker,
        attribute: Callable[[int, float], Actor],
        canaries: CanaryRegistry,
        usage: UsageProbe,
        wall_ms: Callable[[], int],
        monotonic: Callable[[], float],
        planner: SealPlanner | None = None,
        egress: EgressWatcher | None = None,
        submit_copy_check: Callable[[str, Actor, int], None] | None = None,
        copy_candidate: Callable[[int | None], bool] = lambda _size: True,
        max_samples_per_tick: int = 512,
        own_pids: frozenset[int] = frozenset(),
    ) -> None:
        self._device = device
        self._prefixes = tuple(r.rstrip("/") + "/" for r in roots)
        self.sensor_name = sensor_name
        self._sessions = sessions
        self._attribute = attribute
        self.canaries = canaries
        self._usage = usage
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._planner = planner
        self._egress = egress
        self._submit_copy_check = submit_copy_check
        self._copy_candidate = copy_candidate
        """Cheap pre-check (a sealed file of this size?) before paying for attribution."""
        self._max_samples = max_samples_per_tick
        self.own_pids = own_pids
        """The agent's own processes: its reads while sealing are not accesses to report."""
        self._sample_cursor = 0
        self._clocks = (0, 0.0)
        """(wall ms, monotonic s) read once per record, so all its times agree."""
        self.unmatched_closes = 0
        self.ignored = 0

    def in_roots(self, path: str) -> bool:
        """Whether ``path`` lies under a weight root."""
        return path.startswith(self._prefixes)

    def _when(self, record: SensorRecord) -> int:
        """When the sensor read ``record``, in wall-clock ms (the same for all its events)."""
        wall, monotonic = self._clocks
        return wall - int((monotonic - record.monotonic) * 1000)

    def _actor(self, record: SensorRecord) -> Actor:
        if record.pid is None:
            return unknown_actor()
        return self._attribute(record.pid, record.monotonic)

    def handle(self, record: SensorRecord) -> list[Event]:  # noqa: PLR0911 -- one exit per kind
        """Events for one sensor record (often none: most of a filesystem is not ours)."""
        self._clocks = (self._wall_ms(), self._monotonic())
        kind = record.kind
        if kind is SensorEventKind.OVERFLOW:
            return [self._overflow(record)]
        if kind is SensorEventKind.UNWATCHED:
            return [self._unwatched(record)]
        identity = (
            (record.device, record.inode)
            if record.device is not None and record.inode is not None
            else None
        )
        if record.pid is not None and record.pid in self.own_pids:
            self.ignored += 1
            return []
        path = str(record.path)
        canary = self.canaries.is_canary(path, identity=identity)
        ours = canary or self.in_roots(path) or self.in_roots(str(record.other_path))
        if not ours:
            if (
                kind is SensorEventKind.CLOSE_WRITE
                and self._submit_copy_check is not None
                and self._copy_candidate(record.size)
            ):
                self._submit_copy_check(path, self._actor(record), self._when(record))
            else:
                self.ignored += 1
            return []
        if kind is SensorEventKind.OPEN:
            return [self._open(record, canary=canary)]
        if kind is SensorEventKind.CLOSE_NOWRITE:
            return [self._close(record, canary=canary)]
        if kind in _WRITE_KINDS:
            return [self._write(record, canary=canary)]
        self.ignored += 1
        return []

    def _file_event(
        self,
        record: SensorRecord,
        activity: FileActivityType,
        actor: Actor,
        *,
        canary: bool,
        **extra: object,
    ) -> FileActivity:
        return FileActivity(
            uid=uuid.uuid4().hex,
            time=self._when(record),
            device=self._device,
            activity=activity,
            actor=actor,
            file=FileRef(path=event_text(str(record.path)), size=record.size),
            severity=Severity.CRITICAL if canary else Severity.INFORMATIONAL,
            sensor=self.sensor_name,
            canary=canary,
            **extra,  # type: ignore[arg-type]
        )

    def _open(self, record: SensorRecord, *, canary: bool) -> FileActivity:
        actor = self._actor(record)
        when = self._when(record)
        session_uid = None
        if record.pid is not None:
            session = self._sessions.open(
                pid=record.pid, path=str(record.path), now=when, size=record.size, actor=actor
            )
            session_uid = session.uid
            if self._egress is not None:
                self._egress.watch(session.uid, record.pid, actor=actor, now_ms=when)
        return self._file_event(
            record,
            FileActivityType.OPEN,
            actor,
            canary=canary,
            session_uid=session_uid,
            session_phase=SessionPhase.OPEN,
        )

    def _close(self, record: SensorRecord, *, canary: bool) -> FileActivity:
        session = (
            self._sessions.close(pid=record.pid, path=str(record.path))
            if record.pid is not None
            else None
        )
        if session is None:
            self.unmatched_closes += 1
            return self._file_event(
                record,
                FileActivityType.READ,
                self._actor(record),
                canary=canary,
                session_phase=SessionPhase.CLOSE,
            )
        session = self._final_sample(session)
        if self._egress is not None:
            self._egress.release(session.uid, now_ms=self._when(record))
        return self._session_event(session, record=record, canary=canary, phase=SessionPhase.CLOSE)

    def _session_event(
        self,
        session: Session,
        *,
        record: SensorRecord | None,
        canary: bool,
        phase: SessionPhase,
    ) -> FileActivity:
        size = session.size
        return FileActivity(
            uid=uuid.uuid4().hex,
            time=self._when(record) if record is not None else self._wall_ms(),
            device=self._device,
            activity=FileActivityType.READ,
            actor=session.actor,
            file=FileRef(path=event_text(session.path), size=size),
            severity=Severity.CRITICAL if canary else Severity.INFORMATIONAL,
            bytes_read=session.bytes_read,
            mmap_bytes=session.mmap_bytes,
            fraction_read=session.fraction_read,
            session_uid=session.uid,
            sensor=self.sensor_name,
            canary=canary,
            session_phase=phase,
        )

    def _write(self, record: SensorRecord, *, canary: bool) -> FileActivity:
        actor = self._actor(record)
        when = self._when(record)
        if record.kind is SensorEventKind.CLOSE_WRITE and record.pid is not None:
            self._sessions.close(pid=record.pid, path=str(record.path))
        event = self._file_event(
            record,
            _WRITE_KINDS[record.kind],
            actor,
            canary=canary,
            file_result=(
                FileRef(path=event_text(str(record.other_path))) if record.other_path else None
            ),
        )
        if self._planner is not None:
            for changed in filter(None, (record.path, record.other_path)):
                self._planner.on_change(
                    Change(path=str(changed), time=when, actor=actor, event_uid=event.uid)
                )
        return event

    def _final_sample(self, session: Session) -> Session:
        """One last usage sample at close, if the reader is still alive to be read."""
        if not self._usage.alive(session.pid):
            return session
        position = self._usage.read_position(session.pid, session.path)
        rss = self._usage.mapped_rss(session.pid, session.path) or None
        return replace(
            session,
            bytes_read=_larger(session.bytes_read, position),
            mmap_bytes=_larger(session.mmap_bytes, rss),
        )

    def tick(self) -> list[Event]:
        """Sample a bounded slice of open sessions; progress events for long-held files.

        A session due for progress whose process no longer exists is ended with a close
        event carrying what its samples saw (its close event was lost).
        """
        open_sessions = self._sessions.open_sessions()
        if open_sessions:
            start = self._sample_cursor % len(open_sessions)
            batch = (open_sessions[start:] + open_sessions[:start])[: self._max_samples]
            self._sample_cursor = start + len(batch)
            for session in batch:
                self._sessions.observe(
                    session.uid,
                    bytes_read=self._usage.read_position(session.pid, session.path),
                    mmap_bytes=self._usage.mapped_rss(session.pid, session.path) or None,
                )
        now = self._wall_ms()
        events: list[Event] = []
        for session in self._sessions.due_progress(now):
            phase = SessionPhase.PROGRESS
            if not self._usage.alive(session.pid):
                # Gone a whole interval without a close (lost to an overflow): end the
                # session rather than report a dead process as holding the file forever.
                self._sessions.discard(session.uid)
                if self._egress is not None:
                    self._egress.release(session.uid, now_ms=now)
                phase = SessionPhase.CLOSE
            events.append(
                self._session_event(
                    session, record=None, canary=self.canaries.is_canary(session.path), phase=phase
                )
            )
        return events

    def _overflow(self, record: SensorRecord) -> DetectionFinding:
        return health_finding(
            device=self._device,
            now_ms=self._when(record),
            title=f"Sensor overflow: file events were lost ({record.source.value})",
            description=(
                f"The {record.source.value} queue overflowed ({record.count} overflow(s) so "
                "far): some file events were dropped before the agent read them. Accesses "
                "in that window may be missing from the record."
            ),
            severity=Severity.HIGH,
        )

    def _unwatched(self, record: SensorRecord) -> DetectionFinding:
        return health_finding(
            device=self._device,
            now_ms=self._when(record),
            title=f"Folder not watched: {record.path}",
            description=(
                f"{record.path} could not be watched ({record.source.value}); accesses under "
                "it are not recorded until the agent restarts with a higher limit."
            ),
            severity=Severity.HIGH,
        )


def _larger(seen: int | None, sample: int | None) -> int | None:
    """The larger of two measurements, where None means "not measured" (0 is a measurement)."""
    if seen is None:
        return sample
    if sample is None:
        return seen
    return max(seen, sample)
