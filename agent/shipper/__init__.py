"""The shipper: moves the spool to the collector, in order, and trims only what it confirmed.

One thread per agent. It reads the oldest unacknowledged events from the spool
(``Spool.read_batch(after_seq=acked)``), signs them as one batch with the agent's
identity key (:func:`weightwarden.batch.seal_batch`, a fresh nonce and a new signature on
every attempt) and hands the body to a :class:`Transport`. Only when the collector has
confirmed durable storage does it call ``Spool.ack``; only then are events trimmed. One
batch is in flight at a time, so the collector sees the agent's events in sequence order.

Where the acknowledged position lives
-------------------------------------
In the spool (``Spool.ack`` writes ``acked_seq`` in the same SQLite transaction that
trims). The shipper keeps no state of its own: it starts from ``spool.stats().acked_seq``,
so an agent killed at any moment resumes with the first event the collector has not
confirmed. If the collector stored a batch but its answer was lost, that batch is sent
again and the collector de-duplicates it by sequence number and chain link.

What each answer means (HTTP; :class:`NatsTransport` maps its errors onto the same)
--------------------------------------------------------------------------------------
======================== =============================================================
200                      stored: acknowledge up to ``acked_seq`` (never past the batch)
409                      kept in quarantine (gap, fork, replay): acknowledge
                         ``acked_seq`` like a 200 and record a HIGH health event
413                      too large: halve the batch and send again at once
429                      wait ``Retry-After`` (at most 5 minutes), send again
5xx, refused, timeout    back off exponentially with jitter (capped), send again
other 4xx, bad reply     health event, back off, send again (never skip events)
401, 403                 the collector no longer knows this key: stop, set
                         :attr:`Shipper.failure` (the agent must be re-enrolled)
certificate pin mismatch stop, set :attr:`Shipper.failure` (never a retry)
======================== =============================================================

Health events (agent health findings, appended to the spool so they travel in the signed
record like any other event): the collector unavailable (unreachable, 5xx, 429) for 3
attempts in a row; a refusal (once per HTTP status); and, if either was reported, the
first confirmation after them; every quarantined batch; the reason shipping stopped. A
streak of failures of any length adds at most five events, not one per attempt.

Transports
----------
:class:`HttpTransport` (the default): ``POST /v1/batches`` over HTTP or HTTPS with
``http.client``, one keep-alive connection, the collector's certificate optionally pinned
by the SHA-256 of its DER encoding (checked right after the handshake, before any byte of
the request is sent). :class:`NatsTransport` (the fleet transport): a JetStream publish
whose ``Nats-Msg-Id`` header ``{agent_id}:{first_seq}-{last_seq}`` lets the stream drop a
resend within its duplicate window; the PubAck (the stream stored it) is the
confirmation. Its asyncio loop runs inside the shipper's thread.
"""

from agent.shipper._http import HttpReply, HttpTransport, interpret_reply, normalize_pin
from agent.shipper._nats import NatsTransport
from agent.shipper._result import (
    CollectorUnreachableError,
    Outcome,
    PinMismatchError,
    SendResult,
    ShipperStats,
    Transport,
)
from agent.shipper._shipper import Shipper

__all__ = [
    "CollectorUnreachableError",
    "HttpReply",
    "HttpTransport",
    "NatsTransport",
    "Outcome",
    "PinMismatchError",
    "SendResult",
    "Shipper",
    "ShipperStats",
    "Transport",
    "interpret_reply",
    "normalize_pin",
]
