"""Ingest: one signed batch in, its verified events stored, an HTTP status and ack out.

:meth:`Ingestor.ingest` is shared by every transport (HTTP, NATS). In order:

1. **Envelope** (:func:`weightwarden.batch.read_envelope`): framing that does not add up
   answers 400; a body over the limit 413.
2. **Signature** (:func:`weightwarden.batch.open_batch`) with the key registered at
   enrollment: unknown or revoked agent 403, bad signature 401, too many events 413,
   malformed batch 400 (also a nonce, agent id or payload with a NUL character, which
   no store could keep as text). Only now is anything inside the batch read.
3. **Admission** (optional, the HTTP rate limit): 429 with a retry-after.
4. **Replay**: a nonce stored before means someone sent a captured message again: an
   integrity alert, the batch quarantined, 409. (A transport that redelivers the very
   same message, JetStream after a lost ack, says so with ``redelivery=True``: a seen
   nonce whose events are all stored unchanged is then a duplicate.) The nonce of every
   accepted batch is stored, also of one whose events were all duplicates.
5. **Duplicates**: an event at or below the agent's head whose link equals the stored one
   was stored before (a retry after a lost ack): skipped, and still acknowledged.
6. **Fork**: an event at or below the head with a *different* link means two histories
   for one sequence number: alert, quarantine, 409 with ``acked_seq`` = the head. An event
   at or below the head that was never stored (it fell into a gap) is *late*: the same.
7. **Chain** (:func:`weightwarden.crypto.chain.verify_chain` after the head): an edited
   payload, a broken link, a repeated or out-of-order sequence number: alert, quarantine,
   409. A **gap** does not stop monitoring: the events are stored and the head advances,
   and a copy of the batch is quarantined as evidence beside a gap alert.
8. **Store** (:meth:`Store.ingest`): events with index columns read from each payload by
   a scan of the canonical layout (``json.loads`` for any other layout), alerts derived by
   :mod:`collector.alerts`, the nonce and the new head, in one transaction. A head that
   moved meanwhile (another worker) is re-read and the batch re-checked.

**The hot path.** Most batches are one clean stretch of chain right after the stored
head. Those never become an object per event: :mod:`collector.verified_batch` verifies the
signature, then reads the batch into columns and checks every payload hash, link hash and
link on the frame's bytes in one pass, and steps 4 to 8 hand the store
:class:`~collector.store.EventColumns`. Any other batch (duplicates, a gap, a fork, a
replay, a broken link, an unreadable event, a malformed batch) takes the steps above with
:func:`~weightwarden.batch.open_batch` and :func:`~weightwarden.crypto.chain.verify_chain`,
so every integrity rule is decided in one place.

A gap, fork or replay is data: an :class:`~collector.store.Alert` and a
:class:`~collector.store.QuarantinedBatch`, never an exception. Exceptions from the store
(a dead database) propagate: they are the collector failing, not the input being bad.

What the statuses mean to a shipper: 200 stored (or already stored): trim the spool up to
``acked_seq``; 409: the collector has ``acked_seq`` and will not take this batch (trimming
up to ``acked_seq`` is safe); 429: wait ``retry_after`` seconds and resend; other 4xx:
the batch is refused as it is.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final, NamedTuple, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from collector.alerts import alerts_for_payloads, integrity_alert
from collector.store import EventColumns, HeadMoved, QuarantinedBatch, StoredEvent
from collector.verified_batch import read_verified
from weightwarden.batch import BatchError, open_batch, read_envelope
from weightwarden.crypto.chain import GENESIS, ChainLink, ProblemKind, verify_chain
from weightwarden.crypto.keys import PublicKey
from weightwarden.events import Severity

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from collector.store import AgentRecord, Store
    from collector.verified_batch import VerifiedBatch
    from weightwarden.batch import Batch, BatchEvent, SignedBatch
    from weightwarden.crypto.chain import ChainProblem

__all__ = [
    "Admission",
    "IngestLimits",
    "IngestResult",
    "Ingestor",
    "public_key_from_pem",
    "seq_ranges",
]

Admission: TypeAlias = Callable[[str, int], float | None]
"""``admit(agent_id, events)``: None to go on, or the seconds to wait (HTTP rate limit)."""

_MAX_INT: Final = 2**63 - 1
_EVIDENCE_SHOWN: Final = 50
"""Most event uids an integrity alert lists as evidence."""
_CURVES: Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})

_REPLAY_REASON: Final = (
    "Every send attempt of an agent carries a fresh nonce under its signature; a nonce "
    "the collector has stored before means a captured batch was sent again."
)
_FORK_REASON: Final = (
    "An agent's events are numbered and hash-chained; two different events with one "
    "sequence number mean two histories: the agent's spool was rewritten or its key used "
    "by someone else."
)
_LATE_REASON: Final = (
    "These sequence numbers were reported missing when the chain moved past them; events "
    "that turn up afterwards cannot be placed in the verified chain."
)
_BROKEN_REASON: Final = (
    "Each event commits to its payload and to the event before it; a payload that does "
    "not match its hash, or a link that does not follow its predecessor, was altered "
    "after the agent recorded it."
)
_GAP_REASON: Final = (
    "Sequence numbers were skipped: events the agent recorded never arrived. The events "
    "after the gap are stored so monitoring continues; the missing ones may have been "
    "deleted from the agent's spool."
)
_UNREADABLE_REASON: Final = (
    "The agent signed and chained events that are not readable OCSF; they are stored as "
    "received, with placeholder index values."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestLimits:
    """Bounds on one batch.

    Attributes:
        max_body_bytes: The largest wire body accepted (413 above it).
        max_events: The most events in one batch (413 above it).
        max_attempts: How often a batch is re-checked when the agent's head moved under
            it (another worker stored a batch of the same agent) before answering 429.
    """

    max_body_bytes: int = 16 << 20
    max_events: int = 10_000
    max_attempts: int = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    """What happened to one batch, and what to answer.

    Attributes:
        status: The HTTP status (200, 400, 401, 403, 409, 413, 429).
        acked_seq: The agent's stored head after this batch: every event up to it is
            durably stored. None when the batch was refused before its agent was known.
        stored: Events newly stored.
        duplicates: Events that were already stored (skipped, still acknowledged).
        quarantine_id: The quarantined copy of the batch, when one was kept.
        message: One sentence for the response and the log.
        retry_after: Seconds to wait before resending (429 only).
        agent_id: The batch's agent, once the envelope named one.
        alerts: How many alerts this batch raised.
    """

    status: int
    acked_seq: int | None = None
    stored: int = 0
    duplicates: int = 0
    quarantine_id: str | None = None
    message: str = ""
    retry_after: float | None = None
    agent_id: str | None = None
    alerts: int = 0

    def to_json(self) -> dict[str, object]:
        """The response body: ``{"error": ...}`` for a refusal, the counts otherwise."""
        body: dict[str, object] = {}
        if self.status >= 400:  # noqa: PLR2004 -- HTTP's own boundary
            body["error"] = self.message
        else:
            body["message"] = self.message
        if self.acked_seq is not None:
            body["acked_seq"] = self.acked_seq
        if self.status < 400 or self.stored or self.duplicates:  # noqa: PLR2004
            body["stored"] = self.stored
            body["duplicates"] = self.duplicates
        if self.quarantine_id is not None:
            body["quarantine_id"] = self.quarantine_id
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


@lru_cache(maxsize=4096)
def public_key_from_pem(pem: str) -> PublicKey | None:
    """An agent's verification key from its PEM, or None if it is not one weightwarden uses."""
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        return PublicKey(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return PublicKey(key)
    return None


def seq_ranges(seqs: Iterable[int]) -> str:
    """``41-57, 60`` for the sorted, de-duplicated numbers."""
    parts: list[str] = []
    ordered = sorted(set(seqs))
    start = prev = None
    for seq in [*ordered, None]:
        if seq is not None and prev is not None and seq == prev + 1:
            prev = seq
            continue
        if start is not None and prev is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = seq
    return ", ".join(parts)


def _events_word(seqs: Sequence[int]) -> str:
    return f"event {seqs[0]}" if len(seqs) == 1 else f"events {seq_ranges(seqs)}"


def _text_ok(value: str) -> bool:
    """Storable in every store: valid UTF-8 (no lone surrogates) and no NUL character."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_field(obj: dict[str, object], key: str) -> int | None:
    value = obj.get(key)
    if type(value) is int and -_MAX_INT <= value <= _MAX_INT:
        return value
    return None


class _Index(NamedTuple):
    """Index columns of one payload (a tuple: built once per event on the hot path)."""

    uid: str
    time: int
    class_uid: int
    activity_id: int
    severity_id: int


_META_UID: Final = (
    '"metadata":{"product":{"name":"weightwarden","vendor_name":"weightwarden"},"uid":"'
)
"""Where the uid starts in a canonical weightwarden payload (keys sorted, no whitespace)."""
_NUMBERS: Final = re.compile(r"(?:0|[1-9][0-9]{0,17})(?:,(?:0|[1-9][0-9]{0,17})){3}").fullmatch
"""Four decimal numbers, comma-separated: no sign, no leading zero, at most 18 digits."""


def _fast_index(payload: str) -> _Index | None:  # noqa: PLR0911 -- hot path: flat exits
    """Index columns by scanning a canonical weightwarden payload; None if it is not one.

    An agent writes :func:`weightwarden.events.canonical_bytes`: sorted keys and no
    whitespace, so ``activity_id`` opens the object and ``class_uid``, ``metadata.uid``,
    ``severity_id`` and ``time`` follow in that order, each at the top level. One forward
    scan with ``str.find`` (each number runs to the next comma) and one check of the four
    numbers together cost a fraction of a ``json.loads``; a payload that does not look
    exactly like that falls back to :func:`_parsed_index`.
    """
    if not payload.startswith('{"activity_id":'):
        return None
    find = payload.find
    activity_end = find(",", 15)
    at = find(',"class_uid":')
    if activity_end < 0 or at < 0:
        return None
    class_end = find(",", at + 13)
    class_text = payload[at + 13 : class_end]
    at = find(_META_UID, at)
    if class_end < 0 or at < 0:
        return None
    start = at + len(_META_UID)
    end = find('"', start)
    uid = payload[start:end]
    if end < 0 or not uid or "\\" in uid:
        return None
    at = find(',"severity_id":', end)
    if at < 0:
        return None
    severity_end = find(",", at + 15)
    severity_text = payload[at + 15 : severity_end]
    at = find(',"time":', at)
    if severity_end < 0 or at < 0:
        return None
    time_end = find(",", at + 8)
    time_text = payload[at + 8 : time_end]
    activity_text = payload[15:activity_end]
    if time_end < 0 or not _NUMBERS(f"{activity_text},{class_text},{severity_text},{time_text}"):
        return None
    return tuple.__new__(  # the NamedTuple's own __new__ costs 10x a tuple here
        _Index, (uid, int(time_text), int(class_text), int(activity_text), int(severity_text))
    )


def _parsed_index(payload: str) -> _Index | None:
    """Index columns from ``json.loads``, for payloads not in the canonical layout."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict:
        return None
    metadata = obj.get("metadata")
    uid = metadata.get("uid") if type(metadata) is dict else None
    time = _int_field(obj, "time")
    class_uid = _int_field(obj, "class_uid")
    if type(uid) is not str or not uid or not _text_ok(uid) or time is None or class_uid is None:
        return None
    return _Index(
        uid=uid,
        time=time,
        class_uid=class_uid,
        activity_id=_int_field(obj, "activity_id") or 0,
        severity_id=_int_field(obj, "severity_id") or 0,
    )


def _index(payload: str) -> _Index | None:
    """The index columns of one OCSF payload, or None if it is not a readable event."""
    return _fast_index(payload) or _parsed_index(payload)


def _hostname(payload: str) -> str | None:
    """The device hostname of one payload, if it names one (labels integrity alerts)."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    device = obj.get("device") if type(obj) is dict else None
    name = device.get("hostname") if type(device) is dict else None
    return name if type(name) is str and _text_ok(name) else None


def _envelope(body: bytes, max_body_bytes: int) -> SignedBatch:
    """The outer envelope, with an agent id every store can keep.

    Raises:
        BatchError: 413 too large; 400 not an envelope.
    """
    if len(body) > max_body_bytes:
        raise BatchError(f"body of {len(body)} bytes; the limit is {max_body_bytes}", status=413)
    signed = read_envelope(body)
    if not _text_ok(signed.agent_id):
        raise BatchError("batch envelope: agent_id is not valid text")
    return signed


def _payload_bytes(batch: Batch) -> list[bytes]:
    """Each payload's UTF-8 bytes (what its hash covers).

    Raises:
        BatchError: (400) a payload that no store could keep as text (a NUL character).
    """
    out = []
    for index, event in enumerate(batch.events):
        payload = event.payload
        if "\x00" in payload:
            raise BatchError(f"event {index}: payload holds a NUL character")
        try:
            out.append(payload.encode("utf-8"))
        except UnicodeEncodeError:
            raise BatchError(f"event {index}: payload is not valid UTF-8 text") from None
    return out


def _uid_of(event: BatchEvent) -> str:
    """The event's uid for evidence lists: its OCSF uid, or its place in the chain."""
    index = _index(event.payload)
    return index.uid if index is not None else f"seq:{event.seq}"


class _Received:
    """A batch whose signature verified: as columns, or as objects.

    Objects when the column reader did not take the batch; otherwise they are built from
    the columns only if they are needed (not in the common case).
    """

    __slots__ = ("_batch", "_payloads", "columns")

    def __init__(
        self,
        *,
        columns: VerifiedBatch | None = None,
        batch: Batch | None = None,
        payloads: list[bytes] | None = None,
    ) -> None:
        self.columns = columns
        self._batch = batch
        self._payloads = payloads

    @property
    def agent_id(self) -> str:
        return self.columns.agent_id if self.columns is not None else self.objects()[0].agent_id

    @property
    def count(self) -> int:
        return len(self.columns) if self.columns is not None else len(self.objects()[0].events)

    def objects(self) -> tuple[Batch, list[bytes]]:
        """The batch with one object per event, and each payload's bytes."""
        if self._batch is None or self._payloads is None:
            assert self.columns is not None  # noqa: S101 -- one of the two is always given
            self._batch = self.columns.to_batch()
            self._payloads = [payload.encode("utf-8") for payload in self.columns.payload]
        return self._batch, self._payloads


class Ingestor:
    """Verifies and stores signed batches (see the module doc); safe to share between threads.

    Args:
        store: Where events, alerts, quarantined batches and chain heads are kept.
        limits: Bounds on one batch.
        clock: The time now, in milliseconds since the epoch.
    """

    def __init__(self, store: Store, *, limits: IngestLimits, clock: Callable[[], int]) -> None:
        self._store = store
        self._limits = limits
        self._clock = clock

    # -- the public verb ----------------------------------------------------------------

    def ingest(
        self, body: bytes, *, admit: Admission | None = None, redelivery: bool = False
    ) -> IngestResult:
        """Verify and store one wire body; never raises for bad input (see the module doc).

        Args:
            body: The signed batch as received.
            admit: Asked once the signature verified, with the agent and the number of
                events: None lets the batch in, a number of seconds refuses it with 429.
            redelivery: The transport says this very message may have been delivered
                before (a JetStream redelivery after a lost ack). A seen nonce whose
                events are all stored unchanged is then acknowledged as duplicates instead
                of being reported as a replay. HTTP never sets it: over HTTP a retry is
                signed anew, so the same nonce twice is always a replay.

        Raises:
            Exception: Only what the store raises when it cannot work (a dead database).
        """
        opened = self._open(body)
        if isinstance(opened, IngestResult):
            return opened
        received, record = opened
        agent_id = received.agent_id
        if admit is not None:
            wait = admit(agent_id, received.count)
            if wait is not None:
                return IngestResult(
                    status=429,
                    message=f"rate limit for agent {agent_id!r}: retry in {wait:.1f} s",
                    retry_after=wait,
                    agent_id=agent_id,
                )
        for attempt in range(self._limits.max_attempts):
            current = record if not attempt else self._store.agent(agent_id)
            if current is None or current.revoked_at is not None:
                return IngestResult(
                    status=403,
                    message=f"agent {agent_id!r} is not enrolled or was revoked",
                    agent_id=agent_id,
                )
            try:
                if received.columns is not None:
                    result = self._apply_linked(received.columns, current)
                    if result is not None:
                        return result
                batch, payloads = received.objects()
                return self._apply(batch, payloads, current, body, redelivery=redelivery)
            except HeadMoved:
                continue
        return IngestResult(
            status=429,
            message=f"agent {agent_id!r} has other batches being stored; resend",
            retry_after=1.0,
            agent_id=agent_id,
        )

    def _open(self, body: bytes) -> tuple[_Received, AgentRecord] | IngestResult:
        """Steps 1 and 2: the envelope, the agent's key and the signature, then the batch.

        The batch is read into columns (:func:`~collector.verified_batch.read_verified`);
        what that reader does not take is read by :func:`~weightwarden.batch.open_batch`,
        which also says why a batch is refused.
        """
        agent_id = None
        try:
            signed = _envelope(body, self._limits.max_body_bytes)
            agent_id = signed.agent_id
            record = self._store.agent(agent_id)
            key = (
                None
                if record is None or record.revoked_at is not None
                else public_key_from_pem(record.public_key_pem)
            )
            columns = (
                None
                if key is None
                else read_verified(signed, key, max_events=self._limits.max_events)
            )
            if columns is not None:
                assert record is not None  # noqa: S101 -- a key implies a record
                return _Received(columns=columns), record
            batch = open_batch(signed, lambda _agent: key, max_events=self._limits.max_events)
            payloads = _payload_bytes(batch)
        except BatchError as exc:
            return IngestResult(status=exc.status, message=str(exc), agent_id=agent_id)
        assert record is not None  # noqa: S101 -- open_batch refuses an agent without a key
        return _Received(batch=batch, payloads=payloads), record

    def _apply_linked(self, columns: VerifiedBatch, record: AgentRecord) -> IngestResult | None:
        """Steps 4 to 8 for the common case, without an object per event; None if not it.

        The common case: an unbroken stretch of chain (:attr:`VerifiedBatch.linked`) that
        starts right after the stored head, with a nonce never seen and readable events.
        Anything else (duplicates, a gap, a fork, a replay, a broken link, an unreadable
        event) is None, and :meth:`_apply` decides it, the same as before.
        """
        head = record.head_seq
        if (
            not columns.linked
            or columns.seq[0] != head + 1
            or columns.prev_hash[0] != (GENESIS if head == 0 else record.head_hash)
        ):
            return None
        agent_id = columns.agent_id
        indexes = [_fast_index(p) or _parsed_index(p) for p in columns.payload]
        if None in indexes or self._store.nonce_seen(columns.nonce):
            return None
        uid, time, class_uid, activity_id, severity_id = zip(*indexes, strict=True)
        now = self._clock()
        alerts = alerts_for_payloads(columns.payload, agent_id=agent_id, now=now)
        self._store.ingest(
            agent_id=agent_id,
            nonce=columns.nonce,
            expected_head_seq=head,
            new_head_seq=columns.seq[-1],
            new_head_hash=columns.link_hash[-1],
            events=EventColumns(
                agent_id=agent_id,
                received_at=now,
                seq=columns.seq,
                payload=columns.payload,
                prev_hash=columns.prev_hash,
                payload_hash=columns.payload_hash,
                link_hash=columns.link_hash,
                uid=uid,
                time=time,
                class_uid=class_uid,
                activity_id=activity_id,
                severity_id=severity_id,
            ),
            alerts=alerts,
        )
        return IngestResult(
            status=200,
            acked_seq=columns.seq[-1],
            stored=len(columns),
            message=f"stored {len(columns)} events",
            agent_id=agent_id,
            alerts=len(alerts),
        )

    def _apply(
        self,
        batch: Batch,
        payloads: list[bytes],
        record: AgentRecord,
        body: bytes,
        *,
        redelivery: bool,
    ) -> IngestResult:
        store, agent_id, now = self._store, batch.agent_id, self._clock()
        head = record.head_seq
        old = [e for e in batch.events if e.seq <= head]
        new_items = [(e, p) for e, p in zip(batch.events, payloads, strict=True) if e.seq > head]
        duplicates, forks, late = self._compare_stored(agent_id, old)
        seen = store.nonce_seen(batch.nonce)
        if seen and not (redelivery and not forks and not late and not new_items):
            return self._refuse(
                batch,
                body,
                record,
                kind="replay",
                title=(
                    f"Replayed batch: agent {agent_id} batch {batch.nonce[:12]} "
                    f"({_events_word([e.seq for e in batch.events])}) was already received"
                ),
                detail=(
                    f"A batch with nonce {batch.nonce} was stored before; this copy "
                    f"({len(batch.events)} events, sent_at {batch.sent_at}) was refused."
                ),
                reason=_REPLAY_REASON,
                severity=Severity.HIGH,
                evidence=batch.events,
                now=now,
            )
        if forks:
            seqs = [e.seq for e in forks]
            return self._refuse(
                batch,
                body,
                record,
                kind="fork",
                title=f"Chain fork: agent {agent_id} sent a different {_events_word(seqs)}",
                detail=(
                    f"The batch holds {_events_word(seqs)} with links that differ from the "
                    f"ones stored (the stored head is seq {head})."
                ),
                reason=_FORK_REASON,
                severity=Severity.HIGH,
                evidence=forks,
                now=now,
            )
        if late:
            seqs = [e.seq for e in late]
            return self._refuse(
                batch,
                body,
                record,
                kind="late",
                title=f"Late events: agent {agent_id} {_events_word(seqs)} arrived after a gap",
                detail=(
                    f"The batch holds {_events_word(seqs)}, below the stored head (seq {head}) "
                    "but never stored: they were reported missing in a gap."
                ),
                reason=_LATE_REASON,
                severity=Severity.MEDIUM,
                evidence=late,
                now=now,
            )
        if not new_items:
            if not seen:  # remember the nonce: this exact message again is a replay
                store.ingest(
                    agent_id=agent_id,
                    nonce=batch.nonce,
                    expected_head_seq=head,
                    new_head_seq=head,
                    new_head_hash=record.head_hash,
                    events=(),
                    alerts=(),
                )
            return IngestResult(
                status=200,
                acked_seq=head,
                duplicates=duplicates,
                message=f"all {duplicates} events were already stored",
                agent_id=agent_id,
            )
        after = (
            None
            if head == 0
            else ChainLink(
                agent_id=agent_id,
                seq=head,
                prev_hash="",
                payload_hash="",
                link_hash=record.head_hash,
            )
        )
        report = verify_chain(((e.link(agent_id), p) for e, p in new_items), after=after)
        hard = [p for p in report.problems if p.kind is not ProblemKind.GAP]
        if hard:
            by_seq = {e.seq: e for e, _ in new_items}
            seqs = sorted({p.seq for p in hard})
            return self._refuse(
                batch,
                body,
                record,
                kind="broken",
                title=f"Chain broken: agent {agent_id} {_events_word(seqs)}: {hard[0].detail}",
                detail="; ".join(f"seq {p.seq}: {p.kind.value}: {p.detail}" for p in hard[:20]),
                reason=_BROKEN_REASON,
                severity=Severity.HIGH,
                evidence=[by_seq[s] for s in seqs if s in by_seq],
                now=now,
            )
        assert report.head is not None  # noqa: S101 -- new_items is non-empty and clean
        return self._store_new(
            batch,
            body,
            record,
            new_items=[e for e, _ in new_items],
            gaps=[p for p in report.problems if p.kind is ProblemKind.GAP],
            new_head=report.head,
            duplicates=duplicates,
            now=now,
        )

    def _compare_stored(
        self, agent_id: str, old: Sequence[BatchEvent]
    ) -> tuple[int, list[BatchEvent], list[BatchEvent]]:
        """Split events at or below the head into duplicates (counted), forks and late ones."""
        if not old:
            return 0, [], []
        stored = self._store.stored_links(
            agent_id, min(e.seq for e in old), max(e.seq for e in old)
        )
        duplicates, forks, late = 0, [], []
        for event in old:
            link = stored.get(event.seq)
            if link == event.link_hash:
                duplicates += 1
            elif link is None:
                late.append(event)
            else:
                forks.append(event)
        return duplicates, forks, late

    def _store_new(
        self,
        batch: Batch,
        body: bytes,
        record: AgentRecord,
        *,
        new_items: Sequence[BatchEvent],
        gaps: Sequence[ChainProblem],
        new_head: ChainLink,
        duplicates: int,
        now: int,
    ) -> IngestResult:
        agent_id = batch.agent_id
        events: list[StoredEvent] = []
        unreadable: list[int] = []
        hostname = None
        for event in new_items:
            index = _index(event.payload)
            if index is None:
                unreadable.append(event.seq)
                index = _Index(
                    uid=f"ww-unreadable:{agent_id}:{event.seq}:{event.link_hash[:16]}",
                    time=now,
                    class_uid=0,
                    activity_id=0,
                    severity_id=0,
                )
            events.append(
                StoredEvent(
                    agent_id=agent_id,
                    seq=event.seq,
                    payload=event.payload,
                    prev_hash=event.prev_hash,
                    payload_hash=event.payload_hash,
                    link_hash=event.link_hash,
                    uid=index.uid,
                    time=index.time,
                    class_uid=index.class_uid,
                    activity_id=index.activity_id,
                    severity_id=index.severity_id,
                    received_at=now,
                )
            )
        alerts = alerts_for_payloads((e.payload for e in new_items), agent_id=agent_id, now=now)
        if unreadable or gaps:
            hostname = _hostname(new_items[-1].payload)
        if unreadable:
            unreadable_seqs = set(unreadable)
            alerts.append(
                integrity_alert(
                    kind="unreadable",
                    agent_id=agent_id,
                    title=(
                        f"Unreadable events: agent {agent_id} {_events_word(unreadable)} "
                        "are not OCSF events"
                    ),
                    description=(
                        f"{len(unreadable)} signed, chained events could not be read as OCSF "
                        "events (no metadata.uid, time or class_uid); stored as received."
                    ),
                    reason=_UNREADABLE_REASON,
                    severity=Severity.MEDIUM,
                    evidence=[e.uid for e in events if e.seq in unreadable_seqs][:_EVIDENCE_SHOWN],
                    now=now,
                    hostname=hostname,
                )
            )
        quarantine_id = None
        if gaps:
            quarantine_id = uuid.uuid4().hex
            count = sum((p.last_seq or p.seq) - p.seq + 1 for p in gaps)
            ranges = ", ".join(
                str(p.seq) if p.last_seq in (None, p.seq) else f"{p.seq}-{p.last_seq}" for p in gaps
            )
            after_gap = {(p.last_seq or p.seq) + 1 for p in gaps}
            alerts.append(
                integrity_alert(
                    kind="gap",
                    agent_id=agent_id,
                    title=(
                        f"Chain gap: agent {agent_id} "
                        f"{'event' if count == 1 else 'events'} {ranges} missing"
                    ),
                    description=(
                        f"{count} event{'s' if count != 1 else ''} of agent {agent_id} never "
                        f"arrived (seq {ranges}). The events after the gap were stored; the "
                        f"batch is kept as quarantine {quarantine_id}."
                    ),
                    reason=_GAP_REASON,
                    severity=Severity.HIGH,
                    evidence=[e.uid for e in events if e.seq in after_gap],
                    now=now,
                    hostname=hostname,
                )
            )
        self._store.ingest(
            agent_id=agent_id,
            nonce=batch.nonce,
            expected_head_seq=record.head_seq,
            new_head_seq=new_head.seq,
            new_head_hash=new_head.link_hash,
            events=events,
            alerts=alerts,
        )
        if quarantine_id is not None:
            self._store.quarantine(
                QuarantinedBatch(
                    id=quarantine_id,
                    agent_id=agent_id,
                    received_at=now,
                    reason=f"gap: {alerts[-1].title}",
                    body=body,
                ),
                (),
            )
        return IngestResult(
            status=200,
            acked_seq=new_head.seq,
            stored=len(events),
            duplicates=duplicates,
            quarantine_id=quarantine_id,
            message=(
                f"stored {len(events)} events"
                + (f", {duplicates} already stored" if duplicates else "")
                + (f"; gap reported (quarantine {quarantine_id})" if gaps else "")
            ),
            agent_id=agent_id,
            alerts=len(alerts),
        )

    def _refuse(
        self,
        batch: Batch,
        body: bytes,
        record: AgentRecord,
        *,
        kind: str,
        title: str,
        detail: str,
        reason: str,
        severity: Severity,
        evidence: Sequence[BatchEvent],
        now: int,
    ) -> IngestResult:
        """Quarantine the batch with one integrity alert; answer 409 with the stored head."""
        quarantine_id = uuid.uuid4().hex
        alert = integrity_alert(
            kind=kind,
            agent_id=batch.agent_id,
            title=title,
            description=f"{detail} The batch is kept as quarantine {quarantine_id}.",
            reason=reason,
            severity=severity,
            evidence=[_uid_of(e) for e in evidence[:_EVIDENCE_SHOWN]],
            now=now,
        )
        self._store.quarantine(
            QuarantinedBatch(
                id=quarantine_id,
                agent_id=batch.agent_id,
                received_at=now,
                reason=f"{kind}: {title}",
                body=body,
            ),
            [alert],
        )
        return IngestResult(
            status=409,
            acked_seq=record.head_seq,
            quarantine_id=quarantine_id,
            message=f"{title}; batch quarantined as {quarantine_id}",
            agent_id=batch.agent_id,
            alerts=1,
        )
