import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightwarden import crypto
from weightwarden.crypto import chain as chain_module
from weightwarden.crypto.chain import (
    GENESIS,
    ChainLink,
    ChainProblem,
    ProblemKind,
    compute_link_hash,
    next_link,
    verify_chain,
)

# Hypothesis has no timing assertion here: CI machines are shared and slow.
quick = settings(deadline=None)

Chain = list[tuple[ChainLink, bytes]]

payload_lists = st.lists(st.binary(max_size=24), min_size=1, max_size=8)


def build(payloads: list[bytes], agent_id: str = "agent-1") -> Chain:
    chain: Chain = []
    prev = None
    for payload in payloads:
        prev = next_link(prev, agent_id, payload)
        chain.append((prev, payload))
    return chain


def kinds(chain: Chain) -> set[ProblemKind]:
    return {problem.kind for problem in verify_chain(chain).problems}


def test_first_link_starts_at_one_from_genesis() -> None:
    """A new chain starts at seq 1 with the GENESIS prev hash and the payload's SHA-256."""
    link = next_link(None, "agent-1", b"event")
    assert link.seq == 1
    assert link.prev_hash == GENESIS == "0" * 64
    assert link.payload_hash == hashlib.sha256(b"event").hexdigest()
    assert link.link_hash == compute_link_hash(
        agent_id="agent-1", seq=1, prev_hash=GENESIS, payload_hash=link.payload_hash
    )


def test_next_link_continues_the_chain() -> None:
    """Each next link has the following seq and the previous link hash."""
    first = next_link(None, "agent-1", b"a")
    second = next_link(first, "agent-1", b"b")
    assert second.seq == 2
    assert second.prev_hash == first.link_hash


def test_next_link_refuses_another_agents_chain() -> None:
    """Extending a chain as a different agent is a programming error."""
    with pytest.raises(ValueError, match="cannot extend"):
        next_link(next_link(None, "agent-1", b"a"), "agent-2", b"b")


def test_link_hash_is_pinned() -> None:
    """The link hash encoding is a contract with stored chains; it does not drift."""
    expected = hashlib.sha256(
        b"".join(
            len(part).to_bytes(8, "big") + part
            for part in (
                b"weightwarden/chain/v1",
                b"agent-1",
                (1).to_bytes(8, "big"),
                GENESIS.encode(),
                b"ab" * 32,
            )
        )
    ).hexdigest()
    assert (
        compute_link_hash(agent_id="agent-1", seq=1, prev_hash=GENESIS, payload_hash="ab" * 32)
        == expected
    )


@quick
@given(
    st.tuples(
        st.text(max_size=6), st.integers(0, 2**63 - 1), st.text(max_size=6), st.text(max_size=6)
    ),
    st.tuples(
        st.text(max_size=6), st.integers(0, 2**63 - 1), st.text(max_size=6), st.text(max_size=6)
    ),
)
def test_link_encoding_is_unambiguous(
    first: tuple[str, int, str, str], second: tuple[str, int, str, str]
) -> None:
    """Different fields give different link hashes, even when their concatenations agree."""
    hashes = [
        compute_link_hash(agent_id=a, seq=s, prev_hash=p, payload_hash=h)
        for a, s, p, h in (first, second)
    ]
    assert (hashes[0] == hashes[1]) == (first == second)


def test_shifted_field_boundary_changes_the_hash() -> None:
    """Moving a character from one field to the next changes the link hash."""
    one = compute_link_hash(agent_id="ab", seq=1, prev_hash="c", payload_hash="d")
    two = compute_link_hash(agent_id="a", seq=1, prev_hash="bc", payload_hash="d")
    assert one != two


def test_seq_out_of_range_is_refused() -> None:
    """A negative or too large seq cannot be encoded and is refused."""
    with pytest.raises(ValueError, match="seq"):
        compute_link_hash(agent_id="a", seq=-1, prev_hash=GENESIS, payload_hash="")
    with pytest.raises(ValueError, match="seq"):
        compute_link_hash(agent_id="a", seq=2**63, prev_hash=GENESIS, payload_hash="")


@quick
@given(payload_lists)
def test_valid_chain_verifies(payloads: list[bytes]) -> None:
    """A chain built with next_link verifies clean, and its head is the last link."""
    chain = build(payloads)
    report = verify_chain(chain, expected_head=chain[-1][0].link_hash)
    assert report.ok
    assert report.problems == ()
    assert report.count == len(chain)
    assert report.agent_id == "agent-1"
    assert report.head == chain[-1][0]


def test_empty_chain_is_clean_unless_a_head_was_expected() -> None:
    """No links is a clean chain, but not when the chain should end at a known head."""
    assert verify_chain([]).ok
    report = verify_chain([], expected_head="ab" * 32)
    assert [problem.kind for problem in report.problems] == [ProblemKind.HEAD_MISMATCH]


@quick
@given(payload_lists, st.data())
def test_any_payload_edit_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    """Changing any payload is reported as an edited payload at that link's seq."""
    chain = build(payloads)
    index = data.draw(st.integers(0, len(chain) - 1))
    link, payload = chain[index]
    edited = data.draw(st.binary(max_size=24).filter(lambda other: other != payload))
    chain[index] = (link, edited)
    report = verify_chain(chain)
    assert (
        ChainProblem(
            kind=ProblemKind.PAYLOAD_EDITED,
            seq=link.seq,
            detail="payload does not match payload_hash",
        )
        in report.problems
    )


@quick
@given(payload_lists, st.data())
def test_any_link_field_edit_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    """Changing any field of any link without recomputing hashes is detected."""
    chain = build(payloads)
    index = data.draw(st.integers(0, len(chain) - 1))
    link, payload = chain[index]
    name = data.draw(st.sampled_from(["agent_id", "seq", "prev_hash", "payload_hash", "link_hash"]))
    if name == "seq":
        value: Any = data.draw(st.integers(-5, 20).filter(lambda seq: seq != link.seq))
    else:
        old = getattr(link, name)
        value = data.draw(st.text(max_size=64).filter(lambda text: text != old))
    chain[index] = (dataclasses.replace(link, **{name: value}), payload)
    assert not verify_chain(chain).ok


@quick
@given(payload_lists, st.data())
def test_any_deletion_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    """Removing any links is detected: a gap inside, a head mismatch at the end."""
    chain = build(payloads)
    head = chain[-1][0].link_hash
    start = data.draw(st.integers(0, len(chain) - 1))
    stop = data.draw(st.integers(start + 1, len(chain)))
    remaining = chain[:start] + chain[stop:]
    report = verify_chain(remaining, expected_head=head)
    assert not report.ok
    if stop < len(chain):
        assert any(
            p.kind is ProblemKind.GAP and p.seq == start + 1 and p.last_seq == stop
            for p in report.problems
        )
        assert not verify_chain(remaining).ok
    else:
        assert ProblemKind.HEAD_MISMATCH in {problem.kind for problem in report.problems}


@quick
@given(payload_lists, st.data())
def test_any_duplication_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    """A link that appears twice anywhere in the stream is reported as a replay of its seq."""
    chain = build(payloads)
    index = data.draw(st.integers(0, len(chain) - 1))
    position = data.draw(st.integers(0, len(chain)))
    duplicated = [*chain[:position], chain[index], *chain[position:]]
    report = verify_chain(duplicated)
    assert any(
        problem.kind is ProblemKind.REPLAY and problem.seq == chain[index][0].seq
        for problem in report.problems
    )


@quick
@given(st.lists(st.binary(max_size=8), min_size=2, max_size=8), st.data())
def test_any_reordering_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    """Any order other than the original is reported as out of order."""
    chain = build(payloads)
    shuffled = data.draw(st.permutations(chain).filter(lambda order: order != chain))
    assert ProblemKind.OUT_OF_ORDER in kinds(shuffled)


def test_swapped_neighbours_are_named_by_seq() -> None:
    """Two swapped links are reported as out of order at the late one's seq, not as gaps."""
    chain = build([b"a", b"b", b"c", b"d"])
    swapped = [chain[0], chain[2], chain[1], chain[3]]
    report = verify_chain(swapped)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.OUT_OF_ORDER, 2)]


def test_fork_is_two_links_with_one_seq() -> None:
    """Two different links for the same seq are a fork, named by seq."""
    chain = build([b"a", b"b", b"c"])
    fork = next_link(chain[0][0], "agent-1", b"evil")
    report = verify_chain([*chain, (fork, b"evil")])
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.FORK, 2)]


def test_replay_is_the_same_link_again() -> None:
    """The same link arriving twice is a replay, named by seq."""
    chain = build([b"a", b"b"])
    report = verify_chain([*chain, chain[0]])
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.REPLAY, 1)]


def test_gap_names_the_missing_range() -> None:
    """Missing links are one gap problem with its first and last seq."""
    chain = build([b"a", b"b", b"c", b"d", b"e"])
    report = verify_chain([chain[0], chain[4]])
    assert report.problems == (
        ChainProblem(
            kind=ProblemKind.GAP, seq=2, detail="seq 2 to 4 missing (3 links)", last_seq=4
        ),
    )


def test_missing_first_link_is_a_gap() -> None:
    """A chain that does not start at seq 1 is missing its start."""
    chain = build([b"a", b"b"])
    report = verify_chain(chain[1:])
    assert [(p.kind, p.seq, p.last_seq) for p in report.problems] == [(ProblemKind.GAP, 1, 1)]


def test_huge_seq_jump_is_one_problem() -> None:
    """A forged seq far ahead is reported once, not once per missing number."""
    first = next_link(None, "agent-1", b"a")
    far = dataclasses.replace(first, seq=2**62)
    report = verify_chain([(first, b"a"), (far, b"a")])
    assert len(report.problems) == 2
    assert {p.kind for p in report.problems} == {ProblemKind.GAP, ProblemKind.BROKEN_LINK}


def test_rewritten_link_breaks_the_next_one() -> None:
    """Rewriting a link and recomputing its hash breaks the link after it."""
    chain = build([b"a", b"b", b"c"])
    forged = next_link(chain[0][0], "agent-1", b"evil")
    report = verify_chain([chain[0], (forged, b"evil"), chain[2]])
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.BROKEN_LINK, 3)]


def test_rewritten_tail_is_caught_only_by_the_expected_head() -> None:
    """A consistently rewritten tail verifies on its own; the trusted head exposes it."""
    chain = build([b"a", b"b", b"c"])
    forged = build([b"a", b"b", b"evil"])
    assert verify_chain(forged).ok
    report = verify_chain(forged, expected_head=chain[-1][0].link_hash)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.HEAD_MISMATCH, 3)]


def test_link_of_another_agent_is_flagged() -> None:
    """A link from another agent's chain is reported and not mixed into this one."""
    ours = build([b"a", b"b"])
    theirs = build([b"x"], agent_id="agent-2")
    report = verify_chain([ours[0], theirs[0], ours[1]])
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.WRONG_AGENT, 1)]
    assert report.head == ours[1][0]


def test_verification_continues_after_a_verified_head() -> None:
    """Links after an anchor verify against it; earlier links are replays."""
    chain = build([b"a", b"b", b"c", b"d"])
    anchor = chain[1][0]
    assert verify_chain(chain[2:], after=anchor).ok
    report = verify_chain(chain[1:], after=anchor)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.REPLAY, 2)]
    other = build([b"z", b"y", b"c", b"d"])
    report = verify_chain(chain[2:], after=other[1][0])
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.BROKEN_LINK, 3)]


def test_problems_are_ordered_by_seq() -> None:
    """The report lists problems in sequence order, whatever order they were found in."""
    chain = build([b"a", b"b", b"c", b"d"])
    stream = [chain[3], (chain[0][0], b"edited"), chain[2]]
    seqs = [p.seq for p in verify_chain(stream).problems]
    assert seqs == sorted(seqs)


def test_chain_api_is_exported_from_the_crypto_package() -> None:
    """The crypto package re-exports every public name of the chain module."""
    assert set(chain_module.__all__) <= set(crypto.__all__)
    for name in chain_module.__all__:
        assert getattr(crypto, name) is getattr(chain_module, name)
