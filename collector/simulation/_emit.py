"""Building the events of the simulation exactly as the agent writes them.

:class:`Emitter` turns "who did what where" into :mod:`weightwarden.events` values with
the conventions detection relies on (see ``agent/pipeline.py``, ``agent/egress.py`` and
``agent/daemon.py``):

- a read is an access session: ``Open`` (phase ``open``) then ``Read`` (phase ``close``)
  with ``bytes_read``, ``mmap_bytes``, ``fraction_read`` and the file's size;
- a connection of a process that read weights is a Network Activity ``Open`` carrying the
  read's ``session_uid``, with ``bytes_out``; other connections carry none;
- a write under a weight root is ``Create``/``Update``; a copy of a sealed file elsewhere
  is a ``Create`` from the copy detector with ``copy_source`` (HIGH, CRITICAL on
  removable media); a changed sealed file is an ``Update`` from the sealer with seal
  ``tampered`` (HIGH); a canary access is CRITICAL.

Every uid and pid comes from the seeded generator, so a run is reproducible byte for byte.
Devices, users and endpoints are cached: most events share them, and building them once
keeps a million events within seconds of encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    Endpoint,
    FileActivity,
    FileActivityType,
    FileRef,
    NetworkActivity,
    NetworkActivityType,
    Process,
    ProcessActivity,
    ProcessActivityType,
    SealInfo,
    SealStatus,
    SessionPhase,
    Severity,
    User,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from collector.simulation._org import Host, Person, Service
    from weightwarden.events import Event

__all__ = ["ROOT", "Emitter"]

_E = TypeVar("_E", FileActivity, NetworkActivity, ProcessActivity)

ROOT: Final = User(uid=0, name="root")
_FILE_SENSOR: Final = "fanotify"
_NET_SENSOR: Final = "procfs"
_EXEC_SENSOR: Final = "auditd"
_AGENT_EXE: Final = "/opt/weightwarden/bin/python3.11"


class Emitter:
    """Makes events, hands each to ``sink`` and returns it (scenarios keep the uids)."""

    def __init__(
        self, rng: random.Random, hosts: dict[str, Host], sink: Callable[[Event], None]
    ) -> None:
        self._rng = rng
        self._hosts = hosts
        self._sink = sink
        self._devices: dict[str, Device] = {}
        self._users: dict[str, User] = {"root": ROOT}
        self._origins: dict[str, Endpoint] = {}
        self._parents: dict[tuple[str, str], Process] = {}
        self.entities: set[str] = set()
        """Names of the people and service accounts that acted (for the labels file)."""

    # -- identities -------------------------------------------------------------------

    def uid(self) -> str:
        """A fresh event or session id: 128 random bits as hex."""
        return f"{self._rng.getrandbits(128):032x}"

    def pid(self) -> int:
        """A plausible process id."""
        return self._rng.randint(1_000, 4_000_000)

    def device(self, host: str) -> Device:
        """The device of ``host`` (its agent id is derived from the name)."""
        device = self._devices.get(host)
        if device is None:
            device = self._devices[host] = Device(hostname=host, agent_id=f"agent-{host}")
        return device

    def user(self, name: str, uid: int) -> User:
        """The user ``name`` (cached)."""
        user = self._users.get(name)
        if user is None:
            user = self._users[name] = User(uid=uid, name=name)
        return user

    def _origin(self, ip: str) -> Endpoint:
        origin = self._origins.get(ip)
        if origin is None:
            origin = self._origins[ip] = Endpoint(ip=ip)
        return origin

    def _shell(self, user: User, origin: Endpoint | None) -> Process:
        """The login shell of ``user`` (one per user and origin: it outlives its children)."""
        key = (user.name or "", origin.ip if origin else "")
        shell = self._parents.get(key)
        if shell is None:
            shell = self._parents[key] = Process(
                pid=self.pid(),
                attribution=Attribution.FULL,
                exe="/usr/bin/bash",
                cmd_line="-bash",
                user=user,
                login_user=user,
                ssh_origin=origin,
            )
        return shell

    def interactive(
        self, person: Person, exe: str, cmd: str, *, origin: str | None = None
    ) -> Process:
        """A process ``person`` started from an SSH shell (from their workstation by default)."""
        return self.login(person.name, person.uid, exe, cmd, origin=origin or person.workstation)

    def login(self, name: str, uid: int, exe: str, cmd: str, *, origin: str) -> Process:
        """A process of account ``name`` started from an SSH shell that came from ``origin``."""
        self.entities.add(name)
        user = self.user(name, uid)
        endpoint = self._origin(origin)
        return Process(
            pid=self.pid(),
            attribution=Attribution.FULL,
            exe=exe,
            cmd_line=cmd,
            user=user,
            login_user=user,
            parent=self._shell(user, endpoint),
            ssh_origin=endpoint,
        )

    def notebook(self, person: Person, cmd: str, *, origin: str | None = None) -> Process:
        """A Jupyter kernel of ``person`` (its parent is their jupyter-lab)."""
        self.entities.add(person.name)
        user = self.user(person.name, person.uid)
        endpoint = self._origin(origin or person.workstation)
        key = (f"jupyter:{person.name}", endpoint.ip)
        lab = self._parents.get(key)
        if lab is None:
            lab = self._parents[key] = Process(
                pid=self.pid(),
                attribution=Attribution.FULL,
                exe=person.python,
                cmd_line=f"{person.python} -m jupyter lab --no-browser --port 8888",
                user=user,
                login_user=user,
                parent=self._shell(user, endpoint),
                ssh_origin=endpoint,
            )
        return Process(
            pid=self.pid(),
            attribution=Attribution.FULL,
            exe=person.python,
            cmd_line=cmd,
            user=user,
            login_user=user,
            parent=lab,
            ssh_origin=endpoint,
        )

    def batch(self, name: str, uid: int, exe: str, cmd: str, job_id: str) -> Process:
        """A Slurm job step of account ``name`` (person or service account)."""
        self.entities.add(name)
        user = self.user(name, uid)
        return Process(
            pid=self.pid(),
            attribution=Attribution.FULL,
            exe=exe,
            cmd_line=cmd,
            user=user,
            login_user=user,
            parent=Process(
                pid=self.pid(),
                attribution=Attribution.FULL,
                exe="/usr/sbin/slurmstepd",
                cmd_line=f"slurmstepd: [{job_id}.0]",
                user=ROOT,
            ),
            cgroup=f"/system.slice/slurmstepd.scope/job_{job_id}",
            job_id=job_id,
        )

    def service(self, svc: Service, exe: str, cmd: str, *, unit: str) -> Process:
        """A process of service account ``svc`` started by systemd (a timer or a daemon)."""
        self.entities.add(svc.name)
        user = self.user(svc.name, svc.uid)
        return Process(
            pid=self.pid(),
            attribution=Attribution.FULL,
            exe=exe,
            cmd_line=cmd,
            user=user,
            login_user=user,
            systemd_unit=unit,
            cgroup=f"/system.slice/{unit}",
        )

    def sudo(self, admin: Person, exe: str, cmd: str, *, origin: str | None = None) -> Process:
        """A root process an admin started through ``sudo`` (login user: the admin)."""
        self.entities.add(admin.name)
        login = self.user(admin.name, admin.uid)
        endpoint = self._origin(origin or admin.workstation)
        return Process(
            pid=self.pid(),
            attribution=Attribution.FULL,
            exe=exe,
            cmd_line=cmd,
            user=ROOT,
            login_user=login,
            parent=Process(
                pid=self.pid(),
                attribution=Attribution.FULL,
                exe="/usr/bin/sudo",
                cmd_line=f"sudo {cmd}",
                user=ROOT,
                login_user=login,
                parent=self._shell(login, endpoint),
                ssh_origin=endpoint,
            ),
            ssh_origin=endpoint,
        )

    def child(self, parent: Process, exe: str, cmd: str) -> Process:
        """A child of ``parent`` with its identity (``rsync`` runs ``ssh``)."""
        return Process(
            pid=self.pid(),
            attribution=Attribution.FULL,
            exe=exe,
            cmd_line=cmd,
            user=parent.user,
            login_user=parent.login_user,
            parent=parent,
            job_id=parent.job_id,
            ssh_origin=parent.ssh_origin,
        )

    # -- events -----------------------------------------------------------------------

    def _emit(self, event: _E) -> _E:
        self._sink(event)
        return event

    def launch(self, time: int, host: str, process: Process) -> ProcessActivity:
        """A process start (auditd ``execve``); the actor is the new process itself."""
        return self._emit(
            ProcessActivity(
                uid=self.uid(),
                time=time,
                device=self.device(host),
                activity=ProcessActivityType.LAUNCH,
                actor=Actor(process=process, user=process.user),
                process=process,
                sensor=_EXEC_SENSOR,
            )
        )

    def read(  # noqa: PLR0917 -- when, how long, where, who, what: one access session
        self,
        time: int,
        duration: int,
        host: str,
        process: Process,
        path: str,
        size: int,
        *,
        mapped: float = 0.0,
        read: float = 0.0,
        canary: bool = False,
        progress: int = 0,
    ) -> tuple[FileActivity, FileActivity]:
        """An access session: open at ``time``, close ``duration`` ms later.

        ``mapped`` and ``read`` are the shares of the file resident through ``mmap`` and
        read through ``read(2)``. With ``progress`` (ms, the agent's progress interval), a
        file held longer gets a progress event each interval, as the agent reports it.
        """
        session = self.uid()
        device = self.device(host)
        actor = Actor(process=process, user=process.user)
        file = FileRef(path=path, size=size)
        severity = Severity.CRITICAL if canary else Severity.INFORMATIONAL
        opened = self._emit(
            FileActivity(
                uid=self.uid(),
                time=time,
                device=device,
                activity=FileActivityType.OPEN,
                actor=actor,
                file=file,
                severity=severity,
                session_uid=session,
                sensor=_FILE_SENSOR,
                canary=canary,
                session_phase=SessionPhase.OPEN,
            )
        )
        bytes_read = int(size * read)
        mmap_bytes = int(size * mapped)
        if progress:
            for at in range(time + progress, time + duration, progress):
                self._emit(
                    FileActivity(
                        uid=self.uid(),
                        time=at,
                        device=device,
                        activity=FileActivityType.READ,
                        actor=actor,
                        file=file,
                        severity=severity,
                        bytes_read=bytes_read,
                        mmap_bytes=mmap_bytes or None,
                        fraction_read=round((bytes_read + mmap_bytes) / size, 6) if size else None,
                        session_uid=session,
                        sensor=_FILE_SENSOR,
                        canary=canary,
                        session_phase=SessionPhase.PROGRESS,
                    )
                )
        closed = self._emit(
            FileActivity(
                uid=self.uid(),
                time=time + max(1, duration),
                device=device,
                activity=FileActivityType.READ,
                actor=actor,
                file=file,
                severity=severity,
                bytes_read=bytes_read,
                mmap_bytes=mmap_bytes or None,
                fraction_read=round((bytes_read + mmap_bytes) / size, 6) if size else None,
                session_uid=session,
                sensor=_FILE_SENSOR,
                canary=canary,
                session_phase=SessionPhase.CLOSE,
            )
        )
        return opened, closed

    def connect(
        self,
        time: int,
        host: str,
        process: Process,
        *,
        ip: str,
        port: int,
        hostname: str | None = None,
        bytes_out: int = 0,
        bytes_in: int = 0,
        session: str | None = None,
    ) -> NetworkActivity:
        """An outbound connection; ``session`` links it to the read of the same process."""
        return self._emit(
            NetworkActivity(
                uid=self.uid(),
                time=time,
                device=self.device(host),
                activity=NetworkActivityType.OPEN,
                actor=Actor(process=process, user=process.user),
                src_endpoint=Endpoint(
                    ip=self._hosts[host].ip, port=self._rng.randint(32768, 60999)
                ),
                dst_endpoint=Endpoint(ip=ip, port=port, hostname=hostname),
                severity=Severity.LOW,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                session_uid=session,
                sensor=_NET_SENSOR,
            )
        )

    def write(
        self,
        time: int,
        host: str,
        process: Process | None,
        path: str,
        size: int | None,
        *,
        activity: FileActivityType = FileActivityType.CREATE,
        severity: Severity = Severity.INFORMATIONAL,
        seal: SealInfo | None = None,
        copy_source: str | None = None,
        sensor: str = _FILE_SENSOR,
        related: tuple[str, ...] = (),
    ) -> FileActivity:
        """A write, copy or seal event on ``path``."""
        actor = (
            Actor(process=process, user=process.user)
            if process is not None
            else self._agent_actor()
        )
        return self._emit(
            FileActivity(
                uid=self.uid(),
                time=time,
                device=self.device(host),
                activity=activity,
                actor=actor,
                file=FileRef(path=path, size=size),
                severity=severity,
                sensor=sensor,
                seal=seal,
                copy_source=copy_source,
                related_paths=related,
            )
        )

    def copy(  # noqa: PLR0917 -- when, where, who, what, and the original
        self, time: int, host: str, process: Process, path: str, size: int, source: str
    ) -> FileActivity:
        """The copy detector's finding: ``path`` has the content of the sealed ``source``."""
        removable = path.startswith(("/media/", "/run/media/"))
        return self.write(
            time,
            host,
            process,
            path,
            size,
            severity=Severity.CRITICAL if removable else Severity.HIGH,
            copy_source=source,
            sensor="copy-detector",
            related=(source,),
        )

    def sealed(self, time: int, host: str, folder: str) -> FileActivity:
        """The agent sealed a checkpoint folder (its own actor, seal ``intact``)."""
        digest = f"{self._rng.getrandbits(256):064x}"
        return self.write(
            time,
            host,
            None,
            folder,
            None,
            activity=FileActivityType.OTHER,
            seal=SealInfo(status=SealStatus.INTACT, seal_uid=digest, detail="sealed checkpoint"),
            sensor="sealer",
        )

    def tampered(  # noqa: PLR0917 -- when, where, who, what, and the write that did it
        self, time: int, host: str, process: Process, path: str, size: int, cause: str
    ) -> FileActivity:
        """The sealer found ``path`` changed after sealing; ``cause`` is the write event."""
        digest = f"{self._rng.getrandbits(256):064x}"
        return self.write(
            time,
            host,
            process,
            path,
            size,
            activity=FileActivityType.UPDATE,
            severity=Severity.HIGH,
            seal=SealInfo(
                status=SealStatus.TAMPERED,
                seal_uid=digest,
                detail="modified after sealing; 1 modified, 0 added, 0 removed",
            ),
            sensor="sealer",
            related=(cause,),
        )

    def _agent_actor(self) -> Actor:
        agent = self._parents.get(("agent", ""))
        if agent is None:
            agent = self._parents["agent", ""] = Process(
                pid=self.pid(),
                attribution=Attribution.FULL,
                exe=_AGENT_EXE,
                cmd_line="weightwarden agent run",
                user=ROOT,
                systemd_unit="weightwarden-agent.service",
            )
        return Actor(process=agent, user=ROOT)
