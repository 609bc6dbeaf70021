r"""Turn what attribution learnt about a pid into the event's actor (process, user, parents).

What ``/proc`` yields is partly chosen by the process being described: its argv, its exe
name and its environment (``SSH_CONNECTION``). The actor must stay a valid event whatever a
user puts there, or a reader could make its own access records unwritable or unreadable:
bytes that are not UTF-8 are shown as ``\xNN`` escapes (:func:`event_text`), and an ssh
origin whose address is not an IP address is dropped (a port out of range, only the port).
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import TYPE_CHECKING

from weightwarden.events import Actor, Attribution, Endpoint, Process, User

if TYPE_CHECKING:
    from agent.attribution import Ancestor, ProcessInfo, SshOrigin
    from agent.attribution import Attribution as PidAttribution

__all__ = ["actor_from_attribution", "event_text", "unknown_actor"]

_QUALITY = {
    "FULL": Attribution.FULL,
    "FROM_CACHE": Attribution.FROM_CACHE,
    "PARTIAL": Attribution.PARTIAL,
    "UNKNOWN": Attribution.UNKNOWN,
}
_MAX_PORT = 65535


def event_text(value: str) -> str:
    r"""``value`` as valid Unicode for an event: undecodable bytes become ``\xNN`` escapes.

    Paths and argv read from the kernel keep undecodable bytes as surrogate escapes
    (``os.fsdecode``); OCSF events are UTF-8 and reject them, so they are spelt out instead.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no decoder produced: escape it as such
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return value


def _text(value: str | None) -> str | None:
    return None if value is None else event_text(value)


def _user(uid: int | None, name: str | None) -> User | None:
    return None if uid is None else User(uid=uid, name=_text(name))


def _parents(ancestors: tuple[Ancestor, ...], quality: Attribution) -> Process | None:
    parent: Process | None = None
    for a in reversed(ancestors):  # build from the oldest ancestor down
        parent = Process(
            pid=a.pid,
            attribution=quality,
            exe=_text(a.exe),
            user=_user(a.uid, a.user),
            parent=parent,
        )
    return parent


def _ssh_origin(ssh: SshOrigin | None) -> Endpoint | None:
    """The ssh client as an endpoint, if its address is one (the environment is user-set)."""
    if ssh is None:
        return None
    try:
        ipaddress.ip_address(ssh.client_address)
    except ValueError:
        return None
    port = ssh.client_port
    return Endpoint(
        ip=ssh.client_address, port=port if port is not None and port <= _MAX_PORT else None
    )


def _process(info: ProcessInfo, quality: Attribution) -> Process:
    job = str(info.slurm_job_id) if info.slurm_job_id is not None else info.pod_uid
    return Process(
        pid=info.pid,
        attribution=quality,
        exe=_text(info.exe),
        cmd_line=event_text(shlex.join(info.cmdline)) if info.cmdline else None,
        user=_user(info.uid, info.user),
        login_user=_user(info.login_uid, info.login_user),
        parent=_parents(info.parents, quality),
        cgroup=_text(info.cgroup),
        container_id=_text(info.container_id),
        systemd_unit=_text(info.systemd_unit),
        job_id=_text(job),
        ssh_origin=_ssh_origin(info.ssh_origin),
    )


def actor_from_attribution(attribution: PidAttribution) -> Actor:
    """The actor of an event: the process as attributed, and its (real) user."""
    quality = _QUALITY[attribution.quality.name]
    info = attribution.process
    if info is None:
        return Actor(process=Process(pid=attribution.pid, attribution=quality), user=None)
    process = _process(info, quality)
    return Actor(process=process, user=process.user)


def unknown_actor() -> Actor:
    """No pid at all (the inotify fallback): the event says the actor is unknown."""
    return Actor(process=None, user=None)
