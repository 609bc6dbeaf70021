"""Who a process is: the values that attribution produces.

A `ProcessInfo` is a snapshot of one process taken from ``/proc``. Every field that could
not be read is ``None`` (or empty) *and* named in ``unread``, so a consumer can tell "this
process has no login uid" from "we could not find out". ``read_quality`` says how the
snapshot ended: complete, partial (alive, but some files unreadable), vanished (the process
exited or was reaped while it was being read; what was read before is kept) or absent (no
such process when reading began).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Ancestor",
    "CgroupIdentity",
    "ProcessInfo",
    "ReadQuality",
    "SshOrigin",
]


class ReadQuality(enum.Enum):
    """How completely a process snapshot could be read from ``/proc``."""

    COMPLETE = "complete"
    """Every file was read while the process was alive."""
    PARTIAL = "partial"
    """The process is alive but some files were unreadable (permissions); see ``unread``."""
    VANISHED = "vanished"
    """The process exited (or is a zombie) during the read; fields read before are kept."""
    ABSENT = "absent"
    """No process with this pid existed when reading began; only ``pid`` is meaningful."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SshOrigin:
    """Where an ssh session came from, as sshd put it in ``SSH_CONNECTION``/``SSH_CLIENT``.

    The values come from the process environment, which its owner can change: they are a
    lead for an investigator, not proof.
    """

    client_address: str
    client_port: int | None
    server_address: str | None
    server_port: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CgroupIdentity:
    """What a process's cgroup path says about where it runs.

    Cgroup membership is set by the service manager, container runtime or workload
    manager, and an unprivileged process cannot move itself out of it: unlike environment
    variables, these values are trustworthy.
    """

    path: str | None
    """The primary cgroup path (the unified v2 path, else the v1 ``name=systemd`` one)."""
    container_id: str | None
    container_runtime: str | None
    """``docker``, ``containerd``, ``cri-o`` or ``podman`` when the pattern names it."""
    systemd_unit: str | None
    """The innermost ``*.service`` or ``*.scope`` unit."""
    slurm_job_id: int | None
    pod_uid: str | None
    """Kubernetes pod uid in its canonical dashed form."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ancestor:
    """One process in a parent chain: enough to say who started whom."""

    pid: int
    start_time: int | None
    """Clock ticks after boot (``/proc/PID/stat`` field 22)."""
    uid: int | None
    user: str | None
    comm: str | None
    exe: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessInfo:
    """A snapshot of one process's identity, read from ``/proc``."""

    pid: int
    ppid: int | None = None
    comm: str | None = None
    state: str | None = None
    """One-letter state from ``/proc/PID/stat`` (``R``, ``S``, ``Z`` ...)."""
    kernel_thread: bool = False
    uid: int | None = None
    """Real uid."""
    euid: int | None = None
    """Effective uid (differs from ``uid`` for set-uid programs)."""
    user: str | None = None
    """Name of the real uid, ``None`` when the uid has no passwd entry."""
    login_uid: int | None = None
    """The uid that logged in (survives sudo/su); ``None`` when unset or unread."""
    login_user: str | None = None
    exe: str | None = None
    """Executable path, without the kernel's `` (deleted)`` suffix."""
    exe_deleted: bool = False
    """The executable was deleted or replaced after the process started."""
    cmdline: tuple[str, ...] = ()
    start_time: int | None = None
    """Clock ticks after boot (``/proc/PID/stat`` field 22): with ``pid``, a unique key."""
    cgroup: str | None = None
    container_id: str | None = None
    container_runtime: str | None = None
    systemd_unit: str | None = None
    slurm_job_id: int | None = None
    """From the cgroup; from ``SLURM_JOB_ID`` in the environment only when the cgroup has none."""
    pod_uid: str | None = None
    ssh_origin: SshOrigin | None = None
    parents: tuple[Ancestor, ...] = ()
    """Parent first, then grandparent, up to pid 1 or the depth bound."""
    read_quality: ReadQuality = ReadQuality.COMPLETE
    unread: frozenset[str] = frozenset()
    """Names of the fields that could not be read."""

    @property
    def identified(self) -> bool:
        """Whether the snapshot says who (uid) ran what (exe, or a kernel thread)."""
        return self.uid is not None and (self.exe is not None or self.kernel_thread)

    def as_ancestor(self) -> Ancestor:
        """Return the part of this snapshot a descendant's parent chain keeps."""
        return Ancestor(
            pid=self.pid,
            start_time=self.start_time,
            uid=self.uid,
            user=self.user,
            comm=self.comm,
            exe=self.exe,
        )
