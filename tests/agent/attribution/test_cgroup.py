from __future__ import annotations

from pathlib import Path

import pytest

from agent.attribution import parse_cgroup

DOCKER_ID = "3f4e" + "a" * 60
CONTAINERD_ID = "b" * 64
POD_UID = "7d1e8c7a-2f3b-4c5d-9e0f-123456789abc"


def test_docker_under_systemd_gives_container_id_runtime_and_scope_unit() -> None:
    """A docker container under the systemd driver is named by its docker-<id>.scope."""
    identity = parse_cgroup(f"0::/system.slice/docker-{DOCKER_ID}.scope\n")
    assert identity.container_id == DOCKER_ID
    assert identity.container_runtime == "docker"
    assert identity.systemd_unit == f"docker-{DOCKER_ID}.scope"
    assert identity.path == f"/system.slice/docker-{DOCKER_ID}.scope"


def test_docker_with_cgroupfs_driver_on_cgroup_v1_is_found_in_any_hierarchy() -> None:
    """On a v1 host the bare /docker/<id> path identifies the container and runtime."""
    text = (
        f"12:memory:/docker/{DOCKER_ID}\n"
        f"11:cpu,cpuacct:/docker/{DOCKER_ID}\n"
        f"1:name=systemd:/docker/{DOCKER_ID}\n"
        "0::/\n"
    )
    identity = parse_cgroup(text)
    assert identity.container_id == DOCKER_ID
    assert identity.container_runtime == "docker"
    assert identity.path == f"/docker/{DOCKER_ID}"


def test_kubepods_systemd_driver_gives_pod_uid_with_dashes_and_containerd_id() -> None:
    """The kubelet's systemd slice spells the pod uid with underscores; we restore dashes."""
    pod = POD_UID.replace("-", "_")
    text = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{pod}.slice/cri-containerd-{CONTAINERD_ID}.scope\n"
    )
    identity = parse_cgroup(text)
    assert identity.pod_uid == POD_UID
    assert identity.container_id == CONTAINERD_ID
    assert identity.container_runtime == "containerd"
    assert identity.systemd_unit == f"cri-containerd-{CONTAINERD_ID}.scope"


def test_kubepods_cgroupfs_driver_gives_pod_uid_and_bare_container_id() -> None:
    """The cgroupfs driver writes kubepods/<qos>/pod<uid>/<container id>."""
    identity = parse_cgroup(f"4:cpu:/kubepods/besteffort/pod{POD_UID}/{CONTAINERD_ID}\n0::/\n")
    assert identity.pod_uid == POD_UID
    assert identity.container_id == CONTAINERD_ID
    assert identity.container_runtime is None  # the path does not say which runtime


def test_guaranteed_qos_pod_without_qos_slice_is_recognised() -> None:
    """Guaranteed pods sit directly under kubepods.slice as kubepods-pod<uid>.slice."""
    pod = POD_UID.replace("-", "_")
    identity = parse_cgroup(
        f"0::/kubepods.slice/kubepods-pod{pod}.slice/crio-{CONTAINERD_ID}.scope\n"
    )
    assert identity.pod_uid == POD_UID
    assert identity.container_runtime == "cri-o"


def test_podman_container_scope_is_podman_and_conmon_is_not_a_container() -> None:
    """libpod-<id>.scope is the container; libpod-conmon-<id>.scope is its monitor."""
    container = parse_cgroup(f"0::/machine.slice/libpod-{CONTAINERD_ID}.scope/container\n")
    assert container.container_id == CONTAINERD_ID
    assert container.container_runtime == "podman"
    monitor = parse_cgroup(f"0::/machine.slice/libpod-conmon-{CONTAINERD_ID}.scope\n")
    assert monitor.container_id is None
    assert monitor.systemd_unit == f"libpod-conmon-{CONTAINERD_ID}.scope"


def test_slurm_cgroup_v2_gives_job_id_and_slurmstepd_scope() -> None:
    """Slurm on cgroup v2 nests job_<id>/step_<n> under slurmstepd.scope."""
    identity = parse_cgroup("0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0\n")
    assert identity.slurm_job_id == 4242
    assert identity.systemd_unit == "slurmstepd.scope"


@pytest.mark.parametrize("job", ["\u0661\u0662", "9" * 19])
def test_a_slurm_like_cgroup_without_a_plausible_job_id_gives_none(job: str) -> None:
    """job_<id> must be 1-18 ASCII digits (a delegated user cgroup can be named anything)."""
    identity = parse_cgroup(f"0::/user.slice/user-1000.slice/job_{job}/task_0\n")
    assert identity.slurm_job_id is None


def test_slurm_cgroup_v1_gives_job_id_from_the_memory_hierarchy() -> None:
    """Slurm on cgroup v1 uses /slurm/uid_<uid>/job_<id>/step_<n>/task_<n>."""
    text = (
        "10:memory:/slurm/uid_1000/job_77/step_batch/task_0\n"
        "4:cpuset:/slurm/uid_1000/job_77/step_batch\n"
        "1:name=systemd:/system.slice/slurmd.service\n"
    )
    identity = parse_cgroup(text)
    assert identity.slurm_job_id == 77
    assert identity.systemd_unit == "slurmd.service"
    assert identity.path == "/system.slice/slurmd.service"


def test_systemd_service_and_login_session_units() -> None:
    """A daemon is in its .service; a login shell in session-N.scope under the user slice."""
    assert parse_cgroup("0::/system.slice/sshd.service\n").systemd_unit == "sshd.service"
    session = parse_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n")
    assert session.systemd_unit == "session-3.scope"
    assert session.container_id is None
    assert session.slurm_job_id is None
    assert session.pod_uid is None


def test_innermost_unit_wins_in_a_user_manager() -> None:
    """Units nested under user@UID.service report the innermost one."""
    text = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/train.service\n"
    assert parse_cgroup(text).systemd_unit == "train.service"


@pytest.mark.parametrize("text", ["", "garbage\n", "1:cpu\n", "0::relative/path\n"])
def test_empty_or_malformed_text_gives_an_empty_identity(text: str) -> None:
    """Lines that are not id:controllers:/path are skipped without error."""
    identity = parse_cgroup(text)
    assert identity.path is None
    assert identity.container_id is None
    assert identity.systemd_unit is None


def test_root_cgroup_is_reported_as_slash() -> None:
    """A process in the root cgroup has path '/' and nothing else."""
    identity = parse_cgroup("0::/\n")
    assert identity.path == "/"
    assert identity.systemd_unit is None


def test_this_machines_own_cgroup_parses() -> None:
    """The test process's real /proc/self/cgroup parses into a path."""
    identity = parse_cgroup(Path("/proc/self/cgroup").read_text())
    assert identity.path is not None
    assert identity.path.startswith("/")
