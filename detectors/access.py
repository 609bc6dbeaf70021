"""One event as the detectors see it: a flat :class:`Access`, read straight from OCSF JSON.

Detection runs over millions of stored events, so it does not build the nested event
dataclasses: :func:`access_from_ocsf` reads the few attributes the detectors use from the
decoded OCSF object (see :mod:`weightwarden.events`) into one flat, frozen record.
Events that concern no person's access (findings, audit items) give ``None``.

Who: ``user`` is the person, the audit login user when known (it survives ``sudo``), else
the effective user; ``account`` is the effective user the process ran as. A name is
preferred to a uid; a user known only by uid is ``uid:1001``; nobody known is
:data:`UNKNOWN_USER`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["UNKNOWN_USER", "Access", "AccessKind", "access_from_json", "access_from_ocsf"]

UNKNOWN_USER: Final = "unknown"

_FILE: Final = 1001
_PROCESS: Final = 1007
_NETWORK: Final = 4001


class AccessKind(enum.StrEnum):
    """What an access did."""

    READ = "read"
    """Opened, read or closed a file without writing (an access session)."""
    WRITE = "write"
    """Created, wrote or changed a file's attributes."""
    DELETE = "delete"
    RENAME = "rename"
    CONNECT = "connect"
    """An outbound network connection."""
    EXEC = "exec"
    """A process started or stopped."""
    OTHER = "other"


_FILE_KINDS: Final = {
    1: AccessKind.WRITE,  # create
    2: AccessKind.READ,
    3: AccessKind.WRITE,  # update
    4: AccessKind.DELETE,
    5: AccessKind.RENAME,
    6: AccessKind.WRITE,  # set attributes
    7: AccessKind.WRITE,  # set security
    8: AccessKind.READ,  # get attributes
    14: AccessKind.READ,  # open
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """The attributes of one event that detection uses.

    Attributes:
        uid: The event's id (the evidence an alert cites).
        time: Milliseconds since the epoch, UTC.
        host: The device's host name.
        kind: What was done.
        user: The person (login user, else effective user).
        account: The effective user the process ran as.
        program: The program's name (exe basename), if known.
        exe: The program's full path, if known.
        parent_program: The parent process's program name, if known.
        path: The file acted on; for a rename, its new path; "" for other events.
        size: The file's size in bytes, if known.
        bytes: Bytes read (read calls plus resident mmap), 0 if not reported.
        fraction: Share of the file read, if reported.
        session: The access session the event belongs to.
        phase: ``open``, ``progress`` or ``close`` for session events.
        canary: The file is a decoy.
        seal: The seal status the agent saw (``intact``, ``tampered``...), if any.
        copy_source: The sealed file this written file is a copy of.
        dst_ip: Destination address of a connection.
        dst_host: Destination host name of a connection, if known.
        dst_port: Destination port.
        bytes_out: Bytes sent on a connection.
        ssh_ip: Where the user's SSH session came from.
        job: Batch job (Slurm, Kubernetes) the process belongs to.
        severity: The producer's severity id.
    """

    uid: str
    time: int
    host: str
    kind: AccessKind
    user: str
    account: str
    program: str | None = None
    exe: str | None = None
    parent_program: str | None = None
    path: str = ""
    size: int | None = None
    bytes: int = 0
    fraction: float | None = None
    session: str | None = None
    phase: str | None = None
    canary: bool = False
    seal: str | None = None
    copy_source: str | None = None
    dst_ip: str | None = None
    dst_host: str | None = None
    dst_port: int | None = None
    bytes_out: int = 0
    ssh_ip: str | None = None
    job: str | None = None
    severity: int = 1


def access_from_json(line: str | bytes) -> Access | None:
    """:func:`access_from_ocsf` of one JSON text; None for text that is not an OCSF object."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return access_from_ocsf(obj) if isinstance(obj, dict) else None


def _name(user: object) -> str | None:
    if not isinstance(user, dict):
        return None
    name = user.get("name")
    if isinstance(name, str) and name:
        return name
    uid = user.get("uid")
    return f"uid:{uid}" if uid is not None else None


def _program(process: Mapping[str, object] | None) -> str | None:
    if process is None:
        return None
    name = process.get("name")
    if isinstance(name, str) and name:
        return name
    file = process.get("file")
    if isinstance(file, dict):
        path = file.get("path")
        if isinstance(path, str) and path:
            return path.rstrip("/").rpartition("/")[2]
    return None


def _exe(process: Mapping[str, object] | None) -> str | None:
    file = process.get("file") if process else None
    path = file.get("path") if isinstance(file, dict) else None
    return path if isinstance(path, str) and path else None


def _mapping(value: object) -> Mapping[str, object] | None:
    return value if isinstance(value, dict) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def access_from_ocsf(obj: Mapping[str, object]) -> Access | None:
    """The :class:`Access` of a File System, Network or Process Activity; else None.

    Never raises on malformed input: attributes of the wrong type count as absent, and an
    event without an id, a time or a class detection understands gives None.
    """
    class_uid = obj.get("class_uid")
    if class_uid not in (_FILE, _NETWORK, _PROCESS):
        return None
    metadata = _mapping(obj.get("metadata"))
    uid = metadata.get("uid") if metadata else None
    time = _int(obj.get("time"))
    if not isinstance(uid, str) or time is None:
        return None
    device = _mapping(obj.get("device"))
    host = device.get("hostname") if device else None
    actor = _mapping(obj.get("actor")) or {}
    process = _mapping(actor.get("process"))
    context = _mapping(process.get("xattributes")) if process else None
    account = _name(actor.get("user")) or (_name(process.get("user")) if process else None)
    login = None
    if context is not None:
        login_name = context.get("login_user_name")
        login_uid = context.get("login_uid")
        if isinstance(login_name, str) and login_name:
            login = login_name
        elif _int(login_uid) is not None and login_uid != 2**32 - 1:
            login = f"uid:{login_uid}"
    account = account or login or UNKNOWN_USER
    parent = _mapping(process.get("parent_process")) if process else None
    ssh = _mapping(context.get("ssh_origin")) if context else None
    job = context.get("job_id") if context else None
    severity = _int(obj.get("severity_id")) or 1
    common: dict[str, object] = {
        "uid": uid,
        "time": time,
        "host": host if isinstance(host, str) else "",
        "user": login or account,
        "account": account,
        "program": _program(process),
        "exe": _exe(process),
        "parent_program": _program(parent),
        "ssh_ip": ssh.get("ip") if ssh and isinstance(ssh.get("ip"), str) else None,
        "job": job if isinstance(job, str) else None,
        "severity": severity,
    }
    activity = _int(obj.get("activity_id")) or 0
    if class_uid == _PROCESS:
        return Access(kind=AccessKind.EXEC, **common)  # type: ignore[arg-type]
    unmapped = _mapping(obj.get("unmapped"))
    ext = (_mapping(unmapped.get("weightwarden")) if unmapped else None) or {}
    if class_uid == _NETWORK:
        dst = _mapping(obj.get("dst_endpoint")) or {}
        traffic = _mapping(obj.get("traffic")) or {}
        dst_ip = dst.get("ip")
        dst_host = dst.get("hostname")
        session = ext.get("session_uid")
        return Access(
            kind=AccessKind.CONNECT,
            dst_ip=dst_ip if isinstance(dst_ip, str) else None,
            dst_host=dst_host if isinstance(dst_host, str) else None,
            dst_port=_int(dst.get("port")),
            bytes_out=_int(traffic.get("bytes_out")) or 0,
            session=session if isinstance(session, str) else None,
            **common,  # type: ignore[arg-type]
        )
    file = _mapping(obj.get("file")) or {}
    result = _mapping(obj.get("file_result"))
    kind = _FILE_KINDS.get(activity, AccessKind.OTHER)
    target = result if kind is AccessKind.RENAME and result else file
    path = target.get("path")
    read = (_int(ext.get("bytes_read")) or 0) + (_int(ext.get("mmap_bytes")) or 0)
    fraction = ext.get("fraction_read")
    seal = _mapping(ext.get("seal"))
    seal_status = seal.get("status") if seal else None
    copy_source = ext.get("copy_source")
    session = ext.get("session_uid")
    phase = ext.get("session_phase")
    return Access(
        kind=kind,
        path=path if isinstance(path, str) else "",
        size=_int(target.get("size")),
        bytes=read,
        fraction=float(fraction) if isinstance(fraction, int | float) else None,
        session=session if isinstance(session, str) else None,
        phase=phase if isinstance(phase, str) else None,
        canary=ext.get("canary") is True,
        seal=seal_status if isinstance(seal_status, str) else None,
        copy_source=copy_source if isinstance(copy_source, str) else None,
        **common,  # type: ignore[arg-type]
    )
