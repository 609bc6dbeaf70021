"""The host agent's lifecycle: start every component, run the pipeline, stop cleanly.

Threads and processes:
- the sensor's reader thread (fanotify, else inotify) fills a bounded record queue;
- the exec watcher (a child process, so the GIL never delays a snapshot) keeps the exec
  cache that attributes readers which exit before their event is read;
- the pipeline thread (the main thread) turns records into events, samples sessions,
  polls egress and GPUs, and appends every event to the durable spool, batched;
- one worker thread does the heavy work: sealing, re-verifying, hashing possible copies,
  GPU snapshots. Its results come back to the pipeline thread, which alone touches the
  pipeline's state.

Failure policy (DESIGN.md decision 10): a sensor, exec watcher or spool that dies takes the
daemon down with exit code 70 so systemd restarts it; every bounded queue counts what it
could not hold and reports it as a health finding. SIGTERM or SIGINT stop the sensor, drain
what it already read into the spool, and exit 0.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.actor import actor_from_attribution, event_text, unknown_actor
from agent.attribution import (
    Attributor,
    ExecCache,
    ExecWatcher,
    mapped_rss,
    probe_proc_connector,
    read_position,
    read_process,
)
from agent.canary import CanaryRegistry
from agent.copies import CopyDetector, CopyIndex
from agent.egress import EgressWatcher
from agent.enroll import ensure_enrolled
from agent.gpu import GpuMonitor, GpuSnapshot, gpu_holdings
from agent.identity import load_or_create_identity
from agent.notify import SystemdNotifier
from agent.pipeline import EventPipeline, UsageProbe, health_finding
from agent.sealer import Change, SealPlanner, SealStore
from agent.sensors import (
    FanotifySensor,
    InotifySensor,
    RecordQueue,
    probe_fanotify,
)
from agent.sessions import SessionTracker
from agent.shipper import HttpTransport, NatsTransport, Shipper
from agent.spool import Spool
from weightwarden.crypto.keys import load_private_key
from weightwarden.errors import ConfigError, EventFormatError, SealInputError, WeightwardenError
from weightwarden.events import (
    Actor,
    Device,
    Event,
    FileActivity,
    FileActivityType,
    FileRef,
    SealInfo,
    SealStatus,
    Severity,
    canonical_bytes,
)
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.config import AgentConfig
    from agent.copies import CopyMatch
    from weightwarden.seal import VerificationResult

__all__ = ["Daemon", "DaemonStatus"]

_BATCH = 2000
_BATCH_WAIT_S = 0.05
_TICK_S = 1.0
_EXIT_WAIT_S = 0.5
"""The most an attribution waits for the exec watcher to report a gone process's exit."""
_WORK_QUEUE = 1024
_SELF_TEST_NAME = ".weightwarden-self-test"
log = get_logger("agent")

Followup = Callable[[], list[Event]]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonStatus:
    """What the agent reports about itself at start."""

    sensor: str
    sensor_detail: str
    attribution: str
    sealing: str
    gpu: str

    def line(self) -> str:
        """One line for systemd's STATUS and the log."""
        return (
            f"sensor {self.sensor}; attribution {self.attribution}; sealing {self.sealing}; "
            f"{self.gpu}"
        )


@dataclass(slots=True)
class _Worker:
    """One background thread for heavy tasks; results go back through ``outbox``."""

    tasks: queue.Queue[Callable[[], Followup | None]] = field(
        default_factory=lambda: queue.Queue(maxsize=_WORK_QUEUE)
    )
    outbox: deque[Followup] = field(default_factory=deque)
    refused: int = 0
    failed: int = 0
    thread: threading.Thread | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def submit(self, task: Callable[[], Followup | None]) -> bool:
        try:
            self.tasks.put_nowait(task)
        except queue.Full:
            self.refused += 1
            return False
        return True

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="agent-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                task = self.tasks.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                followup = task()
            except Exception:
                self.failed += 1
                log.exception("worker task failed")
                continue
            if followup is not None:
                self.outbox.append(followup)

    def drain(self) -> list[Followup]:
        out = []
        while self.outbox:
            out.append(self.outbox.popleft())
        return out


class Daemon:
    """The agent: build it from a config, then :meth:`run` until told to stop."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        environ: Mapping[str, str],
        proc_root: Path = Path("/proc"),
        enroll_token: str | None = None,
    ) -> None:
        self.config = config
        self._enroll_token = enroll_token
        self._proc_root = proc_root
        self._notifier = SystemdNotifier.from_environ(environ)
        self._device = Device(hostname=config.hostname, agent_id=config.resolved_agent_id)
        self._stop = threading.Event()
        self._worker = _Worker()
        self._roots = tuple(str(r) for r in config.weight_roots)
        self._gpu_seen: set[tuple[int, int]] = set()
        self._last_gpu_poll = 0.0
        self._last_egress_poll = 0.0
        self._last_tick = 0.0
        self._last_watchdog = 0.0
        self._queue_dropped_reported = 0
        self._worker_refused_reported = 0
        self.status: DaemonStatus | None = None

    # ------------------------------------------------------------------ start-up

    def _open_components(self) -> None:
        cfg = self.config
        spool_cfg = cfg.spool
        self.spool = Spool(
            cfg.resolved_spool_dir,
            agent_id=cfg.resolved_agent_id,
            hostname=cfg.hostname,
            max_events=spool_cfg.max_events,
            max_bytes=spool_cfg.max_bytes,
            full_policy=spool_cfg.full_policy,
            synchronous=spool_cfg.synchronous,
        )
        self.shipper = self._open_shipper()
        self.canaries = CanaryRegistry.load(cfg.resolved_canary_registry)
        self._canary_stamp = _mtime_ns(cfg.resolved_canary_registry)
        self.records = RecordQueue(maxsize=cfg.queue_size, clock=time.monotonic)
        self.exec_cache = ExecCache(grace_s=120.0)
        probe = probe_proc_connector()
        self.exec_watcher: ExecWatcher | None = None
        if probe.available:
            self.exec_watcher = ExecWatcher(self.exec_cache)
            self.exec_watcher.start()
            attribution = "full (proc connector exec cache)"
            self.attributor = Attributor(
                cache=self.exec_cache,
                proc_root=self._proc_root,
                await_exit=functools.partial(
                    self.exec_watcher.wait_for_exit, timeout_s=_EXIT_WAIT_S
                ),
            )
        else:
            attribution = f"live /proc only ({probe.reason})"
            self.attributor = Attributor(
                cache=None, no_cache_reason=probe.reason, proc_root=self._proc_root
            )
        self.store: SealStore | None = None
        self.planner: SealPlanner | None = None
        sealing = "off (no agent.seal.private_key)"
        if cfg.seal.private_key is not None:
            passphrase = (
                cfg.seal.passphrase_file.read_bytes().rstrip(b"\r\n")
                if cfg.seal.passphrase_file
                else None
            )
            key = load_private_key(cfg.seal.private_key, passphrase)
            self.store = SealStore(cfg.state_dir, key)
            self.planner = SealPlanner(
                self._roots,
                quiet_ms=int(cfg.seal.quiet_interval.total_seconds() * 1000),
                reverify_ms=int(cfg.seal.reverify_delay.total_seconds() * 1000),
            )
            sealing = f"on (quiet {cfg.seal.quiet_interval}, {len(self.store.records)} sealed)"
        self.copy_index = CopyIndex()
        self.copies = CopyDetector(self.copy_index, proc_root=self._proc_root)
        self.egress = EgressWatcher(
            device=self._device,
            proc_root=self._proc_root,
            grace_ms=int(cfg.egress_grace.total_seconds() * 1000),
            attribute=lambda pid: self._attribute(pid, time.monotonic()),
        )
        self.gpu = GpuMonitor(proc_root=self._proc_root)
        first = self.gpu.snapshot()
        gpu = (
            f"{len(first.devices)} GPU(s), driver {first.driver_version}"
            if first.gpu_available
            else f"no GPU ({first.reason})"
        )
        self.sessions = SessionTracker(
            agent_id=cfg.resolved_agent_id,
            progress_interval_ms=int(cfg.progress_interval.total_seconds() * 1000),
            max_sessions=100_000,
        )
        self.pipeline = EventPipeline(
            device=self._device,
            roots=self._roots,
            sensor_name="pending",
            sessions=self.sessions,
            attribute=self._attribute,
            canaries=self.canaries,
            usage=UsageProbe(
                read_position=lambda pid, path: read_position(pid, path, proc_root=self._proc_root),
                mapped_rss=lambda pid, path: mapped_rss(pid, path, proc_root=self._proc_root),
                alive=lambda pid: (self._proc_root / str(pid)).exists(),
            ),
            wall_ms=_wall_ms,
            monotonic=time.monotonic,
            planner=self.planner,
            egress=self.egress,
            submit_copy_check=self._submit_copy_check,
            copy_candidate=self._copy_candidate,
        )
        child = self.exec_watcher.stats().child_pid if self.exec_watcher is not None else None
        self.pipeline.own_pids = frozenset({os.getpid()} | ({child} if child else set()))
        sensor, detail = self._start_sensor()
        self.pipeline.sensor_name = sensor
        self.status = DaemonStatus(
            sensor=sensor,
            sensor_detail=detail,
            attribution=attribution,
            sealing=sealing,
            gpu=gpu,
        )
        self._first_gpu = first

    def _open_shipper(self) -> Shipper | None:
        """Enroll on first start and build the shipper, if a collector is configured."""
        settings = self.config.collector
        if settings.url is None:
            return None
        identity = load_or_create_identity(self.config.state_dir)
        token = self._enroll_token
        if token is None and settings.enroll_token_file is not None:
            try:
                token = settings.enroll_token_file.read_text().strip() or None
            except OSError as exc:
                msg = f"cannot read agent.collector.enroll_token_file: {exc.strerror}"
                raise ConfigError(msg) from exc
        timeout = settings.timeout.total_seconds()
        ensure_enrolled(
            settings.url,
            token,
            agent_id=self.config.resolved_agent_id,
            identity=identity,
            ca_file=settings.ca_file,
            pinned_sha256=settings.pinned_sha256,
            timeout=timeout,
        )
        transport: HttpTransport | NatsTransport = (
            HttpTransport(
                settings.url,
                ca_file=settings.ca_file,
                pinned_sha256=settings.pinned_sha256,
                timeout=timeout,
            )
            if settings.transport == "http"
            else NatsTransport(
                settings.nats_servers,
                stream=settings.nats_stream,
                subject_prefix=settings.nats_subject_prefix,
            )
        )
        return Shipper(
            self.spool,
            agent_id=self.config.resolved_agent_id,
            identity=identity,
            transport=transport,
            batch_size=settings.batch_size,
            device=self._device,
        )

    def _sensor_roots(self, *, with_copy_watch: bool) -> list[Path]:
        roots = list(self.config.weight_roots)
        roots += [Path(d) for d in sorted(self.canaries.directories()) if Path(d).is_dir()]
        if with_copy_watch:
            roots += [p for p in self.config.copy_watch if p.is_dir()]
        unique: list[Path] = []
        for r in roots:
            if not any(r == u or r.is_relative_to(u) for u in unique):
                unique = [u for u in unique if not u.is_relative_to(r)] + [r]
        return unique

    def _start_sensor(self) -> tuple[str, str]:
        choice = self.config.sensor
        if choice in ("auto", "fanotify"):
            roots = self._sensor_roots(with_copy_watch=True)
            support = probe_fanotify(roots, proc_root=self._proc_root)
            if support.usable:
                self.sensor: FanotifySensor | InotifySensor = FanotifySensor(
                    roots=roots, sink=self.records, proc_root=self._proc_root
                )
                self.sensor.start()
                return "fanotify", support.reason
            if choice == "fanotify":
                raise WeightwardenError(f"fanotify is not usable here: {support.reason}")
            fallback_reason = support.reason
        else:
            fallback_reason = "inotify chosen in the configuration"
        self.sensor = InotifySensor(
            roots=self._sensor_roots(with_copy_watch=False),
            sink=self.records,
            proc_root=self._proc_root,
        )
        self.sensor.start()
        return "inotify", f"no pids: attribution from /proc holders only ({fallback_reason})"

    def _self_test(self) -> bool:
        """Open a file under the first weight root and expect the sensor's own event."""
        probe = self.config.weight_roots[0] / _SELF_TEST_NAME
        try:
            probe.write_bytes(b"weightwarden self-test\n")
        except OSError:
            return False  # a read-only root: the sensor still runs, the test cannot
        try:
            return self.sensor.self_test(probe)
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _queue_initial_seal_work(self) -> None:
        if self.store is None or self.planner is None:
            return
        now = _wall_ms()
        for root in self.config.weight_roots:
            for entry in sorted(root.iterdir()):
                if entry.name == _SELF_TEST_NAME:
                    continue
                checkpoint = str(entry)
                if checkpoint in self.store.records:
                    self.planner.mark_sealed(checkpoint)
                    self._submit_index_copies(checkpoint)
                    self._submit_verify(checkpoint, [])
                else:
                    self.planner.candidate(checkpoint, now)

    # ------------------------------------------------------------------ attribution

    def _attribute(self, pid: int, at_monotonic: float) -> Actor:
        return actor_from_attribution(self.attributor.attribute(pid, at_monotonic))

    def _own_actor(self) -> Actor:
        info = read_process(os.getpid(), proc_root=self._proc_root, with_parents=False)
        return (
            Actor(process=None, user=None)
            if info is None
            else self._attribute(os.getpid(), time.monotonic())
        )

    # ------------------------------------------------------------------ heavy work

    def _copy_candidate(self, size: int | None) -> bool:
        """Whether a file of ``size`` bytes could be a copy of a sealed file (no I/O)."""
        if len(self.copy_index) == 0:
            return False
        return size is None or bool(self.copy_index.candidates(size))

    def _submit_copy_check(self, path: str, actor: Actor, when: int) -> None:

        def task() -> Followup | None:
            match = self.copies.check(path)
            if match is None:
                return None
            return lambda: [self._copy_event(match, actor, when)]

        self._worker.submit(task)

    def _copy_event(self, match: CopyMatch, actor: Actor, when: int) -> FileActivity:
        removable = match.destination.kind.value == "removable"
        return FileActivity(
            uid=uuid.uuid4().hex,
            time=when,
            device=self._device,
            activity=FileActivityType.CREATE,
            actor=actor,
            file=match.file_ref(),
            severity=Severity.CRITICAL if removable else Severity.HIGH,
            sensor="copy-detector",
            copy_source=event_text(match.sources[0]),
            related_paths=tuple(event_text(p) for p in match.sources),
        )

    def _submit_index_copies(self, checkpoint: str) -> None:
        store = self.store
        if store is None:
            return

        def task() -> Followup | None:
            manifest = store.manifest(checkpoint)
            if manifest is not None:
                self.copy_index.add_manifest(manifest, Path(checkpoint))
            return None

        self._worker.submit(task)

    def _submit_seal(self, checkpoint: str) -> None:
        store, planner = self.store, self.planner
        if store is None or planner is None:
            return

        def task() -> Followup | None:
            now = _wall_ms()
            if not Path(checkpoint).exists():
                return lambda: self._forget(checkpoint)
            if _newest_mtime_ms(Path(checkpoint)) > now - planner.quiet_ms:
                return lambda: self._postpone(checkpoint)
            try:
                result = store.seal(checkpoint, now)
            except SealInputError as exc:
                log.info("seal postponed", checkpoint=checkpoint, reason=str(exc))
                return lambda: self._postpone(checkpoint)
            record = store.records[checkpoint]
            self.copy_index.add_seal(result)

            def done() -> list[Event]:
                planner.mark_sealed(checkpoint, since=now)
                return [
                    FileActivity(
                        uid=uuid.uuid4().hex,
                        time=now,
                        device=self._device,
                        activity=FileActivityType.OTHER,
                        actor=self._own_actor(),
                        file=FileRef(
                            path=event_text(checkpoint), hashes={"sha256": record.root_digest}
                        ),
                        sensor="sealer",
                        seal=SealInfo(
                            status=SealStatus.INTACT,
                            seal_uid=record.root_digest,
                            detail=(
                                f"sealed {record.files} file(s), "
                                f"{result.bytes_hashed} bytes; bundle {record.signature}"
                            ),
                        ),
                    )
                ]

            return done

        self._worker.submit(task)

    def _forget(self, checkpoint: str) -> list[Event]:
        """An unsealed checkpoint vanished before it was sealed: nothing left to seal."""
        if self.planner is not None:
            self.planner.forget(checkpoint)
        return []

    def _postpone(self, checkpoint: str) -> list[Event]:
        if self.planner is not None:
            self.planner.postpone(checkpoint, _wall_ms())
        return []

    def _submit_verify(self, checkpoint: str, changes: list[Change]) -> None:
        store = self.store
        if store is None:
            return

        def task() -> Followup | None:
            try:
                result = store.verify(checkpoint)
            except (SealInputError, WeightwardenError) as exc:
                reason = str(exc)
                return lambda: self._tamper_unreadable(checkpoint, reason, changes)
            if result is not None and result.intact:
                return None
            return lambda: self._tamper_events(checkpoint, result, changes)

        self._worker.submit(task)

    def _tamper_events(
        self, checkpoint: str, result: VerificationResult | None, changes: list[Change]
    ) -> list[Event]:
        record = self.store.records[checkpoint] if self.store else None
        seal_uid = record.root_digest if record else None
        if result is None:
            items = [(checkpoint, FileActivityType.DELETE, "the whole checkpoint was removed")]
        else:
            items = (
                [
                    (f"{checkpoint}/{n}", FileActivityType.UPDATE, "modified")
                    for n in result.diff.modified
                ]
                + [
                    (f"{checkpoint}/{n}", FileActivityType.CREATE, "added")
                    for n in result.diff.added
                ]
                + [
                    (f"{checkpoint}/{n}", FileActivityType.DELETE, "removed")
                    for n in result.diff.removed
                ]
            )
            if not result.signature_valid:
                items.append((checkpoint, FileActivityType.OTHER, result.reason))
        summary = _summary(result)
        events: list[Event] = []
        for path, activity, what in items:
            actor, evidence = _who_changed(path, changes)
            events.append(
                FileActivity(
                    uid=uuid.uuid4().hex,
                    time=_wall_ms(),
                    device=self._device,
                    activity=activity,
                    actor=actor,
                    file=FileRef(path=event_text(path)),
                    severity=Severity.HIGH,
                    sensor="sealer",
                    seal=SealInfo(
                        status=SealStatus.TAMPERED,
                        seal_uid=seal_uid,
                        detail=f"{what} after sealing; {summary}",
                    ),
                    related_paths=evidence,
                )
            )
        return events

    def _tamper_unreadable(
        self, checkpoint: str, reason: str, changes: list[Change]
    ) -> list[Event]:
        actor, evidence = _who_changed(checkpoint, changes)
        return [
            FileActivity(
                uid=uuid.uuid4().hex,
                time=_wall_ms(),
                device=self._device,
                activity=FileActivityType.OTHER,
                actor=actor,
                file=FileRef(path=event_text(checkpoint)),
                severity=Severity.HIGH,
                sensor="sealer",
                seal=SealInfo(
                    status=SealStatus.UNVERIFIED, detail=f"re-verification failed: {reason}"
                ),
                related_paths=evidence,
            )
        ]

    def _submit_gpu_poll(self) -> None:
        def task() -> Followup | None:
            snapshot = self.gpu.snapshot()
            return lambda: self._gpu_events(snapshot)

        self._worker.submit(task)

    def _gpu_events(self, snapshot: GpuSnapshot) -> list[Event]:
        """An Open of the GPU for each (process, GPU) pair not seen in the last snapshot."""
        holdings = gpu_holdings(snapshot)
        events: list[Event] = [
            FileActivity(
                uid=uuid.uuid4().hex,
                time=_wall_ms(),
                device=self._device,
                activity=FileActivityType.OPEN,
                actor=self._attribute(h.pid, time.monotonic()),
                file=FileRef(path=h.path),
                sensor=h.source,
                gpu=h.gpu,
                related_paths=tuple(sorted({s.path for s in self.sessions.for_pid(h.pid)})),
            )
            for key, h in holdings.items()
            if key not in self._gpu_seen
        ]
        self._gpu_seen = set(holdings)
        return events

    # ------------------------------------------------------------------ the loop

    def _periodic(self, now: float) -> list[Event]:
        events: list[Event] = []
        cfg = self.config
        if now - self._last_tick >= _TICK_S:
            self._last_tick = now
            events += self.pipeline.tick()
            if self.planner is not None:
                wall = _wall_ms()
                for checkpoint in self.planner.due_seals(wall):
                    self.planner.postpone(checkpoint, wall)  # not again until this one reports
                    self._submit_seal(checkpoint)
                for checkpoint, changes in self.planner.due_verifications(wall):
                    self._submit_verify(checkpoint, changes)
            events += self._loss_reports()
        if now - self._last_egress_poll >= cfg.egress_poll.total_seconds():
            self._last_egress_poll = now
            events += [o.event for o in self.egress.poll(_wall_ms())]
        if now - self._last_gpu_poll >= cfg.gpu_poll.total_seconds():
            self._last_gpu_poll = now
            self._submit_gpu_poll()
        return events

    def _reload_canaries(self) -> list[Event]:
        """Pick up canaries planted since start; a broken registry keeps the old one, loudly."""
        path = self.config.resolved_canary_registry
        stamp = _mtime_ns(path)
        if stamp == self._canary_stamp:
            return []
        self._canary_stamp = stamp
        try:
            self.canaries = CanaryRegistry.load(path)
        except ConfigError as exc:
            return [
                health_finding(
                    device=self._device,
                    now_ms=_wall_ms(),
                    title="Canary registry unreadable: keeping the previous canaries",
                    description=str(exc),
                    severity=Severity.HIGH,
                )
            ]
        self.pipeline.canaries = self.canaries
        log.info("canary registry reloaded", canaries=len(self.canaries))
        return []

    def _loss_reports(self) -> list[Event]:
        events: list[Event] = []
        dropped = self.records.dropped
        if dropped > self._queue_dropped_reported:
            lost = dropped - self._queue_dropped_reported
            self._queue_dropped_reported = dropped
            events.append(
                health_finding(
                    device=self._device,
                    now_ms=_wall_ms(),
                    title=f"Agent queue full: {lost} sensor records dropped",
                    description=(
                        f"The pipeline fell behind the sensor and the record queue "
                        f"(size {self.config.queue_size}) dropped {lost} records "
                        f"({dropped} since start)."
                    ),
                    severity=Severity.HIGH,
                )
            )
        refused = self._worker.refused
        if refused > self._worker_refused_reported:
            lost = refused - self._worker_refused_reported
            self._worker_refused_reported = refused
            events.append(
                health_finding(
                    device=self._device,
                    now_ms=_wall_ms(),
                    title=f"Agent worker busy: {lost} seal/copy checks skipped",
                    description=(
                        f"{lost} seal, verification or copy checks were refused because the "
                        "worker queue was full; affected checkpoints are retried, copies not."
                    ),
                    severity=Severity.MEDIUM,
                )
            )
        return events

    def _check_components(self) -> None:
        if self.sensor.failure is not None or not self.sensor.running:
            msg = f"the file sensor stopped: {self.sensor.failure}"
            raise WeightwardenError(msg)
        watcher = self.exec_watcher
        if watcher is not None and watcher.failure is not None:
            msg = f"the exec watcher stopped: {watcher.failure}"
            raise WeightwardenError(msg)

    def _process(self, first_wait: float) -> int:
        """Drain up to one batch of records, run periodic work, spool everything."""
        record = self.records.get(timeout=first_wait)
        # A decoy planted a moment ago must be one before its first open is judged: check the
        # registry (one stat) before every batch, not once a tick.
        events: list[Event] = self._reload_canaries()
        deadline = time.monotonic() + _BATCH_WAIT_S
        handled = 0
        while record is not None:
            try:
                events += self.pipeline.handle(record)
            except Exception:
                log.exception("pipeline failed on a record", kind=record.kind.value)
            handled += 1
            if handled >= _BATCH or time.monotonic() >= deadline:
                break
            record = self.records.get(timeout=0)
        events += self._periodic(time.monotonic())
        for followup in self._worker.drain():
            events += followup()
        if events:
            self._spool(events)
            if self.shipper is not None:
                self.shipper.wake()
        return handled

    def _spool(self, events: list[Event]) -> None:
        """Append a batch; an event that cannot be encoded is replaced by a finding saying so."""
        try:
            self.spool.append(events)
        except (EventFormatError, ValueError):
            kept: list[Event] = []
            for event in events:
                try:
                    canonical_bytes(event)
                except (EventFormatError, ValueError) as exc:
                    log.exception("an event could not be encoded")
                    kept.append(
                        health_finding(
                            device=self._device,
                            now_ms=_wall_ms(),
                            title="An event could not be recorded",
                            description=f"{type(event).__name__} {event.uid}: {exc}",
                            severity=Severity.HIGH,
                        )
                    )
                else:
                    kept.append(event)
            self.spool.append(kept)

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a component dies; return the exit code."""
        self._open_components()
        assert self.status is not None  # noqa: S101 -- set by _open_components
        previous = {
            sig: signal.signal(sig, lambda *_: self._stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._worker.start()
            self_test = self._self_test()
            self._queue_initial_seal_work()
            status = self.status
            startup = health_finding(
                device=self._device,
                now_ms=_wall_ms(),
                title=f"Agent started: {status.line()}",
                description=(
                    f"{status.line()}. Sensor: {status.sensor_detail}. Self-test "
                    f"{'passed' if self_test else 'FAILED: the sensor did not see its own open'}."
                ),
                severity=Severity.INFORMATIONAL if self_test else Severity.HIGH,
            )
            self.spool.append([startup, *self._gpu_events(self._first_gpu)])
            if self.shipper is not None:
                self.shipper.start()
            self._notifier.ready(status.line())
            log.info("agent started", status=status.line(), self_test=self_test)
            while not self._stop.is_set():
                self._process(first_wait=0.2)
                self._check_components()
                self._keepalive()
        except WeightwardenError as exc:
            log.exception("agent stopping on a failure", error=str(exc))
            self._shutdown(drain=True)
            return exc.exit_code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._shutdown(drain=True)
        return 0

    def _keepalive(self) -> None:
        interval = self._notifier.watchdog_interval
        now = time.monotonic()
        if interval is not None and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self._notifier.watchdog()

    def _shutdown(self, *, drain: bool) -> None:
        self._notifier.stopping()
        with contextlib.suppress(Exception):
            self.sensor.stop()
        if drain:
            with contextlib.suppress(Exception):
                while self._process(first_wait=0) > 0:
                    pass
        self._worker.stopping.set()
        if self.shipper is not None:
            self.shipper.stop(5.0)
        if self.exec_watcher is not None:
            self.exec_watcher.stop()
        self.gpu.close()
        if self.store is not None:
            self.store.close()
        self.spool.close()

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (as SIGTERM does)."""
        self._stop.set()


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _newest_mtime_ms(path: Path) -> int:
    newest = 0
    try:
        if path.is_file():
            return path.stat().st_mtime_ns // 1_000_000
        for dirpath, _dirs, files in os.walk(path):
            for f in files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime_ns)  # noqa: PTH116, PTH118
    except OSError:
        return 0
    return newest // 1_000_000


def _who_changed(path: str, changes: list[Change]) -> tuple[Actor, tuple[str, ...]]:
    """The actor of the latest change to ``path`` (or inside it), and the evidence event ids."""
    relevant = [c for c in changes if c.path == path or c.path.startswith(path + "/")]
    chosen = relevant or changes
    evidence = tuple(c.event_uid for c in chosen)
    for change in reversed(chosen):
        if change.actor is not None:
            return change.actor, evidence
    return unknown_actor(), evidence


def _summary(result: VerificationResult | None) -> str:
    if result is None:
        return "checkpoint removed"
    d = result.diff
    return f"{len(d.modified)} modified, {len(d.added)} added, {len(d.removed)} removed"
