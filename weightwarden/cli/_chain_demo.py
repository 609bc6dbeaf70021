"""The whole chain on one machine: collector, enrolled agent, scripted accesses, alerts.

Part two of ``weightwarden demo``. The kernel never imports the agent or the collector, so
this drives them the way an operator would: through the ``weightwarden`` command, as real
processes on loopback, with embedded defaults (SQLite, HTTP, a temporary folder).

1. ``collector init`` and ``collector serve`` on 127.0.0.1 (a free port);
2. ``collector enroll --host demo-host`` prints a one-time token;
3. a demo weights folder with one checkpoint and a planted canary, and an agent
   (``agent run --collector URL --enroll-token TOKEN``) that seals checkpoints once quiet;
4. scripted accesses: a training job loading the weights (mmap), someone opening the
   canary, a copy of a shard to /tmp, and an edit of the sealed checkpoint;
5. the alerts the collector raised (``alerts list``).

The agent's full sensor (fanotify, with pids) needs root; without it the agent falls back
to inotify, which sees no pids and no copies, and the demo says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_chain_demo"]

_WW = str(Path(sys.executable).with_name("weightwarden"))
_HOST = "demo-host"
_WAIT_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ww(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_WW, *map(str, args)], capture_output=True, text=True, check=check, timeout=120
    )


def _wait(what: str, ready: Callable[[], bool], timeout: float = _WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.3)
    print(f"  gave up waiting for {what} after {timeout:.0f} s")
    return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=2) as reply:  # noqa: S310 -- our own loopback URL
            return bool(reply.status == 200)  # noqa: PLR2004
    except OSError:
        return False


def _stored(collector: Path) -> list[dict[str, Any]]:
    """Events the collector stored (the agent trims its spool once they are confirmed)."""
    out = _ww("collector", "export", "--dir", collector, "--format", "ocsf", check=False)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _ext(event: dict[str, Any]) -> dict[str, Any]:
    unmapped = event.get("unmapped")
    inner = unmapped.get("weightwarden") if isinstance(unmapped, dict) else None
    return inner if isinstance(inner, dict) else {}


def _alert_titles(collector: Path) -> list[str]:
    out = _ww("alerts", "list", "--dir", collector, "--format", "ocsf", check=False)
    titles = []
    for line in out.stdout.splitlines():
        if line.strip():
            info = json.loads(line).get("finding_info", {})
            titles.append(str(info.get("title", "")))
    return titles


def _start(args: list[str | Path], log: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([_WW, *map(str, args)], stdout=log, stderr=log, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write_agent_config(work: Path, weights: Path, url: str, seal_key: Path) -> Path:
    config = work / "agent.toml"
    config.write_text(
        f"""[agent]
weight_roots = ["{weights}"]
state_dir = "{work / "agent-state"}"
agent_id = "{_HOST}"
copy_watch = ["/tmp"]
gpu_poll = "1h"

[agent.seal]
private_key = "{seal_key}"
quiet_interval = "2s"
reverify_delay = "500ms"

[agent.collector]
url = "{url}"
"""
    )
    return config


_TRAINER = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    sum(m[i] for i in range(0, len(m), 4096))
"""


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/bin/{name}"


def _start_collector(stack: ExitStack, collector: Path, log: IO[str]) -> str | None:
    _ww("collector", "init", "--dir", collector)
    url = f"http://127.0.0.1:{_free_port()}"
    server = _start(
        ["collector", "serve", "--dir", collector, "--listen", url[len("http://") :]], log
    )
    stack.callback(_stop, server)
    if not _wait("the collector", lambda: _healthy(url), 30):
        return None
    print(f"  collector serving on {url} (SQLite in {collector})")
    return url


def _plant_canary(weights: Path, state: Path) -> str:
    (weights / "archive").mkdir()
    state.mkdir(mode=0o700)
    registry = state / "canaries.json"
    _ww(
        "agent", "canary", "plant", weights / "archive", "--size", "2097152", "--registry", registry
    )
    print(f"  planted a decoy checkpoint under {weights / 'archive'}")
    return str(json.loads(registry.read_text())["canaries"][0]["path"])


def _sealed(collector: Path, checkpoint: str) -> bool:
    for event in _stored(collector):
        file = event.get("file")
        seal = _ext(event).get("seal")
        if (
            isinstance(file, dict)
            and file.get("path") == checkpoint
            and isinstance(seal, dict)
            and seal.get("status") == "intact"
        ):
            return True
    return False


def _accesses(checkpoint: Path, canary: str, copy_path: Path) -> None:
    shard = checkpoint / "model-00001-of-00002.safetensors"
    print("  scripted accesses:")
    subprocess.run([sys.executable, "-c", _TRAINER, str(shard)], check=True)
    print("    a training job loaded the weights through mmap (normal)")
    subprocess.run([_tool("cat"), canary], stdout=subprocess.DEVNULL, check=True)
    print(f"    someone opened the decoy {Path(canary).name}")
    subprocess.run([_tool("cp"), str(shard), str(copy_path)], check=True)
    print(f"    someone copied a shard to {copy_path}")
    with (checkpoint / "config.json").open("a") as f:
        f.write('{"backdoor": true}\n')
    print("    someone edited config.json inside the sealed checkpoint")


def _report(collector: Path, *, root: bool) -> bool:
    wanted = ["canary touched", "weights changed"]
    if root:
        wanted.append("weights copied")  # the copy watch needs fanotify

    def alerted() -> bool:
        titles = " ".join(_alert_titles(collector)).lower()
        return all(w in titles for w in wanted)

    ok = _wait("the collector's alerts", alerted)
    print("\n== alerts at the collector (weightwarden alerts list)")
    listing = _ww("alerts", "list", "--dir", collector, "--format", "table", check=False)
    print(listing.stdout.rstrip() or "  (none)")
    stored = _ww("collector", "verify-log", "--dir", collector, check=False)
    print("\n== the stored record re-verified (weightwarden collector verify-log)")
    print(stored.stdout.rstrip() or stored.stderr.rstrip())
    return ok and stored.returncode == 0


def run_chain_demo(work: Path, build_checkpoint: Callable[[Path], None]) -> bool:
    """Run the chain in ``work``; return whether every expected alert arrived."""
    root = os.geteuid() == 0
    collector, weights, state = work / "collector", work / "weights", work / "agent-state"
    work.mkdir(parents=True, exist_ok=True)
    weights.mkdir()
    work.chmod(0o755)
    weights.chmod(0o755)
    checkpoint = weights / "checkpoint-2000"
    build_checkpoint(checkpoint)
    copy_path = Path(f"/tmp/weightwarden-demo-copy-{os.getpid()}.safetensors")  # noqa: S108 -- the demo's exfiltration target
    with ExitStack() as stack:
        log = stack.enter_context((work / "processes.log").open("w"))
        stack.callback(lambda: copy_path.unlink(missing_ok=True))
        print("\n== the chain: collector, agent, accesses, alerts")
        url = _start_collector(stack, collector, log)
        if url is None:
            return False
        token = _ww("collector", "enroll", "--dir", collector, "--host", _HOST).stdout.strip()
        print(f"  one-time enrollment token for {_HOST} issued")
        seal_key = work / "agent-seal"
        _ww("keys", "generate", "--out", seal_key)
        canary = _plant_canary(weights, state)
        config = _write_agent_config(work, weights, url, Path(f"{seal_key}.key"))
        agent = _start(["agent", "run", "--config", config, "--enroll-token", token], log)
        stack.callback(_stop, agent)
        if not _wait(
            "the agent to seal the checkpoint", lambda: _sealed(collector, str(checkpoint))
        ):
            return False
        sensor = "fanotify (with pids)" if root else "inotify (no pids: run as root for more)"
        print(f"  agent enrolled and running; sensor {sensor}; checkpoint sealed")
        _accesses(checkpoint, canary, copy_path)
        return _report(collector, root=root)
