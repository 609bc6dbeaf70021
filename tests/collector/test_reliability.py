"""Reliability of the whole chain, agent to collector, when processes die and rows are forged.

Every process is real: ``weightwarden collector serve`` runs as a subprocess on a loopback
port with its SQLite store, the agent side is a real :class:`~agent.spool.Spool` and a real
:class:`~agent.shipper.Shipper` over :class:`~agent.shipper.HttpTransport`, and kills are
``SIGKILL``. What each test proves is read back from the collector's store afterwards:

- the collector killed and restarted 3 times while 100,000 events ship: every event is
  stored exactly once, the stored chain verifies, nothing is quarantined, the spool drains;
- the agent (spool + shipper in a child process) killed 5 times while it appends and
  ships: every event it had appended before each kill is stored exactly once;
- a replayed batch, a batch signed by another key, one byte changed in a stored event and
  a deleted row: each is refused or found, and reported where the security team looks
  (``alerts list``, ``collector verify-log``).

Other tests prove the same cases one layer down: ``tests/collector/test_ingest.py`` (replay,
wrong key, fork, gap at the ingest rules), ``tests/collector/test_verify_log.py`` (one byte,
deleted rows, both stores) and ``tests/collector/test_http_fuzz.py`` (10,000 malformed
requests, no 5xx).
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from agent.enroll import enroll
from agent.identity import load_or_create_identity
from agent.shipper import HttpTransport, Shipper
from agent.spool import Spool, SpoolReader, Synchronous
from collector.store import SqliteStore
from collector.verify_log import verify_log
from weightwarden.batch import CONTENT_TYPE as BATCH_TYPE
from weightwarden.crypto.keys import generate_key
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    User,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from collector.store import Store

pytestmark = pytest.mark.slow

AGENT = "gpu-rel"
T0 = 1_700_000_000_000
HEALTH_TITLES = frozenset(
    {
        "Collector unavailable: events are held in the spool",
        "Collector confirming batches again",
    }
)
"""What the shipper itself adds to the spool while the collector is away (agent health)."""


def file_event(i: int, prefix: str) -> FileActivity:
    """A small read of a checkpoint shard; event ``i`` has uid ``{prefix}-{i}``."""
    user = User(uid=1000, name="alice")
    return FileActivity(
        uid=f"{prefix}-{i}",
        time=T0 + i,
        device=Device(hostname=AGENT, agent_id=AGENT),
        activity=FileActivityType.OPEN,
        actor=Actor(
            process=Process(pid=4000, attribution=Attribution.FULL, exe="/usr/bin/cat", user=user),
            user=user,
        ),
        file=FileRef(path=f"/w/{i}"),
    )


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class Collector:
    """``weightwarden collector serve --dir DIR`` as a subprocess that can be killed and restarted.

    The first start picks a free port; every restart listens on the same one, so the agent
    keeps its URL. Log lines go to ``DIR/serve-N.log``.
    """

    def __init__(self, argv: list[str], directory: Path) -> None:
        self.argv = argv
        self.directory = directory
        self.port = 0
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        """The collector's SQLite file."""
        return self.directory / "collector.sqlite"

    def start(self) -> None:
        """Start serving and wait until ``/v1/health`` answers."""
        self.starts += 1
        log = self.directory / f"serve-{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if k != "WEIGHTWARDEN_COLLECTOR_DIR"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *self.argv,
                    "collector",
                    "serve",
                    "--dir",
                    str(self.directory),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=out,
                env=env,
            )
        if not self.port:
            wait_for(lambda: self._listening(log), "the collector to listen")
        wait_for(self._healthy, "the collector to answer /v1/health")

    def _listening(self, log: Path) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, log.read_text()
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "collector listening":
                self.port = int(record["url"].rsplit(":", 1)[1])
                return True
        return False

    def _healthy(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, "the collector exited"
        try:
            with urllib.request.urlopen(f"{self.url}/v1/health", timeout=2) as resp:  # noqa: S310 -- our own http URL
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no graceful stop, requests in flight die with it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM (graceful); the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def request(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """POST a batch body; the status and the JSON answer."""
        req = urllib.request.Request(  # noqa: S310 -- our own http URL
            f"{self.url}/v1/batches",
            data=body,
            method="POST",
            headers={"Content-Type": BATCH_TYPE},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())


@pytest.fixture
def collector(tmp_path: Path, ww: Callable[..., Any], ww_argv: list[str]) -> Iterator[Collector]:
    """An initialised collector directory and its (not yet started) server."""
    directory = tmp_path / "collector"
    assert ww("collector", "init", "--dir", directory).code == 0
    served = Collector(ww_argv, directory)
    try:
        yield served
    finally:
        if served.proc is not None and served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=30)


def enroll_agent(collector: Collector, ww: Callable[..., Any], state: Path) -> None:
    """A one-time token from ``collector enroll``, redeemed by the real enrollment client."""
    token = ww("collector", "enroll", "--dir", collector.directory, "--host", AGENT)
    identity = load_or_create_identity(state)
    enroll(collector.url, token.stdout.strip(), agent_id=AGENT, identity=identity)


def stored_uids(db: Path) -> list[str]:
    """Uids of the agent's stored events, read beside the running collector."""
    with sqlite3.connect(db, timeout=30) as connection:
        rows = connection.execute("SELECT uid FROM events WHERE agent_id = ?", (AGENT,)).fetchall()
    connection.close()
    return [uid for (uid,) in rows]


def counters(uids: list[str], prefix: str) -> list[int]:
    """The numbers of this test's own events among ``uids`` (sorted, repeats kept)."""
    return sorted(int(u[len(prefix) + 1 :]) for u in uids if u.startswith(f"{prefix}-"))


def assert_record_is_exact(store: Store, *, head_seq: int, prefix: str, total: int) -> None:
    """Every seq 1..head stored once, events 0..total-1 each once, the rest shipper health.

    Also: the stored chain verifies, nothing was quarantined, no integrity alert.
    """
    chain = list(store.chain(AGENT))
    assert store.count_events() == len(chain) == head_seq
    assert [e.seq for e in chain] == list(range(1, head_seq + 1))
    ours = counters([e.uid for e in chain], prefix)
    assert len(ours) == total, f"{len(ours)} of {total} events stored"
    assert ours == list(range(total)), "an event is missing or stored twice"
    assert len({e.uid for e in chain}) == len(chain)
    others = [json.loads(e.payload) for e in chain if not e.uid.startswith(f"{prefix}-")]
    assert {o["finding_info"]["title"] for o in others} <= HEALTH_TITLES
    report = verify_log(store)
    assert report.ok, report.problems[:5]
    assert [(a.agent_id, a.rows, a.head_seq) for a in report.agents] == [
        (AGENT, head_seq, head_seq)
    ]
    assert store.quarantined() == []
    assert not [a for a in store.alerts() if a.rule.startswith("weightwarden.integrity")]


def confirmed(shipper: Shipper, seq: int) -> bool:
    """Whether the collector confirmed the spool up to ``seq``."""
    return shipper.stats().acked_seq >= seq


def retried_since(shipper: Shipper, retries: int) -> bool:
    """Whether a send failed since the shipper had counted ``retries``."""
    return shipper.stats().retries > retries


def kill_mid_stream(
    collector: Collector, shipper: Shipper, threshold: int, rng: random.Random
) -> int:
    """SIGKILL the collector once ``threshold`` events are confirmed; restart it on its port.

    Returns how far the spool was confirmed when the collector was killed.
    """
    wait_for(functools.partial(confirmed, shipper, threshold), f"{threshold} confirmed")
    time.sleep(rng.uniform(0.0, 0.05))  # land inside a request, not right after one
    before = shipper.stats()
    collector.kill()
    wait_for(functools.partial(retried_since, shipper, before.retries), "a failed send")
    time.sleep(0.3)  # a few more failed attempts while it is down
    collector.start()
    return before.acked_seq


def distinct_rows(db: Path) -> tuple[int, int, int]:
    """(rows, distinct (agent, seq), distinct uid) straight from the collector's table."""
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT agent_id, seq FROM events)),"
            " count(DISTINCT uid) FROM events"
        ).fetchone()
    connection.close()
    return int(row[0]), int(row[1]), int(row[2])


# ---------------------------------------------------------------------------------------
# The collector killed
# ---------------------------------------------------------------------------------------

EVENTS = 100_000
APPEND_BATCH = 2_000
KILL_AT = (22_000, 48_000, 74_000)
"""Confirmed events after which the collector is killed (each time mid-stream)."""


@pytest.mark.timeout(300)
def test_collector_killed_three_times_while_100k_events_ship_stores_each_exactly_once(
    tmp_path: Path, collector: Collector, ww: Callable[..., Any]
) -> None:
    """SIGKILL the collector 3 times mid-stream: 100,000 stored, 0 duplicates, chain clean."""
    collector.start()
    enroll_agent(collector, ww, tmp_path / "state")
    spool = Spool(
        tmp_path / "spool", agent_id=AGENT, hostname=AGENT, synchronous=Synchronous.NORMAL
    )
    shipper = Shipper(
        spool,
        agent_id=AGENT,
        identity=load_or_create_identity(tmp_path / "state"),
        transport=HttpTransport(collector.url, timeout=10),
        batch_size=1000,
        poll_interval=0.05,
        backoff_base=0.05,
        backoff_cap=0.5,
        device=Device(hostname=AGENT, agent_id=AGENT),
    )
    appended: list[int] = []
    failures: list[BaseException] = []

    def fill() -> None:
        try:
            for start in range(0, EVENTS, APPEND_BATCH):
                stored = spool.append(
                    [file_event(i, "ev") for i in range(start, start + APPEND_BATCH)]
                )
                appended.append(len(stored))
                shipper.wake()
        except BaseException as exc:  # noqa: BLE001 -- the thread's failure, asserted below
            failures.append(exc)

    filler = threading.Thread(target=fill, name="spool-filler")
    filler.start()
    shipper.start()
    try:
        rng = random.Random(4)  # noqa: S311 -- when to kill, not cryptography
        killed_at = [kill_mid_stream(collector, shipper, at, rng) for at in KILL_AT]
        filler.join(timeout=120)
        assert not failures, failures
        assert sum(appended) == EVENTS
        wait_for(
            lambda: shipper.stats().acked_seq == spool.stats().head_seq,
            "the spool to drain",
            timeout=120,
        )
    finally:
        assert shipper.stop(10), "the shipper thread did not stop"
        filler.join(timeout=60)
    assert shipper.failure is None
    assert collector.starts == 4
    assert all(at < EVENTS for at in killed_at), killed_at
    stats = spool.stats()
    head_seq = stats.head_seq
    assert (stats.count, stats.acked_seq) == (0, head_seq)  # fully acknowledged and trimmed
    spool.close()

    assert collector.stop() == 0
    rows, distinct_keys, distinct_uids = distinct_rows(collector.db)
    assert rows == distinct_keys == distinct_uids == head_seq
    with SqliteStore(collector.db) as store:
        assert_record_is_exact(store, head_seq=head_seq, prefix="ev", total=EVENTS)
    verified = ww("collector", "verify-log", "--dir", collector.directory)
    assert verified.code == 0, verified.stdout
    assert f"{AGENT}: {head_seq} rows up to head seq {head_seq}: ok" in verified.stdout


# ---------------------------------------------------------------------------------------
# The agent killed
# ---------------------------------------------------------------------------------------

AGENT_CHILD = """
import sys, time
from pathlib import Path
from agent.identity import load_or_create_identity
from agent.shipper import HttpTransport, Shipper
from agent.spool import Spool
from weightwarden.events import (
    Actor, Attribution, Device, FileActivity, FileActivityType, FileRef, Process, User,
)

spool_dir, state_dir, url, agent, start, stop_at, t0 = sys.argv[1:8]
start, stop_at, t0 = int(start), int(stop_at), int(t0)
user = User(uid=1000, name="alice")
device = Device(hostname=agent, agent_id=agent)
actor = Actor(
    process=Process(pid=4000, attribution=Attribution.FULL, exe="/usr/bin/cat", user=user),
    user=user,
)

def event(i):
    return FileActivity(
        uid=f"kill-{i}", time=t0 + i, device=device, activity=FileActivityType.OPEN,
        actor=actor, file=FileRef(path=f"/w/{i}"),
    )

spool = Spool(Path(spool_dir), agent_id=agent, hostname=agent)
shipper = Shipper(
    spool, agent_id=agent, identity=load_or_create_identity(Path(state_dir)),
    transport=HttpTransport(url, timeout=10), batch_size=500, poll_interval=0.02,
    backoff_base=0.02, backoff_cap=0.2, device=device,
)
shipper.start()
counter = start
while counter < stop_at:
    n = min(100, stop_at - counter)
    spool.append([event(i) for i in range(counter, counter + n)])
    counter += n
    print(counter, flush=True)  # events start..counter-1 are in the spool (durably)
    shipper.wake()
    time.sleep(0.003)
while shipper.stats().acked_seq < spool.stats().head_seq:
    if shipper.failure is not None:
        sys.exit(f"shipping stopped: {shipper.failure}")
    time.sleep(0.02)
print("drained", flush=True)
shipper.stop()
spool.close()
"""
"""The agent's shipping side as its own process: append numbered events, ship, report.

Arguments: spool dir, state dir, collector URL, agent id, first number, end (exclusive),
time base. Each stdout line is how far appends have returned; ``drained`` at the end."""

KILLS = 5
FINAL_EVENTS = 1_000
"""Events the last (unkilled) run appends before it drains and exits."""


class AgentChild:
    """One run of :data:`AGENT_CHILD`, its stdout read line by line."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        self.appended = 0
        self.drained = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.strip()
            if text == "drained":
                self.drained = True
            elif text.isdigit():
                self.appended = int(text)

    def appended_to(self, goal: int) -> bool:
        """Whether appends up to ``goal`` were reported."""
        return self.appended >= goal

    def kill(self) -> int:
        """SIGKILL; how far appends had returned (as last reported) before the kill."""
        reported = self.appended
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._close()
        return reported

    def finish(self) -> tuple[int, str]:
        """Wait for a clean exit; the status and the log."""
        code = self.proc.wait(timeout=120)
        self._close()
        return code, self.log.read_text(errors="replace")

    def _close(self) -> None:
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def held_in_spool(spool_dir: Path) -> list[str]:
    """Uids of the events the (dead) agent's spool still holds, read-only."""
    with SpoolReader(spool_dir) as reader:
        acked = reader.stats().acked_seq
        return [e.event.uid for e in reader.read_batch(after_seq=acked, limit=10_000_000)]


@pytest.mark.timeout(300)
def test_agent_killed_five_times_while_shipping_loses_and_duplicates_nothing(
    tmp_path: Path, collector: Collector, ww: Callable[..., Any]
) -> None:
    """SIGKILL the spool + shipper process 5 times: all it appended is stored exactly once.

    After each kill the record is complete so far: every number the child had appended
    (its spool is durable) is either still held by the spool or stored by the collector,
    with no hole, and at least as far as its last report. The next run reopens the same
    spool and identity and continues the numbering after the highest number found there
    (a trimmed event is only in the collector, so both are read).
    """
    collector.start()
    state, spool_dir = tmp_path / "state", tmp_path / "spool"
    enroll_agent(collector, ww, state)
    rng = random.Random(5)  # noqa: S311 -- when to kill, not cryptography
    runs: list[int] = []

    def child(start: int, stop_at: int) -> AgentChild:
        runs.append(start)
        return AgentChild(
            [
                sys.executable,
                "-c",
                AGENT_CHILD,
                str(spool_dir),
                str(state),
                collector.url,
                AGENT,
                str(start),
                str(stop_at),
                str(T0),
            ],
            tmp_path / f"agent-{len(runs)}.log",
        )

    start = 0
    for run in range(KILLS):
        running = child(start, 10**9)
        goal = start + rng.randrange(1_500, 5_000)
        wait_for(functools.partial(running.appended_to, goal), f"run {run} to append to {goal}")
        time.sleep(rng.uniform(0.0, 0.02))
        reported = running.kill()
        stored, held = stored_uids(collector.db), held_in_spool(spool_dir)
        known = set(counters(stored + held, "kill"))
        assert known == set(range(len(known))), f"run {run}: a hole in the record after a kill"
        assert len(known) >= reported, f"run {run}: appended {reported}, only {len(known)} kept"
        assert len(counters(stored, "kill")) == len(set(counters(stored, "kill")))
        start = len(known)

    total = start + FINAL_EVENTS
    last = child(start, total)
    code, stderr = last.finish()
    assert (code, last.drained) == (0, True), stderr

    with Spool(spool_dir, agent_id=AGENT, hostname=AGENT) as spool:
        stats = spool.stats()
    assert (stats.count, stats.acked_seq) == (0, stats.head_seq)
    rows, distinct_keys, distinct_uids = distinct_rows(collector.db)
    assert rows == distinct_keys == distinct_uids == stats.head_seq
    with SqliteStore(collector.db) as store:
        assert_record_is_exact(store, head_seq=stats.head_seq, prefix="kill", total=total)
    assert collector.stop() == 0


# ---------------------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------------------


def test_replay_wrong_key_edited_byte_and_deleted_row_are_each_detected_and_reported(
    collector: Collector, ww: Callable[..., Any], sim_agent: Callable[[str], Any]
) -> None:
    """Replay: 409, kept, alert listed; wrong key: 401, nothing kept; edit, delete: named."""
    collector.start()
    token = ww("collector", "enroll", "--dir", collector.directory, "--host", AGENT).stdout
    agent = sim_agent(AGENT)
    answer = urllib.request.urlopen(  # noqa: S310 -- our own http URL
        urllib.request.Request(  # noqa: S310
            f"{collector.url}/v1/enroll",
            data=json.dumps(
                {"token": token.strip(), "host": AGENT, "public_key": agent.public_pem}
            ).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        ),
        timeout=30,
    )
    assert answer.status == 200
    for _ in range(3):
        assert collector.request(agent.seal(agent.record_opens(5)))[0] == 200

    # A captured batch sent again: refused, kept as evidence, an alert for the team.
    captured = agent.seal(agent.record_opens(5))
    assert collector.request(captured) == (
        200,
        {"message": "stored 5 events", "acked_seq": 20, "stored": 5, "duplicates": 0},
    )
    status, refusal = collector.request(captured)
    assert (status, refusal["acked_seq"]) == (409, 20)
    listed = ww("alerts", "list", "--dir", collector.directory, "--format", "ocsf")
    [finding] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert finding["finding_info"]["title"].startswith(f"Replayed batch: agent {AGENT}")
    assert finding["finding_info"]["analytic"]["uid"] == "weightwarden.integrity.replay"
    assert refusal["quarantine_id"] in finding["finding_info"]["desc"]

    # A batch signed by a key the collector does not know for this agent: nothing kept.
    forged = agent.seal(agent.record_opens(2), key=generate_key())
    status, refusal = collector.request(forged)
    assert status == 401
    assert "signature" in refusal["error"]
    with SqliteStore(collector.db) as store:
        assert store.count_events() == 20
        assert [q.body for q in store.quarantined()] == [captured]
        assert len(store.alerts()) == 1
    assert ww("collector", "verify-log", "--dir", collector.directory).code == 0

    # One byte of one stored event changed in the database.
    with sqlite3.connect(collector.db) as db:
        [(payload,)] = db.execute("SELECT payload FROM events WHERE seq = 7").fetchall()
        edited = payload.replace('"name":"alice"', '"name":"alicf"', 1)
        assert len(edited) == len(payload)
        assert sum(a != b for a, b in zip(edited, payload, strict=True)) == 1
        db.execute("UPDATE events SET payload = ? WHERE seq = 7", (edited,))
    db.close()
    found = ww("collector", "verify-log", "--dir", collector.directory)
    assert found.code == 1, found.stdout
    assert f"{AGENT}: 20 rows up to head seq 20: 1 problem(s)" in found.stdout
    assert "edited: seq 7:" in found.stdout

    # Put it back, then delete a row instead.
    with sqlite3.connect(collector.db) as db:
        db.execute("UPDATE events SET payload = ? WHERE seq = 7", (payload,))
        db.execute("DELETE FROM events WHERE seq = 12")
    db.close()
    found = ww("collector", "verify-log", "--dir", collector.directory)
    assert found.code == 1, found.stdout
    assert "removed: seq 12:" in found.stdout
    assert "edited" not in found.stdout
    assert collector.stop() == 0
