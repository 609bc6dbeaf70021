from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.attribution import (
    ReadQuality,
    SshOrigin,
    parse_cmdline,
    parse_environ,
    parse_loginuid,
    parse_ssh_origin,
    parse_stat,
    parse_status,
    read_parents,
    read_process,
)

if TYPE_CHECKING:
    from collections.abc import Callable

NOBODY = 65534

# A real stat line whose comm holds a space and a ')' (field 22, starttime, is 98765).
STAT_TEXT = (
    "4242 (my (evil) prog) S 4100 4242 4100 34816 4242 4194560 120 0 0 0 1 2 0 0 20 0 1 0 "
    "98765 9412608 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
)

STATUS_TEXT = """Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Ngid:\t0
Pid:\t4242
PPid:\t4100
TracerPid:\t0
Uid:\t1000\t0\t0\t0
Gid:\t1000\t1000\t1000\t1000
FDSize:\t64
Groups:\t27 1000
"""


# --- pure parsers ------------------------------------------------------------------------


def test_stat_comm_may_contain_spaces_and_parentheses() -> None:
    """The comm field runs to the last ')', so the fields after it are found correctly."""
    stat = parse_stat(STAT_TEXT)
    assert stat.pid == 4242
    assert stat.comm == "my (evil) prog"
    assert stat.state == "S"
    assert stat.ppid == 4100
    assert stat.start_time == 98765


@pytest.mark.parametrize("text", ["", "4242 no parens S 1", "4242 (x) S 1 2 3"])
def test_malformed_stat_raises_value_error(text: str) -> None:
    """A truncated or garbled stat line is a ValueError, never a wrong start time."""
    with pytest.raises(ValueError, match="stat"):
        parse_stat(text)


def test_status_gives_real_and_effective_ids() -> None:
    """A set-uid program shows a real uid of 1000 and an effective uid of 0."""
    status = parse_status(STATUS_TEXT)
    assert (status.uid, status.euid) == (1000, 0)
    assert (status.gid, status.egid) == (1000, 1000)
    assert status.ppid == 4100
    assert status.name == "python3"


def test_status_without_uid_line_raises_value_error() -> None:
    """Without a Uid line the status cannot say who runs the process."""
    with pytest.raises(ValueError, match="Uid"):
        parse_status("Name:\tx\nPPid:\t1\n")


def test_environ_keeps_values_with_equals_signs_and_skips_junk() -> None:
    """Entries split at the first '='; entries without one are skipped."""
    env = parse_environ(b"A=1\0B=x=y\0junk\0SSH_CLIENT=10.0.0.5 51234 22\0\0")
    assert env == {"A": "1", "B": "x=y", "SSH_CLIENT": "10.0.0.5 51234 22"}


def test_ssh_connection_gives_client_and_server() -> None:
    """SSH_CONNECTION names client address and port, server address and port."""
    origin = parse_ssh_origin({"SSH_CONNECTION": "192.0.2.7 50122 198.51.100.1 22"})
    assert origin == SshOrigin(
        client_address="192.0.2.7", client_port=50122, server_address="198.51.100.1", server_port=22
    )


def test_ssh_client_is_the_fallback_without_server_address() -> None:
    """Old sshd sets only SSH_CLIENT: client address and port, server port."""
    origin = parse_ssh_origin({"SSH_CLIENT": "2001:db8::5 41000 2222"})
    assert origin == SshOrigin(
        client_address="2001:db8::5", client_port=41000, server_address=None, server_port=2222
    )


@pytest.mark.parametrize("env", [{}, {"SSH_CONNECTION": "1.2.3.4"}, {"SSH_CLIENT": ""}])
def test_missing_or_malformed_ssh_variables_give_no_origin(env: dict[str, str]) -> None:
    """No ssh variables, or malformed ones, mean no ssh origin."""
    assert parse_ssh_origin(env) is None


@pytest.mark.parametrize("port", ["\u00b2", "\u0661\u0662", "65536", "99999", "9" * 5000, "-1"])
def test_a_port_that_is_not_0_to_65535_in_ascii_digits_is_none(port: str) -> None:
    """Ports the owner of the environment made up give None, never an exception."""
    origin = parse_ssh_origin({"SSH_CONNECTION": f"192.0.2.7 {port} 198.51.100.1 {port}"})
    assert origin is not None
    assert (origin.client_port, origin.server_port) == (None, None)


def test_unset_login_uid_is_none() -> None:
    """4294967295 ((uid_t)-1) means nobody logged in; other values are uids."""
    assert parse_loginuid("4294967295") is None
    assert parse_loginuid("1000\n") == 1000


def test_cmdline_splits_on_nul_and_keeps_empty_arguments() -> None:
    """The argv is NUL-terminated; an empty argument survives; no data means no argv."""
    assert parse_cmdline(b"cat\0/data/a b\0\0") == ("cat", "/data/a b", "")
    assert parse_cmdline(b"") == ()


# --- the reader on real processes ---------------------------------------------------------


@pytest.mark.usefixtures("as_root")
def test_child_running_as_nobody_is_read_with_uid_exe_cmdline_and_parents(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """A child started as uid 65534 reads as nobody, with its exe, argv and parent chain."""
    child = subprocess.Popen(["sleep", "60"], user=NOBODY, group=NOBODY)
    spawn.append(child)
    wait_exec(child.pid, "sleep")

    info = read_process(child.pid)

    assert info.read_quality is ReadQuality.COMPLETE, info.unread
    assert (info.uid, info.euid, info.user) == (NOBODY, NOBODY, "nobody")
    assert info.exe == os.path.realpath(shutil.which("sleep") or "sleep")
    assert info.cmdline == ("sleep", "60")
    assert info.ppid == os.getpid()
    expected_login = parse_loginuid(Path("/proc/self/loginuid").read_text())
    assert "login_uid" not in info.unread
    assert info.login_uid == expected_login  # inherited from this test process
    assert info.start_time == parse_stat(Path(f"/proc/{child.pid}/stat").read_text()).start_time
    parent_pids = [ancestor.pid for ancestor in info.parents]
    assert parent_pids[0] == os.getpid()
    assert info.parents[0].uid == os.getuid()
    assert len(parent_pids) == len(set(parent_pids))


@pytest.mark.usefixtures("as_root")
def test_login_uid_survives_a_switch_to_another_user(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """After a login sets loginuid 4242, a process that became nobody still shows 4242."""
    probe = subprocess.run(
        ["sh", "-c", "echo 4242 > /proc/self/loginuid"], check=False, capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot set a login uid here (no audit support?): {probe.stderr!r}")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    child = subprocess.Popen(
        [
            "sh",
            "-c",
            (
                f"echo 4242 > /proc/self/loginuid && exec {setpriv} --reuid={NOBODY} "
                f"--regid={NOBODY} --clear-groups sleep 60"
            ),
        ]
    )
    spawn.append(child)
    wait_exec(child.pid, "sleep")

    info = read_process(child.pid)

    assert info.uid == NOBODY
    assert info.login_uid == 4242
    assert info.login_user is None or isinstance(info.login_user, str)


def test_ssh_origin_and_slurm_job_come_from_the_environment(
    spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """SSH_CONNECTION and SLURM_JOB_ID in a process's environment are extracted."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SSH_CONNECTION": "192.0.2.9 40000 198.51.100.2 22",
        "SLURM_JOB_ID": "31337",
        "API_TOKEN": "must-not-be-kept",
    }
    child = subprocess.Popen(["sleep", "60"], env=env)
    spawn.append(child)
    wait_exec(child.pid, "sleep")

    info = read_process(child.pid)

    assert info.ssh_origin == SshOrigin(
        client_address="192.0.2.9", client_port=40000, server_address="198.51.100.2", server_port=22
    )
    assert info.slurm_job_id == 31337  # no Slurm cgroup here, so the environment decides
    assert "must-not-be-kept" not in repr(info)


@pytest.mark.parametrize("job", ["\u00b2", "\u0661", "9" * 19, "9" * 5000])
def test_a_made_up_slurm_job_id_in_the_environment_is_ignored(
    job: str, spawn: list[subprocess.Popen[bytes]], wait_exec: Callable[[int, str], None]
) -> None:
    """A SLURM_JOB_ID that is not 1-18 ASCII digits gives None; the snapshot still works."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLURM_JOB_ID": job}
    child = subprocess.Popen(["sleep", "60"], env=env)
    spawn.append(child)
    wait_exec(child.pid, "sleep")
    info = read_process(child.pid)
    assert info.slurm_job_id is None
    assert info.exe is not None


def test_exited_and_reaped_process_is_absent_not_an_error() -> None:
    """Reading a pid that no longer exists returns ABSENT and raises nothing."""
    child = subprocess.Popen(["true"])
    child.wait()

    info = read_process(child.pid)

    assert info.read_quality is ReadQuality.ABSENT
    assert info.uid is None
    assert "uid" in info.unread


def test_zombie_keeps_uid_but_has_vanished(spawn: list[subprocess.Popen[bytes]]) -> None:
    """An exited, unreaped child still shows its uid and start time, but no exe."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    spawn.append(child)
    deadline = time.monotonic() + 10
    while parse_stat(Path(f"/proc/{child.pid}/stat").read_text()).state != "Z":
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.01)

    info = read_process(child.pid)

    assert info.read_quality is ReadQuality.VANISHED
    assert info.uid == os.getuid()
    assert info.start_time is not None
    assert info.exe is None
    assert "exe" in info.unread


def test_files_vanishing_mid_read_keep_what_was_read(tmp_path: Path) -> None:
    """A process directory that loses its files mid-read yields the fields read, VANISHED."""
    process_dir = tmp_path / "4242"
    process_dir.mkdir()
    (process_dir / "cmdline").write_bytes(b"cat\0/data/x\0")
    (process_dir / "stat").write_text(STAT_TEXT)
    (process_dir / "status").write_text(STATUS_TEXT)
    # exe, environ, loginuid and cgroup are gone, as after an exit

    info = read_process(4242, proc_root=tmp_path, with_parents=False)

    assert info.read_quality is ReadQuality.VANISHED
    assert info.cmdline == ("cat", "/data/x")
    assert info.exe is None
    assert {"exe", "ssh_origin"} <= info.unread


def test_deleted_executable_is_reported_without_the_suffix(
    world_dir: Path,
    spawn: list[subprocess.Popen[bytes]],
    wait_exec: Callable[[int, str], None],
) -> None:
    """A process whose program file was deleted shows the path and exe_deleted."""
    program = world_dir / "sleeper"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", program)
    child = subprocess.Popen([str(program), "60"])
    spawn.append(child)
    wait_exec(child.pid, "sleeper")
    program.unlink()

    info = read_process(child.pid)

    assert info.exe == str(program)
    assert info.exe_deleted


def test_kernel_thread_is_complete_without_an_exe() -> None:
    """A kernel thread has no exe or environment, and that is not a failure to read."""
    info = read_process(2, with_parents=False)
    if not info.kernel_thread:
        pytest.skip("pid 2 is not kthreadd here (a pid namespace)")
    assert info.read_quality is ReadQuality.COMPLETE, info.unread
    assert info.identified
    assert info.exe is None


def test_parent_chain_ends_at_pid_1_within_the_depth_bound() -> None:
    """The chain of this process's parents ends at pid 1 (or the namespace top)."""
    chain = read_parents(os.getppid())
    assert chain
    assert chain[0].pid == os.getppid()
    assert chain[-1].pid == 1 or len(chain) < 32
    assert len(read_parents(os.getppid(), max_depth=1)) == 1
