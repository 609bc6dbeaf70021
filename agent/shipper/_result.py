"""What one send attempt came to, the transport interface, and the link's errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from weightwarden.errors import UsageError, WeightwardenError

if TYPE_CHECKING:
    from weightwarden.batch import Batch

__all__ = [
    "CollectorUnreachableError",
    "Outcome",
    "PinMismatchError",
    "SendResult",
    "ShipperStats",
    "Transport",
    "clip",
]

_DETAIL_CHARS: Final = 500


class PinMismatchError(UsageError):
    """The collector's certificate is not the pinned one: possibly an interception.

    Never retried: the shipper stops and the agent's configuration must be checked.
    """


class CollectorUnreachableError(WeightwardenError):
    """No answer from the collector: refused, reset, timed out, or TLS failed.

    Attributes:
        stale: The failure hit a reused keep-alive connection before any answer: a fresh
            connection is worth trying at once.
    """

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


class Outcome(enum.StrEnum):
    """What became of one send attempt."""

    STORED = "stored"
    """The collector stored the batch durably (HTTP 200, JetStream PubAck)."""
    QUARANTINED = "quarantined"
    """The collector kept the batch as evidence of an integrity problem (HTTP 409)."""
    RETRY = "retry"
    """Nothing confirmed, try again after a pause (unreachable, 5xx, 429)."""
    TOO_LARGE = "too_large"
    """The batch is over the collector's limit (HTTP 413): send fewer events."""
    REFUSED = "refused"
    """The collector refused the batch (other 4xx) or answered nonsense."""
    UNAUTHORIZED = "unauthorized"
    """The collector does not accept this agent's key (HTTP 401, 403): re-enroll."""
    PIN_MISMATCH = "pin_mismatch"
    """The collector's certificate is not the pinned one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """The transport's account of one attempt.

    Attributes:
        outcome: What happened.
        acked_seq: STORED or QUARANTINED: the collector holds the agent's events up to here.
        stored: Events newly stored by this attempt.
        duplicates: Events of the batch the collector already had.
        quarantine_id: QUARANTINED: the collector's identifier of the kept batch.
        retry_after: Seconds to wait before the next attempt, when the collector said
            (``Retry-After``) or a fresh connection is worth trying at once (0).
        status: The HTTP status, when there was one.
        detail: What the collector or the network said, for logs and health events.
    """

    outcome: Outcome
    acked_seq: int | None = None
    stored: int = 0
    duplicates: int = 0
    quarantine_id: str | None = None
    retry_after: float | None = None
    status: int | None = None
    detail: str = ""


class Transport(Protocol):
    """Delivers one signed batch and says what the collector made of it."""

    def send(self, batch: Batch, body: bytes) -> SendResult:
        """Deliver ``body`` (``seal_batch(batch)``); never raise for network trouble."""
        ...

    def close(self) -> None:
        """Release connections; called from the thread that sent."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipperStats:
    """Counters of a shipper since it started.

    Attributes:
        acked_seq: Everything up to here is confirmed by the collector and trimmed.
        batches: Batches confirmed (stored or quarantined).
        events: Events confirmed.
        duplicates: Confirmed events the collector already had (resends after lost answers).
        quarantined: Batches the collector kept in quarantine.
        attempts: Send attempts, whatever their outcome.
        retries: Attempts that found the collector unreachable, busy or failing (5xx, 429).
        refusals: Attempts the collector refused or answered unreadably.
        batch_limit: Most events per batch now (halved after each 413).
        health_events: Health events this shipper appended to the spool.
        last_error: The latest failed attempt's detail; None once a batch goes through.
        last_success_ms: Wall-clock time of the latest confirmation.
    """

    acked_seq: int
    batches: int = 0
    events: int = 0
    duplicates: int = 0
    quarantined: int = 0
    attempts: int = 0
    retries: int = 0
    refusals: int = 0
    batch_limit: int = 0
    health_events: int = 0
    last_error: str | None = None
    last_success_ms: int | None = None


def clip(text: str) -> str:
    """``text`` on one line, at most 500 characters (for logs and health events)."""
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"
