"""NATS JetStream ingest: collector workers that share one durable pull consumer.

Agents publish each signed batch (:mod:`weightwarden.batch`) to
``{subject_prefix}.{agent}`` in one JetStream stream, with ``Nats-Msg-Id:
{agent_id}:{first_seq}-{last_seq}`` (``agent.shipper.NatsTransport``); the stream's PubAck
is the agent's confirmation, so from then on the stream holds the only copy until a
collector has stored it. Collector workers, in one process or many, bind to one durable
pull consumer (competing consumers: each message goes to one worker at a time) and hand
every message to the same :class:`~collector.ingest.Ingestor` as the HTTP API, so the
stored result is the same.

What a worker does with each message
------------------------------------
======================================== ==================================================
200 (stored, or every event already was)  ``ack``, after the store committed
200 with a gap reported                   ``ack`` (events stored, batch quarantined, alert)
409 (fork, replay, late: quarantined)     ``ack``: the batch is kept as evidence in the store
429 (the agent's head kept moving)        ``nak`` with the ``retry_after`` delay
400, 401, 403, 413 (refused)              ``term``: never redelivered; counted and logged
the store failed (``StoreError`` ...)      ``nak`` with exponential backoff (capped); never
                                          dropped, however long the database is down
an unexpected error (the error boundary)  the same as a store failure, counted as an error
======================================== ==================================================

Out-of-order batches
--------------------
An agent publishes one batch at a time, so its batches sit in the stream in order; but
several workers hold several batches of one agent at once. A batch that starts past its
agent's stored head + 1 is kept aside by the worker that fetched it (unacknowledged, with
``in_progress`` beats so JetStream does not redeliver it), and stored, in order, as soon
as the head reaches it: right after this worker stored the batch before it, or at the
next look at the heads (every ``poll_interval`` while anything waits), when another
worker did. Ingest is let to store it with a gap (stored, alerted, quarantined as
evidence) only when nothing can fill the gap: every earlier message of the stream is
acknowledged (the consumer's ack floor), or the batch has waited ``hold_for`` seconds (an
earlier message is stuck). A worker keeps at most ``park_limit`` batches aside; more are
``nak``-ed with ``hold_delay`` and come back later. When the store fails, every batch kept
aside goes back to the stream with the failed one, so an outage never turns a wait into a
false gap. The sequence number used for these decisions is read from the batch before its
signature is checked: a forged claim can only delay its own message; what is stored is
decided by ingest, after the signature verified.

A message redelivered by JetStream (``num_delivered`` > 1: a worker died, or its ack was
lost, after the store committed) is ingested with ``redelivery=True``, so the same nonce
again is a duplicate there, not a replay.

The stream and the consumer
---------------------------
:func:`ensure_stream` creates the stream with file storage, work-queue retention (a
batch is deleted once a worker acknowledged it) and ``discard=new`` (a full stream
refuses new batches, which the agents keep in their spools, rather than dropping old
ones that no collector has stored), or checks an existing one. The consumer is created
with explicit acks and unlimited deliveries (``max_deliver`` -1): a bounded
``max_deliver`` would silently abandon a batch after a long database outage, so an
existing consumer with one is refused (:class:`~weightwarden.errors.ConfigError`).

Threads
-------
Each :class:`NatsWorker` runs its own asyncio loop in its own thread, and calls the
ingestor (blocking database I/O) in one helper thread, so the NATS connection stays
served while a batch is stored; a batch that takes long is kept from redelivery with
``in_progress`` acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from collector.ingest import IngestLimits, Ingestor
from weightwarden.batch import MAGIC, BatchError, read_envelope
from weightwarden.errors import ConfigError, UsageError, WeightwardenError
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.api import ConsumerInfo, StreamInfo

    from collector.ingest import IngestResult
    from collector.store import Store

__all__ = [
    "DEFAULT_DURABLE",
    "DEFAULT_SUBJECT_PREFIX",
    "NatsWorker",
    "NatsWorkerStats",
    "ensure_stream",
    "serve_nats",
]

log = get_logger("collector.nats")

T = TypeVar("T")

DEFAULT_SUBJECT_PREFIX: Final = "weightwarden.batches"
"""The subject prefix agents publish under (``agent.shipper.NatsTransport``'s default)."""
DEFAULT_DURABLE: Final = "weightwarden-collector"
"""The durable consumer every collector worker binds to, unless told otherwise."""

_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")
_STREAM_NAME_IN_USE: Final = 10058
_REFUSED: Final = frozenset({400, 401, 403, 413})
_ONE_BY_ONE: Final = 16
"""Up to this many agents with waiting batches, their heads are read one query each."""
_U64: Final = struct.Struct(">Q")
_AFTER_AGENT_ID: Final = 16 + 8 + 4
"""Nonce, ``sent_at`` and event count: between the agent id and the first event's seq."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsWorkerStats:
    """What a worker did since it started (or several workers, summed).

    Attributes:
        fetched: Messages received (redeliveries included).
        batches: Messages acknowledged after ingest answered 200.
        stored: Events newly stored.
        duplicates: Events that were already stored (acknowledged, not stored again).
        held: Times a batch had to wait for an earlier batch of its agent.
        gaps: Batches stored with a gap reported (an integrity alert and a quarantine).
        quarantined: Batches ingest kept as evidence with a 409 (fork, replay, late).
        refused: Messages terminated because ingest refused them (400, 401, 403, 413).
        retried: Messages ``nak``-ed because the store failed or was busy (429).
        errors: Unexpected errors caught at the per-message boundary (also retried).
        last_error: The most recent failure, one line.
    """

    fetched: int = 0
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    held: int = 0
    gaps: int = 0
    quarantined: int = 0
    refused: int = 0
    retried: int = 0
    errors: int = 0
    last_error: str | None = None

    def __add__(self, other: NatsWorkerStats) -> NatsWorkerStats:
        """The counts of two workers together (the later ``last_error`` wins if set)."""
        counts = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in dataclasses.fields(self)
            if f.name != "last_error"
        }
        return NatsWorkerStats(**counts, last_error=other.last_error or self.last_error)


# -- the stream ------------------------------------------------------------------------------


def _covers(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` matches every subject ``subject`` matches."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, part in enumerate(want):
        if part == ">":
            return index < len(have)
        if index >= len(have) or have[index] == ">":
            return False
        if part not in {"*", have[index]}:
            return False
    return len(want) == len(have)


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: Sequence[str],
    *,
    duplicate_window: float,
) -> StreamInfo:
    """Create the batch stream, or check that the existing one keeps batches safely.

    A new stream gets file storage, work-queue retention, ``discard=new`` and the
    duplicate window (the span within which JetStream drops a resend with the same
    ``Nats-Msg-Id``). An existing stream must listen on ``subjects``, store on file and
    not expire or discard batches no collector has stored yet; a different duplicate
    window is logged, not changed.

    Args:
        js: A JetStream context.
        name: The stream name.
        subjects: Subjects the stream must listen on (``weightwarden.batches.>``).
        duplicate_window: Seconds within which a resend is dropped by the stream.

    Returns:
        The stream's info, as created or found.

    Raises:
        ConfigError: The existing stream does not listen on ``subjects``, keeps batches
            in memory, or may delete batches before a collector stored them (``max_age``,
            or limits with ``discard=old``).
        WeightwardenError: JetStream refused or did not answer (the message says which).
    """
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        config = StreamConfig(
            name=name,
            description="weightwarden signed batches from agents, until a collector stored them",
            subjects=list(subjects),
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            duplicate_window=duplicate_window,
        )
        try:
            info = await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise _js_error(f"create JetStream stream {name}", exc) from exc
            info = await js.stream_info(name)  # another worker created it meanwhile
        else:
            log.info("created JetStream stream", stream=name, subjects=list(subjects))
            return info
    except (nats.errors.Error, OSError) as exc:
        raise _js_error(f"read JetStream stream {name}", exc) from exc
    _check_stream(info, name, subjects, duplicate_window)
    return info


def _check_stream(
    info: StreamInfo, name: str, subjects: Sequence[str], duplicate_window: float
) -> None:
    config = info.config
    listening = config.subjects or []
    missing = [s for s in subjects if not any(_covers(p, s) for p in listening)]
    if missing:
        raise ConfigError(
            f"JetStream stream {name} listens on {', '.join(listening) or 'nothing'}, not on "
            f"{', '.join(missing)}: add the subject to the stream, or name the stream that "
            "listens on the agents' subject prefix"
        )
    if config.storage != StorageType.FILE:
        raise ConfigError(
            f"JetStream stream {name} keeps messages in memory: a restart of nats-server "
            "would lose batches the agents already trimmed; use a stream with file storage"
        )
    limited = any(v not in (None, -1, 0) for v in (config.max_msgs, config.max_bytes))
    discard = DiscardPolicy(config.discard or DiscardPolicy.OLD).value
    if config.max_age or (limited and discard != DiscardPolicy.NEW.value):
        raise ConfigError(
            f"JetStream stream {name} may delete batches no collector has stored yet "
            f"(max_age {config.max_age or 0:g} s, discard {discard}): remove max_age and "
            "use discard=new with any size limit"
        )
    if config.retention == RetentionPolicy.LIMITS:
        log.warning(
            "JetStream stream keeps every batch after it is stored (retention limits); "
            "work-queue retention deletes it once acknowledged",
            stream=name,
        )
    if abs((config.duplicate_window or 0) - duplicate_window) > 1e-3:  # noqa: PLR2004 -- a ms
        log.warning(
            "JetStream stream has another duplicate window; keeping it",
            stream=name,
            duplicate_window=config.duplicate_window,
            wanted=duplicate_window,
        )


def _js_error(doing: str, exc: BaseException) -> WeightwardenError:
    what = " ".join(str(exc).split()) or type(exc).__name__
    return WeightwardenError(f"cannot {doing}: {what} (is nats-server running with JetStream?)")


def _claimed_start(body: bytes) -> tuple[str, int] | None:
    """The agent and first seq a batch claims, read *before* its signature is checked.

    Used only to decide whether to wait for an earlier batch (see the module doc); the
    offsets are those of :mod:`weightwarden.batch`'s documented framing. None when the
    body is not a batch (ingest refuses it).
    """
    try:
        signed = read_envelope(body)
    except BatchError:
        return None
    data = signed.batch_bytes
    offset = len(MAGIC) + 2 + len(signed.agent_id.encode("utf-8")) + _AFTER_AGENT_ID
    if len(data) < offset + _U64.size:
        return None
    return signed.agent_id, _U64.unpack_from(data, offset)[0]


# -- the worker ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ingested:
    result: IngestResult


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ahead:
    """The batch starts past the agent's stored head + 1."""

    agent_id: str
    first_seq: int
    head_seq: int


@dataclass(slots=True, kw_only=True, eq=False)
class _Parked:
    """A batch kept aside (unacknowledged) until its agent's head reaches it."""

    msg: Msg
    agent_id: str
    first_seq: int
    stream_seq: int
    delivered: int
    since: float
    """When it started waiting here (monotonic seconds)."""
    beat: float
    """When JetStream was last told it is in hand."""


class NatsWorker:
    """One collector worker on the shared durable pull consumer (see the module doc).

    Args:
        servers: NATS URLs (``nats://127.0.0.1:4222``), one string or several.
        stream: The JetStream stream the agents publish to.
        durable: The durable consumer every worker binds to (created if missing).
        ingestor: Verifies and stores batches (shared with other workers is fine).
        store: The store ``ingestor`` writes to; read for the agents' chain heads.
        subject_prefix: The agents' subject prefix; the stream and consumer listen on
            ``{subject_prefix}.>``.
        batch: Most messages fetched at once.
        ack_wait: Seconds JetStream waits for an acknowledgement before it redelivers
            (set when this worker creates the consumer; an existing one keeps its own).
        max_ack_pending: Most messages delivered and not yet acknowledged, all workers
            together (set when the consumer is created).
        create_stream: Create (or check) the stream with :func:`ensure_stream`; without
            it the stream must exist.
        duplicate_window: Seconds within which the stream drops a resend (new stream).
        park_limit: Most batches this worker keeps aside at once, waiting for an earlier
            batch of their agent; more are ``nak``-ed with ``hold_delay``. Batches kept
            aside count against the consumer's ``max_ack_pending``: keep workers times
            ``park_limit`` well below it.
        hold_delay: Seconds before JetStream redelivers a batch that found no room to
            wait here.
        hold_for: Seconds a batch waits here while earlier messages are still
            unacknowledged, before ingest is let to report the gap.
        poll_interval: Seconds between looks at the heads of waiting batches' agents
            (while any batch waits).
        backoff_base: First delay, in seconds, after a store failure; doubles with each
            delivery up to ``backoff_cap``.
        backoff_cap: Longest delay after a store failure, in seconds.
        fetch_timeout: Seconds one fetch waits for messages (also how long :meth:`stop`
            may wait for a fetch in progress).
        connect_timeout: Seconds to wait for the NATS connection and each JetStream call.
        name: Names the connection and the thread (``nats-server`` connection lists).
        monotonic: Seconds, for hold clocks.

    Raises:
        UsageError: No server, or a stream, durable or subject prefix NATS cannot use.
        ValueError: A bound is not positive.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        stream: str,
        durable: str = DEFAULT_DURABLE,
        ingestor: Ingestor,
        store: Store,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        batch: int = 10,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
        create_stream: bool = True,
        duplicate_window: float = 120.0,
        park_limit: int = 200,
        hold_delay: float = 0.5,
        hold_for: float = 60.0,
        poll_interval: float = 0.02,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        fetch_timeout: float = 1.0,
        connect_timeout: float = 5.0,
        name: str = "weightwarden-collector",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers or not all(s.strip() for s in self.servers):
            raise UsageError("NATS servers: name at least one URL like nats://127.0.0.1:4222")
        for what, value in (("stream", stream), ("durable consumer", durable)):
            if not _NAME.fullmatch(value):
                raise UsageError(f"NATS {what} name {value!r} must be letters, digits, - or _")
        prefix = subject_prefix.strip(".")
        if not prefix or any(c in prefix for c in " *>\t\r\n") or ".." in prefix:
            raise UsageError(
                f"NATS subject prefix {subject_prefix!r} must be dot-separated tokens "
                "without wildcards or spaces"
            )
        bounds = (
            batch,
            ack_wait,
            max_ack_pending,
            duplicate_window,
            park_limit,
            hold_delay,
            hold_for,
            poll_interval,
            backoff_base,
            backoff_cap,
            fetch_timeout,
            connect_timeout,
        )
        if min(bounds) <= 0:
            raise ValueError("NatsWorker bounds, delays and timeouts must be positive")
        self.stream = stream
        self.durable = durable
        self.subject_prefix = prefix
        self.filter_subject = f"{prefix}.>"
        self.batch = batch
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.create_stream = create_stream
        self.duplicate_window = duplicate_window
        self.park_limit = park_limit
        self.hold_delay = hold_delay
        self.hold_for = hold_for
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.fetch_timeout = fetch_timeout
        self.connect_timeout = connect_timeout
        self.name = name
        self._ingestor = ingestor
        self._store = store
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stats = NatsWorkerStats()
        self._failure: WeightwardenError | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._parked: dict[str, list[_Parked]] = {}
        self._parked_count = 0
        self._floor_checked = 0.0
        self._next_look = 0.0
        self._consumer_ack_wait = ack_wait

    # -- public ----------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Connect, create or check the stream and consumer, and start consuming.

        Returns once the worker is bound to the consumer.

        Args:
            timeout: Seconds to wait for that (default: long enough for a connection
                attempt to every server and the JetStream calls, each ``connect_timeout``).

        Raises:
            RuntimeError: Already started.
            ConfigError: The stream or consumer is configured in a way that loses batches.
            WeightwardenError: NATS could not be reached, or JetStream refused.
        """
        if self._thread is not None:
            raise RuntimeError("the NATS worker was already started")
        self._thread = threading.Thread(target=self._main, name=f"nats-{self.name}", daemon=True)
        self._thread.start()
        calls = len(self.servers) + 5  # connecting; stream, consumer, bind (and a second)
        wait = self.connect_timeout * calls + 1 if timeout is None else timeout
        if not self._ready.wait(wait):
            self.stop(self.fetch_timeout + 1)
            raise WeightwardenError(
                f"the NATS worker was not ready within {wait:g} s "
                f"(servers {', '.join(self.servers)})"
            )
        if self._failure is not None:
            self._thread.join(self.connect_timeout)
            raise self._failure

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the message in hand; return whether the thread ended within ``timeout``.

        The message being ingested is finished and acknowledged; messages fetched and not
        yet started, and batches kept aside, are ``nak``-ed so another worker takes them
        at once.
        """
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(wake.set)
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the worker's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> WeightwardenError | None:
        """Why the worker stopped on its own (it cannot connect, configure or go on)."""
        return self._failure

    def stats(self) -> NatsWorkerStats:
        """Counters since start."""
        with self._lock:
            return self._stats

    # -- the thread ------------------------------------------------------------------------

    def _main(self) -> None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ingest-{self.name}")
        try:
            asyncio.run(self._run(executor))
        except WeightwardenError as exc:
            self._failure = exc
        except Exception as exc:  # the worker's error boundary: surface it, do not vanish
            log.exception("NATS worker stopped on an error", worker=self.name)
            self._failure = WeightwardenError(f"the NATS worker stopped on an error: {exc!r}")
        finally:
            executor.shutdown(wait=True)
            self._ready.set()
            if self._failure is not None:
                log.error("NATS worker stopped", worker=self.name, error=str(self._failure))

    async def _run(self, executor: ThreadPoolExecutor) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        client = await self._connect()
        try:
            js = client.jetstream(timeout=self.connect_timeout)
            if self.create_stream:
                await ensure_stream(
                    js, self.stream, [self.filter_subject], duplicate_window=self.duplicate_window
                )
            consumer = await self._ensure_consumer(js)
            self._consumer_ack_wait = consumer.config.ack_wait or self.ack_wait
            sub = await js.pull_subscribe_bind(consumer=self.durable, stream=self.stream)
            log.info(
                "NATS worker consuming",
                worker=self.name,
                stream=self.stream,
                durable=self.durable,
                subjects=self.filter_subject,
                ack_wait=self._consumer_ack_wait,
            )
            self._ready.set()
            await self._consume(js, sub, executor)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=self.connect_timeout)

    async def _connect(self) -> NatsClient:
        """Connect (each server tried about once); later losses reconnect without end."""

        async def on_error(exc: Exception) -> None:
            log.debug("NATS connection error", worker=self.name, error=_one_line(exc))

        async def on_disconnected() -> None:
            if not self._stopping.is_set():  # closing the connection disconnects it too
                log.warning("NATS connection lost; reconnecting", worker=self.name)

        async def on_reconnected() -> None:
            log.info("NATS connection restored", worker=self.name)

        try:
            return await asyncio.wait_for(
                nats.connect(
                    servers=self.servers,
                    name=self.name,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                ),
                timeout=self.connect_timeout * len(self.servers) + 1,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise WeightwardenError(
                f"cannot connect to NATS {', '.join(self.servers)}: "
                f"{_one_line(exc) if str(exc) else 'no answer'} "
                "(check the URL and that nats-server is running)"
            ) from exc

    async def _ensure_consumer(self, js: JetStreamContext) -> ConsumerInfo:
        """The durable pull consumer, created if missing, checked if found."""
        info: ConsumerInfo
        try:
            try:
                info = await js.consumer_info(self.stream, self.durable)
            except nats.js.errors.NotFoundError:
                config = ConsumerConfig(
                    durable_name=self.durable,
                    description="weightwarden collector workers",
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait,
                    max_deliver=-1,
                    max_ack_pending=self.max_ack_pending,
                    filter_subject=self.filter_subject,
                )
                try:
                    created: ConsumerInfo = await js.add_consumer(self.stream, config)
                except nats.js.errors.NotFoundError:
                    raise  # no such stream
                except nats.js.errors.APIError as exc:  # created by another worker meanwhile?
                    try:
                        info = await js.consumer_info(self.stream, self.durable)
                    except nats.js.errors.NotFoundError:
                        raise _js_error(
                            f"create consumer {self.durable} on stream {self.stream}", exc
                        ) from exc
                else:
                    return created
        except nats.js.errors.NotFoundError as exc:
            raise ConfigError(
                f"JetStream stream {self.stream} does not exist: create it (or let the worker "
                "create it: drop --no-create-stream)"
            ) from exc
        except (nats.errors.Error, OSError) as exc:
            raise _js_error(f"create consumer {self.durable} on {self.stream}", exc) from exc
        self._check_consumer(info)
        return info

    def _check_consumer(self, info: ConsumerInfo) -> None:
        config = info.config
        where = f"JetStream consumer {self.durable} on stream {self.stream}"
        if config.deliver_subject:
            raise ConfigError(f"{where} is a push consumer; workers need a pull consumer")
        if config.ack_policy not in (None, AckPolicy.EXPLICIT):
            raise ConfigError(f"{where} does not use explicit acks; delete and recreate it")
        if config.max_deliver not in (None, -1, 0):
            raise ConfigError(
                f"{where} gives up on a message after {config.max_deliver} deliveries, which "
                "would drop batches during a long database outage: set max_deliver to -1"
            )
        subjects = [s for s in [config.filter_subject, *(config.filter_subjects or [])] if s]
        if subjects and not any(_covers(s, self.filter_subject) for s in subjects):
            raise ConfigError(
                f"{where} filters {', '.join(subjects)}, not {self.filter_subject}: use "
                "another durable name, or the subject prefix the agents publish under"
            )

    async def _consume(
        self,
        js: JetStreamContext,
        sub: JetStreamContext.PullSubscription,
        executor: ThreadPoolExecutor,
    ) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                if self._parked_count and self._monotonic() >= self._next_look:
                    await self._service_parked(js, executor)
                    self._next_look = self._monotonic() + self.poll_interval
                wait = self.poll_interval if self._parked_count else self.fetch_timeout
                try:
                    messages = await sub.fetch(self.batch, timeout=wait)
                except TimeoutError:  # nats.errors.TimeoutError too: nothing to fetch
                    failures = 0
                    continue
                except (nats.errors.Error, OSError) as exc:
                    failures += 1
                    self._count(last_error=f"fetch: {_one_line(exc)}")
                    await self._pause(self._backoff(failures))
                    continue
                failures = 0
                self._count(fetched=len(messages))
                for index, msg in enumerate(messages):
                    if self._stopping.is_set():
                        await self._give_back(messages[index:])
                        break
                    await self._handle(js, msg, executor)
        finally:
            parked = [p.msg for queue in self._parked.values() for p in queue]
            self._parked.clear()
            self._parked_count = 0
            await self._give_back(parked)

    async def _give_back(self, messages: Sequence[Msg]) -> None:
        """``nak`` without delay: another worker takes them at once."""
        for msg in messages:
            with contextlib.suppress(Exception):
                await msg.nak()

    async def _pause(self, seconds: float) -> None:
        wake = self._wake
        if wake is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

    # -- one message -----------------------------------------------------------------------

    async def _handle(self, js: JetStreamContext, msg: Msg, executor: ThreadPoolExecutor) -> None:
        """Ingest one fetched message, or keep it aside; the per-message error boundary."""
        delivered = 1
        try:
            metadata = msg.metadata
            delivered = metadata.num_delivered
            body = msg.data or b""
            redelivery = delivered > 1
            outcome = await self._in_thread(
                msg, executor, lambda: self._first_pass(body, redelivery=redelivery)
            )
            if isinstance(outcome, _Ahead):
                if await self._nothing_earlier(js, metadata.sequence.stream, force=True):
                    await self._ingest_and_answer(msg, executor, delivered)
                else:
                    await self._hold(msg, outcome, metadata.sequence.stream, delivered)
                return
            await self._answer(msg, outcome.result, delivered)
            if outcome.result.agent_id in self._parked:
                await self._drain(outcome.result.agent_id, outcome.result.acked_seq, executor)
        except Exception as exc:  # noqa: BLE001 -- the per-message boundary; _failed logs it
            await self._failed(msg, delivered, exc)

    async def _failed(self, msg: Msg, delivered: int, exc: Exception) -> None:
        """Send the message back with backoff; a store failure sends every waiting one back."""
        if isinstance(exc, WeightwardenError):  # StoreError and kin: the database fails
            detail, error = f"store: {_one_line(exc)}", False
        else:
            log.error("NATS message failed", worker=self.name, exc_info=exc)
            detail, error = f"{type(exc).__name__}: {_one_line(exc)}", True
        delay = self._backoff(delivered)
        self._count(retried=int(not error), errors=int(error), last_error=detail)
        log.warning(
            "batch not stored; redelivery later", worker=self.name, error=detail, delay=delay
        )
        with contextlib.suppress(Exception):  # if even the nak fails, ack_wait redelivers it
            await msg.nak(delay=delay)
        # An outage restarts every wait: what waited here goes back to the stream, so no
        # batch is later mistaken for one after a gap because its predecessor was stuck.
        parked = [p.msg for queue in self._parked.values() for p in queue]
        self._parked.clear()
        self._parked_count = 0
        for other in parked:
            with contextlib.suppress(Exception):
                await other.nak(delay=delay)

    async def _in_thread(self, msg: Msg, executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        """Run blocking ``call`` in the ingest thread; tell JetStream the message is in hand."""
        future = asyncio.get_running_loop().run_in_executor(executor, call)
        beat = max(self._consumer_ack_wait / 3, 0.05)
        while True:
            done, _ = await asyncio.wait({future}, timeout=beat)
            if done:
                return future.result()
            with contextlib.suppress(Exception):
                await msg.in_progress()

    def _first_pass(self, body: bytes, *, redelivery: bool) -> _Ingested | _Ahead:
        """Ingest the batch unless it starts past the agent's head + 1 (in the ingest thread)."""
        claim = _claimed_start(body)
        if claim is not None:
            agent_id, first_seq = claim
            record = self._store.agent(agent_id)
            if record is not None and record.revoked_at is None and first_seq > record.head_seq + 1:
                return _Ahead(agent_id=agent_id, first_seq=first_seq, head_seq=record.head_seq)
        return _Ingested(result=self._ingest(body, redelivery=redelivery))

    def _ingest(self, body: bytes, *, redelivery: bool) -> IngestResult:
        return self._ingestor.ingest(body, redelivery=redelivery)

    def _heads(self, agents: Sequence[str]) -> dict[str, int]:
        """The stored head of each agent (0 if unknown; ingest decides what that means)."""
        if len(agents) > _ONE_BY_ONE:
            known = {r.agent_id: r.head_seq for r in self._store.agents()}
            return {agent_id: known.get(agent_id, 0) for agent_id in agents}
        heads = {}
        for agent_id in agents:
            record = self._store.agent(agent_id)
            heads[agent_id] = record.head_seq if record is not None else 0
        return heads

    async def _ingest_and_answer(
        self, msg: Msg, executor: ThreadPoolExecutor, delivered: int
    ) -> IngestResult:
        body = msg.data or b""
        result = await self._in_thread(
            msg, executor, lambda: self._ingest(body, redelivery=delivered > 1)
        )
        await self._answer(msg, result, delivered)
        return result

    async def _nothing_earlier(self, js: JetStreamContext, stream_seq: int, *, force: bool) -> bool:
        """Whether every message before ``stream_seq`` is acknowledged (the ack floor).

        Unless ``force``, asks JetStream at most once per ``hold_delay`` and otherwise
        answers False (keep waiting).
        """
        now = self._monotonic()
        if not force and now - self._floor_checked < self.hold_delay:
            return False
        self._floor_checked = now
        info = await js.consumer_info(self.stream, self.durable)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        return bool(floor >= stream_seq - 1)

    async def _hold(self, msg: Msg, ahead: _Ahead, stream_seq: int, delivered: int) -> None:
        """Keep a batch aside until its agent's head reaches it, or ``nak`` it when full."""
        self._count(held=1)
        if self._parked_count >= self.park_limit:
            await msg.nak(delay=self.hold_delay)
            return
        now = self._monotonic()
        queue = self._parked.setdefault(ahead.agent_id, [])
        queue.append(
            _Parked(
                msg=msg,
                agent_id=ahead.agent_id,
                first_seq=ahead.first_seq,
                stream_seq=stream_seq,
                delivered=delivered,
                since=now,
                beat=now,
            )
        )
        queue.sort(key=lambda p: (p.first_seq, p.stream_seq))
        self._parked_count += 1
        log.debug(
            "batch ahead of its agent's head: waiting",
            worker=self.name,
            agent_id=ahead.agent_id,
            first_seq=ahead.first_seq,
            head_seq=ahead.head_seq,
        )

    async def _service_parked(self, js: JetStreamContext, executor: ThreadPoolExecutor) -> None:
        """Store waiting batches whose turn came; let ingest report gaps nothing will fill."""
        try:
            heads = await self._in_thread_plain(executor, lambda: self._heads(list(self._parked)))
        except Exception as exc:  # noqa: BLE001 -- the store failed: _failed logs it, sends all back
            first = next(iter(self._parked.values()))[0]
            self._unpark(first)
            await self._failed(first.msg, first.delivered, exc)
            return
        now = self._monotonic()
        for agent_id, head in heads.items():
            await self._drain(agent_id, head, executor)
            queue = self._parked.get(agent_id)
            if not queue:
                continue
            first = queue[0]
            expired = now - first.since >= self.hold_for
            if expired or await self._nothing_earlier(js, first.stream_seq, force=False):
                if expired:
                    log.warning(
                        "batch waited too long for an earlier one; ingest reports the gap",
                        worker=self.name,
                        agent_id=agent_id,
                        first_seq=first.first_seq,
                        head_seq=head,
                    )
                self._unpark(first)
                result = await self._guarded(first, executor)
                if result is None:
                    return
                await self._drain(agent_id, result.acked_seq, executor)
        beat = self._consumer_ack_wait / 3
        for queue in self._parked.values():
            for waiting in queue:
                if now - waiting.beat >= beat:
                    waiting.beat = now
                    with contextlib.suppress(Exception):
                        await waiting.msg.in_progress()

    async def _drain(
        self, agent_id: str | None, head: int | None, executor: ThreadPoolExecutor
    ) -> None:
        """Ingest, in order, the waiting batches of ``agent_id`` that now follow its head."""
        queue = self._parked.get(agent_id) if agent_id is not None else None
        while queue and head is not None and queue[0].first_seq <= head + 1:
            waiting = queue[0]
            self._unpark(waiting)
            result = await self._guarded(waiting, executor)
            if result is None:
                return
            head = max(head, result.acked_seq or 0)
            queue = self._parked.get(waiting.agent_id)

    async def _guarded(self, waiting: _Parked, executor: ThreadPoolExecutor) -> IngestResult | None:
        """Ingest a batch that waited here; None if it failed (and was sent back)."""
        try:
            return await self._ingest_and_answer(waiting.msg, executor, waiting.delivered)
        except Exception as exc:  # noqa: BLE001 -- the per-message boundary; _failed logs it
            await self._failed(waiting.msg, waiting.delivered, exc)
            return None

    def _unpark(self, waiting: _Parked) -> None:
        queue = self._parked.get(waiting.agent_id)
        if queue is None or waiting not in queue:
            return
        queue.remove(waiting)
        self._parked_count -= 1
        if not queue:
            del self._parked[waiting.agent_id]

    async def _in_thread_plain(self, executor: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    async def _answer(self, msg: Msg, result: IngestResult, delivered: int) -> None:
        status = result.status
        if status == 200:  # noqa: PLR2004 -- HTTP statuses are the ingest contract
            await msg.ack()
            gap = result.quarantine_id is not None
            self._count(
                batches=1, stored=result.stored, duplicates=result.duplicates, gaps=int(gap)
            )
            (log.warning if gap else log.debug)(
                "batch ingested",
                worker=self.name,
                agent_id=result.agent_id,
                acked_seq=result.acked_seq,
                stored=result.stored,
                duplicates=result.duplicates,
                quarantine_id=result.quarantine_id,
                delivered=delivered,
            )
        elif status == 409:  # noqa: PLR2004
            await msg.ack()
            self._count(quarantined=1, duplicates=result.duplicates)
            log.warning(
                "batch quarantined",
                worker=self.name,
                agent_id=result.agent_id,
                quarantine_id=result.quarantine_id,
                reason=result.message,
            )
        elif status in _REFUSED:
            await msg.term()
            self._count(refused=1, last_error=f"refused ({status}): {result.message}")
            log.warning(
                "batch refused; terminated",
                worker=self.name,
                status=status,
                agent_id=result.agent_id,
                reason=result.message,
            )
        else:  # 429 (the agent's head kept moving) or a status ingest does not document
            delay = result.retry_after or self._backoff(delivered)
            await msg.nak(delay=delay)
            self._count(retried=1, last_error=f"{status}: {result.message}")

    def _backoff(self, delivered: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2.0 ** min(max(delivered - 1, 0), 16))

    def _count(self, *, last_error: str | None = None, **increments: int) -> None:
        with self._lock:
            stats = self._stats
            changes: dict[str, Any] = {k: getattr(stats, k) + v for k, v in increments.items()}
            if last_error is not None:
                changes["last_error"] = last_error
            self._stats = dataclasses.replace(stats, **changes)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# -- a process of workers ------------------------------------------------------------------


def serve_nats(
    servers: Sequence[str],
    *,
    stream: str,
    db: str,
    stop: threading.Event,
    durable: str = DEFAULT_DURABLE,
    workers: int = 1,
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
    limits: IngestLimits | None = None,
    synchronous: str = "full",
    batch: int = 10,
    ack_wait: float = 30.0,
    create_stream: bool = True,
    duplicate_window: float = 120.0,
    connect_timeout: float = 5.0,
    clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    on_ready: Callable[[], None] | None = None,
) -> NatsWorkerStats:
    """Run ``workers`` NATS workers over one store until ``stop`` is set or one fails.

    Args:
        servers: NATS URLs.
        stream: The agents' JetStream stream.
        db: The store to open (:func:`collector.store.open_store`).
        stop: Set it (from a signal handler) to stop gracefully.
        durable: The shared durable consumer.
        workers: Workers in this process (each its own connection and thread).
        subject_prefix: The agents' subject prefix.
        limits: Bounds on one batch (the collector config's).
        synchronous: SQLite durability (``full`` or ``normal``).
        batch: Most messages one worker fetches at once.
        ack_wait: Seconds before an unacknowledged message is redelivered (new consumer).
        create_stream: Create or check the stream.
        duplicate_window: The stream's duplicate window in seconds (new stream).
        connect_timeout: Seconds to wait for NATS and for each JetStream call.
        clock: Milliseconds since the epoch (receive times, alerts).
        on_ready: Called once every worker is consuming (systemd ``READY=1``).

    Returns:
        What the workers did, summed.

    Raises:
        WeightwardenError: A worker could not start, or stopped on its own (the reason).
        ConfigError: The stream or consumer is configured in a way that loses batches.
    """
    from collector.store import open_store  # noqa: PLC0415 -- psycopg only for PostgreSQL

    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    store = open_store(db, synchronous=synchronous)
    started: list[NatsWorker] = []
    stopped = False
    try:
        ingestor = Ingestor(store, limits=limits or IngestLimits(), clock=clock)
        for index in range(workers):
            worker = NatsWorker(
                servers,
                stream=stream,
                durable=durable,
                ingestor=ingestor,
                store=store,
                subject_prefix=subject_prefix,
                batch=batch,
                ack_wait=ack_wait,
                create_stream=create_stream and index == 0,
                duplicate_window=duplicate_window,
                connect_timeout=connect_timeout,
                name=f"weightwarden-collector-{index + 1}",
            )
            worker.start()
            started.append(worker)
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            if any(w.failure is not None or not w.running for w in started):
                break
        else:
            stopped = True
    finally:
        for worker in started:
            worker.stop()
        store.close()
    total = NatsWorkerStats()
    for worker in started:
        total += worker.stats()
    log.info("NATS workers stopped", **{k: v for k, v in dataclasses.asdict(total).items() if v})
    failure = next((w.failure for w in started if w.failure is not None), None)
    if failure is not None:
        raise failure
    if not stopped:
        raise WeightwardenError("a NATS worker stopped on its own without saying why")
    return total
