"""Collector test fixtures: agents that sign real batches, events, and stores.

``MemoryStore`` is an in-memory twin of the ``Store`` Protocol for fast unit tests of the
ingest rules. It keeps the promises ingest relies on: ``ingest`` is atomic and
compare-and-set on the agent's head (``HeadMoved``), nonces are remembered, tokens are
one-use, expiring and bound to a host. End-to-end tests (HTTP, CLI) use the real SQLite
store.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import threading
import types
import uuid
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from collector.store import (
    AgentRecord,
    Alert,
    EventColumns,
    HeadMoved,
    QuarantinedBatch,
    StoredEvent,
)
from weightwarden.batch import new_batch, seal_batch
from weightwarden.crypto.chain import GENESIS, ChainLink, next_link
from weightwarden.crypto.keys import PrivateKey, generate_key
from weightwarden.errors import UsageError
from weightwarden.events import (
    Actor,
    Analytic,
    AnalyticType,
    Attribution,
    DetectionFinding,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    SealInfo,
    SealStatus,
    SessionPhase,
    Severity,
    User,
    canonical_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from collector.store import AlertStatus, Disposition, Store
    from policies import Grant, Suppression
    from weightwarden.events import Event


class MemoryStore:
    """Everything in dicts behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: dict[str, tuple[str, int, bool]] = {}
        self.agent_rows: dict[str, AgentRecord] = {}
        self.event_rows: dict[tuple[str, int], StoredEvent] = {}
        self.nonces: set[str] = set()
        self.alert_rows: dict[str, Alert] = {}
        self.quarantine_rows: list[QuarantinedBatch] = []
        self.head_hook: list[object] = []
        self.grant_rows: dict[str, Grant] = {}
        self.suppression_rows: dict[str, tuple[int, Suppression]] = {}
        self.suppressions_by_alert: dict[str, list[str]] = {}

    # enrollment
    def add_token(self, *, token_hash: str, host: str, expires_at: int) -> None:
        """Remember a token hash."""
        with self.lock:
            self.tokens[token_hash] = (host, expires_at, False)

    def redeem_token(self, *, token_hash: str, host: str, now: int) -> bool:
        """Use a token once, if unexpired and for this host."""
        with self.lock:
            row = self.tokens.get(token_hash)
            if row is None or row[2] or row[0] != host or row[1] <= now:
                return False
            self.tokens[token_hash] = (row[0], row[1], True)
            return True

    def register_agent(self, *, agent_id: str, public_key_pem: str, now: int) -> None:
        """Register an agent at head 0, or re-key a revoked one (keeping its head)."""
        with self.lock:
            row = self.agent_rows.get(agent_id)
            if row is not None and row.revoked_at is None:
                raise UsageError(f"agent {agent_id!r} is already enrolled")
            self.agent_rows[agent_id] = AgentRecord(
                agent_id=agent_id,
                public_key_pem=public_key_pem,
                enrolled_at=now,
                revoked_at=None,
                head_seq=0 if row is None else row.head_seq,
                head_hash=GENESIS if row is None else row.head_hash,
            )

    def agent(self, agent_id: str) -> AgentRecord | None:
        """One agent, or None."""
        with self.lock:
            return self.agent_rows.get(agent_id)

    def agents(self) -> list[AgentRecord]:
        """Every agent, by id."""
        with self.lock:
            return [self.agent_rows[k] for k in sorted(self.agent_rows)]

    def revoke_agent(self, agent_id: str, *, now: int) -> bool:
        """Mark an agent revoked."""
        with self.lock:
            row = self.agent_rows.get(agent_id)
            if row is None:
                return False
            self.agent_rows[agent_id] = dataclasses.replace(row, revoked_at=now)
            return True

    # ingest
    def stored_links(self, agent_id: str, first_seq: int, last_seq: int) -> dict[int, str]:
        """The stored link hashes by seq, in a range."""
        with self.lock:
            return {
                seq: e.link_hash
                for (agent, seq), e in self.event_rows.items()
                if agent == agent_id and first_seq <= seq <= last_seq
            }

    def nonce_seen(self, nonce: str) -> bool:
        """Whether a nonce was stored."""
        with self.lock:
            return nonce in self.nonces

    def ingest(
        self,
        *,
        agent_id: str,
        nonce: str,
        expected_head_seq: int,
        new_head_seq: int,
        new_head_hash: str,
        events: Sequence[StoredEvent] | EventColumns,
        alerts: Sequence[Alert],
    ) -> None:
        """Store a batch atomically, compare-and-set on the head (events as objects or columns)."""
        if isinstance(events, EventColumns):
            events = list(events.events())
        with self.lock:
            row = self.agent_rows[agent_id]
            if row.head_seq != expected_head_seq or nonce in self.nonces:
                raise HeadMoved(agent_id)
            for event in events:
                key = (event.agent_id, event.seq)
                if key in self.event_rows:
                    raise AssertionError(f"event stored twice: {key}")
                self.event_rows[key] = event
            self.nonces.add(nonce)
            for alert in alerts:
                self.alert_rows.setdefault(alert.id, alert)
            self.agent_rows[agent_id] = dataclasses.replace(
                row, head_seq=new_head_seq, head_hash=new_head_hash
            )

    def quarantine(self, batch: QuarantinedBatch, alerts: Sequence[Alert]) -> None:
        """Keep a refused batch and its alerts."""
        with self.lock:
            self.quarantine_rows.append(batch)
            for alert in alerts:
                self.alert_rows.setdefault(alert.id, alert)

    def quarantined(self) -> list[QuarantinedBatch]:
        """Every quarantined batch."""
        with self.lock:
            return list(self.quarantine_rows)

    def import_events(self, events: Sequence[StoredEvent], alerts: Sequence[Alert]) -> int:
        """Store unchained events, new by uid."""
        with self.lock:
            uids = {e.uid for e in self.event_rows.values()}
            new = 0
            for event in events:
                if event.uid in uids:
                    continue
                uids.add(event.uid)
                self.event_rows[(event.agent_id, event.seq)] = event
                new += 1
            for alert in alerts:
                self.alert_rows.setdefault(alert.id, alert)
            return new

    # reading
    def events(
        self,
        *,
        agent_id: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> Iterator[StoredEvent]:
        """Events by (time, agent, seq)."""
        with self.lock:
            rows = sorted(self.event_rows.values(), key=lambda e: (e.time, e.agent_id, e.seq))
        rows = [
            e
            for e in rows
            if (agent_id is None or e.agent_id == agent_id)
            and (since is None or e.time >= since)
            and (until is None or e.time < until)
        ]
        return iter(rows if limit is None else rows[:limit])

    def imported_payloads(self, uids: Sequence[str]) -> dict[str, str]:
        """``uid -> payload`` of imported events under any of ``uids``."""
        wanted = set(uids)
        with self.lock:
            return {
                e.uid: e.payload
                for e in self.event_rows.values()
                if e.agent_id.startswith("import:") and e.uid in wanted
            }

    def payloads(self, *, since: int | None = None, until: int | None = None) -> Iterator[str]:
        """The payloads of the events of a period, in ``events`` order."""
        return (event.payload for event in self.events(since=since, until=until))

    def chain(self, agent_id: str) -> Iterator[StoredEvent]:
        """One agent's events by seq."""
        with self.lock:
            rows = [e for (a, _), e in self.event_rows.items() if a == agent_id]
        return iter(sorted(rows, key=lambda e: e.seq))

    def count_events(self) -> int:
        """How many events are stored."""
        with self.lock:
            return len(self.event_rows)

    # alerts
    def add_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store alerts."""
        with self.lock:
            for alert in alerts:
                self.alert_rows.setdefault(alert.id, alert)

    def alerts(self, *, status: AlertStatus | None = None, since: int | None = None) -> list[Alert]:
        """Alerts, newest first."""
        with self.lock:
            rows = list(self.alert_rows.values())
        rows = [
            a
            for a in rows
            if (status is None or a.status == status) and (since is None or a.created_at >= since)
        ]
        return sorted(rows, key=lambda a: a.created_at, reverse=True)

    def alert(self, alert_id: str) -> Alert | None:
        """One alert by id or unique prefix."""
        with self.lock:
            if alert_id in self.alert_rows:
                return self.alert_rows[alert_id]
            if len(alert_id) < 6:
                return None
            found = [a for k, a in self.alert_rows.items() if k.startswith(alert_id)]
            return found[0] if len(found) == 1 else None

    def update_alert(
        self,
        alert_id: str,
        *,
        status: AlertStatus,
        disposition: Disposition,
        note: str | None,
        now: int,
    ) -> Alert | None:
        """Record a triage decision."""
        found = self.alert(alert_id)
        if found is None:
            return None
        with self.lock:
            updated = dataclasses.replace(
                found, status=status, disposition=disposition, note=note, updated_at=now
            )
            self.alert_rows[found.id] = updated
            return updated

    def refresh_alerts(self, alerts: Sequence[Alert], *, now: int) -> int:
        """Bring unresolved alerts up to a later view, keeping creation and triage."""
        changed = 0
        with self.lock:
            for alert in alerts:
                old = self.alert_rows.get(alert.id)
                if old is None or old.status == "resolved":
                    continue
                self.alert_rows[alert.id] = dataclasses.replace(
                    old,
                    severity_id=alert.severity_id,
                    title=alert.title,
                    rule=alert.rule,
                    evidence=alert.evidence,
                    finding=alert.finding,
                    updated_at=now,
                )
                changed += 1
        return changed

    # grants and suppressions
    def add_grant(self, grant: Grant) -> None:
        """Keep a grant; its id must be new."""
        with self.lock:
            if grant.id in self.grant_rows:
                raise ValueError(f"grant {grant.id!r} is already stored")
            self.grant_rows[grant.id] = grant

    def revoke_grant(self, grant_id: str, *, now: int) -> bool:
        """Revoke a grant that is not revoked yet."""
        with self.lock:
            grant = self.grant_rows.get(grant_id)
            if grant is None or grant.revoked_at is not None:
                return False
            self.grant_rows[grant_id] = dataclasses.replace(grant, revoked_at=now)
            return True

    def grants(self, *, now: int | None = None) -> list[Grant]:
        """Grants oldest first; with ``now``, those in force."""
        with self.lock:
            rows = sorted(self.grant_rows.values(), key=lambda g: (g.created_at, g.id))
        return [g for g in rows if now is None or g.valid_at(now)]

    def add_suppression(
        self,
        suppression: Suppression,
        *,
        suppression_id: str,
        created_at: int,
        alert_id: str | None = None,
    ) -> None:
        """Keep a suppression; its id must be new."""
        with self.lock:
            if suppression_id in self.suppression_rows:
                raise ValueError(f"suppression {suppression_id!r} is already stored")
            self.suppression_rows[suppression_id] = (created_at, suppression)
            if alert_id is not None:
                self.suppressions_by_alert.setdefault(alert_id, []).append(suppression_id)

    def lift_suppressions(self, alert_id: str, *, now: int) -> int:
        """End, from ``now``, the suppressions the alert's triage created."""
        lifted = 0
        with self.lock:
            for key in self.suppressions_by_alert.get(alert_id, []):
                created_at, suppression = self.suppression_rows[key]
                if suppression.until is None or suppression.until > now:
                    self.suppression_rows[key] = (
                        created_at,
                        dataclasses.replace(suppression, until=now),
                    )
                    lifted += 1
        return lifted

    def suppressions(self, *, now: int | None = None) -> list[Suppression]:
        """Suppressions oldest first; with ``now``, those not expired."""
        with self.lock:
            rows = sorted(self.suppression_rows.items(), key=lambda item: (item[1][0], item[0]))
        return [s for _, (_, s) in rows if now is None or s.until is None or s.until > now]

    def close(self) -> None:
        """Nothing to release."""


# -- events --------------------------------------------------------------------------------

ALICE = User(uid=1000, name="alice")


def _actor() -> Actor:
    process = Process(pid=4242, attribution=Attribution.FULL, exe="/usr/bin/cat", user=ALICE)
    return Actor(process=process, user=ALICE)


def file_open(host: str, *, path: str = "/weights/run/model.safetensors", at: int = 1_000) -> Event:
    """An ordinary, uninteresting open of a weights file by alice."""
    return FileActivity(
        uid=uuid.uuid4().hex,
        time=at,
        device=Device(hostname=host, agent_id=host),
        activity=FileActivityType.OPEN,
        actor=_actor(),
        file=FileRef(path=path, size=4 << 20),
    )


_session_uids = itertools.count()


def read_session(
    user: str, path: str, at: int, *, canary: bool = False, host: str = "gpu-001"
) -> list[FileActivity]:
    """An access session as the agent reports it: the open, then the close with bytes."""
    person = User(uid=1000, name=user)
    process = Process(
        pid=4000 + next(_session_uids) % 1000,
        attribution=Attribution.FULL,
        exe="/usr/bin/python3.11",
        user=person,
        login_user=person,
    )
    session = f"s{next(_session_uids)}"
    common = {
        "device": Device(hostname=host, agent_id=host),
        "actor": Actor(process=process, user=person),
        "file": FileRef(path=path, size=1 << 30),
        "severity": Severity.CRITICAL if canary else Severity.INFORMATIONAL,
        "session_uid": session,
        "canary": canary,
    }
    return [
        FileActivity(
            uid=f"u{next(_session_uids)}",
            time=at,
            activity=FileActivityType.OPEN,
            session_phase=SessionPhase.OPEN,
            **common,
        ),
        FileActivity(
            uid=f"u{next(_session_uids)}",
            time=at + 60_000,
            activity=FileActivityType.READ,
            session_phase=SessionPhase.CLOSE,
            mmap_bytes=1 << 30,
            fraction_read=1.0,
            **common,
        ),
    ]


def canary_open(host: str, *, session: str = "s-1", at: int = 1_000) -> Event:
    """Alice opens a canary file (CRITICAL on the agent)."""
    return FileActivity(
        uid=uuid.uuid4().hex,
        time=at,
        device=Device(hostname=host, agent_id=host),
        activity=FileActivityType.OPEN,
        actor=_actor(),
        file=FileRef(path="/weights/canary/model.safetensors", size=1 << 20),
        severity=Severity.CRITICAL,
        canary=True,
        session_uid=session,
    )


def tampered(host: str, *, name: str = "model-00001.safetensors", at: int = 1_000) -> Event:
    """The sealer found a checkpoint file changed after sealing."""
    return FileActivity(
        uid=uuid.uuid4().hex,
        time=at,
        device=Device(hostname=host, agent_id=host),
        activity=FileActivityType.UPDATE,
        actor=_actor(),
        file=FileRef(path=f"/weights/run/ckpt-1/{name}"),
        severity=Severity.HIGH,
        sensor="sealer",
        seal=SealInfo(status=SealStatus.TAMPERED, seal_uid="abc123", detail="modified"),
    )


def copied(host: str, *, removable: bool = False, at: int = 1_000) -> Event:
    """A sealed file's content written elsewhere (to a USB stick when ``removable``)."""
    dest = "/media/usb/stolen.safetensors" if removable else "/tmp/stolen.safetensors"  # noqa: S108 -- a path in an event, not a file
    return FileActivity(
        uid=uuid.uuid4().hex,
        time=at,
        device=Device(hostname=host, agent_id=host),
        activity=FileActivityType.CREATE,
        actor=_actor(),
        file=FileRef(path=dest, size=4 << 20),
        severity=Severity.CRITICAL if removable else Severity.HIGH,
        sensor="copy-detector",
        copy_source="/weights/run/ckpt-1/model-00001.safetensors",
        related_paths=("/weights/run/ckpt-1/model-00001.safetensors",),
    )


def health(host: str, *, severity: Severity = Severity.HIGH, at: int = 1_000) -> Event:
    """The agent reports that its sensor overflowed."""
    uid = uuid.uuid4().hex
    return DetectionFinding(
        uid=uid,
        time=at,
        severity=severity,
        finding_uid=uid,
        title="Sensor overflow: file events were lost (fanotify)",
        analytic=Analytic(
            name="agent health", kind=AnalyticType.RULE, uid="weightwarden.agent.health"
        ),
        description="The fanotify queue overflowed.",
        device=Device(hostname=host, agent_id=host),
    )


# -- agents --------------------------------------------------------------------------------


class SimAgent:
    """An agent's signing side: a real identity key and a real hash chain, no daemon."""

    def __init__(self, agent_id: str, key: PrivateKey | None = None) -> None:
        self.agent_id = agent_id
        self.key = key or generate_key()
        self.head: ChainLink | None = None
        self.spool: list[tuple[ChainLink, bytes]] = []
        self.clock = itertools.count(1_700_000_000_000)

    @property
    def public_pem(self) -> str:
        """The identity key's public half, PEM."""
        return self.key.public.pem.decode()

    def record(self, *events: Event) -> list[tuple[ChainLink, bytes]]:
        """Chain and spool ``events`` (default: one ordinary open); return their links."""
        out = []
        for event in events or (file_open(self.agent_id),):
            payload = canonical_bytes(event)
            self.head = next_link(self.head, self.agent_id, payload)
            out.append((self.head, payload))
        self.spool.extend(out)
        return out

    def record_opens(self, count: int) -> list[tuple[ChainLink, bytes]]:
        """Chain ``count`` ordinary opens."""
        return self.record(*(file_open(self.agent_id, at=1_000 + i) for i in range(count)))

    def seal(
        self, items: Sequence[tuple[ChainLink, bytes]], key: PrivateKey | None = None
    ) -> bytes:
        """The wire body for ``items``, signed (by ``key`` if given), with a fresh nonce."""
        batch = new_batch(self.agent_id, items, sent_at=next(self.clock))
        return seal_batch(batch, key or self.key)


@pytest.fixture(scope="session")
def sim_agent() -> type[SimAgent]:
    """The SimAgent class: ``sim_agent("gpu-01")`` is an agent with a fresh key."""
    return SimAgent


@pytest.fixture(scope="session")
def make() -> types.SimpleNamespace:
    """Event builders: file_open, canary_open, tampered, copied, health; read_session."""
    return types.SimpleNamespace(
        file_open=file_open,
        canary_open=canary_open,
        tampered=tampered,
        copied=copied,
        health=health,
        read_session=read_session,
    )


@pytest.fixture
def memory_store() -> MemoryStore:
    """An empty in-memory store."""
    return MemoryStore()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """An empty SQLite store (the real one) in tmp_path."""
    from collector.store import SqliteStore  # noqa: PLC0415

    store = SqliteStore(tmp_path / "collector.sqlite", synchronous="normal")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each store in turn: the in-memory twin and the real SQLite store."""
    name = "memory_store" if request.param == "memory" else "sqlite_store"
    value: Store = request.getfixturevalue(name)
    return value


@pytest.fixture
def clock() -> Callable[[], int]:
    """A collector clock that advances one millisecond per reading."""
    ticks = itertools.count(1_800_000_000_000)
    return lambda: next(ticks)


@pytest.fixture
def enrolled(store: Store) -> SimAgent:
    """Agent gpu-01, enrolled in ``store``."""
    agent = SimAgent("gpu-01")
    store.register_agent(agent_id="gpu-01", public_key_pem=agent.public_pem, now=1)
    return agent


# -- the command line ----------------------------------------------------------------------

LAUNCHER = """
import sys
from importlib.metadata import entry_points
from weightwarden.cli import _main
from collector.cli import register_alerts, register_collector
names = {ep.name for ep in entry_points(group=_main.ENTRY_POINT_GROUP)}
if not {"collector", "alerts"} <= names:
    kernel_register = _main._demo.register
    def register(sub):
        kernel_register(sub)
        if "collector" not in names:
            register_collector(sub)
        if "alerts" not in names:
            register_alerts(sub)
    _main._demo.register = register
sys.exit(_main.main())
"""
"""Runs ``weightwarden``; adds the collector commands only while pyproject does not yet
declare their entry points (after that it is exactly the installed command)."""


def weightwarden_argv() -> list[str]:
    """The command that runs ``weightwarden`` with the collector and alerts commands."""
    names = {ep.name for ep in entry_points(group="weightwarden.commands")}
    script = Path(sys.executable).with_name("weightwarden")
    if {"collector", "alerts"} <= names and script.is_file():
        return [str(script)]
    return [sys.executable, "-c", LAUNCHER]


@dataclasses.dataclass(frozen=True)
class CliRun:
    """What one ``weightwarden`` run did."""

    code: int
    stdout: str
    stderr: str

    def one_line_error(self, code: int = 2) -> str:
        """Assert exit ``code`` with one ``weightwarden: error:`` line; return it."""
        assert self.code == code, (self.code, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert ": error: " in lines[0], lines[0]
        return lines[0]


def run_cli(*args: object, env: dict[str, str] | None = None, stdin: str | None = None) -> CliRun:
    """Run ``weightwarden ARGS`` in a subprocess (no $WEIGHTWARDEN_COLLECTOR_DIR unless given)."""
    environment = {k: v for k, v in os.environ.items() if k != "WEIGHTWARDEN_COLLECTOR_DIR"}
    environment.update(env or {})
    proc = subprocess.run(
        [*weightwarden_argv(), *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        input=stdin,
        timeout=120,
        check=False,
    )
    return CliRun(code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


@pytest.fixture(scope="session")
def ww_argv() -> list[str]:
    """The argv prefix that runs ``weightwarden`` (for long-running subprocesses)."""
    return weightwarden_argv()


@pytest.fixture(scope="session")
def ww() -> Callable[..., CliRun]:
    """``ww("collector", "init", "--dir", d)`` runs the real command in a subprocess."""
    return run_cli


__all__ = [
    "LAUNCHER",
    "CliRun",
    "MemoryStore",
    "SimAgent",
    "canary_open",
    "copied",
    "file_open",
    "health",
    "read_session",
    "run_cli",
    "tampered",
    "weightwarden_argv",
]
