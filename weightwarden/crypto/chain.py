"""A per-agent hash chain: every event commits to the one before it.

Each agent numbers its events 1, 2, 3 ... and gives each a :class:`ChainLink`::

    payload_hash = SHA-256(payload)                      (the event's canonical bytes)
    link_hash    = SHA-256(F("weightwarden/chain/v1") || F(agent_id) || F(seq)
                           || F(prev_hash) || F(payload_hash))

where ``F(x)`` is the 8-byte big-endian length of ``x`` followed by ``x``; strings are
UTF-8 (hashes are their lower-case hex text) and ``seq`` is 8 bytes big-endian. The length
prefixes make the encoding unambiguous: no two different links hash the same bytes.
The first link's ``prev_hash`` is :data:`GENESIS`; every later one's is the previous
link's ``link_hash``.

:func:`verify_chain` checks links in the order they are given (arrival or storage order)
and reports every problem as data, by sequence number: gaps, forks (two different links
with one seq), replays (the same link again), edited payloads, broken links (a link whose
hash does not match its fields, or that does not follow its predecessor), links out of
order and links of another agent.

What a chain cannot show on its own: the end. Someone who drops the newest links, or
rewrites them and recomputes every hash after the edit, leaves a chain that is internally
consistent. Pass ``expected_head`` (the ``link_hash`` that a signed batch or the collector's
stored head says the chain ends at) to catch that; the agent's batch signatures are what
make the head trustworthy.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "GENESIS",
    "ChainLink",
    "ChainProblem",
    "ChainReport",
    "ProblemKind",
    "compute_link_hash",
    "next_link",
    "verify_chain",
]

GENESIS: Final = "0" * 64
"""The ``prev_hash`` of an agent's first link (seq 1)."""

_DOMAIN: Final = b"weightwarden/chain/v1"
_MAX_SEQ: Final = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainLink:
    """One event's place in its agent's chain; hashes are lower-case SHA-256 hex."""

    agent_id: str
    seq: int
    prev_hash: str
    payload_hash: str
    link_hash: str


class ProblemKind(enum.StrEnum):
    """What is wrong at a place in a chain."""

    GAP = "gap"
    """Links are missing: sequence numbers were skipped (or the first ones never came)."""
    FORK = "fork"
    """Two different links claim the same sequence number."""
    REPLAY = "replay"
    """A link that was already seen (or is at or before the verified head) came again."""
    PAYLOAD_EDITED = "payload_edited"
    """The payload does not hash to the link's ``payload_hash``."""
    BROKEN_LINK = "broken_link"
    """The link's hash does not match its fields, or its ``prev_hash`` is not its
    predecessor's ``link_hash``."""
    OUT_OF_ORDER = "out_of_order"
    """The link came after a link with a higher sequence number."""
    WRONG_AGENT = "wrong_agent"
    """The link belongs to another agent's chain."""
    HEAD_MISMATCH = "head_mismatch"
    """The chain does not end at the expected head: newest links dropped or rewritten."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainProblem:
    """One problem, at a sequence number; a gap spans ``seq`` to ``last_seq``."""

    kind: ProblemKind
    seq: int
    detail: str
    last_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    """What :func:`verify_chain` found.

    Attributes:
        agent_id: The chain's agent (from the anchor, else the first link), if any.
        count: How many links were examined.
        head: The accepted link with the highest sequence number (or the anchor): where
            the next verification can continue from once the report is clean.
        problems: Every problem found, ordered by sequence number.
    """

    agent_id: str | None
    count: int
    head: ChainLink | None
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        """Whether the chain verified without a single problem."""
        return not self.problems


def _text(value: str) -> bytes:
    # surrogatepass: a malformed agent id must hash (and fail to match), never crash.
    return value.encode("utf-8", "surrogatepass")


_DOMAIN_FIELD: Final = len(_DOMAIN).to_bytes(8, "big") + _DOMAIN
_SEQ_LENGTH: Final = (8).to_bytes(8, "big")


def compute_link_hash(*, agent_id: str, seq: int, prev_hash: str, payload_hash: str) -> str:
    """Return the link hash over the length-prefixed fields (see the module docstring).

    The fields are joined and hashed in one call: this runs once per event on the
    collector's ingest path.

    Raises:
        ValueError: ``seq`` is not in 0 .. 2**63 - 1.
    """
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"chain seq must be in 0..{_MAX_SEQ}, got {seq}")
    agent, prev, payload = _text(agent_id), _text(prev_hash), _text(payload_hash)
    return hashlib.sha256(
        b"".join(
            (
                _DOMAIN_FIELD,
                len(agent).to_bytes(8, "big"),
                agent,
                _SEQ_LENGTH,
                seq.to_bytes(8, "big"),
                len(prev).to_bytes(8, "big"),
                prev,
                len(payload).to_bytes(8, "big"),
                payload,
            )
        )
    ).hexdigest()


def next_link(prev: ChainLink | None, agent_id: str, payload: bytes) -> ChainLink:
    """Return the link for ``payload`` after ``prev`` (``None`` starts a chain at seq 1).

    Raises:
        ValueError: ``prev`` belongs to another agent, or the sequence is exhausted.
    """
    if prev is not None and prev.agent_id != agent_id:
        raise ValueError(f"cannot extend {prev.agent_id!r}'s chain as agent {agent_id!r}")
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.link_hash
    payload_hash = hashlib.sha256(payload).hexdigest()
    return ChainLink(
        agent_id=agent_id,
        seq=seq,
        prev_hash=prev_hash,
        payload_hash=payload_hash,
        link_hash=compute_link_hash(
            agent_id=agent_id, seq=seq, prev_hash=prev_hash, payload_hash=payload_hash
        ),
    )


def verify_chain(
    links_with_payloads: Iterable[tuple[ChainLink, bytes]],
    *,
    after: ChainLink | None = None,
    expected_head: str | None = None,
) -> ChainReport:
    """Check links and their payloads, in the order given, and report every problem.

    Args:
        links_with_payloads: Each link with the payload bytes it commits to.
        after: A link verified before (the previous report's head); the chain then
            continues at ``after.seq + 1`` from ``after.link_hash``. Without it the chain
            must start at seq 1 from :data:`GENESIS`.
        expected_head: The ``link_hash`` the chain must end at, from a trusted source (a
            signed batch, the collector's stored head); catches dropped or rewritten tails.

    Returns:
        A report; it never raises for bad links: a broken chain is a finding, not an error.
    """
    scan = _Scan(after)
    for link, payload in links_with_payloads:
        scan.add(link, payload)
    return scan.report(expected_head)


class _Scan:
    """State of one verification pass: links accepted by seq, and problems found."""

    def __init__(self, after: ChainLink | None) -> None:
        self.after = after
        self.agent_id = None if after is None else after.agent_id
        self.start = 1 if after is None else after.seq + 1
        self.highest = self.start - 1
        self.by_seq: dict[int, ChainLink] = {}
        self.problems: list[ChainProblem] = []
        self.count = 0

    def flag(self, kind: ProblemKind, seq: int, detail: str, last_seq: int | None = None) -> None:
        self.problems.append(ChainProblem(kind=kind, seq=seq, detail=detail, last_seq=last_seq))

    def add(self, link: ChainLink, payload: bytes) -> None:
        self.count += 1
        seq = link.seq
        if self.agent_id is None:
            self.agent_id = link.agent_id
        elif link.agent_id != self.agent_id:
            self.flag(
                ProblemKind.WRONG_AGENT,
                seq,
                f"link of agent {link.agent_id!r} in the chain of {self.agent_id!r}",
            )
            return
        if not 1 <= seq <= _MAX_SEQ:
            self.flag(ProblemKind.BROKEN_LINK, seq, f"seq {seq} is outside 1..{_MAX_SEQ}")
            return
        if self.after is not None and seq <= self.after.seq:
            self._before_anchor(link, self.after)
            return
        expected_hash = compute_link_hash(
            agent_id=link.agent_id,
            seq=seq,
            prev_hash=link.prev_hash,
            payload_hash=link.payload_hash,
        )
        if expected_hash != link.link_hash:
            self.flag(ProblemKind.BROKEN_LINK, seq, "link_hash does not match the link's fields")
        if hashlib.sha256(payload).hexdigest() != link.payload_hash:
            self.flag(ProblemKind.PAYLOAD_EDITED, seq, "payload does not match payload_hash")
        seen = self.by_seq.get(seq)
        if seen is not None:
            if seen == link:
                self.flag(ProblemKind.REPLAY, seq, f"seq {seq} arrived again")
            else:
                self.flag(ProblemKind.FORK, seq, f"two different links claim seq {seq}")
            return
        if seq < self.highest:
            self.flag(ProblemKind.OUT_OF_ORDER, seq, f"seq {seq} arrived after seq {self.highest}")
        self.highest = max(self.highest, seq)
        self.by_seq[seq] = link

    def _before_anchor(self, link: ChainLink, after: ChainLink) -> None:
        if link.seq == after.seq and link != after:
            self.flag(
                ProblemKind.FORK, link.seq, f"differs from the verified head at seq {link.seq}"
            )
        else:
            self.flag(
                ProblemKind.REPLAY,
                link.seq,
                f"seq {link.seq} is at or before the verified head (seq {after.seq})",
            )

    def report(self, expected_head: str | None) -> ChainReport:
        self._gaps()
        self._linkage()
        head = self.by_seq[max(self.by_seq)] if self.by_seq else self.after
        if expected_head is not None and (head is None or head.link_hash != expected_head):
            end = "is empty" if head is None else f"ends at seq {head.seq}"
            self.flag(
                ProblemKind.HEAD_MISMATCH,
                0 if head is None else head.seq,
                f"chain {end}, not at the expected head {expected_head[:16]}...: "
                "newest links dropped or rewritten",
            )
        return ChainReport(
            agent_id=self.agent_id,
            count=self.count,
            head=head,
            problems=tuple(sorted(self.problems, key=lambda problem: problem.seq)),
        )

    def _gaps(self) -> None:
        expected = self.start
        for seq in sorted(self.by_seq):
            if seq > expected:
                missing = seq - expected
                what = f"seq {expected}" if missing == 1 else f"seq {expected} to {seq - 1}"
                self.flag(
                    ProblemKind.GAP,
                    expected,
                    f"{what} missing ({missing} link{'s' if missing > 1 else ''})",
                    last_seq=seq - 1,
                )
            expected = seq + 1

    def _linkage(self) -> None:
        for seq, link in sorted(self.by_seq.items()):
            if seq == self.start:
                want = GENESIS if self.after is None else self.after.link_hash
                source = "GENESIS" if self.after is None else f"the verified head (seq {seq - 1})"
            elif seq - 1 in self.by_seq:
                want = self.by_seq[seq - 1].link_hash
                source = f"seq {seq - 1}'s link_hash"
            else:
                continue  # after a gap there is nothing to compare with
            if link.prev_hash != want:
                self.flag(ProblemKind.BROKEN_LINK, seq, f"prev_hash is not {source}")
