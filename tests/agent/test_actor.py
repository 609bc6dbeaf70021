"""From attribution to the event's actor: a real process running as another user, converted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.actor import actor_from_attribution, unknown_actor
from agent.attribution import Attribution as PidAttribution
from agent.attribution import AttributionQuality, Attributor, read_process
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    decode,
    encode,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

NOBODY = 65534
SLEEP = shutil.which("sleep") or "/usr/bin/sleep"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: starts processes as uid 65534 and reads their /proc"
)


def _wait_for_exec(pid: int, exe: str) -> None:
    """Wait until ``pid`` runs ``exe`` with its argv in place (exe changes before argv)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            running = str(Path(f"/proc/{pid}/exe").readlink())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            running, argv = "", b""
        if running == exe and argv:
            return
        time.sleep(0.01)
    pytest.fail(f"pid {pid} did not exec {exe}")


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children a test starts; killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


def _start(
    children: list[subprocess.Popen[bytes]],
    argv: list[str | bytes],
    *,
    exe: str,
    env: dict[str, str] | None = None,
    user: int | None = NOBODY,
) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(argv, user=user, group=user, env=env or {"PATH": "/usr/bin:/bin"})
    children.append(child)
    _wait_for_exec(child.pid, exe)
    return child


def _round_trips(actor: Actor) -> None:
    """The actor, carried by a file event, survives OCSF encoding and decoding unchanged."""
    event = FileActivity(
        uid="e1",
        time=1,
        device=Device(hostname="host-a", agent_id="host-a"),
        activity=FileActivityType.OPEN,
        actor=actor,
        file=FileRef(path="/data/ckpt/step-1/model.safetensors", size=10),
    )
    assert decode(encode(event)) == event


def _attribute(pid: int) -> PidAttribution:
    return Attributor(cache=None).attribute(pid, time.monotonic())


def test_a_live_process_of_another_user_becomes_a_full_actor(
    children: list[subprocess.Popen[bytes]],
) -> None:
    """`sleep` as nobody: uid and name, exe, command line, parent chain, quality FULL."""
    child = _start(children, [SLEEP, "311"], exe=SLEEP)
    attribution = _attribute(child.pid)
    assert attribution.quality is AttributionQuality.FULL
    actor = actor_from_attribution(attribution)
    process = actor.process
    assert process is not None
    assert process.pid == child.pid
    assert process.attribution is Attribution.FULL
    assert process.exe == SLEEP
    assert process.cmd_line == f"{SLEEP} 311"
    assert process.user is not None
    assert process.user.uid == NOBODY
    assert process.user.name == "nobody"
    assert actor.user == process.user
    parent = process.parent
    assert parent is not None
    assert parent.pid == os.getpid()
    assert parent.exe == os.path.realpath(sys.executable)
    assert parent.user is not None
    assert parent.user.uid == 0
    assert parent.attribution is Attribution.FULL
    assert parent.parent is not None
    assert parent.parent.pid == os.getppid()
    _round_trips(actor)


def test_the_parent_chain_reaches_pid_1_oldest_last() -> None:
    """Our own chain ends at pid 1 (or the depth bound), each parent older than its child."""
    actor = actor_from_attribution(_attribute(os.getpid()))
    pids = []
    process: Process | None = actor.process
    while process is not None:
        pids.append(process.pid)
        process = process.parent
    assert pids[0] == os.getpid()
    assert pids[1] == os.getppid()
    assert len(set(pids)) == len(pids)
    _round_trips(actor)


def test_a_command_line_with_spaces_is_quoted_so_it_splits_back(
    children: list[subprocess.Popen[bytes]],
) -> None:
    """Arguments are joined shell-style: one argument with a space stays one argument."""
    python = os.path.realpath("/usr/bin/python3")
    if not Path(python).is_file():
        pytest.skip("needs the system python3")
    script = "import time; time.sleep(300)"
    child = _start(children, [python, "-c", script, "two words"], exe=python)
    process = actor_from_attribution(_attribute(child.pid)).process
    assert process is not None
    assert process.cmd_line == f"{python} -c '{script}' 'two words'"


def test_the_login_user_survives_a_change_of_uid(
    children: list[subprocess.Popen[bytes]],
) -> None:
    """Logged in as uid 1000, running as nobody: both users are on the actor."""
    if not Path("/proc/self/loginuid").exists():
        pytest.skip("the kernel has no audit login uid")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs util-linux setpriv")
    script = (
        "echo 1000 > /proc/self/loginuid || exit 3; "
        f"exec {setpriv} --reuid={NOBODY} --regid={NOBODY} --clear-groups {SLEEP} 312"
    )
    child = subprocess.Popen(["/bin/sh", "-c", script])
    children.append(child)
    deadline = time.monotonic() + 10
    while child.poll() is None and time.monotonic() < deadline:
        try:
            if str(Path(f"/proc/{child.pid}/exe").readlink()) == SLEEP:
                break
        except OSError:
            pass
        time.sleep(0.01)
    if child.poll() is not None:
        pytest.skip("cannot set a login uid here (needs CAP_AUDIT_CONTROL, loginuid mutable)")
    _wait_for_exec(child.pid, SLEEP)
    process = actor_from_attribution(_attribute(child.pid)).process
    assert process is not None
    assert process.user is not None
    assert process.user.uid == NOBODY
    assert process.login_user is not None
    assert process.login_user.uid == 1000
    _round_trips(Actor(process=process, user=process.user))


def test_the_ssh_origin_from_the_environment_is_kept(
    children: list[subprocess.Popen[bytes]],
) -> None:
    """SSH_CONNECTION of the session becomes the process's ssh origin endpoint."""
    env = {"PATH": "/usr/bin", "SSH_CONNECTION": "203.0.113.7 52144 10.0.0.2 22"}
    child = _start(children, [SLEEP, "313"], exe=SLEEP, env=env)
    actor = actor_from_attribution(_attribute(child.pid))
    assert actor.process is not None
    origin = actor.process.ssh_origin
    assert origin is not None
    assert (origin.ip, origin.port) == ("203.0.113.7", 52144)
    _round_trips(actor)


@pytest.mark.parametrize(
    ("forged", "kept"),
    [
        ("not-an-address 52144 10.0.0.2 22", None),
        ("203.0.113.7 99999 10.0.0.2 22", ("203.0.113.7", None)),
        ("2001:db8::1 2222 2001:db8::2 22", ("2001:db8::1", 2222)),
    ],
)
def test_a_forged_ssh_origin_cannot_make_the_event_unreadable(
    children: list[subprocess.Popen[bytes]], forged: str, kept: tuple[str, int | None] | None
) -> None:
    """A user sets SSH_CONNECTION to garbage: the actor drops what is invalid, stays readable."""
    env = {"PATH": "/usr/bin", "SSH_CONNECTION": forged}
    child = _start(children, [SLEEP, "314"], exe=SLEEP, env=env)
    actor = actor_from_attribution(_attribute(child.pid))
    assert actor.process is not None
    assert actor.process.user is not None
    assert actor.process.user.uid == NOBODY
    origin = actor.process.ssh_origin
    if kept is None:
        assert origin is None
    else:
        assert origin is not None
        assert (origin.ip, origin.port) == kept
    _round_trips(actor)


def test_undecodable_bytes_in_exe_and_argv_still_give_a_readable_event(
    children: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """A program under a non-UTF-8 name: the bytes are shown escaped, the event still encodes."""
    odd = os.fsencode(tmp_path) + b"/sl\xffeep"
    shutil.copy(os.fsencode(SLEEP), odd)
    child = _start(children, [odd, b"315"], exe=os.fsdecode(odd), user=None)
    actor = actor_from_attribution(_attribute(child.pid))
    process = actor.process
    assert process is not None
    assert process.exe == f"{tmp_path}/sl\\xffeep"
    assert process.cmd_line == f"'{tmp_path}/sl\\xffeep' 315"
    _round_trips(actor)


@pytest.mark.parametrize("quality", list(AttributionQuality))
def test_the_attribution_quality_is_carried_over(
    children: list[subprocess.Popen[bytes]], quality: AttributionQuality
) -> None:
    """Each way of knowing (live, from the exec cache, partial, unknown) keeps its name."""
    child = _start(children, [SLEEP, "316"], exe=SLEEP)
    info = read_process(child.pid)
    attribution = PidAttribution(
        pid=child.pid, at_time=time.monotonic(), quality=quality, process=info, reason="test"
    )
    actor = actor_from_attribution(attribution)
    assert actor.process is not None
    assert actor.process.attribution.value == quality.value
    parent = actor.process.parent
    assert parent is not None
    assert parent.attribution.value == quality.value
    _round_trips(actor)


def test_an_attribution_without_a_process_keeps_the_pid_and_says_unknown() -> None:
    """An exited reader the cache missed: the event keeps the pid, no user, quality UNKNOWN."""
    attribution = PidAttribution(
        pid=4_000_000,
        at_time=time.monotonic(),
        quality=AttributionQuality.UNKNOWN,
        process=None,
        reason="the process has exited; no exec cache",
    )
    actor = actor_from_attribution(attribution)
    assert actor == Actor(process=Process(pid=4_000_000, attribution=Attribution.UNKNOWN))
    _round_trips(actor)


def test_an_exited_process_without_a_cache_is_unknown_with_its_pid() -> None:
    """Attributing a pid that has gone, with no exec cache, yields the pid and UNKNOWN."""
    gone = subprocess.Popen([SLEEP, "0"])
    gone.wait(timeout=10)
    actor = actor_from_attribution(_attribute(gone.pid))
    assert actor.process is not None
    assert actor.process.pid == gone.pid
    assert actor.process.attribution is Attribution.UNKNOWN
    assert actor.user is None
    _round_trips(actor)


def test_the_unknown_actor_names_nobody() -> None:
    """Without a pid (the inotify fallback) the actor is empty, and says nothing false."""
    actor = unknown_actor()
    assert actor == Actor(process=None, user=None)
    _round_trips(actor)
