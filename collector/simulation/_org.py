"""The simulated organisation: people, service accounts, teams, projects, hosts, grants.

:func:`build_organisation` draws a whole ML organisation from a seeded generator: project
teams of researchers (each with its checkpoints under ``/data/ckpt/<project>/``),
engineering teams that convert and publish the models of a few projects, an infra team on
a weekly night on-call rotation, contractors on a low-sensitivity project, other staff who
never touch weights, and service accounts (a training account per project, eval, backup,
data pipelines). Everyone has a home time zone, a usual start of day, a workstation (the
SSH origin of their sessions) and a Python interpreter of their own habit.

The organisation is fixed for the whole period except where a person joins late, leaves,
or switches project (with a grant); those dates are part of the values here. Nothing reads
a clock: everything follows from the generator.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "DAY_MS",
    "MINUTE_MS",
    "Checkpoint",
    "GrantRecord",
    "Host",
    "Organisation",
    "Person",
    "Project",
    "Service",
    "build_organisation",
]

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
GB: Final = 1_000_000_000

Role = Literal["researcher", "engineer", "infra_admin", "contractor", "other"]
HostKind = Literal["gpu", "dev", "vdi", "login", "eval", "storage", "admin", "data"]
ServiceKind = Literal["train", "eval", "backup", "data"]

_OFFICES: Final = ((-480, 0.35), (-300, 0.2), (0, 0.25), (60, 0.1), (330, 0.1))
"""Home time zones (UTC offset in minutes) and the share of teams based there."""

_INTERPRETERS: Final = (
    ("/usr/bin/python3.11", 0.45),
    ("/opt/conda/bin/python3.10", 0.25),
    ("/opt/conda/envs/torch/bin/python3.12", 0.2),
    ("/usr/local/bin/python", 0.1),
)
"""Shared Python installs; each person habitually uses one (the program detection sees)."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST: Final = _words(
    """
    ada alan alice amir ana arjun ben bo carla chen chris dana dev diego elena eli emma farah
    felix gita hana hugo ines ivan jae james jin kai kara lars lea leo lina luca maya mei mia
    nadia nina noah omar priya raj rosa ruth sam sara sofia tara theo tom uma vera wei yara yuki
    zoe
    """
)
_LAST: Final = _words(
    """
    abe adler ahmed baker bauer berg cho costa cruz das diaz eng evans fox garcia gold gupta
    hahn hall ito iyer jones kato khan kim klein kowal lam lee lin lopez maier mehta meyer mori
    nagy ng novak oh okafor park patel perez quinn rao reyes rossi sato schmidt shah silva singh
    smith sousa tan tanaka turner vogel wang weber wolf wu yang young zhang
    """
)
_PROJECTS: Final = _words(
    """
    atlas borealis cassini draco eos fornax gemini helios icarus juno kepler lyra meridian nova
    orion pegasus quasar rigel sirius tethys umbra vega wren xenon yggdrasil zephyr aurora
    boreas corvus deneb electra falcon gaia hydra io janus kite lumen mira nimbus oberon pallas
    quill rhea selene titan ursa volta aquila bellatrix castor dione europa
    """
)
_ENG_TEAMS: Final = _words(
    """
    inference serving tooling evals platform quant distill infra-ml
    """
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """A machine running the agent (or a destination only, when ``agent`` is False).

    Attributes:
        name: Host name.
        ip: Its address on the internal network.
        kind: What it is for.
        added_day: The day (from the start) it joined the fleet; 0 for the whole period.
    """

    name: str
    ip: str
    kind: HostKind
    added_day: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """One written checkpoint of a project: its step and when its last shard was closed."""

    step: int
    time: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    """A research project: its asset (checkpoints), team, hosts and checkpoint history.

    Attributes:
        name: Project and asset name.
        sensitivity: The asset's sensitivity.
        requires_grant: Reading needs a grant on top of an access rule.
        shard_sizes: Size in bytes of each shard of a checkpoint (every step has the same).
        partition: GPU nodes its jobs run on (a Slurm partition).
        dev_hosts: The team's development boxes.
        owners: People who approve grants for the asset.
        checkpoints: Every checkpoint, oldest first, including those written before the
            period (negative times relative to nothing: absolute ms).
    """

    name: str
    sensitivity: str
    requires_grant: bool
    shard_sizes: tuple[int, ...]
    partition: tuple[str, ...]
    dev_hosts: tuple[str, ...]
    owners: tuple[str, ...] = ()
    checkpoints: tuple[Checkpoint, ...] = ()

    @property
    def root(self) -> str:
        """The folder holding all its checkpoints."""
        return f"/data/ckpt/{self.name}"

    @property
    def canary(self) -> str:
        """The decoy file planted beside the released weights."""
        return f"{self.root}/release/consolidated.safetensors"

    def shard_path(self, step: int | None, index: int) -> str:
        """Path of shard ``index`` (0-based) of ``step``; ``None`` is the release folder."""
        folder = "release" if step is None else f"step-{step}"
        count = len(self.shard_sizes)
        return f"{self.root}/{folder}/model-{index + 1:05d}-of-{count:05d}.safetensors"

    def latest(self, time: int) -> Checkpoint:
        """The newest checkpoint fully written at ``time`` (the first one if none is)."""
        chosen = self.checkpoints[0]
        for checkpoint in self.checkpoints:
            if checkpoint.time > time:
                break
            chosen = checkpoint
        return chosen

    def written_before(self, time: int) -> tuple[Checkpoint, ...]:
        """Every checkpoint fully written at ``time``."""
        return tuple(c for c in self.checkpoints if c.time <= time)


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """A human account and the habits the daily routine follows.

    Attributes:
        name: User name.
        uid: Unix uid.
        role: Peer group.
        team: Team name (in the policy's ``[[teams]]``).
        project: Project whose checkpoints they work on (researchers, contractors).
        projects: Every project whose asset they may read through a group.
        offset: Home UTC offset, minutes.
        start_minute: Usual local start of the working day, minutes after midnight.
        day_minutes: Usual length of the working day.
        workstation: The IP their SSH sessions come from.
        python: The interpreter they habitually run.
        dev_host: The box they work on interactively.
        train_rate: Training launches per working day.
        notebook_rate: Notebook sessions reading weights per working day.
        night_owl: Sometimes works late or at weekends.
        joins_day: First day of activity (a new joiner when above 0).
        switch: ``(day, project)`` when they move to another project with a grant.
    """

    name: str
    uid: int
    role: Role
    team: str
    project: str | None
    projects: tuple[str, ...]
    offset: int
    start_minute: int
    day_minutes: int
    workstation: str
    python: str
    dev_host: str
    train_rate: float = 0.0
    notebook_rate: float = 0.0
    night_owl: bool = False
    joins_day: int = 0
    switch: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A service account.

    Attributes:
        name: Account name (``svc-train-atlas``, ``svc-eval-2``, ``svc-backup``).
        uid: Unix uid.
        kind: What it runs.
        hosts: The hosts it runs on.
        host_glob: The policy glob of those hosts.
        program_globs: The policy globs of its programs.
        projects: Projects whose checkpoints it reads.
    """

    name: str
    uid: int
    kind: ServiceKind
    hosts: tuple[str, ...]
    host_glob: str
    program_globs: tuple[str, ...]
    projects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantRecord:
    """An access grant as the labels file lists it (the collector's ``access grant``)."""

    id: str
    user: str
    asset: str
    approver: str
    reason: str
    created_at: int
    until: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    """A team as the policy lists it: members, role and (for office teams) working hours."""

    name: str
    role: str
    members: tuple[str, ...]
    offset: int | None
    """UTC offset of its office; None for teams that work any time (infra, services)."""


@dataclass(slots=True, kw_only=True)
class Organisation:
    """Everyone and everything in the simulated organisation (see the module doc)."""

    start: int
    days: int
    people: dict[str, Person]
    services: dict[str, Service]
    projects: dict[str, Project]
    hosts: dict[str, Host]
    teams: tuple[Team, ...]
    groups: dict[str, tuple[str, ...]]
    engineering: dict[str, tuple[str, ...]]
    """Engineering team name -> projects it supports."""
    oncall: tuple[str, ...]
    """The infra admin on call, by week of the period."""
    grants: list[GrantRecord] = field(default_factory=list)

    def by_role(self, role: Role) -> list[Person]:
        """People of ``role``, in name order."""
        return [p for p in self.people.values() if p.role == role]

    def add_grant(
        self,
        *,
        user: str,
        asset: str,
        reason: str,
        created_at: int,
        until: int,
    ) -> GrantRecord:
        """Record a grant approved by one of the asset's owners (never the grantee)."""
        owners = [o for o in self.projects[asset].owners if o != user]
        approver = owners[0] if owners else "security-lead"
        grant = GrantRecord(
            id=f"grant-{len(self.grants) + 1:04d}",
            user=user,
            asset=asset,
            approver=approver,
            reason=reason,
            created_at=created_at,
            until=until,
        )
        self.grants.append(grant)
        return grant


def weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    """One of ``choices`` drawn by weight."""
    values = [c for c, _ in choices]
    return rng.choices(values, weights=[w for _, w in choices])[0]


def _offset(rng: random.Random) -> int:
    offsets = [o for o, _ in _OFFICES]
    return rng.choices(offsets, weights=[w for _, w in _OFFICES])[0]


def _split(total: int, rng: random.Random, low: int = 5, high: int = 15) -> list[int]:
    """Team sizes between ``low`` and ``high`` adding up to ``total`` (one team if small)."""
    if total <= high:
        return [total] if total > 0 else []
    sizes: list[int] = []
    left = total
    while left > high:
        size = rng.randint(low, high)
        if left - size < low:
            size = left - low
        sizes.append(size)
        left -= size
    sizes.append(left)
    return sizes


class _Names:
    """Unique user names (initial + surname, a digit on collision) and uids."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._taken: set[str] = set()
        self.next_uid = 10_001

    def person(self) -> str:
        first = self._rng.choice(_FIRST)
        last = self._rng.choice(_LAST)
        base = f"{first[0]}{last}"
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}{n}"
        self._taken.add(name)
        return name


def _project_names(count: int) -> list[str]:
    names = list(_PROJECTS[:count])
    round_ = 2
    while len(names) < count:
        names.extend(f"{p}-{round_}" for p in _PROJECTS[: count - len(names)])
        round_ += 1
    return names


def _ip(net: int, index: int) -> str:
    return f"10.{net}.{index // 250}.{index % 250 + 1}"


def _shards(rng: random.Random) -> tuple[int, ...]:
    """Shard sizes of one model: a few to a few dozen shards of about 5 GB."""
    params_b = rng.choice((1.3, 3, 7, 7, 8, 13, 13, 34, 70))
    total = int(params_b * 2 * GB * rng.uniform(0.98, 1.02))  # bf16
    count = max(1, math.ceil(total / (5 * GB)))
    each = total // count
    sizes = [each + rng.randint(-50_000_000, 50_000_000) for _ in range(count - 1)]
    sizes.append(total - sum(sizes))
    return tuple(sizes)


def _checkpoints(rng: random.Random, start: int, days: int) -> tuple[Checkpoint, ...]:
    """Checkpoint history: five before the period, then one every 12 to 48 hours."""
    every_h = rng.uniform(12, 48)
    step_every = rng.choice((500, 1000, 2000, 5000))
    first = start - int(5 * every_h * 3_600_000) - rng.randint(0, DAY_MS)
    out: list[Checkpoint] = []
    t, step = first, step_every * rng.randint(2, 40)
    end = start + days * DAY_MS
    while t < end:
        out.append(Checkpoint(step=step, time=t))
        t += int(every_h * 3_600_000 * rng.uniform(0.8, 1.2))
        step += step_every
    return tuple(out)


def build_organisation(  # noqa: C901, PLR0912, PLR0915 -- one pass lays out the organisation
    rng: random.Random, *, users: int, start: int, days: int
) -> Organisation:
    """Draw an organisation of ``users`` people (plus about 10 % service accounts).

    Roles: about 60 % researchers, 20 % engineers, 5 % infra admins, 5 % contractors, the
    rest other staff. Deterministic in ``rng``.
    """
    names = _Names(rng)
    n_admin = max(2, round(users * 0.05))
    n_contract = max(1, round(users * 0.05))
    n_eng = max(5, round(users * 0.2))
    n_research = max(10, round(users * 0.6))
    n_other = max(0, users - n_admin - n_contract - n_eng - n_research)
    team_sizes = _split(n_research, rng)
    if len(team_sizes) < 2:  # noqa: PLR2004 -- at least two projects: one team's weights are another's secret
        team_sizes = [n_research // 2, n_research - n_research // 2]
    project_names = _project_names(len(team_sizes))

    hosts: dict[str, Host] = {}

    def add_host(name: str, net: int, index: int, kind: HostKind, added: int = 0) -> str:
        hosts[name] = Host(name=name, ip=_ip(net, index), kind=kind, added_day=added)
        return name

    n_gpu = max(8, users // 8)
    gpus = [add_host(f"gpu-{i + 1:03d}", 1, i, "gpu") for i in range(n_gpu)]
    n_new = max(1, n_gpu // 40)
    first_new = min(7, max(1, days // 2))  # after a week of baseline when there is one
    new_gpus = [
        add_host(
            f"gpu-{n_gpu + i + 1:03d}",
            1,
            n_gpu + i,
            "gpu",
            added=rng.randint(first_new, max(first_new, days - 3)),
        )
        for i in range(n_new)
    ]
    logins = [add_host(f"login-{i + 1:02d}", 3, i, "login") for i in range(max(2, users // 250))]
    evals = [add_host(f"eval-{i + 1:02d}", 4, i, "eval") for i in range(max(2, users // 100))]
    storage = [add_host(f"stor-{i + 1:02d}", 5, i, "storage") for i in range(max(2, users // 250))]
    admin_hosts = [add_host(f"adm-{i + 1:02d}", 6, i, "admin") for i in range(2)]
    data_hosts = [add_host(f"data-{i + 1:02d}", 7, i, "data") for i in range(max(1, users // 200))]
    vdis = [add_host(f"vdi-{i + 1:02d}", 8, i, "vdi") for i in range(max(1, n_contract // 10))]

    # GPU partitions: a few projects share each, new nodes join existing partitions.
    n_part = max(1, math.ceil(len(project_names) / 4))
    partitions: list[list[str]] = [[] for _ in range(n_part)]
    for i, gpu in enumerate(gpus):
        partitions[i % n_part].append(gpu)
    for i, gpu in enumerate(new_gpus):
        partitions[i % n_part].append(gpu)

    sensitivities = (("low", 0.15), ("medium", 0.3), ("high", 0.45), ("critical", 0.1))
    projects: dict[str, Project] = {}
    people: dict[str, Person] = {}
    teams: list[Team] = []
    groups: dict[str, tuple[str, ...]] = {}
    dev_index = 0

    def person(
        role: Role, team: str, project: str | None, projects_: tuple[str, ...], **kw: object
    ) -> Person:
        name = names.person()
        uid = names.next_uid
        names.next_uid += 1
        is_research = role in ("researcher", "contractor")
        values: dict[str, object] = {
            "name": name,
            "uid": uid,
            "role": role,
            "team": team,
            "project": project,
            "projects": projects_,
            "offset": kw.pop("offset"),
            "start_minute": int(rng.gauss(9 * 60 + 15, 45)),
            "day_minutes": int(rng.uniform(7.5, 10) * 60),
            "workstation": _ip(64 + (uid - 10_001) // 62_500, (uid - 10_001) % 62_500),
            "python": weighted(rng, _INTERPRETERS),
            "train_rate": rng.uniform(0.3, 1.5) if role == "researcher" else 0.0,
            "notebook_rate": rng.uniform(0.4, 2.0) if is_research else 0.0,
            "night_owl": rng.random() < 0.2,  # noqa: PLR2004 -- one in five
            "joins_day": rng.randint(3, max(3, days - 4)) if rng.random() < 0.02 else 0,  # noqa: PLR2004
        }
        values.update(kw)
        made = Person(**values)  # type: ignore[arg-type]
        people[name] = made
        return made

    for project_name, size in zip(project_names, team_sizes, strict=True):
        office = _offset(rng)
        dev: list[str] = []
        for _ in range(1 if size < 10 else 2):  # noqa: PLR2004 -- bigger teams get two boxes
            dev.append(add_host(f"dev-{project_name}-{len(dev) + 1:02d}", 2, dev_index, "dev"))
            dev_index += 1
        members = [
            person(
                "researcher",
                project_name,
                project_name,
                (project_name,),
                offset=office if rng.random() > 0.05 else _offset(rng),  # noqa: PLR2004 -- a few remote
                dev_host=rng.choice(dev),
            )
            for _ in range(size)
        ]
        sensitivity = weighted(rng, sensitivities)
        projects[project_name] = Project(
            name=project_name,
            sensitivity=sensitivity,
            requires_grant=sensitivity == "critical",
            shard_sizes=_shards(rng),
            partition=tuple(partitions[len(projects) % n_part]),
            dev_hosts=tuple(dev),
            owners=tuple(m.name for m in members[:2]),
            # A child generator: the history's length depends on the period, the rest must not.
            checkpoints=_checkpoints(random.Random(rng.getrandbits(64)), start, days),  # noqa: S311 -- simulation
        )
        teams.append(
            Team(
                name=project_name,
                role="researcher",
                members=tuple(m.name for m in members),
                offset=office,
            )
        )
        groups[f"proj-{project_name}"] = tuple(m.name for m in members)

    open_projects = [p for p in project_names if not projects[p].requires_grant]
    low_projects = (
        [p for p in open_projects if projects[p].sensitivity in ("low", "medium")]
        or open_projects
        or project_names
    )

    engineering: dict[str, tuple[str, ...]] = {}
    for i, size in enumerate(_split(n_eng, rng)):
        label = _ENG_TEAMS[i % len(_ENG_TEAMS)] + ("" if i < len(_ENG_TEAMS) else f"-{i}")
        team_name = f"eng-{label}"
        pool = open_projects or project_names
        supported = tuple(sorted(rng.sample(pool, min(len(pool), rng.randint(3, 8)))))
        engineering[team_name] = supported
        box = add_host(f"dev-{team_name}-01", 2, dev_index, "dev")
        dev_index += 1
        office = _offset(rng)
        members = [
            person("engineer", team_name, None, supported, offset=office, dev_host=box)
            for _ in range(size)
        ]
        teams.append(
            Team(
                name=team_name,
                role="engineer",
                members=tuple(m.name for m in members),
                offset=office,
            )
        )
        groups[team_name] = tuple(m.name for m in members)

    admin_office = _offset(rng)
    admins = [
        person("infra_admin", "infra", None, (), offset=admin_office, dev_host=admin_hosts[0])
        for _ in range(n_admin)
    ]
    teams.append(
        Team(name="infra", role="infra_admin", members=tuple(a.name for a in admins), offset=None)
    )
    groups["infra-admins"] = tuple(a.name for a in admins)

    for i, size in enumerate(_split(n_contract, rng)):
        assigned = rng.choice(low_projects)
        team_name = f"contract-{i + 1}"
        office = _offset(rng)
        members = [
            person(
                "contractor",
                team_name,
                assigned,
                (assigned,),
                offset=office,
                dev_host=rng.choice(vdis),
                train_rate=0.0,
            )
            for _ in range(size)
        ]
        teams.append(
            Team(
                name=team_name,
                role="contractor",
                members=tuple(m.name for m in members),
                offset=office,
            )
        )
        group = f"proj-{assigned}"
        groups[group] = groups[group] + tuple(m.name for m in members)

    for i, size in enumerate(_split(n_other, rng)):
        team_name = f"ops-{i + 1}"
        office = _offset(rng)
        members = [
            person("other", team_name, None, (), offset=office, dev_host=rng.choice(logins))
            for _ in range(size)
        ]
        teams.append(
            Team(
                name=team_name, role="other", members=tuple(m.name for m in members), offset=office
            )
        )

    # A few researchers move to another project mid-period, with a grant.
    researchers = [p for p in people.values() if p.role == "researcher" and p.joins_day == 0]
    if len(project_names) > 1 and days > 7:  # noqa: PLR2004 -- a week before anyone moves
        for mover in rng.sample(researchers, max(1, len(researchers) // 50)):
            target = rng.choice([p for p in project_names if p != mover.project])
            people[mover.name] = _replace_switch(mover, (rng.randint(5, days - 2), target))

    services: dict[str, Service] = {}
    svc_uid = iter(range(2_001, 10_000))
    for project_name, project in projects.items():
        name = f"svc-train-{project_name}"
        services[name] = Service(
            name=name,
            uid=next(svc_uid),
            kind="train",
            hosts=project.partition,
            host_glob="gpu-*",
            program_globs=("python3*",),
            projects=(project_name,),
        )
    n_eval = max(2, users // 100)
    for i in range(n_eval):
        name = f"svc-eval-{i + 1}"
        services[name] = Service(
            name=name,
            uid=next(svc_uid),
            kind="eval",
            hosts=tuple(evals),
            host_glob="eval-*",
            program_globs=("python3*",),
            projects=tuple(project_names[i::n_eval]),
        )
    services["svc-backup"] = Service(
        name="svc-backup",
        uid=next(svc_uid),
        kind="backup",
        hosts=tuple(storage),
        host_glob="stor-*",
        program_globs=("rsync", "ssh"),
        projects=tuple(project_names),
    )
    for i in range(max(1, users // 40)):
        name = f"svc-data-{i + 1}"
        services[name] = Service(
            name=name,
            uid=next(svc_uid),
            kind="data",
            hosts=tuple(data_hosts),
            host_glob="data-*",
            program_globs=("python3*", "java", "spark-submit"),
        )
    teams.append(Team(name="services", role="service", members=tuple(services), offset=None))

    weeks = max(1, math.ceil(days / 7))
    order = [a.name for a in admins]
    rng.shuffle(order)
    oncall = tuple(order[w % len(order)] for w in range(weeks))

    org = Organisation(
        start=start,
        days=days,
        people=people,
        services=services,
        projects=projects,
        hosts=hosts,
        teams=tuple(teams),
        groups=groups,
        engineering=engineering,
        oncall=oncall,
    )
    _standing_grants(org, rng)
    return org


def _replace_switch(person: Person, switch: tuple[int, str]) -> Person:
    values = {f: getattr(person, f) for f in Person.__dataclass_fields__}
    values["switch"] = switch
    return Person(**values)


def _standing_grants(org: Organisation, rng: random.Random) -> None:
    """Grants the period starts with (critical assets) and those of project switches."""
    end = org.start + org.days * DAY_MS
    for name, project in org.projects.items():
        if not project.requires_grant:
            continue
        readers = [
            *org.groups[f"proj-{name}"],
            *org.groups["infra-admins"],
            *(s.name for s in org.services.values() if name in s.projects),
        ]
        for user in readers:
            org.add_grant(
                user=user,
                asset=name,
                reason=f"standing access for {name} work",
                created_at=org.start - rng.randint(10, 120) * DAY_MS,
                until=end + rng.randint(30, 180) * DAY_MS,
            )
    for person in org.people.values():
        if person.switch is not None:
            day, target = person.switch
            org.add_grant(
                user=person.name,
                asset=target,
                reason=f"moving to the {target} project",
                created_at=org.start + day * DAY_MS - rng.randint(2, 8) * 3_600_000,
                until=end + 90 * DAY_MS,
            )
