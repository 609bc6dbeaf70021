"""The shipping loop: read the spool in order, sign, send, acknowledge what was confirmed."""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from agent.pipeline import health_finding
from agent.shipper._result import Outcome, PinMismatchError, SendResult, ShipperStats, clip
from agent.spool import wall_clock_ms
from weightwarden.batch import Batch, new_batch, seal_batch
from weightwarden.errors import UsageError, WeightwardenError
from weightwarden.events import Device, Severity
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.identity import AgentIdentity
    from agent.shipper._result import Transport
    from agent.spool import Spool, SpooledEvent

__all__ = ["Shipper"]

_OUTAGE_REPORT_AFTER: Final = 3
"""Failed attempts in a row before the collector counts as unavailable (a health event)."""
_MAX_REPORTS: Final = 4
"""Most health events one streak of failures adds (one per kind of failure)."""

log = get_logger("agent.shipper")


@dataclass(slots=True)
class _Streak:
    """Failed attempts since the last confirmation, and which kinds of failure were reported."""

    attempts: int = 0
    unavailable: int = 0
    """Of ``attempts``, how many found the collector unreachable, failing or busy."""
    started: float | None = None
    reported: set[tuple[Outcome, int | None]] = field(default_factory=set)


class Shipper:
    """Ships the spool to the collector from one background thread (see the module doc).

    Args:
        spool: The agent's spool; the shipper reads, acknowledges and appends its health
            events to it.
        agent_id: The agent's identity at the collector (the spool's agent).
        identity: The agent's identity key (:func:`agent.identity.load_or_create_identity`).
        transport: :class:`HttpTransport` or :class:`NatsTransport`.
        batch_size: Most events per batch (halved each time the collector says 413).
        poll_interval: Seconds between spool reads when there is nothing to send.
        clock: Wall-clock milliseconds (``sent_at``, health event times).
        device: The host named in health events (default: this host, this agent).
        backoff_base: First retry delay in seconds; doubles per failed attempt.
        backoff_cap: Longest retry delay in seconds (``Retry-After`` may ask for more,
            up to 5 minutes).
        monotonic: Seconds for measuring outages.
        rng: Source of retry jitter.

    Raises:
        ValueError: ``agent_id`` differs from the spool's, or a bound is not positive.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        agent_id: str,
        identity: AgentIdentity,
        transport: Transport,
        batch_size: int = 1000,
        poll_interval: float = 0.2,
        clock: Callable[[], int] = wall_clock_ms,
        device: Device | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if agent_id != spool.agent_id:
            raise ValueError(f"agent_id {agent_id!r} differs from the spool's {spool.agent_id!r}")
        if batch_size < 1 or poll_interval <= 0 or backoff_base <= 0 or backoff_cap <= 0:
            raise ValueError("batch_size, poll_interval and backoff bounds must be positive")
        self.spool = spool
        self.agent_id = agent_id
        self.transport = transport
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._key = identity.key
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 -- retry jitter, not cryptography
        self._device = device or Device(hostname=socket.gethostname(), agent_id=agent_id)
        self._limit = batch_size
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failure: WeightwardenError | None = None
        self._streak = _Streak()
        self._stats = ShipperStats(acked_seq=0, batch_limit=batch_size)

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the shipping thread (once).

        Raises:
            RuntimeError: Already started.
        """
        if self._thread is not None:
            raise RuntimeError("the shipper was already started")
        self._thread = threading.Thread(target=self._run, name="weightwarden-shipper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds; return whether it ended.

        A batch in flight is finished or abandoned unacknowledged (it is sent again on the
        next start); nothing is lost either way.
        """
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def wake(self) -> None:
        """Read the spool now rather than after ``poll_interval`` (after an append)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the shipping thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> WeightwardenError | None:
        """Why shipping stopped for good (401/403, pin mismatch, a spool error); else None."""
        return self._failure

    def stats(self) -> ShipperStats:
        """Counters since start."""
        with self._lock:
            return self._stats

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            position = self.spool.stats().acked_seq
            self._update(acked_seq=position)
            log.info("shipper started", acked_seq=position, batch_limit=self._limit)
            while not self._stop.is_set():
                events = self.spool.read_batch(after_seq=position, limit=self._limit)
                if not events:
                    self._wake.wait(self.poll_interval)
                    self._wake.clear()
                    continue
                confirmed = self._deliver(events)
                if confirmed is None:
                    break
                position = confirmed
        except Exception as exc:  # the error boundary: surface it, let the daemon decide
            if self._stop.is_set() and isinstance(exc, ValueError):
                return  # the spool closed under a stopping shipper
            log.exception("shipper stopped on an error")
            self._failure = (
                exc
                if isinstance(exc, WeightwardenError)
                else WeightwardenError(f"the shipper stopped on an error: {exc!r}")
            )
        finally:
            try:
                self.transport.close()
            except Exception:  # closing must not hide why the thread ended
                log.warning("closing the transport failed", exc_info=True)

    def _deliver(self, events: list[SpooledEvent]) -> int | None:
        """Send ``events`` until the collector confirms some; return the new acked seq.

        Returns None when shipping must stop (stopping, or a fatal answer).
        """
        while not self._stop.is_set():
            batch = new_batch(
                self.agent_id, [(e.link, e.payload) for e in events], sent_at=self._clock()
            )
            body = seal_batch(batch, self._key)
            result = self.transport.send(batch, body)
            self._update(attempts=self._stats.attempts + 1)
            outcome = result.outcome
            delay: float | None = None
            if outcome in {Outcome.STORED, Outcome.QUARANTINED}:
                confirmed = self._confirm(batch, result)
                if confirmed is not None:
                    return confirmed
                delay = self._backoff(self._streak.attempts)
            elif outcome is Outcome.RETRY:
                self._fail(Outcome.RETRY, result, batch)
                delay = result.retry_after
                if delay is None or (delay == 0 and self._streak.attempts > 1):
                    delay = self._backoff(self._streak.attempts)  # at once only the first time
            elif outcome is Outcome.TOO_LARGE and len(events) > 1:
                events = events[: len(events) // 2]
                self._limit = len(events)
                self._update(batch_limit=self._limit)
                log.warning(
                    "collector said the batch is too large: halving it",
                    batch_limit=self._limit,
                    detail=result.detail,
                )
                continue
            elif outcome in {Outcome.UNAUTHORIZED, Outcome.PIN_MISMATCH}:
                self._fatal(result, batch)
                return None
            else:  # REFUSED, or TOO_LARGE with a single event
                self._fail(Outcome.REFUSED, result, batch)
                delay = self._backoff(self._streak.attempts)
            if delay > 0 and self._stop.wait(delay):
                return None
        return None

    def _confirm(self, batch: Batch, result: SendResult) -> int | None:
        """Acknowledge what the collector confirmed of ``batch``; None if it confirmed none."""
        acked = min(result.acked_seq or 0, batch.last_seq)
        if acked < batch.first_seq:
            self._fail(
                Outcome.REFUSED,
                SendResult(
                    outcome=Outcome.REFUSED,
                    status=result.status,
                    detail=(
                        f"the collector answered {result.outcome.value} with acked_seq "
                        f"{result.acked_seq}, before this batch's first seq {batch.first_seq}: "
                        "nothing of it is confirmed, sending it again"
                    ),
                ),
                batch,
            )
            return None
        # Reports first, then the acknowledgement: once the spool is drained, they shipped.
        if result.outcome is Outcome.QUARANTINED:
            self._report(
                title=f"Collector quarantined batch seq {batch.first_seq}-{batch.last_seq}",
                description=(
                    f"The collector kept the batch as evidence (quarantine id "
                    f"{result.quarantine_id or 'unknown'}) and confirmed the events up to seq "
                    f"{acked}: {result.detail}"
                ),
                severity=Severity.HIGH,
            )
            log.warning(
                "collector quarantined a batch",
                first_seq=batch.first_seq,
                last_seq=batch.last_seq,
                acked_seq=acked,
                quarantine_id=result.quarantine_id,
                detail=result.detail,
            )
        self._recovered()
        self.spool.ack(acked)
        confirmed_events = acked - batch.first_seq + 1
        stats = self._stats
        self._update(
            acked_seq=acked,
            batches=stats.batches + 1,
            events=stats.events + confirmed_events,
            duplicates=stats.duplicates + result.duplicates,
            quarantined=stats.quarantined + (result.outcome is Outcome.QUARANTINED),
            last_error=None,
            last_success_ms=self._clock(),
        )
        log.debug(
            "batch confirmed",
            first_seq=batch.first_seq,
            acked_seq=acked,
            stored=result.stored,
            duplicates=result.duplicates,
        )
        return acked

    def _fail(self, kind: Outcome, result: SendResult, batch: Batch) -> None:
        """Count a failed attempt and report each kind of failure once per streak.

        Unavailability (RETRY) is reported after 3 attempts in a row, a refusal at once
        (one report per HTTP status), at most :data:`_MAX_REPORTS` per streak.
        """
        streak = self._streak
        if streak.started is None:
            streak.started = self._monotonic()
        streak.attempts += 1
        stats = self._stats
        if kind is Outcome.RETRY:
            streak.unavailable += 1
            self._update(retries=stats.retries + 1, last_error=result.detail)
        else:
            self._update(refusals=stats.refusals + 1, last_error=result.detail)
        key = (kind, None if kind is Outcome.RETRY else result.status)
        due = streak.unavailable >= _OUTAGE_REPORT_AFTER if kind is Outcome.RETRY else True
        if not due or key in streak.reported or len(streak.reported) >= _MAX_REPORTS:
            log.debug("send attempt failed", outcome=result.outcome.value, detail=result.detail)
            return
        streak.reported.add(key)
        if kind is Outcome.RETRY:
            title = "Collector unavailable: events are held in the spool"
            description = (
                f"{streak.unavailable} attempts to send seq {batch.first_seq}-{batch.last_seq} "
                f"failed; retrying with backoff. Last error: {result.detail}"
            )
            severity = Severity.MEDIUM
        else:
            title = f"Collector refused batch seq {batch.first_seq}-{batch.last_seq}"
            description = (
                f"{result.detail}. The batch is kept in the spool and sent again with backoff; "
                "nothing is skipped."
            )
            severity = Severity.HIGH
        log.warning(title, detail=result.detail, attempts=streak.attempts)
        self._report(title=title, description=description, severity=severity)

    def _recovered(self) -> None:
        """A batch was confirmed: end the streak, reporting its end if its start was reported."""
        streak, self._streak = self._streak, _Streak()
        if not streak.reported or streak.started is None:
            return
        seconds = self._monotonic() - streak.started
        title = "Collector confirming batches again"
        description = (
            f"After {streak.attempts} failed attempts over {seconds:.0f} s the collector "
            "confirmed a batch; the spool is draining in order."
        )
        log.info(title, attempts=streak.attempts, seconds=round(seconds, 1))
        self._report(title=title, description=description, severity=Severity.INFORMATIONAL)

    def _fatal(self, result: SendResult, batch: Batch) -> None:
        if result.outcome is Outcome.PIN_MISMATCH:
            error: WeightwardenError = PinMismatchError(result.detail)
            title = "Collector certificate does not match the pin: shipping stopped"
        else:
            error = UsageError(
                f"the collector refused this agent's batches ({result.detail}): its enrollment "
                "was revoked or its identity key changed. Re-enroll it with a new token "
                "(weightwarden collector enroll --host NAME); events stay in the spool"
            )
            title = "Collector refused this agent: shipping stopped until it is re-enrolled"
        self._update(last_error=result.detail)
        self._report(
            title=title,
            description=f"{error} (first unsent seq {batch.first_seq})",
            severity=Severity.CRITICAL,
        )
        log.error(title, detail=result.detail, first_unsent_seq=batch.first_seq)
        self._failure = error

    def _report(self, *, title: str, description: str, severity: Severity) -> None:
        """Append a health finding to the spool (it ships like any other event)."""
        finding = health_finding(
            device=self._device,
            now_ms=self._clock(),
            title=title,
            description=clip(description),
            severity=severity,
        )
        try:
            stored = self.spool.append([finding])
        except (WeightwardenError, ValueError):
            log.warning("could not spool a shipper health event", title=title, exc_info=True)
            return
        if stored:
            self._update(health_events=self._stats.health_events + 1)

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(max(attempts - 1, 0), 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _update(self, **changes: Any) -> None:  # noqa: ANN401 -- ShipperStats fields
        with self._lock:
            self._stats = replace(self._stats, **changes)
