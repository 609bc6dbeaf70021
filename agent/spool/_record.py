"""What the spool hands back: a stored event with its place in the chain, and counters."""

from __future__ import annotations

from collections.abc import Mapping  # noqa: TC003 - dataclass fields resolve at runtime
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from weightwarden.events import from_json_line

if TYPE_CHECKING:
    from weightwarden.crypto.chain import ChainLink
    from weightwarden.events import Event

__all__ = ["SpoolStats", "SpooledEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledEvent:
    """One event as the spool holds it.

    Attributes:
        seq: The agent's sequence number for the event (``link.seq``).
        time: The event's own time, milliseconds since the epoch.
        payload: ``canonical_bytes(event)``: exactly what the chain link (and the shipper's
            batch signature) covers.
        link: The event's link in the agent's hash chain.
    """

    seq: int
    time: int
    payload: bytes
    link: ChainLink

    @property
    def event(self) -> Event:
        """The event, decoded from ``payload`` (each access decodes again).

        Raises:
            EventFormatError: The stored payload is not an event (the file was edited).
        """
        return from_json_line(self.payload)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolStats:
    """Counters of a spool at one moment.

    Attributes:
        count: Events held (appended and not yet acknowledged by the collector).
        bytes: Size of the held events as the bound counts it: payload plus a fixed
            per-row overhead (:data:`agent.spool.ROW_OVERHEAD`).
        oldest_seq: Sequence number of the oldest held event; None when none is held.
        newest_seq: Sequence number of the newest held event; None when none is held.
        head_seq: The last sequence number ever assigned (0 before the first event); the
            next event gets ``head_seq + 1`` even after every event was trimmed.
        acked_seq: Everything up to here was confirmed by the collector and trimmed.
        dropped: Events refused because the spool was full, per event class (the class
            name, ``"FileActivity"``), since the spool was created.
        unreported_drops: Of those, how many no health event reports yet (one is
            appended as soon as there is room).
        reported_drops: How many dropped events health events already report.
    """

    count: int
    bytes: int
    oldest_seq: int | None
    newest_seq: int | None
    head_seq: int
    acked_seq: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    unreported_drops: int = 0
    reported_drops: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dropped", MappingProxyType(dict(sorted(self.dropped.items()))))

    def __hash__(self) -> int:
        return hash((self.count, self.bytes, self.head_seq, self.acked_seq, self.unreported_drops))

    @property
    def dropped_total(self) -> int:
        """Events refused since the spool was created, all classes together."""
        return sum(self.dropped.values())
