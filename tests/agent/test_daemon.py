"""The whole agent as a real process: real readers, real writes, the spool read back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weightwarden.crypto.keys import generate_key, write_key_pair
from weightwarden.safetensors import TensorSpec, write_safetensors

WEIGHTWARDEN = str(Path(sys.executable).with_name("weightwarden"))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the agent's sensors need root here"),
    pytest.mark.slow,
]


def _write_checkpoint(folder: Path, seed: str) -> None:
    folder.mkdir(parents=True)
    write_safetensors(
        folder / "model.safetensors",
        [TensorSpec(name="w", dtype="F32", shape=(512, 1024))],
        seed=seed.encode(),
    )
    (folder / "config.json").write_text('{"hidden": 512}\n')


def _events(spool: Path) -> list[dict]:
    out = subprocess.run(
        [WEIGHTWARDEN, "agent", "events", "--spool", str(spool), "--format", "ocsf"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def _ext(event: dict) -> dict:
    return event.get("unmapped", {}).get("weightwarden", {})


def _wait_for(spool: Path, predicate, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (spool / "spool.sqlite").exists() or any(spool.glob("*.sqlite")):
            events = _events(spool)
            if any(predicate(e) for e in events):
                return events
        time.sleep(0.3)
    pytest.fail(f"no matching event within {timeout} s; saw {len(_events(spool))} events")


@pytest.fixture
def agent(world_tmp):
    """A running agent watching a weights folder, sealing with a fresh key."""
    tmp_path = world_tmp
    root = tmp_path / "weights"
    root.mkdir()
    root.chmod(0o755)
    state = tmp_path / "state"
    key, _pub = write_key_pair(generate_key(), tmp_path / "seal")
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
weight_roots = ["{root}"]
state_dir = "{state}"
copy_watch = ["{tmp_path / "scratch"}"]
progress_interval = "1h"
gpu_poll = "1h"

[agent.seal]
private_key = "{key}"
quiet_interval = "1s"
reverify_delay = "300ms"
"""
    )
    (tmp_path / "scratch").mkdir()
    _write_checkpoint(root / "step-100", "ckpt-100")
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen(
        [WEIGHTWARDEN, "--log-format", "json", "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    spool = state / "spool"
    try:
        _wait_for(
            spool, lambda e: e.get("finding_info", {}).get("title", "").startswith("Agent started")
        )
        yield proc, root, spool, tmp_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_a_reader_running_as_another_user_is_attributed_with_session_and_exit_0(agent):
    """`cat` as nobody: an Open and a closing Read event naming uid 65534 and /usr/bin/cat."""
    proc, root, spool, _tmp = agent
    target = root / "step-100" / "model.safetensors"
    target.parent.chmod(0o755)
    target.chmod(0o644)
    subprocess.run(
        ["cat", str(target)], user=65534, group=65534, stdout=subprocess.DEVNULL, check=True
    )
    events = _wait_for(
        spool,
        lambda e: (
            e.get("file", {}).get("path") == str(target) and _ext(e).get("session_phase") == "close"
        ),
    )
    opens = [
        e for e in events if e.get("file", {}).get("path") == str(target) and e["activity_id"] == 14
    ]
    assert opens, "no Open event for the read"
    process = opens[-1]["actor"]["process"]
    assert process.get("user", {}).get("uid") == "65534", process
    assert process.get("file", {}).get("path", "").endswith("/cat"), process
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_a_quiet_checkpoint_is_sealed_and_a_later_write_is_reported_as_tampering(agent):
    """Sealed once quiet; appending to a sealed file yields a tamper event naming the writer."""
    _proc, root, spool, _tmp = agent
    checkpoint = str(root / "step-100")
    _wait_for(
        spool,
        lambda e: (
            e.get("file", {}).get("path") == checkpoint
            and _ext(e).get("seal", {}).get("status") == "intact"
        ),
    )
    victim = root / "step-100" / "config.json"
    subprocess.run(["sh", "-c", f"echo backdoor >> {victim}"], check=True)
    events = _wait_for(spool, lambda e: _ext(e).get("seal", {}).get("status") == "tampered")
    tampered = [e for e in events if _ext(e).get("seal", {}).get("status") == "tampered"]
    assert tampered[0]["file"]["path"] == str(victim)
    assert tampered[0]["actor"]["process"]["file"]["path"].endswith("sh")


def test_a_canary_open_is_critical(agent):
    """Planting a canary inside a watched root and opening it gives a CRITICAL canary event."""
    proc, root, spool, tmp = agent
    decoys = root / "old-runs"
    decoys.mkdir()
    registry = tmp / "state" / "canaries.json"
    subprocess.run(
        [
            WEIGHTWARDEN,
            "agent",
            "canary",
            "plant",
            str(decoys),
            "--size",
            "2097152",
            "--registry",
            str(registry),
        ],
        check=True,
        capture_output=True,
    )
    planted = json.loads(registry.read_text())["canaries"][0]["path"]

    def by_cat(e: dict) -> bool:
        exe = e.get("actor", {}).get("process", {}).get("file", {}).get("path", "")
        return e.get("file", {}).get("path") == planted and exe.endswith("/cat")

    # The agent picks the registry up at its next tick (about a second; later on a loaded
    # machine), and a `cat` gone before it is read may lack its exe: open the decoy again
    # every couple of seconds until a canary event names cat.
    hit = None
    deadline = time.monotonic() + 60
    while hit is None and time.monotonic() < deadline:
        subprocess.run(["cat", planted], stdout=subprocess.DEVNULL, check=True)
        time.sleep(2)
        if any(spool.glob("*.sqlite")):
            hit = next((e for e in _events(spool) if by_cat(e) and _ext(e).get("canary")), None)
    assert hit is not None, "no canary event naming cat within 60 s"
    assert hit["severity_id"] == 5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_a_copy_of_a_sealed_file_to_scratch_is_a_copy_event(agent):
    """`cp` of a sealed shard into a watched scratch folder is reported with its source."""
    _proc, root, spool, tmp = agent
    checkpoint = str(root / "step-100")
    _wait_for(
        spool,
        lambda e: (
            e.get("file", {}).get("path") == checkpoint
            and _ext(e).get("seal", {}).get("status") == "intact"
        ),
    )
    source = root / "step-100" / "model.safetensors"
    dest = tmp / "scratch" / "stolen.safetensors"
    shutil.copyfile(source, dest)
    events = _wait_for(spool, lambda e: _ext(e).get("copy_source") == str(source))
    copy = next(e for e in events if _ext(e).get("copy_source") == str(source))
    assert copy["file"]["path"] == str(dest)
    assert copy["severity_id"] >= 4
