"""Re-verify the whole stored record: every agent's chain, row by row, against its head.

:func:`verify_log` reads each enrolled agent's stored events in sequence order, recomputes
every payload hash from the stored payload text and every link hash from the stored
fields (:func:`weightwarden.crypto.chain.verify_chain`), and compares where the chain ends
with the head in the agents table. What it finds is data, per agent and per row:

``edited``
    a row whose payload no longer matches its ``payload_hash``, or whose link fields no
    longer hash to its ``link_hash`` (the row was changed in the database);
``removed``
    rows missing: a hole in the sequence numbers, or the newest rows gone (the stored
    chain ends before the head). A gap reported at ingest (events that never arrived)
    shows here too: the record does not hold them;
``broken_link``
    a row whose ``prev_hash`` is not the previous row's ``link_hash`` (one of the two
    was changed, or rows were spliced);
``head_mismatch``
    the row at the head's seq is not the head's link: the newest rows were rewritten with
    recomputed hashes;
``beyond_head``
    rows after the head that no ingest recorded (inserted into the database directly).

What it cannot see: rows rewritten together with the agents table's head, so that both
agree (the head is only as trustworthy as the database; the agents' signed batches are
the evidence for it), and rows of agents that are not in the agents table. Imported
events (agents ``import:<source>``) are not chained and are skipped.

The store is read a page at a time while the collector keeps ingesting: each agent's head
is read first, and only rows up to it are judged, so events stored meanwhile are never
mistaken for tampering.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Final

from weightwarden.crypto.chain import (
    ChainLink,
    ChainProblem,
    ProblemKind,
    compute_link_hash,
    verify_chain,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from collector.store import AgentRecord, Store, StoredEvent

__all__ = ["AgentLog", "LogProblem", "LogProblemKind", "LogReport", "verify_log"]

_IMPORT_PREFIX: Final = "import:"
_CHUNK: Final = 10_000
"""Rows verified per :func:`verify_chain` call (the next chunk continues from its head)."""
_MAX_SEQ: Final = 2**63 - 1


class LogProblemKind(enum.StrEnum):
    """What is wrong with stored rows (see the module docstring)."""

    EDITED = "edited"
    REMOVED = "removed"
    BROKEN_LINK = "broken_link"
    HEAD_MISMATCH = "head_mismatch"
    BEYOND_HEAD = "beyond_head"


_RANK: Final = {kind: rank for rank, kind in enumerate(LogProblemKind)}
"""Problems at one seq are listed in the order the kinds are declared."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogProblem:
    """One problem in one agent's stored chain; a range spans ``seq`` to ``last_seq``."""

    kind: LogProblemKind
    agent_id: str
    seq: int
    detail: str
    last_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLog:
    """One agent's verdict: the head it was checked against, rows read, problems found."""

    agent_id: str
    head_seq: int
    head_hash: str
    rows: int
    """Stored rows checked (those up to the head)."""
    problems: tuple[LogProblem, ...]
    """Ordered by sequence number."""

    @property
    def ok(self) -> bool:
        """Whether this agent's stored chain verified without a problem."""
        return not self.problems


@dataclass(frozen=True, slots=True, kw_only=True)
class LogReport:
    """Every agent's verdict, by agent id."""

    agents: tuple[AgentLog, ...]

    @property
    def ok(self) -> bool:
        """Whether every agent's stored chain verified."""
        return all(agent.ok for agent in self.agents)

    @property
    def problems(self) -> tuple[LogProblem, ...]:
        """Every problem, agent by agent."""
        return tuple(problem for agent in self.agents for problem in agent.problems)

    @property
    def rows(self) -> int:
        """Stored rows checked, all agents together."""
        return sum(agent.rows for agent in self.agents)


def verify_log(store: Store) -> LogReport:
    """Re-verify every enrolled agent's stored chain against its head (module docstring).

    Raises:
        StoreError: The store could not be read (a failed check is a problem in the
            report, never an exception).
    """
    return LogReport(
        agents=tuple(
            _verify_agent(store, record)
            for record in store.agents()
            if not record.agent_id.startswith(_IMPORT_PREFIX)
        )
    )


def _verify_agent(store: Store, record: AgentRecord) -> AgentLog:
    agent_id, head_seq = record.agent_id, record.head_seq
    problems: list[LogProblem] = []
    beyond: list[int] = []
    anchor: ChainLink | None = None
    rows = 0
    stored = iter(store.chain(agent_id))
    while chunk := list(islice(stored, _CHUNK)):
        judged = [event for event in chunk if event.seq <= head_seq]
        beyond.extend(event.seq for event in chunk if event.seq > head_seq)
        if not judged:
            continue
        rows += len(judged)
        report = verify_chain(
            ((_link(event), event.payload.encode("utf-8")) for event in judged), after=anchor
        )
        problems.extend(_classify(agent_id, judged, report.problems))
        anchor = report.head
    problems.extend(_tail(record, anchor))
    if beyond:
        problems.extend(_beyond(store, record, beyond))
    return AgentLog(
        agent_id=agent_id,
        head_seq=head_seq,
        head_hash=record.head_hash,
        rows=rows,
        problems=tuple(sorted(problems, key=lambda problem: (problem.seq, _RANK[problem.kind]))),
    )


def _link(event: StoredEvent) -> ChainLink:
    return ChainLink(
        agent_id=event.agent_id,
        seq=event.seq,
        prev_hash=event.prev_hash,
        payload_hash=event.payload_hash,
        link_hash=event.link_hash,
    )


def _fields_match(event: StoredEvent) -> bool:
    """Whether the row's link fields still hash to its ``link_hash``."""
    if not 1 <= event.seq <= _MAX_SEQ:
        return False
    return event.link_hash == compute_link_hash(
        agent_id=event.agent_id,
        seq=event.seq,
        prev_hash=event.prev_hash,
        payload_hash=event.payload_hash,
    )


def _classify(
    agent_id: str, rows: list[StoredEvent], found: tuple[ChainProblem, ...]
) -> Iterator[LogProblem]:
    """Name each chain problem as what happened to the stored rows."""
    by_seq = {event.seq: event for event in rows}
    broken = Counter(problem.seq for problem in found if problem.kind is ProblemKind.BROKEN_LINK)
    for problem in found:
        if problem.kind is ProblemKind.GAP:
            last = problem.last_seq if problem.last_seq is not None else problem.seq
            count = last - problem.seq + 1
            yield LogProblem(
                kind=LogProblemKind.REMOVED,
                agent_id=agent_id,
                seq=problem.seq,
                last_seq=last,
                detail=f"{problem.detail}: {count} row{'s' if count > 1 else ''} not in the store",
            )
        elif problem.kind is ProblemKind.PAYLOAD_EDITED:
            yield LogProblem(
                kind=LogProblemKind.EDITED,
                agent_id=agent_id,
                seq=problem.seq,
                detail="payload changed: it does not hash to the row's payload_hash",
            )
        elif problem.kind is not ProblemKind.BROKEN_LINK:
            yield LogProblem(
                kind=LogProblemKind.EDITED,
                agent_id=agent_id,
                seq=problem.seq,
                detail=f"{problem.kind.value}: {problem.detail}",
            )
    for seq, count in sorted(broken.items()):
        event = by_seq.get(seq)
        edited = event is None or not _fields_match(event)
        if edited:
            yield LogProblem(
                kind=LogProblemKind.EDITED,
                agent_id=agent_id,
                seq=seq,
                detail="link changed: the row's seq, prev_hash or payload_hash no longer "
                "hash to its link_hash (or link_hash itself was changed)",
            )
        if count > int(edited):
            yield LogProblem(
                kind=LogProblemKind.BROKEN_LINK,
                agent_id=agent_id,
                seq=seq,
                detail=(
                    "prev_hash is not GENESIS"
                    if seq == 1
                    else f"prev_hash is not the link_hash of the row before (seq {seq - 1})"
                ),
            )


def _tail(record: AgentRecord, last: ChainLink | None) -> list[LogProblem]:
    """Compare where the stored chain ends with the agents table's head."""
    head_seq = record.head_seq
    end = 0 if last is None else last.seq
    if end < head_seq:
        count = head_seq - end
        return [
            LogProblem(
                kind=LogProblemKind.REMOVED,
                agent_id=record.agent_id,
                seq=end + 1,
                last_seq=head_seq,
                detail=(
                    f"tail truncated: the head is seq {head_seq} but the stored chain ends at "
                    f"seq {end} ({count} row{'s' if count > 1 else ''} missing)"
                ),
            )
        ]
    if last is not None and last.link_hash != record.head_hash:
        return [
            LogProblem(
                kind=LogProblemKind.HEAD_MISMATCH,
                agent_id=record.agent_id,
                seq=head_seq,
                detail=(
                    f"the stored row at seq {head_seq} is not the head link "
                    f"{record.head_hash[:16]}...: the newest rows were rewritten"
                ),
            )
        ]
    return []


def _beyond(store: Store, record: AgentRecord, seqs: list[int]) -> list[LogProblem]:
    """Rows after the head: fine if an ingest stored them meanwhile, else planted."""
    now = store.agent(record.agent_id)
    head_now = record.head_seq if now is None else now.head_seq
    planted = sorted(seq for seq in seqs if seq > head_now)
    if not planted:
        return []
    return [
        LogProblem(
            kind=LogProblemKind.BEYOND_HEAD,
            agent_id=record.agent_id,
            seq=planted[0],
            last_seq=planted[-1],
            detail=(
                f"{len(planted)} row{'s' if len(planted) > 1 else ''} after the head "
                f"(seq {head_now}) that no ingest recorded"
            ),
        )
    ]
