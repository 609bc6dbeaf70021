"""Parse ``/proc/PID/cgroup`` into where a process runs: container, unit, Slurm job, pod.

Handles cgroup v1, v2 and hybrid files, and both the cgroupfs and systemd drivers of
docker, containerd, CRI-O, podman and the kubelet::

    0::/system.slice/docker-<64 hex>.scope                      docker, systemd driver
    12:memory:/docker/<64 hex>                                   docker, cgroupfs driver
    0::/kubepods.slice/kubepods-burstable.slice/
       kubepods-burstable-pod<uid with _>.slice/cri-containerd-<64 hex>.scope
    4:cpu:/kubepods/besteffort/pod<uid>/<64 hex>                 kubelet, cgroupfs driver
    0::/machine.slice/libpod-<64 hex>.scope/container            podman
    0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0  Slurm, cgroup v2
    4:memory:/slurm/uid_1000/job_42/step_0/task_0                Slurm, cgroup v1
    0::/user.slice/user-1000.slice/session-3.scope               a login session
"""

from __future__ import annotations

import functools
import re

from agent.attribution._process_info import CgroupIdentity

__all__ = ["parse_cgroup"]

_HEX64 = r"[0-9a-f]{64}"
_SCOPED_CONTAINER = re.compile(
    rf"^(?P<prefix>docker|cri-containerd|crio|libpod|containerd)-(?P<id>{_HEX64})\.scope$"
)
_BARE_CONTAINER = re.compile(rf"^{_HEX64}$")
_RUNTIME_BY_PREFIX = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}
_RUNTIME_BY_PARENT = {"docker": "docker", "containerd": "containerd", "crio": "cri-o"}
# A pod uid is a UUID, or a 32-hex hash for static pods; the systemd driver writes _ for -.
_POD = re.compile(
    r"^(?:kubepods(?:-[a-z]+)?-)?pod"
    r"(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice)?$"
)
_SLURM_JOB = re.compile(r"^job_(?P<id>[0-9]{1,18})$")  # ASCII, below 2**63
_UNIT = re.compile(r"^[^/]+\.(?:service|scope)$")
_V1_SYSTEMD = "name=systemd"


def _primary_path(lines: list[tuple[str, str, str]]) -> str | None:
    """Pick the path that best says where the process is (unified, then systemd, then any)."""
    unified = next((path for hid, ctrl, path in lines if hid == "0" and not ctrl), None)
    if unified not in (None, "/"):
        return unified
    systemd = next((path for _, ctrl, path in lines if ctrl == _V1_SYSTEMD), None)
    if systemd not in (None, "/"):
        return systemd
    other = next((path for _, _, path in lines if path != "/"), None)
    if other is not None:
        return other
    return unified or systemd or (lines[0][2] if lines else None)


def _identity_of(path: str) -> dict[str, str | int | None]:
    """Find container, pod, Slurm job and systemd unit in one cgroup path (innermost wins)."""
    found: dict[str, str | int | None] = {}
    parts = [part for part in path.split("/") if part]
    for index, part in enumerate(parts):
        if scoped := _SCOPED_CONTAINER.match(part):
            found["container_id"] = scoped["id"]
            found["container_runtime"] = _RUNTIME_BY_PREFIX[scoped["prefix"]]
        elif _BARE_CONTAINER.match(part):
            found["container_id"] = part
            parent = parts[index - 1] if index else ""
            found["container_runtime"] = _RUNTIME_BY_PARENT.get(parent)
        if pod := _POD.match(part):
            found["pod_uid"] = pod["uid"].replace("_", "-")
        if job := _SLURM_JOB.match(part):
            found["slurm_job_id"] = int(job["id"])
        if _UNIT.match(part):
            found["systemd_unit"] = part
    return found


@functools.lru_cache(maxsize=512)
def parse_cgroup(text: str) -> CgroupIdentity:
    """Parse the text of ``/proc/PID/cgroup``.

    Cached on the text: most processes share a handful of cgroups, and this runs on the
    exec hot path.

    The primary path decides each field; the other v1 hierarchies fill in what it lacks
    (a hybrid host may show a container only in, say, the memory hierarchy). Malformed
    lines are skipped; an empty text gives an identity of all ``None``.

    Args:
        text: the file's contents, lines of ``hierarchy-id:controllers:path``.

    Returns:
        The identity; ``path`` is ``None`` only when no line could be parsed.
    """
    lines: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3 and fields[2].startswith("/"):  # noqa: PLR2004 (id:controllers:path)
            lines.append((fields[0], fields[1], fields[2]))
    primary = _primary_path(lines)
    merged: dict[str, str | int | None] = {}
    others = [path for _, _, path in lines if path != primary]
    for path in [*others, *([primary] if primary is not None else [])]:
        merged.update(_identity_of(path))  # the primary path goes last, so it wins
    job = merged.get("slurm_job_id")
    return CgroupIdentity(
        path=primary,
        container_id=_str_or_none(merged.get("container_id")),
        container_runtime=_str_or_none(merged.get("container_runtime")),
        systemd_unit=_str_or_none(merged.get("systemd_unit")),
        slurm_job_id=job if isinstance(job, int) else None,
        pod_uid=_str_or_none(merged.get("pod_uid")),
    )


def _str_or_none(value: str | int | None) -> str | None:
    return value if isinstance(value, str) else None
