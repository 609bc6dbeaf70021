"""`weightwarden collector serve` end to end: init, enroll, a real agent's batches, alerts, stop.

Every step is a real process or a real HTTP request: the collector runs as a subprocess on
127.0.0.1 (a free port), the agent enrolls over HTTP with the token `collector enroll`
printed, its signed batches are stored, and the `alerts` and `collector` commands read the
record back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from weightwarden.batch import CONTENT_TYPE as BATCH_TYPE

if TYPE_CHECKING:
    from collections.abc import Iterator


class Collector:
    """A `collector serve` subprocess and its log lines."""

    def __init__(self, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "WEIGHTWARDEN_COLLECTOR_DIR"}
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: teardown reaches orphaned workers
        )
        self.lines: list[dict] = []
        self.listening = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"raw": line}
            self.lines.append(record)
            if record.get("event") == "collector listening":
                self.url = record["url"]
                self.listening.set()
        self.listening.set()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        """One JSON request; the status and the JSON answer."""
        kind = BATCH_TYPE if path == "/v1/batches" else "application/json"
        headers = {"Content-Type": kind} if body is not None else {}
        req = urllib.request.Request(  # noqa: S310 -- our own http URL
            self.url + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    def close(self) -> None:
        """Kill whatever of the service is left (workers included), then close the log pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(timeout=10)
        # A reader still blocked in read() holds the pipe's lock: closing would wait for it.
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def collector_dir(tmp_path, ww):
    """An initialised collector directory."""
    directory = tmp_path / "collector"
    assert ww("collector", "init", "--dir", directory).code == 0
    return directory


@pytest.fixture
def served(collector_dir, ww_argv) -> Iterator[Collector]:
    """`collector serve` on a free loopback port."""
    collector = Collector(
        [*ww_argv, "collector", "serve", "--dir", str(collector_dir), "--listen", "127.0.0.1:0"]
    )
    try:
        assert collector.listening.wait(60), collector.lines
        assert collector.url.startswith("http://127.0.0.1:"), collector.lines
        yield collector
    finally:
        collector.close()


def test_an_enrolled_agents_canary_touch_becomes_an_alert_to_triage(
    collector_dir, served, ww, sim_agent, make
):
    """Token, enrollment, batches, a CRITICAL canary alert, show, ack, resolve, export, stop."""
    token = ww("collector", "enroll", "--dir", collector_dir, "--host", "gpu-01").stdout.strip()
    agent = sim_agent("gpu-01")
    status, answer = served.request(
        "POST",
        "/v1/enroll",
        json.dumps({"token": token, "host": "gpu-01", "public_key": agent.public_pem}).encode(),
    )
    assert (status, answer["agent_id"]) == (200, "gpu-01")
    assert answer["collector_public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert served.request("POST", "/v1/batches", agent.seal(agent.record_opens(5)))[0] == 200
    canary = make.canary_open("gpu-01")
    status, answer = served.request("POST", "/v1/batches", agent.seal(agent.record(canary)))
    assert (status, answer["acked_seq"]) == (200, 6)

    listing = ww("alerts", "list", "--dir", collector_dir)
    assert listing.code == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["ID", "CREATED", "SEVERITY", "STATUS", "AGENT", "TITLE"]
    alert_id, _, severity, state, agent_id, *title = row.split()
    assert (severity, state, agent_id) == ("CRITICAL", "new", "gpu-01")
    assert " ".join(title).startswith("Canary touched: /weights/canary/model.safetensors")

    ocsf = ww("alerts", "list", "--dir", collector_dir, "--format", "ocsf").stdout.splitlines()
    [finding] = [json.loads(line) for line in ocsf]
    assert (finding["class_uid"], finding["status_id"]) == (2004, 1)
    assert finding["finding_info"]["related_events"] == [{"uid": canary.uid}]

    shown = ww("alerts", "show", "--dir", collector_dir, alert_id[:8])
    assert shown.code == 0, shown.stderr
    assert "Why:" in shown.stdout
    assert "decoy" in shown.stdout
    assert "[canary]" in shown.stdout
    assert "1 event(s), 1 in the store" in shown.stdout
    evidence = ww("alerts", "show", "--dir", collector_dir, alert_id, "--format", "ocsf")
    _finding, event_line = evidence.stdout.splitlines()
    assert json.loads(event_line)["metadata"]["uid"] == canary.uid
    assert json.loads(event_line)["unmapped"]["weightwarden"]["chain"]["seq"] == 6

    ack = ww("alerts", "ack", "--dir", collector_dir, alert_id, "--disposition", "true_positive")
    assert ack.code == 0, ack.stderr
    assert ww("alerts", "list", "--dir", collector_dir, "--status", "new").stdout.count("\n") == 1
    resolve = ww(
        "alerts",
        "resolve",
        "--dir",
        collector_dir,
        alert_id,
        "--disposition",
        "true_positive",
        "--note",
        "contractor copied a canary; access revoked",
    )
    assert resolve.code == 0
    [closed] = ww(
        "alerts", "list", "--dir", collector_dir, "--format", "ocsf", "--status", "resolved"
    ).stdout.splitlines()
    closed_finding = json.loads(closed)
    assert closed_finding["status_id"] == 4
    assert closed_finding["comment"] == "contractor copied a canary; access revoked"
    assert closed_finding["unmapped"]["weightwarden"]["triage"]["disposition"] == "true_positive"

    exported = ww("collector", "export", "--dir", collector_dir, "--format", "ocsf")
    assert len(exported.stdout.splitlines()) == 6
    assert ww("collector", "verify-log", "--dir", collector_dir).code == 0
    assert served.stop() == 0
    assert any(line.get("event") == "collector stopped" for line in served.lines)


def test_serve_refuses_a_port_in_use_with_a_one_line_error(collector_dir, served, ww):
    """A second collector on the same address fails with one line, exit 2."""
    port = served.url.rsplit(":", 1)[1]
    run = ww("collector", "serve", "--dir", collector_dir, "--listen", f"127.0.0.1:{port}")
    assert "cannot listen" in run.stderr
    assert run.code == 2


def test_serve_without_a_config_exits_78(tmp_path, ww):
    """No collector.toml and no --db: a configuration error, exit 78, before listening."""
    run = ww("collector", "serve", "--dir", tmp_path / "missing")
    assert run.code == 78
    assert "collector init" in run.stderr


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def workers(collector_dir, ww_argv) -> Iterator[Collector]:
    """`collector serve --workers 3` on a free loopback port."""
    collector = Collector(
        [
            *ww_argv,
            "collector",
            "serve",
            "--dir",
            str(collector_dir),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "3",
        ]
    )
    try:
        assert collector.listening.wait(60), collector.lines
        yield collector
    finally:
        collector.close()


def test_workers_store_every_batch_of_many_agents_once_and_stop_on_sigterm(
    collector_dir, workers, ww, sim_agent
):
    """Three worker processes on one socket: agents in parallel, every event stored once."""
    assert len(_children(workers.proc.pid)) == 3
    agents = []
    for n in range(6):
        host = f"gpu-{n:02d}"
        token = ww("collector", "enroll", "--dir", collector_dir, "--host", host).stdout.strip()
        agent = sim_agent(host)
        status, _ = workers.request(
            "POST",
            "/v1/enroll",
            json.dumps({"token": token, "host": host, "public_key": agent.public_pem}).encode(),
        )
        assert status == 200
        agents.append(agent)
    answers: list[int] = []

    def send(agent) -> None:
        for _ in range(5):
            body = agent.seal(agent.record_opens(20))
            answers.append(workers.request("POST", "/v1/batches", body)[0])

    threads = [threading.Thread(target=send, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 30
    assert workers.stop() == 0
    assert ww("collector", "verify-log", "--dir", collector_dir).code == 0
    listed = ww("collector", "agents", "--dir", collector_dir).stdout
    for agent in agents:
        assert agent.agent_id in listed


def test_a_worker_that_dies_takes_the_service_down_with_exit_70(workers):
    """A killed worker is a failed component: the others are stopped and the parent exits 70."""
    victim, *others = _children(workers.proc.pid)
    os.kill(victim, signal.SIGKILL)
    assert workers.proc.wait(timeout=60) == 70
    workers.close()
    assert any(line.get("event") == "collector worker exited" for line in workers.lines)
    assert not any(Path(f"/proc/{pid}").exists() for pid in others)  # stopped and reaped


def test_workers_of_a_killed_parent_stop_too(workers):
    """SIGKILL of the parent (a systemd stop timeout) leaves no worker serving on its own."""
    children = _children(workers.proc.pid)
    assert len(children) == 3
    workers.proc.kill()
    workers.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        for pid in children:  # reparented to us or to init; reap what we can
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    states = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] for pid in alive]
    assert all(state == "Z" for state in states), states  # exited, waiting to be reaped


def test_workers_must_be_at_least_one(collector_dir, ww):
    """--workers 0 is a usage error (exit 2) in one line."""
    result = ww("collector", "serve", "--dir", collector_dir, "--workers", "0")
    assert result.code == 2
    assert "--workers must be at least 1" in result.one_line_error()
