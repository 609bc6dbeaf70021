"""Benign daily routines: what everyone in the organisation does on an ordinary day.

:class:`Routine` emits one day at a time. People work on their local calendar (a day of
date ``d`` starts at local midnight in their home time zone), with per-person variation:
counts are Poisson around each person's own rates, sizes and durations are drawn around
the real file sizes, people take days off, some work late or at weekends, new joiners
start mid-period and a few people move to another project with a grant. Service accounts
work in UTC: training jobs read the latest checkpoint of their project and write the next
one (which the agent then seals), eval jobs read many projects' latest checkpoints every
night, the backup job reads every asset each Saturday night and sends it to the backup
host, data pipelines run all day.

Everything is benign. It is also noisy in the ways real fleets are: off-hours work,
first-seen hosts (new GPU nodes, new projects), reading processes that talk to
huggingface.co or pypi, bulk reads by backup and eval, an admin on call at night.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from collector.simulation._org import DAY_MS, MINUTE_MS
from weightwarden.events import FileActivityType

if TYPE_CHECKING:
    import random

    from collector.simulation._emit import Emitter
    from collector.simulation._org import Organisation, Person, Project, Service
    from weightwarden.events import Process

__all__ = [
    "EXTERNAL",
    "INTERNAL",
    "Destination",
    "Loaded",
    "Routine",
    "local_time",
    "poisson",
]

SECOND_MS: Final = 1000
HOUR_MS: Final = 3_600_000
PROGRESS_MS: Final = 10 * MINUTE_MS
"""The agent's default progress interval: a file held open gets an event this often."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """A network destination: address, port, host name."""

    ip: str
    port: int
    hostname: str | None = None


@dataclass(slots=True)
class Loaded:
    """What one process's reads produced: the event uids and the session of each shard."""

    events: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)


INTERNAL: Final = {
    "nfs": Destination(ip="10.10.0.11", port=2049, hostname="nfs-01.corp.example"),
    "s3": Destination(ip="10.10.1.5", port=443, hostname="s3.corp.example"),
    "backup": Destination(ip="10.200.0.10", port=22, hostname="backup-01.corp.example"),
    "registry": Destination(ip="10.10.2.7", port=443, hostname="registry.corp.example"),
    "wandb": Destination(ip="10.10.3.9", port=443, hostname="wandb.corp.example"),
}
EXTERNAL: Final = {
    "huggingface": Destination(ip="18.244.202.57", port=443, hostname="huggingface.co"),
    "pypi": Destination(ip="151.101.0.223", port=443, hostname="pypi.org"),
    "pythonhosted": Destination(ip="151.101.64.223", port=443, hostname="files.pythonhosted.org"),
    "github": Destination(ip="140.82.112.3", port=443, hostname="github.com"),
    "commoncrawl": Destination(ip="52.216.8.120", port=443, hostname="data.commoncrawl.org"),
    "ubuntu": Destination(ip="91.189.91.81", port=80, hostname="archive.ubuntu.com"),
}

_COMMANDS: Final = {
    "researcher": (
        ("/usr/bin/git", "git pull --rebase", "github"),
        ("/usr/bin/git", "git push origin HEAD", "github"),
        ("/usr/bin/vim", "vim train.py", None),
        ("/usr/bin/squeue", "squeue --me", None),
        ("/usr/bin/nvidia-smi", "nvidia-smi", None),
        ("/usr/bin/tmux", "tmux attach", None),
        ("PYTHON", "-m pip install -U transformers", "pypi"),
        ("PYTHON", "plot_curves.py --run latest", "wandb"),
        ("/usr/bin/du", "du -sh /data/ckpt", None),
    ),
    "engineer": (
        ("/usr/bin/git", "git fetch --all", "github"),
        ("/usr/bin/make", "make test", None),
        ("/usr/bin/docker", "docker build -t serving:dev .", "registry"),
        ("PYTHON", "-m pytest -q", None),
        ("PYTHON", "-m pip install -r requirements.txt", "pypi"),
        ("/usr/bin/vim", "vim server.py", None),
    ),
    "contractor": (
        ("/usr/bin/git", "git pull", "github"),
        ("/usr/bin/vim", "vim notes.md", None),
        ("PYTHON", "label_tool.py --batch 12", None),
    ),
    "other": (
        ("/usr/bin/less", "less report.csv", None),
        ("PYTHON", "dashboards/refresh.py", "wandb"),
        ("/usr/bin/ssh", "ssh login-01", None),
    ),
}
_ADMIN_COMMANDS: Final = (
    ("/usr/bin/systemctl", "systemctl restart slurmd"),
    ("/usr/bin/journalctl", "journalctl -u slurmd --since -1h"),
    ("/usr/bin/dmesg", "dmesg -T"),
    ("/usr/bin/apt-get", "apt-get -y upgrade"),
    ("/usr/bin/nvidia-smi", "nvidia-smi -q"),
    ("/usr/bin/ipmitool", "ipmitool sel list"),
    ("/usr/sbin/zpool", "zpool status"),
    ("/usr/bin/df", "df -h /data"),
)


def local_time(org: Organisation, day: int, minute: float, offset: int) -> int:
    """Milliseconds since the epoch of local ``minute`` of day ``day`` at UTC ``offset``."""
    return org.start + day * DAY_MS + int((minute - offset) * MINUTE_MS)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth; the rates here are small)."""
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class Routine:
    """Emits the benign events of one day at a time (see the module doc)."""

    def __init__(
        self,
        org: Organisation,
        emit: Emitter,
        rng: random.Random,
        *,
        departures: dict[str, int],
        absences: dict[str, set[int]],
    ) -> None:
        self.org = org
        self.emit = emit
        self.rng = rng
        self.departures = departures
        self._absent = {
            name: self._days_off() | absences.get(name, set()) for name, p in org.people.items()
        }
        self._admin_tools = {
            p.name: tuple(rng.sample(("/usr/bin/rsync", "/usr/bin/sha256sum", "/usr/bin/cmp"), 2))
            for p in org.people.values()
            if p.role == "infra_admin"
        }
        self._logins = [h.name for h in org.hosts.values() if h.kind == "login"]
        self._storage = [h.name for h in org.hosts.values() if h.kind == "storage"]

    def admin_tools(self, admin: str) -> tuple[str, ...]:
        """The programs an infra admin habitually reads weights with."""
        return self._admin_tools[admin]

    def _days_off(self) -> frozenset[int]:
        off = {d for d in range(self.org.days) if self.rng.random() < 0.03}  # noqa: PLR2004
        if self.rng.random() < 0.05 and self.org.days > 7:  # noqa: PLR2004 -- a week away
            first = self.rng.randint(0, self.org.days - 5)
            off.update(range(first, first + 5))
        return frozenset(off)

    def weekday(self, day: int) -> int:
        """0 Monday .. 6 Sunday of day ``day`` of the period."""
        return (self.org.start // DAY_MS + day + 3) % 7  # 1970-01-01 was a Thursday

    def active(self, person: Person, day: int) -> bool:
        """Whether ``person`` works for the organisation on ``day`` at all."""
        leaves = self.departures.get(person.name)
        return person.joins_day <= day and (leaves is None or day < leaves)

    def project_of(self, person: Person, day: int) -> str | None:
        """The project ``person`` works on that day (their new one after a switch, mostly)."""
        if person.switch is not None and day >= person.switch[0] and self.rng.random() < 0.7:  # noqa: PLR2004
            return person.switch[1]
        return person.project

    def login_host(self, person: Person) -> str:
        """The login node ``person`` habitually uses."""
        return self._logins[person.uid % len(self._logins)]

    # -- one day ----------------------------------------------------------------------

    def day(self, day: int) -> None:
        """Emit every benign event of day ``day`` (people: local date; services: UTC)."""
        weekday = self.weekday(day)
        week = day // 7
        oncall = self.org.oncall[min(week, len(self.org.oncall) - 1)]
        for person in self.org.people.values():
            if not self.active(person, day):
                continue
            if person.role == "infra_admin" and person.name == oncall:
                self._oncall_night(person, day)
            if day in self._absent[person.name]:
                continue
            if weekday >= 5:  # noqa: PLR2004 -- Saturday and Sunday
                if person.night_owl and self.rng.random() < 0.3:  # noqa: PLR2004
                    self.workday(person, day, light=True)
                continue
            self.workday(person, day, light=False)
        for svc in self.org.services.values():
            self._service_day(svc, day, weekday)

    def workday(self, person: Person, day: int, *, light: bool) -> None:
        """One working day of ``person`` (a light one at weekends)."""
        rng = self.rng
        start = person.start_minute + rng.gauss(0, 30)
        length = 150.0 if light else max(240.0, person.day_minutes + rng.gauss(0, 45))
        scale = 0.4 if light else 1.0
        begin = local_time(self.org, day, start, person.offset)
        span = int(length * MINUTE_MS)
        if person.role == "infra_admin":
            self._admin_day(person, begin, span, scale)
            return
        for _ in range(poisson(rng, 12 * scale)):
            self.command(person, begin + rng.randrange(span))
        if person.role in ("researcher", "contractor"):
            for _ in range(poisson(rng, person.train_rate * scale)):
                self.training(person, day, begin + rng.randrange(span))
            for _ in range(poisson(rng, person.notebook_rate * scale)):
                self.notebook(person, day, begin + rng.randrange(span))
            if person.night_owl and not light and rng.random() < 0.12:  # noqa: PLR2004
                late = local_time(self.org, day, 22 * 60 + rng.uniform(0, 150), person.offset)
                if person.train_rate and rng.random() < 0.5:  # noqa: PLR2004
                    self.training(person, day, late)
                else:
                    self.notebook(person, day, late)
        elif person.role == "engineer":
            for _ in range(poisson(rng, 0.3 * scale)):
                self.conversion(person, begin + rng.randrange(span))

    # -- people -----------------------------------------------------------------------

    def command(self, person: Person, time: int) -> None:
        """A shell command of ``person`` on their dev box or login node, maybe with a connection."""
        rng = self.rng
        exe, args, dest = rng.choice(_COMMANDS[person.role])
        if exe == "PYTHON":
            exe, args = person.python, f"{person.python.rpartition('/')[2]} {args}"
        host = person.dev_host if rng.random() < 0.7 else self.login_host(person)  # noqa: PLR2004
        proc = self.emit.interactive(person, exe, args)
        self.emit.launch(time, host, proc)
        if dest is not None:
            target = EXTERNAL.get(dest) or INTERNAL[dest]
            self.emit.connect(
                time + rng.randint(100, 3000),
                host,
                proc,
                ip=target.ip,
                port=target.port,
                hostname=target.hostname,
                bytes_out=rng.randint(2_000, 400_000),
                bytes_in=rng.randint(10_000, 80_000_000),
            )

    def load(  # noqa: PLR0917 -- one process loading a set of shards
        self,
        time: int,
        host: str,
        proc: Process,
        project: Project,
        step: int | None,
        indices: range | list[int],
        *,
        mapped: tuple[float, float] = (0.97, 1.0),
        read: tuple[float, float] = (0.00001, 0.0001),
        hold: tuple[int, int] = (10 * SECOND_MS, 120 * SECOND_MS),
        progress: int = 0,
    ) -> Loaded:
        """``proc`` reads shards ``indices`` of ``step`` one after the other."""
        rng = self.rng
        loaded = Loaded()
        t = time
        for index in indices:
            t += rng.randint(50, 2 * SECOND_MS)
            opened, closed = self.emit.read(
                t,
                rng.randint(*hold),
                host,
                proc,
                project.shard_path(step, index),
                project.shard_sizes[index],
                mapped=rng.uniform(*mapped),
                read=rng.uniform(*read),
                progress=progress,
            )
            loaded.events += (opened.uid, closed.uid)
            loaded.sessions.append(opened.session_uid or "")
        return loaded

    def training(self, person: Person, day: int, time: int) -> None:
        """A Slurm training job of ``person``: torchrun on 1-4 nodes resuming a checkpoint."""
        rng = self.rng
        name = self.project_of(person, day)
        if name is None:
            return
        project = self.org.projects[name]
        step = project.latest(time).step
        job = str(rng.randint(1_000_000, 9_999_999))
        submit = self.emit.interactive(person, "/usr/bin/sbatch", f"sbatch train_{name}.sh")
        self.emit.launch(time, self.login_host(person), submit)
        nodes = self.nodes(project, day, rng.choice((1, 1, 1, 2, 2, 4)))
        start = time + rng.randint(5, 600) * SECOND_MS
        cmd = (
            f"{person.python.rpartition('/')[2]} -m torch.distributed.run --nnodes {len(nodes)} "
            f"--nproc-per-node 8 train.py --config configs/{name}.yaml "
            f"--resume {project.root}/step-{step}"
        )
        for node in nodes:
            proc = self.emit.batch(person.name, person.uid, person.python, cmd, job)
            self._job(proc, node, nodes[0], start, project, step)

    def _job(  # noqa: PLR0917 -- the job's process, node, master, start and checkpoint
        self, proc: Process, node: str, master: str, start: int, project: Project, step: int
    ) -> None:
        rng = self.rng
        self.emit.launch(start, node, proc)
        loaded = self.load(
            start + SECOND_MS, node, proc, project, step, range(len(project.shard_sizes))
        )
        first_session = loaded.sessions[0]
        t = start + 30 * SECOND_MS
        if rng.random() < 0.7:  # noqa: PLR2004 -- the data loader streams from storage
            nfs = INTERNAL["nfs" if rng.random() < 0.6 else "s3"]  # noqa: PLR2004
            self.emit.connect(
                t, node, proc, ip=nfs.ip, port=nfs.port, hostname=nfs.hostname,
                bytes_out=rng.randint(10_000, 2_000_000), bytes_in=rng.randint(10**8, 10**10),
                session=first_session,
            )  # fmt: skip
        if node != master:
            self.emit.connect(
                t, node, proc, ip=self.org.hosts[master].ip, port=29500,
                bytes_out=rng.randint(10**6, 10**8), session=first_session,
            )  # fmt: skip
        if rng.random() < 0.05:  # noqa: PLR2004 -- a tokenizer from the hub
            hub = EXTERNAL["huggingface"]
            self.emit.connect(
                t, node, proc, ip=hub.ip, port=hub.port, hostname=hub.hostname,
                bytes_out=rng.randint(2_000, 40_000), bytes_in=rng.randint(10**5, 10**7),
                session=first_session,
            )  # fmt: skip
        if rng.random() < 0.1:  # noqa: PLR2004 -- the data loader's shared memory
            self.emit.write(
                t + rng.randint(1, 60) * SECOND_MS,
                node,
                proc,
                f"/dev/shm/torch_{proc.pid}_{rng.getrandbits(32):08x}",  # noqa: S108 -- a simulated path
                rng.randint(64 << 20, 2 << 30),
            )

    def nodes(self, project: Project, day: int, count: int) -> list[str]:
        """``count`` GPU nodes of the project's partition in service on ``day``."""
        ready = [
            h
            for h in project.partition
            if self.org.hosts[h].added_day < day or self.org.hosts[h].added_day == 0
        ]
        return self.rng.sample(ready, min(count, len(ready)))

    def notebook(self, person: Person, day: int, time: int) -> None:
        """A notebook kernel on the dev box reading a few shards of a recent checkpoint."""
        rng = self.rng
        name = self.project_of(person, day)
        if name is None:
            return
        project = self.org.projects[name]
        written = project.written_before(time) or project.checkpoints[:1]
        step = written[-1].step if rng.random() < 0.8 else rng.choice(written).step  # noqa: PLR2004
        count = len(project.shard_sizes)
        picked = sorted(rng.sample(range(count), min(count, rng.randint(1, 3))))
        proc = self.emit.notebook(person, f"{person.python} -m ipykernel_launcher -f kernel.json")
        host = person.dev_host
        loaded = self.load(
            time, host, proc, project, step, picked,
            mapped=(0.2, 1.0), hold=(2 * MINUTE_MS, 2 * HOUR_MS), progress=PROGRESS_MS,
        )  # fmt: skip
        if rng.random() < 0.08:  # noqa: PLR2004
            hub = EXTERNAL["huggingface"]
            self.emit.connect(
                time + 5 * SECOND_MS, host, proc, ip=hub.ip, port=hub.port,
                hostname=hub.hostname, bytes_out=rng.randint(2_000, 60_000),
                bytes_in=rng.randint(10**5, 10**8), session=loaded.sessions[-1],
            )  # fmt: skip

    def conversion(self, person: Person, time: int) -> None:
        """An engineer converts a supported project's checkpoint, sometimes publishes it."""
        rng = self.rng
        if not person.projects:
            return
        project = self.org.projects[rng.choice(person.projects)]
        step = project.latest(time).step
        host = person.dev_host
        count = len(project.shard_sizes)
        proc = self.emit.interactive(
            person,
            person.python,
            f"{person.python.rpartition('/')[2]} tools/convert_checkpoint.py "
            f"--src {project.root}/step-{step} --dst /data/converted/{project.name}/step-{step}",
        )
        self.emit.launch(time, host, proc)
        self.load(time, host, proc, project, step, range(count), mapped=(0, 0), read=(0.99, 1.0))
        t = time + count * 90 * SECOND_MS
        for index, size in enumerate(project.shard_sizes):
            name = f"model-{index + 1:05d}-of-{count:05d}.gguf"
            path = f"/data/converted/{project.name}/step-{step}/{name}"
            self.emit.write(t, host, proc, path, None)
            t += rng.randint(20, 90) * SECOND_MS
            self.emit.write(t, host, proc, path, size // 2, activity=FileActivityType.UPDATE)
        if rng.random() < 0.3:  # noqa: PLR2004 -- publish the safetensors for serving
            self.publish(person, host, project, step, t + rng.randint(1, 30) * MINUTE_MS)

    def publish(
        self, person: Person, host: str, project: Project, step: int, time: int
    ) -> list[str]:
        """Copy a checkpoint to the serving folder (an approved root); returns event uids."""
        proc = self.emit.interactive(
            person,
            "/usr/bin/rsync",
            f"rsync -a {project.root}/step-{step}/ /data/serving/{project.name}/step-{step}/",
        )
        uids = [self.emit.launch(time, host, proc).uid]
        count = len(project.shard_sizes)
        uids += self.load(
            time, host, proc, project, step, range(count), mapped=(0, 0), read=(1.0, 1.0)
        ).events
        t = time + count * 30 * SECOND_MS
        for index, size in enumerate(project.shard_sizes):
            t += self.rng.randint(10, 40) * SECOND_MS
            uids.append(
                self.emit.copy(
                    t, host, proc,
                    f"/data/serving/{project.name}/step-{step}/"
                    f"model-{index + 1:05d}-of-{count:05d}.safetensors",
                    size, project.shard_path(step, index),
                ).uid
            )  # fmt: skip
        return uids

    # -- infra ------------------------------------------------------------------------

    def _admin_day(self, admin: Person, begin: int, span: int, scale: float) -> None:
        rng = self.rng
        hosts = list(self.org.hosts)
        for _ in range(poisson(rng, 8 * scale)):
            exe, cmd = rng.choice(_ADMIN_COMMANDS)
            self.emit.launch(
                begin + rng.randrange(span), rng.choice(hosts), self.emit.sudo(admin, exe, cmd)
            )
        if rng.random() < 0.25 * scale:
            self.admin_check(admin, begin + rng.randrange(span))

    def admin_check(self, admin: Person, time: int, tool: str | None = None) -> list[str]:
        """An admin checks a few shards with a usual tool (as root); returns the event uids."""
        rng = self.rng
        tool = tool or rng.choice(self._admin_tools[admin.name])
        project = rng.choice(list(self.org.projects.values()))
        step = project.latest(time).step
        count = len(project.shard_sizes)
        picked = sorted(rng.sample(range(count), min(count, rng.randint(1, 3))))
        host = rng.choice(self._storage)
        folder = f"{project.root}/step-{step}"
        name = tool.rpartition("/")[2]
        cmd = {
            "rsync": f"rsync -a --checksum {folder}/ backup-01:/backup/ckpt/{project.name}/",
            "sha256sum": f"sha256sum {folder}/model-*.safetensors",
            "cmp": f"cmp {folder}/model-00001-of-{count:05d}.safetensors /backup/restore/shard",
        }.get(name, f"{name} {folder}")
        proc = self.emit.sudo(admin, tool, cmd)
        uids = [self.emit.launch(time, host, proc).uid]
        reads = self.load(time, host, proc, project, step, picked, mapped=(0, 0), read=(1.0, 1.0))
        uids += reads.events
        if name == "rsync":
            ssh = self.emit.child(proc, "/usr/bin/ssh", "ssh backup-01 rsync --server")
            target = INTERNAL["backup"]
            for session, index in zip(reads.sessions, picked, strict=True):
                uids.append(
                    self.emit.connect(
                        time + 5 * SECOND_MS, host, ssh, ip=target.ip, port=target.port,
                        hostname=target.hostname, session=session,
                        bytes_out=int(project.shard_sizes[index] * rng.uniform(0.001, 0.02)),
                    ).uid
                )  # fmt: skip
        return uids

    def _oncall_night(self, admin: Person, day: int) -> None:
        rng = self.rng
        hosts = list(self.org.hosts)
        for _ in range(poisson(rng, 1.5)):
            time = local_time(self.org, day, 22 * 60 + rng.uniform(0, 8 * 60), admin.offset)
            for _ in range(rng.randint(3, 8)):
                exe, cmd = rng.choice(_ADMIN_COMMANDS)
                time += rng.randint(20, 600) * SECOND_MS
                self.emit.launch(time, rng.choice(hosts), self.emit.sudo(admin, exe, cmd))
            if rng.random() < 0.5:  # noqa: PLR2004
                self.admin_check(admin, time + rng.randint(1, 20) * MINUTE_MS)

    # -- services ---------------------------------------------------------------------

    def _service_day(self, svc: Service, day: int, weekday: int) -> None:
        day_start = self.org.start + day * DAY_MS
        if svc.kind == "train":
            project = self.org.projects[svc.projects[0]]
            for previous, checkpoint in zip(
                project.checkpoints, project.checkpoints[1:], strict=False
            ):
                job_start = previous.time + 20 * MINUTE_MS
                if day_start <= job_start < day_start + DAY_MS:
                    self.train_job(
                        svc,
                        project,
                        previous.step,
                        checkpoint.step,
                        job_start,
                        checkpoint.time,
                        day,
                    )
        elif svc.kind == "eval":
            for name in svc.projects:
                self.eval_job(
                    svc, self.org.projects[name], day_start + self.rng.randint(60, 300) * MINUTE_MS
                )
        elif svc.kind == "backup":
            if weekday == 5:  # noqa: PLR2004 -- Saturday night
                t = day_start + 2 * HOUR_MS
                for project in self.org.projects.values():
                    t = self.backup(svc, project, t)
        else:
            self._pipeline_day(svc, day_start)

    def train_job(  # noqa: PLR0917 -- one training job: resume one step, write the next
        self,
        svc: Service,
        project: Project,
        resume: int,
        step: int,
        start: int,
        written: int,
        day: int,
        *,
        node: str | None = None,
    ) -> list[str]:
        """A training job of ``svc``: reads ``resume``, writes ``step`` by ``written``, sealed."""
        rng = self.rng
        node = node or self.nodes(project, day, 1)[0]
        job = str(rng.randint(1_000_000, 9_999_999))
        proc = self.emit.batch(
            svc.name, svc.uid, "/usr/bin/python3.11",
            f"python3.11 -m torch.distributed.run --nproc-per-node 8 pretrain.py "
            f"--resume {project.root}/step-{resume} --save {project.root}",
            job,
        )  # fmt: skip
        self._job(proc, node, node, start, project, resume)
        return [*self.write_checkpoint(proc, node, project, step, written)]

    def write_checkpoint(
        self, proc: Process, node: str, project: Project, step: int, written: int
    ) -> list[str]:
        """``proc`` writes checkpoint ``step`` (create, update at close); the agent seals it."""
        rng = self.rng
        count = len(project.shard_sizes)
        t = written - count * 40 * SECOND_MS
        uids = []
        for index, size in enumerate(project.shard_sizes):
            path = project.shard_path(step, index)
            uids.append(self.emit.write(t, node, proc, path, 0).uid)
            t += rng.randint(15, 40) * SECOND_MS
            uids.append(
                self.emit.write(t, node, proc, path, size, activity=FileActivityType.UPDATE).uid
            )
        self.emit.sealed(
            written + rng.randint(2, 6) * MINUTE_MS, node, f"{project.root}/step-{step}"
        )
        return uids

    def eval_job(self, svc: Service, project: Project, time: int) -> None:
        """Nightly eval: all shards of the latest checkpoint, results to the object store."""
        rng = self.rng
        step = project.latest(time).step
        host = rng.choice(svc.hosts)
        proc = self.emit.service(
            svc, "/usr/bin/python3.11",
            f"python3.11 run_eval.py --ckpt {project.root}/step-{step} --suite nightly",
            unit=f"eval-{project.name}.service",
        )  # fmt: skip
        self.emit.launch(time, host, proc)
        loaded = self.load(time, host, proc, project, step, range(len(project.shard_sizes)))
        s3 = INTERNAL["s3"]
        self.emit.connect(
            time + 20 * MINUTE_MS, host, proc, ip=s3.ip, port=s3.port, hostname=s3.hostname,
            bytes_out=rng.randint(10**5, 5 * 10**6), session=loaded.sessions[-1],
        )  # fmt: skip

    def backup(self, svc: Service, project: Project, time: int, host: str | None = None) -> int:
        """svc-backup sends a project's latest checkpoint to the backup host; returns end time."""
        rng = self.rng
        step = project.latest(time).step
        host = host or self._storage[zlib.crc32(project.name.encode()) % len(self._storage)]
        folder = f"{project.root}/step-{step}"
        proc = self.emit.service(
            svc, "/usr/bin/rsync",
            f"rsync -a --delete {folder}/ backup-01:/backup/ckpt/{project.name}/",
            unit="backup-ckpt.service",
        )  # fmt: skip
        self.emit.launch(time, host, proc)
        ssh = self.emit.child(proc, "/usr/bin/ssh", "ssh backup-01 rsync --server")
        target = INTERNAL["backup"]
        t = time
        for index, size in enumerate(project.shard_sizes):
            duration = int(size / rng.uniform(0.5e9, 1.2e9) * SECOND_MS)
            opened, _ = self.emit.read(
                t, duration, host, proc, project.shard_path(step, index), size, read=1.0
            )
            self.emit.connect(
                t + 2 * SECOND_MS, host, ssh, ip=target.ip, port=target.port,
                hostname=target.hostname, bytes_out=int(size * rng.uniform(0.98, 1.02)),
                session=opened.session_uid,
            )  # fmt: skip
            t += duration + rng.randint(1, 10) * SECOND_MS
        return t

    def _pipeline_day(self, svc: Service, day_start: int) -> None:
        rng = self.rng
        for _ in range(poisson(rng, 12)):
            time = day_start + rng.randrange(DAY_MS)
            exe, cmd, dest = rng.choice(
                (
                    ("/usr/bin/python3.11", "python3.11 etl/tokenize.py --shard auto", "s3"),
                    ("/opt/spark/bin/spark-submit", "spark-submit dedup.py", "s3"),
                    ("/usr/bin/python3.11", "python3.11 etl/fetch.py --source cc", "commoncrawl"),
                )
            )
            host = rng.choice(svc.hosts)
            proc = self.emit.service(svc, exe, cmd, unit="pipeline@.service")
            self.emit.launch(time, host, proc)
            target = EXTERNAL.get(dest) or INTERNAL[dest]
            self.emit.connect(
                time + rng.randint(1, 30) * SECOND_MS, host, proc, ip=target.ip,
                port=target.port, hostname=target.hostname,
                bytes_out=rng.randint(10**4, 10**9), bytes_in=rng.randint(10**6, 10**10),
            )  # fmt: skip
