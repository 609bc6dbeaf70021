"""Turn what attribution learnt about a pid into the event's actor (process, user, parents)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from weightwarden.events import Actor, Attribution, Endpoint, Process, User

if TYPE_CHECKING:
    from agent.attribution import Ancestor, ProcessInfo
    from agent.attribution import Attribution as PidAttribution

__all__ = ["actor_from_attribution", "unknown_actor"]

_QUALITY = {
    "FULL": Attribution.FULL,
    "FROM_CACHE": Attribution.FROM_CACHE,
    "PARTIAL": Attribution.PARTIAL,
    "UNKNOWN": Attribution.UNKNOWN,
}


def _user(uid: int | None, name: str | None) -> User | None:
    return None if uid is None else User(uid=uid, name=name)


def _parents(ancestors: tuple[Ancestor, ...], quality: Attribution) -> Process | None:
    parent: Process | None = None
    for a in reversed(ancestors):  # build from the oldest ancestor down
        parent = Process(
            pid=a.pid, attribution=quality, exe=a.exe, user=_user(a.uid, a.user), parent=parent
        )
    return parent


def _process(info: ProcessInfo, quality: Attribution) -> Process:
    ssh = info.ssh_origin
    job = str(info.slurm_job_id) if info.slurm_job_id is not None else info.pod_uid
    return Process(
        pid=info.pid,
        attribution=quality,
        exe=info.exe,
        cmd_line=shlex.join(info.cmdline) if info.cmdline else None,
        user=_user(info.uid, info.user),
        login_user=_user(info.login_uid, info.login_user),
        parent=_parents(info.parents, quality),
        cgroup=info.cgroup,
        container_id=info.container_id,
        systemd_unit=info.systemd_unit,
        job_id=job,
        ssh_origin=Endpoint(ip=ssh.client_address, port=ssh.client_port) if ssh else None,
    )


def actor_from_attribution(attribution: PidAttribution) -> Actor:
    """The actor of an event: the process as attributed, and its (effective) user."""
    quality = _QUALITY[attribution.quality.name]
    info = attribution.process
    if info is None:
        return Actor(process=Process(pid=attribution.pid, attribution=quality), user=None)
    process = _process(info, quality)
    return Actor(process=process, user=process.user)


def unknown_actor() -> Actor:
    """No pid at all (the inotify fallback): the event says the actor is unknown."""
    return Actor(process=None, user=None)
