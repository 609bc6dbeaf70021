"""The Store contract, run against both real stores (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest

from collector.store import (
    SCHEMA_VERSION,
    Alert,
    EventColumns,
    HeadMoved,
    QuarantinedBatch,
    StoredEvent,
)
from policies import Grant, Suppression
from weightwarden.crypto.chain import GENESIS
from weightwarden.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from collector.store import AgentRecord, Store
    from weightwarden.crypto.chain import ChainLink

    ChainOf = Callable[..., tuple[list[StoredEvent], ChainLink]]

H1 = hashlib.sha256(b"token one").hexdigest()
H2 = hashlib.sha256(b"token two").hexdigest()
PEM = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"


def record(store: Store, agent_id: str) -> AgentRecord:
    """The agent's record, which must exist."""
    agent = store.agent(agent_id)
    assert agent is not None
    return agent


def found(store: Store, alert_id: str) -> Alert:
    """The alert ``alert_id`` finds, which must exist."""
    result = store.alert(alert_id)
    assert result is not None
    return result


def alert(alert_id: str, *, created_at: int = 10, status: str = "new", **fields: object) -> Alert:
    values: dict[str, object] = {
        "id": alert_id,
        "created_at": created_at,
        "updated_at": created_at,
        "severity_id": 4,
        "title": f"Canary touched ({alert_id})",
        "rule": "canary",
        "status": status,
        "disposition": None,
        "note": None,
        "agent_id": "gpu-01",
        "evidence": ("uid-1", "uid-2"),
        "finding": '{"class_uid":2004,"finding_info":{"title":"Canary touched ✓"}}',
    }
    values.update(fields)
    return Alert(**values)  # type: ignore[arg-type]


def ingest(
    store: Store,
    agent_id: str,
    events: Sequence[StoredEvent],
    *,
    expected: int,
    alerts: Sequence[Alert] = (),
    nonce: str | None = None,
) -> str:
    """Store ``events`` as one batch on top of head ``expected``; return the nonce."""
    nonce = nonce or secrets.token_hex(16)
    last = max(events, key=lambda event: event.seq)
    store.ingest(
        agent_id=agent_id,
        nonce=nonce,
        expected_head_seq=expected,
        new_head_seq=last.seq,
        new_head_hash=last.link_hash,
        events=events,
        alerts=alerts,
    )
    return nonce


def columns(events: Sequence[StoredEvent], agent_id: str | None = None) -> EventColumns:
    """``events`` as the columns of one batch (of ``agent_id``, else the first event's agent)."""
    return EventColumns(
        agent_id=agent_id or events[0].agent_id,
        received_at=events[0].received_at,
        seq=[e.seq for e in events],
        payload=[e.payload for e in events],
        prev_hash=[e.prev_hash for e in events],
        payload_hash=[e.payload_hash for e in events],
        link_hash=[e.link_hash for e in events],
        uid=[e.uid for e in events],
        time=[e.time for e in events],
        class_uid=[e.class_uid for e in events],
        activity_id=[e.activity_id for e in events],
        severity_id=[e.severity_id for e in events],
    )


def imported(uid: str, source: str = "import:siem", *, time: int = 5) -> StoredEvent:
    return StoredEvent(
        agent_id=source,
        seq=0,
        payload=f'{{"metadata":{{"uid":"{uid}"}}}}',
        prev_hash="",
        payload_hash="",
        link_hash="",
        uid=uid,
        time=time,
        class_uid=1001,
        activity_id=1,
        severity_id=1,
        received_at=9,
    )


# -- agents ------------------------------------------------------------------------------


def test_new_agent_starts_at_genesis(store: Store) -> None:
    """A registered agent has its key, enrollment time, no revocation and head 0 / GENESIS."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=7)
    agent = record(store, "gpu-01")
    assert (agent.public_key_pem, agent.enrolled_at, agent.revoked_at) == (PEM, 7, None)
    assert (agent.head_seq, agent.head_hash) == (0, GENESIS)
    assert store.agent("gpu-02") is None


def test_agents_are_listed_by_id(store: Store) -> None:
    """agents() returns every agent ordered by id."""
    for agent_id in ("b-2", "a-1", "c-3"):
        store.register_agent(agent_id=agent_id, public_key_pem=PEM, now=1)
    assert [record.agent_id for record in store.agents()] == ["a-1", "b-2", "c-3"]


def test_enrolling_an_enrolled_agent_again_is_refused(store: Store) -> None:
    """An agent that is enrolled and not revoked cannot be registered (re-keyed) again."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    with pytest.raises(UsageError, match="already enrolled"):
        store.register_agent(agent_id="gpu-01", public_key_pem="other", now=2)
    assert record(store, "gpu-01").public_key_pem == PEM


def test_revoked_agent_is_rekeyed_and_keeps_its_chain(store: Store, chain_of: ChainOf) -> None:
    """Re-registering a revoked agent sets the new key, clears the revocation, keeps the head."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, head = chain_of("gpu-01", 3)
    ingest(store, "gpu-01", events, expected=0)
    assert store.revoke_agent("gpu-01", now=5)
    store.register_agent(agent_id="gpu-01", public_key_pem="new key", now=6)
    agent = record(store, "gpu-01")
    assert (agent.public_key_pem, agent.enrolled_at, agent.revoked_at) == ("new key", 6, None)
    assert (agent.head_seq, agent.head_hash) == (3, head.link_hash)
    assert [event.seq for event in store.chain("gpu-01")] == [1, 2, 3]


def test_revoke_marks_the_agent_and_keeps_the_first_time(store: Store) -> None:
    """Revoking is true for a known agent, false for an unknown one, and keeps the first time."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    assert store.revoke_agent("gpu-01", now=5)
    assert store.revoke_agent("gpu-01", now=9)
    assert record(store, "gpu-01").revoked_at == 5
    assert not store.revoke_agent("nobody", now=5)


# -- tokens ------------------------------------------------------------------------------


def test_token_redeems_exactly_once(store: Store) -> None:
    """A token is redeemed once; a second redemption fails."""
    store.add_token(token_hash=H1, host="gpu-01", expires_at=100)
    assert store.redeem_token(token_hash=H1, host="gpu-01", now=50)
    assert not store.redeem_token(token_hash=H1, host="gpu-01", now=51)


def test_expired_token_is_refused(store: Store) -> None:
    """A token is usable strictly before expires_at, not at or after it."""
    store.add_token(token_hash=H1, host="gpu-01", expires_at=100)
    store.add_token(token_hash=H2, host="gpu-01", expires_at=100)
    assert not store.redeem_token(token_hash=H1, host="gpu-01", now=100)
    assert store.redeem_token(token_hash=H2, host="gpu-01", now=99)


def test_token_for_another_host_is_refused_and_stays_usable(store: Store) -> None:
    """A token bound to one host fails for another, and is still there for its own host."""
    store.add_token(token_hash=H1, host="gpu-01", expires_at=100)
    assert not store.redeem_token(token_hash=H1, host="gpu-02", now=50)
    assert store.redeem_token(token_hash=H1, host="gpu-01", now=50)


def test_unknown_token_is_refused(store: Store) -> None:
    """A token hash that was never issued is not redeemed."""
    assert not store.redeem_token(token_hash=H2, host="gpu-01", now=1)


def test_same_token_hash_twice_is_refused(store: Store) -> None:
    """Adding a token hash that is already stored raises ValueError."""
    store.add_token(token_hash=H1, host="gpu-01", expires_at=100)
    with pytest.raises(ValueError, match="already stored"):
        store.add_token(token_hash=H1, host="gpu-02", expires_at=100)


def test_token_raced_by_threads_is_redeemed_once(store: Store) -> None:
    """Eight threads redeeming one token at once: exactly one succeeds."""
    store.add_token(token_hash=H1, host="gpu-01", expires_at=100)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def redeem() -> None:
        barrier.wait()
        results.append(store.redeem_token(token_hash=H1, host="gpu-01", now=1))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


# -- ingest ------------------------------------------------------------------------------


def test_ingest_stores_events_head_nonce_and_alerts(store: Store, chain_of: ChainOf) -> None:
    """A batch's events come back exactly; the head advances; nonce and alerts are stored."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, head = chain_of("gpu-01", 5)
    nonce = ingest(store, "gpu-01", events, expected=0, alerts=[alert("a1")])
    assert list(store.chain("gpu-01")) == events
    agent = record(store, "gpu-01")
    assert (agent.head_seq, agent.head_hash) == (5, head.link_hash)
    assert store.nonce_seen(nonce)
    assert not store.nonce_seen("f" * 32)
    assert store.alerts() == [alert("a1")]
    assert store.count_events() == 5


def test_events_given_as_columns_are_stored_like_objects(store: Store, chain_of: ChainOf) -> None:
    """A batch handed over as columns reads back as the same events, head and nonce."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    store.register_agent(agent_id="gpu-02", public_key_pem=PEM, now=1)
    first, _ = chain_of("gpu-01", 5)
    second = [dataclasses.replace(e, agent_id="gpu-02") for e in first]
    ingest(store, "gpu-01", first, expected=0, nonce="n-objects")
    head = second[-1]
    store.ingest(
        agent_id="gpu-02",
        nonce="n-columns",
        expected_head_seq=0,
        new_head_seq=head.seq,
        new_head_hash=head.link_hash,
        events=columns(second),
        alerts=(),
    )
    assert list(store.chain("gpu-02")) == second
    assert list(columns(second).events()) == second
    assert (record(store, "gpu-02").head_seq, record(store, "gpu-02").head_hash) == (
        head.seq,
        head.link_hash,
    )
    assert store.nonce_seen("n-columns")
    with pytest.raises(HeadMoved):
        store.ingest(
            agent_id="gpu-02",
            nonce="n-again",
            expected_head_seq=0,
            new_head_seq=head.seq,
            new_head_hash=head.link_hash,
            events=columns(second),
            alerts=(),
        )
    assert list(store.chain("gpu-02")) == second


def test_columns_of_different_lengths_are_refused() -> None:
    """EventColumns whose columns differ in length cannot be built."""
    with pytest.raises(ValueError, match="differ in length"):
        EventColumns(
            agent_id="gpu-01",
            received_at=1,
            seq=[1, 2],
            payload=["{}"],
            prev_hash=["0" * 64],
            payload_hash=["1" * 64],
            link_hash=["2" * 64],
            uid=["u"],
            time=[1],
            class_uid=[1001],
            activity_id=[1],
            severity_id=[1],
        )


def test_stored_links_returns_the_range(store: Store, chain_of: ChainOf) -> None:
    """stored_links maps seq to link_hash for the stored events in the inclusive range."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, _ = chain_of("gpu-01", 6)
    ingest(store, "gpu-01", events, expected=0)
    assert store.stored_links("gpu-01", 2, 4) == {e.seq: e.link_hash for e in events[1:4]}
    assert store.stored_links("gpu-01", 7, 9) == {}
    assert store.stored_links("gpu-02", 1, 6) == {}


def test_batches_continue_the_chain_and_a_gap_advances_the_head(
    store: Store, chain_of: ChainOf
) -> None:
    """A second batch continues at the head; a batch after a gap is stored and moves the head."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    first, head = chain_of("gpu-01", 3)
    ingest(store, "gpu-01", first, expected=0)
    later, _ = chain_of("gpu-01", 5, after=head)
    ingest(store, "gpu-01", later[2:], expected=3)
    assert [event.seq for event in store.chain("gpu-01")] == [1, 2, 3, 6, 7, 8]
    assert record(store, "gpu-01").head_seq == 8


def test_stale_head_raises_head_moved_and_stores_nothing(store: Store, chain_of: ChainOf) -> None:
    """A batch expecting an old head raises HeadMoved and leaves the store as it was."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, head = chain_of("gpu-01", 3)
    ingest(store, "gpu-01", events, expected=0)
    more, _ = chain_of("gpu-01", 2, after=head)
    with pytest.raises(HeadMoved):
        ingest(store, "gpu-01", more, expected=1, nonce="n2", alerts=[alert("a2")])
    assert store.count_events() == 3
    assert record(store, "gpu-01").head_seq == 3
    assert not store.nonce_seen("n2")
    assert store.alerts() == []


def test_failure_mid_batch_leaves_nothing(store: Store, chain_of: ChainOf) -> None:
    """A batch whose 500th event is already stored leaves no event, nonce, head or alert."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    first, head = chain_of("gpu-01", 5)
    ingest(store, "gpu-01", first, expected=0)
    batch, _ = chain_of("gpu-01", 1000, after=head)
    batch[499] = dataclasses.replace(first[2])  # seq 3 again, in the middle
    with pytest.raises(HeadMoved, match="already stored"):
        ingest(store, "gpu-01", batch, expected=5, nonce="n-mid", alerts=[alert("a-mid")])
    assert store.count_events() == 5
    assert list(store.chain("gpu-01")) == first
    assert record(store, "gpu-01").head_hash == head.link_hash
    assert not store.nonce_seen("n-mid")
    assert store.alert("a-mid") is None


def test_reused_nonce_raises_head_moved_and_stores_nothing(store: Store, chain_of: ChainOf) -> None:
    """A batch with a nonce stored before is refused whole (HeadMoved: the re-read sees it)."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, head = chain_of("gpu-01", 2)
    nonce = ingest(store, "gpu-01", events, expected=0)
    more, _ = chain_of("gpu-01", 2, after=head)
    with pytest.raises(HeadMoved, match="nonce"):
        ingest(store, "gpu-01", more, expected=2, nonce=nonce)
    assert store.count_events() == 2
    assert record(store, "gpu-01").head_seq == 2


def test_batch_of_a_revoked_agent_raises_head_moved(store: Store, chain_of: ChainOf) -> None:
    """Once revoked, an agent's batch is not stored even with the right head."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    store.revoke_agent("gpu-01", now=2)
    events, _ = chain_of("gpu-01", 2)
    with pytest.raises(HeadMoved, match="revoked"):
        ingest(store, "gpu-01", events, expected=0)
    assert store.count_events() == 0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other agent", "in a batch of agent"),
        ("beyond head", "outside"),
        ("wrong head hash", "must be the link"),
        ("head behind", "behind"),
        ("nul payload", "NUL"),
        ("huge class_uid", "64-bit"),
        ("unknown agent", "not enrolled"),
    ],
)
@pytest.mark.parametrize("form", ["objects", "columns"])
def test_ingest_refuses_contradictory_arguments(
    store: Store, chain_of: ChainOf, case: str, message: str, form: str
) -> None:
    """Arguments that would break the store's invariants raise ValueError; nothing is stored.

    Events given as columns are checked as strictly as events given as objects.
    """
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, head = chain_of("gpu-01", 3)
    agent_id, expected, new_seq, new_hash = "gpu-01", 0, 3, head.link_hash
    if case == "other agent":
        events[1] = dataclasses.replace(events[1], agent_id="gpu-02")
    elif case == "beyond head":
        new_seq, new_hash = 2, events[1].link_hash
    elif case == "wrong head hash":
        new_hash = "0" * 64
    elif case == "head behind":
        ingest(store, "gpu-01", events[:1], expected=0)
        expected, new_seq = 1, 0
    elif case == "nul payload":
        events[2] = dataclasses.replace(events[2], payload="{\x00}")
    elif case == "huge class_uid":
        events[2] = dataclasses.replace(events[2], class_uid=2**63)
    elif case == "unknown agent":
        agent_id = "gpu-09"
        events = [dataclasses.replace(e, agent_id="gpu-09") for e in events]
    stored = store.count_events()
    given: Sequence[StoredEvent] | EventColumns = events
    if form == "columns":
        given = columns(events, "gpu-02" if case == "other agent" else None)
    with pytest.raises(ValueError, match=message):
        store.ingest(
            agent_id=agent_id,
            nonce="n-bad",
            expected_head_seq=expected,
            new_head_seq=new_seq,
            new_head_hash=new_hash,
            events=given,
            alerts=(),
        )
    assert store.count_events() == stored
    assert not store.nonce_seen("n-bad")


def test_two_threads_extending_one_chain_only_one_wins(
    open_backend: Callable[..., Store], chain_of: ChainOf
) -> None:
    """Two workers extending one head at once: one is stored, the other gets HeadMoved."""
    first = open_backend()
    second = open_backend()
    first.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    mine, _ = chain_of("gpu-01", 200)
    theirs, _ = chain_of("gpu-01", 200)
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def worker(name: str, store: Store, events: list[StoredEvent]) -> None:
        barrier.wait()
        try:
            ingest(store, "gpu-01", events, expected=0)
            outcome[name] = "stored"
        except HeadMoved:
            outcome[name] = "moved"

    threads = [
        threading.Thread(target=worker, args=("mine", first, mine)),
        threading.Thread(target=worker, args=("theirs", second, theirs)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcome.values()) == ["moved", "stored"]
    winner = mine if outcome["mine"] == "stored" else theirs
    assert list(first.chain("gpu-01")) == winner
    assert record(first, "gpu-01").head_hash == winner[-1].link_hash


# -- quarantine and import ---------------------------------------------------------------


def test_quarantine_keeps_bodies_byte_for_byte_oldest_first(store: Store) -> None:
    """Quarantined batches come back with their exact bytes, oldest first, with their alerts."""
    later = QuarantinedBatch(id="q2", agent_id="gpu-01", received_at=20, reason="fork", body=b"x")
    earlier = QuarantinedBatch(
        id="q1", agent_id="gpu-01", received_at=10, reason="replay: seen", body=b"\x00\xff{}"
    )
    store.quarantine(later, [alert("a-q2")])
    store.quarantine(earlier, [])
    assert store.quarantined() == [earlier, later]
    assert [a.id for a in store.alerts()] == ["a-q2"]
    with pytest.raises(ValueError, match="already stored"):
        store.quarantine(later, [])


def test_import_counts_new_events_by_uid_and_numbers_them_per_source(store: Store) -> None:
    """Imports skip uids already imported (or repeated) and number each source on from its last."""
    assert store.import_events([imported("u1"), imported("u2"), imported("u1")], []) == 2
    assert store.import_events([imported("u2"), imported("u3")], [alert("a-imp")]) == 1
    assert store.import_events([imported("u4", "import:other")], []) == 1
    assert [(e.seq, e.uid) for e in store.chain("import:siem")] == [(1, "u1"), (2, "u2"), (3, "u3")]
    assert [(e.seq, e.uid) for e in store.chain("import:other")] == [(1, "u4")]
    assert store.agents() == []
    assert store.alert("a-imp") is not None
    assert store.count_events() == 4


def test_imported_payloads_are_read_back_by_uid(store: Store) -> None:
    """imported_payloads answers for imported events only, whatever the source."""
    store.import_events([imported("u1"), imported("u2", "import:other")], [])
    stored = {e.uid: e.payload for e in store.events()}
    assert store.imported_payloads(["u1", "u2", "u9", "u1"]) == stored
    assert store.imported_payloads([]) == {}


def test_import_dedupes_among_imports_only(store: Store, chain_of: ChainOf) -> None:
    """An imported event whose uid belongs to an agent's chained event is still imported."""
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    events, _ = chain_of("gpu-01", 1)
    ingest(store, "gpu-01", events, expected=0)
    assert store.import_events([imported(events[0].uid)], []) == 1


def test_import_refuses_events_of_an_agent_chain(store: Store) -> None:
    """Imported events must belong to an import:<source> agent."""
    with pytest.raises(ValueError, match="import:"):
        store.import_events([dataclasses.replace(imported("u1"), agent_id="gpu-01")], [])
    assert store.count_events() == 0


# -- reading -----------------------------------------------------------------------------


def test_events_are_ordered_by_time_agent_and_seq_and_filtered(
    store: Store, chain_of: ChainOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """events() and payloads() page by (time, agent, seq) and apply the filters they take."""
    monkeypatch.setattr(store, "page_size", 7)  # several pages
    for agent_id in ("gpu-02", "gpu-01"):
        store.register_agent(agent_id=agent_id, public_key_pem=PEM, now=1)
    a, _ = chain_of("gpu-01", 20, time0=1000)
    b, _ = chain_of("gpu-02", 20, time0=1010)
    ingest(store, "gpu-01", a, expected=0)
    ingest(store, "gpu-02", b, expected=0)
    everything = sorted(a + b, key=lambda e: (e.time, e.agent_id, e.seq))
    assert list(store.events()) == everything
    assert list(store.events(agent_id="gpu-02")) == b
    assert list(store.events(since=1015, until=1020)) == [
        e for e in everything if 1015 <= e.time < 1020
    ]
    assert list(store.events(limit=9)) == everything[:9]
    assert list(store.events(agent_id="gpu-01", since=1005, limit=10)) == a[5:15]
    assert list(store.events(limit=0)) == []
    assert list(store.payloads()) == [e.payload for e in everything]
    assert list(store.payloads(since=1015, until=1020)) == [
        e.payload for e in everything if 1015 <= e.time < 1020
    ]


def test_chain_returns_one_agent_by_seq_across_pages(
    store: Store, chain_of: ChainOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chain() yields exactly one agent's events in seq order, page after page."""
    monkeypatch.setattr(store, "page_size", 4)
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    store.register_agent(agent_id="gpu-02", public_key_pem=PEM, now=1)
    a, _ = chain_of("gpu-01", 10)
    b, _ = chain_of("gpu-02", 3)
    ingest(store, "gpu-01", a, expected=0)
    ingest(store, "gpu-02", b, expected=0)
    assert list(store.chain("gpu-01")) == a
    assert list(store.chain("nobody")) == []


# -- alerts ------------------------------------------------------------------------------


def test_alerts_are_newest_first_and_filtered(store: Store) -> None:
    """alerts() lists newest first, filters status and since; a repeated id keeps the first."""
    store.add_alerts([alert("old", created_at=1), alert("mid", created_at=5, status="resolved")])
    store.add_alerts([alert("new", created_at=9), alert("old", created_at=99, title="changed")])
    assert [a.id for a in store.alerts()] == ["new", "mid", "old"]
    assert [a.id for a in store.alerts(status="new")] == ["new", "old"]
    assert [a.id for a in store.alerts(since=5)] == ["new", "mid"]
    assert store.alert("old") == alert("old", created_at=1)
    store.add_alerts([])


def test_alert_is_found_by_id_or_unique_prefix(store: Store) -> None:
    """alert() finds an id, or a prefix of at least 6 characters that only one id has."""
    store.add_alerts([alert("abcdef-111"), alert("abcdef-222"), alert("zyxwvu-333")])
    assert found(store, "abcdef-111").id == "abcdef-111"
    assert found(store, "zyxwvu").id == "zyxwvu-333"
    assert store.alert("abcdef") is None  # shared by two
    assert store.alert("zyxwv") is None  # too short
    assert found(store, "abcdef-1").id == "abcdef-111"
    assert store.alert("nothing-here") is None


def test_update_alert_records_the_triage_decision(store: Store) -> None:
    """update_alert records status, disposition, note (None keeps it), time; unknown: None."""
    store.add_alerts([alert("abcdef-111", note="first look")])
    updated = store.update_alert(
        "abcdef-111", status="acknowledged", disposition="benign", note=None, now=50
    )
    assert updated is not None
    assert (updated.status, updated.disposition, updated.note, updated.updated_at) == (
        "acknowledged",
        "benign",
        "first look",
        50,
    )
    again = store.update_alert(
        "abcdef", status="resolved", disposition="true_positive", note="stolen", now=60
    )
    assert again == dataclasses.replace(
        updated, status="resolved", disposition="true_positive", note="stolen", updated_at=60
    )
    assert store.alert("abcdef-111") == again
    assert (
        store.update_alert("missing-id", status="resolved", disposition="benign", note=None, now=1)
        is None
    )


def test_refresh_alerts_updates_open_alerts_and_leaves_resolved_ones_as_closed(
    store: Store,
) -> None:
    """refresh_alerts replaces what was found, keeps creation and triage, skips resolved."""
    store.add_alerts(
        [
            alert("open-1", created_at=5, note="looking"),
            alert("closed-2", created_at=6, status="resolved"),
        ]
    )
    store.update_alert("open-1", status="acknowledged", disposition="benign", note=None, now=7)
    later = {
        "severity_id": 5,
        "title": "more found",
        "rule": "weightwarden.rule.read_then_egress",
        "evidence": ("e1", "e2", "e3"),
        "finding": '{"more":true}',
    }
    changed = store.refresh_alerts(
        [
            alert("open-1", created_at=99, **later),
            alert("closed-2", created_at=99, **later),
            alert("never-stored", **later),
        ],
        now=50,
    )
    assert changed == 1
    refreshed = found(store, "open-1")
    assert (refreshed.created_at, refreshed.updated_at) == (5, 50)
    assert (refreshed.status, refreshed.disposition, refreshed.note) == (
        "acknowledged",
        "benign",
        "looking",
    )
    assert {key: getattr(refreshed, key) for key in later} == later
    assert store.alert("closed-2") == alert("closed-2", created_at=6, status="resolved")
    assert store.alert("never-stored") is None
    assert store.refresh_alerts([], now=60) == 0


# -- access grants and suppressions --------------------------------------------------------


def grant(grant_id: str, *, created_at: int = 100, until: int = 200, **fields: object) -> Grant:
    values: dict[str, object] = {
        "id": grant_id,
        "user": "alice",
        "asset": "frontier-70b",
        "approver": "dana",
        "reason": "eval sweep ✓ (JIRA-12)",
        "created_at": created_at,
        "until": until,
    }
    values.update(fields)
    return Grant(**values)  # type: ignore[arg-type]


def test_grants_are_kept_oldest_first_and_filtered_by_what_is_in_force(store: Store) -> None:
    """Every grant comes back as stored; with now, only grants created, unexpired, unrevoked."""
    later = grant("g-later", created_at=150, until=400, user="bob")
    early = grant("g-early")
    store.add_grant(later)
    store.add_grant(early)
    assert store.grants() == [early, later]
    assert store.grants(now=99) == []
    assert store.grants(now=100) == [early]
    assert store.grants(now=199) == [early, later]
    assert store.grants(now=200) == [later]
    assert store.grants(now=400) == []


def test_revoking_a_grant_ends_it_once(store: Store) -> None:
    """Revoke records the time; a second revoke, or an unknown id, reports false."""
    store.add_grant(grant("g-1"))
    assert store.revoke_grant("g-1", now=150)
    assert not store.revoke_grant("g-1", now=160)
    assert not store.revoke_grant("g-unknown", now=160)
    [revoked] = store.grants()
    assert revoked.revoked_at == 150
    assert store.grants(now=149) == [revoked]
    assert store.grants(now=150) == []
    assert revoked.valid_at(149)
    assert not revoked.valid_at(150)


def test_a_grant_id_is_stored_once(store: Store) -> None:
    """Adding a grant whose id is taken is refused and keeps the first."""
    store.add_grant(grant("g-1"))
    with pytest.raises(ValueError, match="already stored"):
        store.add_grant(grant("g-1", user="mallory"))
    assert [g.user for g in store.grants()] == ["alice"]


@pytest.mark.parametrize("field", ["id", "user", "asset", "approver", "reason"])
def test_a_grant_with_a_nul_character_is_refused_by_both_stores(store: Store, field: str) -> None:
    """PostgreSQL text cannot hold NUL, so neither store accepts it."""
    bad = grant("g-1")
    with pytest.raises(ValueError, match="NUL"):
        store.add_grant(dataclasses.replace(bad, **{field: getattr(bad, field) + "\x00"}))
    assert store.grants() == []


def test_suppressions_are_kept_oldest_first_and_filtered_by_expiry(store: Store) -> None:
    """Scope globs, reason and expiry round-trip; with now, expired ones are left out."""
    scoped = Suppression(
        rule="weightwarden.rule.off_hours",
        reason="false_positive on alert a1: on-call ✓",
        user="alice",
        host="gpu-[0-9]*",
        program="python3",
        path="/data/ckpt/[*]weird",
        until=500,
    )
    forever = Suppression(rule="weightwarden.rule.first_seen", reason="benign", host="lab-*")
    store.add_suppression(forever, suppression_id="s-2", created_at=20)
    store.add_suppression(scoped, suppression_id="s-1", created_at=10, alert_id="a1")
    assert store.suppressions() == [scoped, forever]
    assert store.suppressions(now=499) == [scoped, forever]
    assert store.suppressions(now=500) == [forever]


def test_lifting_an_alerts_suppressions_ends_them_now_and_keeps_the_rest(store: Store) -> None:
    """Only the alert's suppressions still in force end, at now; they stay on record."""
    mine = Suppression(rule="weightwarden.rule.off_hours", reason="fp", user="alice")
    other = Suppression(rule="weightwarden.rule.off_hours", reason="fp", user="bob")
    store.add_suppression(mine, suppression_id="s-1", created_at=1, alert_id="a1")
    store.add_suppression(other, suppression_id="s-2", created_at=2, alert_id="a2")
    assert store.lift_suppressions("a1", now=50) == 1
    assert store.lift_suppressions("a1", now=60) == 0
    assert store.suppressions(now=50) == [other]
    assert store.suppressions() == [dataclasses.replace(mine, until=50), other]


def test_a_suppression_id_is_stored_once_and_nul_is_refused(store: Store) -> None:
    """A taken id or a NUL character is a ValueError; nothing is stored."""
    one = Suppression(rule="r", reason="x", user="alice")
    store.add_suppression(one, suppression_id="s-1", created_at=1)
    with pytest.raises(ValueError, match="already stored"):
        store.add_suppression(one, suppression_id="s-1", created_at=2)
    with pytest.raises(ValueError, match="NUL"):
        store.add_suppression(
            dataclasses.replace(one, path="/x\x00"), suppression_id="s-2", created_at=2
        )
    assert store.suppressions() == [one]


def test_a_version_1_database_gains_grants_and_suppressions_keeping_its_data(
    open_backend: Callable[..., Store], raw_sql: Callable[..., list[Any]]
) -> None:
    """Migration 2 adds the tables to a database written before it, keeping what is there."""
    open_backend().close()
    raw_sql("DROP TABLE grants")
    raw_sql("DROP TABLE suppressions")
    raw_sql("DELETE FROM schema_migrations WHERE version >= 2")
    raw_sql(
        "INSERT INTO agents (agent_id, public_key_pem, enrolled_at, head_seq, head_hash)"
        " VALUES ('gpu-01', 'pem', 1, 0, 'genesis')"
    )
    store = open_backend()
    assert store.agent("gpu-01") is not None
    store.add_grant(grant("g-1"))
    assert [g.id for g in store.grants()] == ["g-1"]
    rows = raw_sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))


# -- lifecycle and schema ----------------------------------------------------------------


def test_closed_store_refuses_calls(store: Store) -> None:
    """After close(), calls raise ValueError; closing again is harmless."""
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.agents()
    with pytest.raises(ValueError, match="closed"):
        store.add_token(token_hash=H1, host="h", expires_at=1)


def test_reopening_applies_no_migration_and_keeps_the_data(
    open_backend: Callable[..., Store], raw_sql: Callable[..., list[Any]]
) -> None:
    """Opening a store again applies nothing: one schema_migrations row per version, data kept."""
    store = open_backend()
    store.register_agent(agent_id="gpu-01", public_key_pem=PEM, now=1)
    store.close()
    again = open_backend()
    rows = raw_sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert again.agent("gpu-01") is not None


def test_database_from_a_newer_version_is_refused(
    open_backend: Callable[..., Store], raw_sql: Callable[..., list[Any]]
) -> None:
    """A database of a newer schema version is refused with a ConfigError saying to upgrade."""
    open_backend().close()
    newer = SCHEMA_VERSION + 1
    raw_sql(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (newer, "from the future", 1),
    )
    try:
        with pytest.raises(ConfigError, match=f"schema version {newer}.*upgrade weightwarden"):
            open_backend()
    finally:
        raw_sql("DELETE FROM schema_migrations WHERE version = ?", (newer,))


# -- package -----------------------------------------------------------------------------


def test_public_api_is_pinned() -> None:
    """collector.store exports exactly its documented names, and each one resolves."""
    import collector.store  # noqa: PLC0415 -- the package under test

    assert sorted(collector.store.__all__) == sorted(
        [
            "SCHEMA_VERSION",
            "AgentRecord",
            "Alert",
            "AlertStatus",
            "Disposition",
            "EventColumns",
            "HeadMoved",
            "PostgresStore",
            "QuarantinedBatch",
            "SqliteStore",
            "Store",
            "StoreError",
            "StoredEvent",
            "Synchronous",
            "open_store",
        ]
    )
    for name in collector.store.__all__:
        assert getattr(collector.store, name) is not None


def test_sqlite_users_do_not_import_psycopg() -> None:
    """Importing collector.store and opening SQLite leaves psycopg unimported."""
    code = (
        "import sys, tempfile, collector.store as s\n"
        "s.open_store(tempfile.mkdtemp() + '/c.sqlite').close()\n"
        "print('psycopg' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
