"""Ingest rules: every integrity case is detected and reported; duplicates are idempotent."""

from __future__ import annotations

import dataclasses
import json
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.ingest import (
    IngestLimits,
    Ingestor,
    IngestResult,
    _fast_index,
    _parsed_index,
    seq_ranges,
)
from collector.store import HeadMoved
from weightwarden.batch import new_batch, seal_batch
from weightwarden.crypto.chain import ChainLink, compute_link_hash, next_link
from weightwarden.crypto.keys import generate_key
from weightwarden.events import DetectionFinding, Severity, from_json_line


def ingestor(store, clock, **limits) -> Ingestor:
    return Ingestor(store, limits=IngestLimits(**limits), clock=clock)


def finding(alert) -> DetectionFinding:
    event = from_json_line(alert.finding)
    assert isinstance(event, DetectionFinding)
    return event


def test_a_first_batch_is_stored_with_index_columns_and_acknowledged(store, enrolled, clock):
    """A clean batch is stored whole; acked_seq is its last seq; index columns come from OCSF."""
    items = enrolled.record_opens(5)
    result = ingestor(store, clock).ingest(enrolled.seal(items))
    assert (result.status, result.acked_seq, result.stored, result.duplicates) == (200, 5, 5, 0)
    assert result.quarantine_id is None
    stored = list(store.chain("gpu-01"))
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    first = json.loads(items[0][1])
    assert stored[0].uid == first["metadata"]["uid"]
    assert (stored[0].class_uid, stored[0].activity_id, stored[0].severity_id) == (1001, 14, 1)
    assert stored[0].time == 1_000
    assert stored[0].payload.encode() == items[0][1]
    assert store.agent("gpu-01").head_seq == 5
    assert store.agent("gpu-01").head_hash == items[-1][0].link_hash
    assert not store.alerts()


def test_index_columns_match_the_parsed_event_for_every_layout(store, enrolled, clock, make):
    """Canonical payloads of every kind, and JSON in another layout, index the same way."""
    events = [
        make.file_open("gpu-01"),
        make.canary_open("gpu-01"),
        make.tampered("gpu-01"),
        make.copied("gpu-01"),
        make.health("gpu-01"),
    ]
    items = enrolled.record(*events)
    spaced = json.dumps(json.loads(items[0][1]), indent=1).encode()
    items.append((next_link(items[-1][0], "gpu-01", spaced), spaced))
    assert ingestor(store, clock).ingest(enrolled.seal(items)).status == 200
    for stored in store.chain("gpu-01"):
        obj = json.loads(stored.payload)
        expected = (
            obj["metadata"]["uid"],
            obj["time"],
            obj["class_uid"],
            obj["activity_id"],
            obj["severity_id"],
        )
        got = (stored.uid, stored.time, stored.class_uid, stored.activity_id, stored.severity_id)
        assert got == expected


def test_a_retry_with_a_new_nonce_is_acknowledged_and_stores_nothing_twice(store, enrolled, clock):
    """Sending the same events again (lost ack) answers 200 with duplicates and stores none."""
    items = enrolled.record_opens(4)
    ing = ingestor(store, clock)
    ing.ingest(enrolled.seal(items))
    again = ing.ingest(enrolled.seal(items))
    assert (again.status, again.acked_seq, again.stored, again.duplicates) == (200, 4, 0, 4)
    assert store.count_events() == 4
    assert not store.alerts()
    assert not store.quarantined()


def test_replaying_a_retry_whose_events_were_all_stored_is_still_a_replay(store, enrolled, clock):
    """The nonce of an all-duplicates batch is remembered too: that message again is a replay."""
    items = enrolled.record_opens(2)
    ing = ingestor(store, clock)
    ing.ingest(enrolled.seal(items))
    retry = enrolled.seal(items)
    assert ing.ingest(retry).status == 200
    assert ing.ingest(retry).status == 409
    assert [a.rule for a in store.alerts()] == ["weightwarden.integrity.replay"]


def test_a_transport_redelivery_of_a_stored_message_is_a_duplicate(store, enrolled, clock):
    """JetStream redelivering the same message after a lost ack raises no replay alert."""
    body = enrolled.seal(enrolled.record_opens(3))
    ing = ingestor(store, clock)
    ing.ingest(body)
    again = ing.ingest(body, redelivery=True)
    assert (again.status, again.acked_seq, again.duplicates) == (200, 3, 3)
    assert not store.alerts()
    # A redelivered message carrying events that were never stored is still a replay.
    other = enrolled.seal(enrolled.record_opens(1))
    assert ing.ingest(other).status == 200
    assert ing.ingest(other, redelivery=True).status == 200


def test_an_overlapping_batch_stores_only_the_new_events(store, enrolled, clock):
    """Events at or below the head with the stored link are skipped; the rest are stored."""
    items = enrolled.record_opens(6)
    ing = ingestor(store, clock)
    ing.ingest(enrolled.seal(items[:3]))
    result = ing.ingest(enrolled.seal(items[1:]))
    assert (result.status, result.acked_seq, result.stored, result.duplicates) == (200, 6, 3, 2)
    assert [e.seq for e in store.chain("gpu-01")] == [1, 2, 3, 4, 5, 6]


def test_a_replayed_batch_is_quarantined_with_an_integrity_alert(store, enrolled, clock):
    """The same signed message twice: 409, the stored head, a replay alert, the body kept."""
    body = enrolled.seal(enrolled.record_opens(3))
    ing = ingestor(store, clock)
    assert ing.ingest(body).status == 200
    replay = ing.ingest(body)
    assert (replay.status, replay.acked_seq, replay.stored) == (409, 3, 0)
    [kept] = store.quarantined()
    assert kept.id == replay.quarantine_id
    assert kept.body == body
    assert kept.reason.startswith("replay")
    [alert] = store.alerts()
    assert alert.rule == "weightwarden.integrity.replay"
    assert alert.title.startswith("Replayed batch: agent gpu-01")
    assert alert.severity_id == Severity.HIGH
    assert store.count_events() == 3


def test_a_fork_is_quarantined_and_answers_with_the_stored_head(store, enrolled, clock):
    """The same seq with another link (a rewritten history) is refused with a fork alert."""
    items = enrolled.record_opens(3)
    ing = ingestor(store, clock)
    ing.ingest(enrolled.seal(items))
    forged = next_link(items[0][0], "gpu-01", b'{"other": "history"}')
    result = ing.ingest(enrolled.seal([(forged, b'{"other": "history"}')]))
    assert (result.status, result.acked_seq) == (409, 3)
    [alert] = store.alerts()
    assert alert.rule == "weightwarden.integrity.fork"
    assert alert.title == "Chain fork: agent gpu-01 sent a different event 2"
    assert [b.id for b in store.quarantined()] == [result.quarantine_id]
    assert [e.link_hash for e in store.chain("gpu-01")] == [i[0].link_hash for i in items]


def test_a_gap_stores_the_events_advances_the_head_and_reports_it(store, enrolled, clock):
    """Missing seqs: events after the gap are stored, the batch is quarantined, an alert says so."""
    items = enrolled.record_opens(60)
    ing = ingestor(store, clock)
    ing.ingest(enrolled.seal(items[:40]))
    result = ing.ingest(enrolled.seal(items[57:]))
    assert (result.status, result.acked_seq, result.stored) == (200, 60, 3)
    assert result.quarantine_id is not None
    assert store.agent("gpu-01").head_seq == 60
    [alert] = store.alerts()
    assert alert.title == "Chain gap: agent gpu-01 events 41-57 missing"
    assert alert.rule == "weightwarden.integrity.gap"
    report = finding(alert)
    assert report.explanation is not None
    assert "skipped" in report.explanation.rule
    assert report.evidence_uids == (json.loads(items[57][1])["metadata"]["uid"],)
    assert result.quarantine_id in (report.description or "")
    [kept] = store.quarantined()
    assert kept.reason.startswith("gap")
    # Monitoring continues after the gap.
    later = ing.ingest(enrolled.seal(enrolled.record_opens(2)))
    assert (later.status, later.acked_seq, later.stored) == (200, 62, 2)


def test_a_gap_from_the_start_of_the_chain_is_reported(store, enrolled, clock):
    """An agent whose first batch starts at seq 3 has a gap of events 1-2."""
    items = enrolled.record_opens(4)
    result = ingestor(store, clock).ingest(enrolled.seal(items[2:]))
    assert (result.status, result.acked_seq) == (200, 4)
    [alert] = store.alerts()
    assert alert.title == "Chain gap: agent gpu-01 events 1-2 missing"


def test_events_arriving_after_their_gap_are_quarantined_as_late(store, enrolled, clock):
    """Once the chain moved past a gap, its missing events cannot join it: 409, a late alert."""
    items = enrolled.record_opens(9)
    ing = ingestor(store, clock)
    ing.ingest(enrolled.seal(items[:3]))
    ing.ingest(enrolled.seal(items[6:]))
    late = ing.ingest(enrolled.seal(items[3:6]))
    assert (late.status, late.acked_seq) == (409, 9)
    titles = {a.rule: a.title for a in store.alerts()}
    assert titles["weightwarden.integrity.late"] == (
        "Late events: agent gpu-01 events 4-6 arrived after a gap"
    )
    assert store.count_events() == 6


def _batch_with(agent, items, change):
    """A batch of ``items`` with its events rewritten by ``change(index, event)``, signed."""
    batch = new_batch(agent.agent_id, items, sent_at=1)
    events = tuple(change(i, e) for i, e in enumerate(batch.events))
    return seal_batch(dataclasses.replace(batch, events=events), agent.key)


def test_an_edited_payload_is_refused_and_nothing_of_the_batch_is_stored(store, enrolled, clock):
    """A payload that does not match its hash: 409, a broken-chain alert, no event stored."""
    items = enrolled.record_opens(3)
    body = _batch_with(
        enrolled,
        items,
        lambda i, e: (
            dataclasses.replace(e, payload=e.payload.replace("alice", "mallory")) if i == 1 else e
        ),
    )
    result = ingestor(store, clock).ingest(body)
    assert (result.status, result.acked_seq) == (409, 0)
    assert store.count_events() == 0
    [alert] = store.alerts()
    assert alert.rule == "weightwarden.integrity.broken_chain"
    assert alert.title.startswith("Chain broken: agent gpu-01 event 2: payload does not match")


def test_a_link_that_does_not_follow_its_predecessor_is_refused(store, enrolled, clock):
    """A self-consistent link whose prev_hash is not the previous link's: 409, broken chain."""
    items = enrolled.record_opens(2)
    link, payload = items[1]
    prev = "f" * 64
    bad = ChainLink(
        agent_id="gpu-01",
        seq=2,
        prev_hash=prev,
        payload_hash=link.payload_hash,
        link_hash=compute_link_hash(
            agent_id="gpu-01", seq=2, prev_hash=prev, payload_hash=link.payload_hash
        ),
    )
    result = ingestor(store, clock).ingest(enrolled.seal([items[0], (bad, payload)]))
    assert result.status == 409
    [alert] = store.alerts()
    assert "prev_hash" in alert.title
    assert store.count_events() == 0


def test_a_repeated_seq_inside_one_batch_is_refused(store, enrolled, clock):
    """One batch naming seq 1 twice is a broken chain, not a duplicate."""
    items = enrolled.record_opens(1)
    result = ingestor(store, clock).ingest(enrolled.seal([items[0], items[0]]))
    assert result.status == 409
    assert store.count_events() == 0


def test_a_batch_signed_by_another_key_is_refused_with_401(store, enrolled, clock):
    """A wrong signature is refused before anything inside the batch is read; nothing kept."""
    body = enrolled.seal(enrolled.record_opens(2), key=generate_key())
    result = ingestor(store, clock).ingest(body)
    assert (result.status, result.acked_seq) == (401, None)
    assert "signature" in result.message
    assert store.count_events() == 0
    assert not store.quarantined()


def test_unknown_and_revoked_agents_are_refused_with_403(store, enrolled, clock, sim_agent):
    """Only enrolled, unrevoked agents may send."""
    stranger = sim_agent("gpu-99")
    ing = ingestor(store, clock)
    assert ing.ingest(stranger.seal(stranger.record_opens(1))).status == 403
    store.revoke_agent("gpu-01", now=5)
    result = ing.ingest(enrolled.seal(enrolled.record_opens(1)))
    assert result.status == 403
    assert "revoked" in result.message


def test_malformed_and_oversized_bodies_are_refused_with_clear_statuses(store, enrolled, clock):
    """Garbage 400, too many events 413, a body over the limit 413; never an exception."""
    ing = ingestor(store, clock, max_events=3, max_body_bytes=50_000)
    assert ing.ingest(b"not a batch").status == 400
    assert ing.ingest(b"").status == 400
    nul_agent = b"WWB2" + struct.pack(">H", 3) + b"a\x00b" + bytes(28)
    assert ing.ingest(struct.pack(">I", len(nul_agent)) + nul_agent + b"sig").status == 400
    too_many = ing.ingest(enrolled.seal(enrolled.record_opens(4)))
    assert (too_many.status, "limit is 3" in too_many.message) == (413, True)
    assert ing.ingest(b" " * 50_001).status == 413


def _sign(agent, signed: bytes) -> bytes:
    """A wire body around framed bytes the agent signs (a hostile agent can sign anything)."""
    return struct.pack(">I", len(signed)) + signed + agent.key.sign(signed)


def test_payloads_no_store_can_keep_are_refused_with_400(store, enrolled, clock):
    """A NUL or bytes that are not UTF-8 inside a signed payload are bad input (400)."""
    ing = ingestor(store, clock)
    link = next_link(None, "gpu-01", b"{}")
    good = new_batch("gpu-01", [(link, b"{}")], sent_at=1)
    nul = dataclasses.replace(good.events[0], payload='{"a": "\x00"}')
    result = ing.ingest(_sign(enrolled, dataclasses.replace(good, events=(nul,)).signed_bytes()))
    assert result.status == 400, result
    assert "NUL" in result.message
    broken = good.signed_bytes()[:-2] + b"\xff\xfe"  # the payload's last two bytes
    result = ing.ingest(_sign(enrolled, broken))
    assert result.status == 400, result
    assert "UTF-8" in result.message
    assert ing.ingest(_sign(enrolled, good.signed_bytes())).status == 200


def test_signed_events_that_are_not_ocsf_are_stored_and_reported(store, enrolled, clock):
    """A chained payload that is not an OCSF event keeps its place with a MEDIUM alert."""
    payload = b'{"hello": "world"}'
    link = next_link(None, "gpu-01", payload)
    result = ingestor(store, clock).ingest(enrolled.seal([(link, payload)]))
    assert (result.status, result.stored) == (200, 1)
    [stored] = store.chain("gpu-01")
    assert stored.uid.startswith("ww-unreadable:gpu-01:1:")
    [alert] = store.alerts()
    assert alert.rule == "weightwarden.integrity.unreadable_event"
    assert alert.severity_id == Severity.MEDIUM


def test_the_admission_hook_refuses_with_429_and_a_retry_after(store, enrolled, clock):
    """A rate limit answer is 429 with the wait, and nothing is stored."""
    asked = []

    def admit(agent_id: str, events: int) -> float | None:
        asked.append((agent_id, events))
        return 2.5

    result = ingestor(store, clock).ingest(enrolled.seal(enrolled.record_opens(3)), admit=admit)
    assert (result.status, result.retry_after) == (429, 2.5)
    assert asked == [("gpu-01", 3)]
    assert store.count_events() == 0
    assert result.to_json()["retry_after"] == 2.5


class RacingStore:
    """A store where another worker stores the same batch just before ours commits."""

    def __init__(self, inner, racer) -> None:
        self.inner = inner
        self.racer = racer

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def ingest(self, **kwargs) -> None:
        """Let the racer store first, then store ours."""
        racer, self.racer = self.racer, None
        if racer is not None:
            racer()
        self.inner.ingest(**kwargs)


def test_a_head_moved_by_another_worker_is_re_read_and_the_batch_re_checked(store, enrolled, clock):
    """Two workers with one batch: the loser re-reads the head and acknowledges duplicates."""
    items = enrolled.record_opens(3)
    other = ingestor(store, clock)
    body = enrolled.seal(items)
    retry_body = enrolled.seal(items)
    racing = RacingStore(store, lambda: other.ingest(retry_body))
    result = ingestor(racing, clock).ingest(body)
    assert (result.status, result.acked_seq, result.stored, result.duplicates) == (200, 3, 0, 3)
    assert store.count_events() == 3


def test_a_head_that_keeps_moving_answers_429(store, enrolled, clock):
    """A store that always reports a moved head ends in 429 (resend), not a loop or a 500."""

    class Moving(RacingStore):
        def ingest(self, **kwargs) -> None:
            raise HeadMoved(kwargs["agent_id"])

    result = ingestor(Moving(store, None), clock, max_attempts=3).ingest(
        enrolled.seal(enrolled.record_opens(1))
    )
    assert (result.status, result.retry_after) == (429, 1.0)


def test_a_canary_touch_raises_one_critical_alert_per_session(store, enrolled, clock, make):
    """Two canary events of one session: one CRITICAL alert with both as evidence and why."""
    first, second = make.canary_open("gpu-01"), make.canary_open("gpu-01")
    ingestor(store, clock).ingest(
        enrolled.seal(enrolled.record(make.file_open("gpu-01"), first, second))
    )
    [alert] = store.alerts()
    assert alert.severity_id == Severity.CRITICAL
    assert alert.rule == "weightwarden.rule.canary_touch"
    assert alert.evidence == (first.uid, second.uid)
    assert alert.agent_id == "gpu-01"
    assert alert.title.startswith(
        "Canary touched: /weights/canary/model.safetensors by alice (cat[4242]) on gpu-01"
    )
    report = finding(alert)
    assert report.analytic.name == "canary touch"
    assert report.explanation is not None
    assert "decoy" in report.explanation.rule
    assert report.evidence_uids == alert.evidence


def test_tamper_copy_and_health_events_raise_their_alerts(store, enrolled, clock, make):
    """Tampered files of one seal: one HIGH alert; copies HIGH or CRITICAL; health >= HIGH."""
    events = [
        make.tampered("gpu-01", name="a.safetensors"),
        make.tampered("gpu-01", name="b.safetensors"),
        make.copied("gpu-01"),
        make.copied("gpu-01", removable=True),
        make.health("gpu-01"),
        make.health("gpu-01", severity=Severity.MEDIUM),
    ]
    result = ingestor(store, clock).ingest(enrolled.seal(enrolled.record(*events)))
    assert result.alerts == 4
    by_rule: dict[str, list] = {}
    for alert in store.alerts():
        by_rule.setdefault(alert.rule, []).append(alert)
    [tamper] = by_rule["weightwarden.rule.seal_tampered"]
    assert tamper.severity_id == Severity.CRITICAL
    assert tamper.evidence == (events[0].uid, events[1].uid)
    assert "(+1 more events)" in tamper.title
    copies = sorted(by_rule["weightwarden.rule.weights_copied"], key=lambda a: a.severity_id)
    assert [a.severity_id for a in copies] == [Severity.HIGH, Severity.CRITICAL]
    assert "/media/usb/stolen.safetensors" in copies[1].title
    [health] = by_rule["weightwarden.rule.agent_health"]
    assert health.title == "gpu-01: Sensor overflow: file events were lost (fanotify)"
    assert health.evidence == (events[4].uid,)


def test_alert_ids_are_deterministic_for_the_same_evidence(store, enrolled, clock, make):
    """The same canary event always yields the same alert id (re-import cannot duplicate)."""
    event = make.canary_open("gpu-01")
    ingestor(store, clock).ingest(enrolled.seal(enrolled.record(event)))
    [alert] = store.alerts()
    from collector.alerts import alerts_for_events  # noqa: PLC0415

    [again] = alerts_for_events([event], agent_id="gpu-01", now=5)
    assert again.id == alert.id


def test_results_serialise_as_the_documented_json_bodies():
    """A refusal has "error"; a success has the counts and the ack."""
    refused = IngestResult(status=409, acked_seq=4, quarantine_id="q", message="fork")
    assert refused.to_json() == {"error": "fork", "acked_seq": 4, "quarantine_id": "q"}
    ok = IngestResult(status=200, acked_seq=9, stored=5, duplicates=1, message="stored")
    assert ok.to_json() == {"message": "stored", "acked_seq": 9, "stored": 5, "duplicates": 1}


def test_seq_ranges_compress_runs():
    """Ranges read like people write them."""
    assert seq_ranges([5, 1, 2, 3, 9, 10, 12]) == "1-3, 5, 9-10, 12"
    assert seq_ranges([]) == ""


def test_a_signature_over_other_bytes_never_reaches_the_store(store, enrolled, clock):
    """Pairing one batch with another batch's signature is caught by the signature (401)."""
    first = enrolled.seal(enrolled.record_opens(1))
    second = enrolled.seal(enrolled.record_opens(1))
    (length,) = struct.unpack_from(">I", first)
    swapped = first[: 4 + length] + second[4 + struct.unpack_from(">I", second)[0] :]
    result = ingestor(store, clock).ingest(swapped)
    assert result.status == 401
    assert store.count_events() == 0


_NUMBER = st.one_of(
    st.integers(0, 2**64),
    st.sampled_from([0, 1, 10**17, 10**18 - 1, 10**18, 2**63 - 1, 2**63]),
    st.sampled_from([-1, 0.5, "7", None]),
)


@settings(max_examples=300, deadline=None)
@given(
    numbers=st.fixed_dictionaries(
        {"activity_id": _NUMBER, "class_uid": _NUMBER, "severity_id": _NUMBER, "time": _NUMBER}
    ),
    uid=st.text(max_size=12),
    extra=st.dictionaries(
        st.sampled_from(["actor", "device", "file", "type_uid", "zz"]),
        st.one_of(st.integers(), st.text(max_size=8)),
        max_size=3,
    ),
)
def test_the_index_scan_agrees_with_json_whenever_it_answers(
    numbers: dict[str, object], uid: str, extra: dict[str, object]
) -> None:
    """On canonical layouts with odd numbers and uids, the scan is None or what JSON says."""
    obj = {
        "type_uid": 100114,  # canonical events have keys after "time"
        **extra,
        **{k: v for k, v in numbers.items() if v is not None},
        "metadata": {
            "product": {"name": "weightwarden", "vendor_name": "weightwarden"},
            "uid": uid,
        },
    }
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fast = _fast_index(payload)
    if fast is not None:
        assert fast == _parsed_index(payload)


def test_a_body_whose_signed_part_ends_in_its_header_is_refused_with_400(store, clock):
    """Four bytes of magic and nothing else is malformed input, not a collector failure."""
    result = ingestor(store, clock).ingest(struct.pack(">I", 4) + b"WWB2" + b"signature")
    assert result.status == 400
    assert "truncated" in result.message
