"""``weightwarden simulate``: a labelled organisation, deterministic, readable, well formed."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest

import collector.simulation
from collector.simulation import (
    LABELS_FORMAT,
    SCENARIOS,
    SimulationSpec,
    simulate,
    write_simulation,
)
from policies import Policy, matches, parse_policy
from weightwarden.events import (
    FileActivity,
    FileActivityType,
    NetworkActivity,
    SealStatus,
    SessionPhase,
    Severity,
    from_json_line,
)

if TYPE_CHECKING:
    from pathlib import Path

SMALL = SimulationSpec(users=40, weeks=2, seed=7)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-person, two-week simulation written to a folder (events, labels, policy)."""
    folder = tmp_path_factory.mktemp("sim")
    write_simulation(SMALL, events=folder / "events.jsonl", labels=folder / "labels.json")
    return folder


@pytest.fixture(scope="module")
def events(run: Path) -> list:
    """Every event of the run, decoded."""
    text = (run / "events.jsonl").read_text(encoding="utf-8")
    return [from_json_line(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def labels(run: Path) -> dict:
    """The run's labels file."""
    return json.loads((run / "labels.json").read_text(encoding="utf-8"))


def test_public_api_is_pinned():
    """The package exports exactly its documented API."""
    assert collector.simulation.__all__ == [
        "DEFAULT_START",
        "LABELS_FORMAT",
        "MIN_USERS",
        "SCENARIOS",
        "GrantRecord",
        "Incident",
        "Simulated",
        "SimulationSpec",
        "default_policy_path",
        "labels_document",
        "simulate",
        "write_simulation",
    ]


def test_the_same_arguments_give_byte_identical_files(run, tmp_path):
    """A second run with the same specification writes the same bytes, in every file."""
    write_simulation(SMALL, events=tmp_path / "events.jsonl", labels=tmp_path / "labels.json")
    for name in ("events.jsonl", "labels.json", "labels.policy.toml"):
        assert (tmp_path / name).read_bytes() == (run / name).read_bytes(), name


def test_another_seed_gives_other_events():
    """The seed matters: two seeds give different streams."""
    first: list[str] = []
    second: list[str] = []
    simulate(SimulationSpec(users=10, weeks=1, seed=1), first.append)
    simulate(SimulationSpec(users=10, weeks=1, seed=2), second.append)
    assert first != second


def test_every_event_decodes_and_has_a_unique_uid(run, events):
    """Each line is one weightwarden event; uids are unique across the file."""
    lines = (run / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(events) == len(lines) > 5000
    assert len({e.uid for e in events}) == len(events)


def test_events_are_in_time_order_inside_the_period(events, labels):
    """Times never go back and all fall in [start, end)."""
    times = [e.time for e in events]
    assert times == sorted(times)
    assert labels["start"] <= times[0]
    assert times[-1] < labels["end"]


def test_reads_are_sessions_and_egress_is_linked_to_them(events):
    """Every close has its open (same session, same file); linked connections name a session."""
    opened = {
        e.session_uid: e.file.path
        for e in events
        if isinstance(e, FileActivity) and e.session_phase is SessionPhase.OPEN
    }
    closes = [
        e for e in events if isinstance(e, FileActivity) and e.session_phase is SessionPhase.CLOSE
    ]
    assert closes
    for close in closes:
        assert opened[close.session_uid] == close.file.path
        assert close.activity is FileActivityType.READ
        assert close.file.size
        assert close.fraction_read is not None
    linked = [e for e in events if isinstance(e, NetworkActivity) and e.session_uid]
    assert linked
    assert all(e.session_uid in opened for e in linked)


def test_labels_have_the_documented_shape(labels, run):
    """Header fields as specified; the policy path is relative and names the policy written."""
    assert labels["format"] == LABELS_FORMAT
    assert (labels["seed"], labels["users"], labels["weeks"]) == (7, 40, 2)
    assert labels["end"] - labels["start"] == 14 * 86_400_000
    assert labels["entities"] > 40
    assert labels["policy"] == "labels.policy.toml"
    assert (run / labels["policy"]).read_text(encoding="utf-8").startswith("#")
    for grant in labels["grants"]:
        assert set(grant) == {"id", "user", "asset", "approver", "reason", "created_at", "until"}
        assert grant["user"] != grant["approver"]
        assert grant["created_at"] < grant["until"]


def test_every_scenario_has_incidents_each_with_a_twin(labels):
    """Each scenario is played at least twice, and every incident has exactly one twin."""
    incidents = labels["incidents"]
    malicious = [i for i in incidents if i["malicious"]]
    twins = [i for i in incidents if not i["malicious"]]
    assert Counter(i["scenario"] for i in malicious) == dict.fromkeys(SCENARIOS, 2)
    assert all(i["twin_of"] is None for i in malicious)
    by_id = {i["id"]: i for i in incidents}
    assert sorted(t["twin_of"] for t in twins) == sorted(i["id"] for i in malicious)
    for twin in twins:
        assert by_id[twin["twin_of"]]["scenario"] == twin["scenario"]


def test_incidents_name_existing_events_of_their_entity(labels, events):
    """Labelled uids exist; each incident's events fall in its window; its entity acted."""
    by_uid = {e.uid: e for e in events}
    for incident in labels["incidents"]:
        assert incident["events"], incident["id"]
        mine = [by_uid[uid] for uid in incident["events"]]
        assert all(incident["start"] <= e.time <= incident["end"] for e in mine)
        actors = {
            name
            for e in mine
            if e.actor.process is not None
            for name in (
                e.actor.process.login_user and e.actor.process.login_user.name,
                e.actor.process.user and e.actor.process.user.name,
            )
        }
        assert incident["entity"] in actors, incident["id"]
        assert incident["host"] in {e.device.hostname for e in mine}, incident["id"]


def _incident_events(labels: dict, events: list, scenario: str, *, malicious: bool) -> list:
    by_uid = {e.uid: e for e in events}
    return [
        [by_uid[uid] for uid in incident["events"]]
        for incident in labels["incidents"]
        if incident["scenario"] == scenario and incident["malicious"] is malicious
    ]


def test_rule_scenarios_carry_the_agent_signals_and_their_twins_do_not(labels, events):
    """Canary, tamper and staging incidents carry the agent's marks; twins never do."""
    signals = {
        "canary_touch": lambda e: isinstance(e, FileActivity) and e.canary,
        "tamper_sealed": lambda e: (
            isinstance(e, FileActivity)
            and e.seal is not None
            and e.seal.status is SealStatus.TAMPERED
        ),
        "staging_shm": lambda e: (
            isinstance(e, FileActivity)
            and e.copy_source is not None
            and e.file.path.startswith("/dev/shm/")  # noqa: S108 -- a path in an event
        ),
        "staging_removable": lambda e: (
            isinstance(e, FileActivity)
            and e.copy_source is not None
            and e.file.path.startswith("/media/")
            and e.severity is Severity.CRITICAL
        ),
    }
    for scenario, signal in signals.items():
        for incident in _incident_events(labels, events, scenario, malicious=True):
            assert any(signal(e) for e in incident), scenario
        for twin in _incident_events(labels, events, scenario, malicious=False):
            assert not any(signal(e) for e in twin), scenario
    for event in events:
        if isinstance(event, FileActivity) and event.canary:
            assert event.severity is Severity.CRITICAL


def test_loud_exfiltration_sends_about_what_was_read(labels, events):
    """Personal-cloud and remote-host exfiltration send roughly the bytes read, outside 10/8."""
    for scenario in ("exfil_personal_cloud", "exfil_remote_host"):
        for incident in _incident_events(labels, events, scenario, malicious=True):
            read = sum(
                (e.bytes_read or 0) + (e.mmap_bytes or 0)
                for e in incident
                if isinstance(e, FileActivity)
            )
            sent = [e for e in incident if isinstance(e, NetworkActivity)]
            assert sent
            assert all(not e.dst_endpoint.ip.startswith("10.") for e in sent)
            assert 0.9 < sum(e.bytes_out or 0 for e in sent) / read < 1.1
        for twin in _incident_events(labels, events, scenario, malicious=False):
            sent = [e for e in twin if isinstance(e, NetworkActivity)]
            assert sent
            assert all(e.dst_endpoint.ip.startswith("10.") for e in sent)


def test_grant_twins_hold_a_grant_valid_when_they_read(labels):
    """The twins that rely on a grant have one for their entity, valid during the incident."""
    grants = labels["grants"]
    for incident in labels["incidents"]:
        if incident["malicious"] or incident["scenario"] not in (
            "unapproved_access",
            "departing_bulk_read",
            "low_and_slow",
        ):
            continue
        assert any(
            g["user"] == incident["entity"]
            and g["created_at"] <= incident["start"]
            and incident["end"] < g["until"]
            for g in grants
        ), incident["id"]


def test_behavioural_incidents_wait_for_a_week_of_baseline(labels):
    """Scenarios judged against behaviour start after the first week."""
    rules = {"canary_touch", "tamper_sealed", "unapproved_access", "staging_shm",
             "staging_removable"}  # fmt: skip
    week = labels["start"] + 7 * 86_400_000 - 14 * 3_600_000  # earliest local day 8
    for incident in labels["incidents"]:
        if incident["malicious"] and incident["scenario"] not in rules:
            assert incident["start"] >= week, incident["id"]


def test_volume_grows_with_users_and_weeks():
    """Four times the people or twice the weeks give about four or two times the events.

    Small organisations vary with the size of their few models (1 to 28 shards each), so
    the bounds are loose.
    """

    def count(users: int, weeks: int) -> int:
        lines: list[str] = []
        simulate(SimulationSpec(users=users, weeks=weeks, seed=3), lines.append)
        return len(lines)

    base = count(40, 1)
    assert 2.5 < count(160, 1) / base < 8
    assert 1.6 < count(40, 2) / base < 2.4


@pytest.fixture(scope="module")
def policy(run: Path, labels: dict) -> Policy:
    """The run's policy file, parsed by the policy parser."""
    path = run / labels["policy"]
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


def _who(event: FileActivity) -> str:
    process = event.actor.process
    assert process is not None
    user = process.login_user or process.user
    assert user is not None
    assert user.name is not None
    return user.name


def _authorised(policy: Policy, grants: list[dict], event: FileActivity) -> bool:
    """Whether the reader of ``event`` may read its asset then (a rule, and a grant if needed)."""
    asset = policy.asset_for(event.file.path)
    assert asset is not None, event.file.path
    user = _who(event)
    process = event.actor.process
    program = process.exe.rpartition("/")[2] if process and process.exe else None
    granted = any(
        g["user"] == user
        and g["asset"] == asset.name
        and g["created_at"] <= event.time < g["until"]
        for g in grants
    )
    allowed = policy.allows(
        asset=asset.name, user=user, program=program, host=event.device.hostname
    )
    return granted if asset.requires_grant else allowed or granted


def test_the_policy_parses_and_covers_every_checkpoint_read(policy, events):
    """The policy file is valid; every checkpoint read is of an asset; every canary is listed."""
    assert policy.assets
    reads = [e for e in events if isinstance(e, FileActivity) and e.session_phase is not None]
    assert all(policy.asset_for(e.file.path) is not None for e in reads)
    canaries = {e.file.path for e in reads if e.canary}
    assert canaries
    assert canaries <= set(policy.canaries)


def test_benign_reads_are_authorised_and_unapproved_ones_are_not(policy, labels, events):
    """Outside the malicious incidents, every read is allowed by a rule or a grant.

    The malicious unapproved reads are allowed by neither; their twins are, through a grant.
    """
    grants = labels["grants"]
    malicious = {
        uid
        for incident in labels["incidents"]
        if incident["malicious"]
        for uid in incident["events"]
    }
    reads = [
        e
        for e in events
        if isinstance(e, FileActivity)
        and e.session_phase is SessionPhase.CLOSE
        and not e.canary
        and e.uid not in malicious
    ]
    assert reads
    denied = [e for e in reads if not _authorised(policy, grants, e)]
    assert denied == []
    for incident in _incident_events(labels, events, "unapproved_access", malicious=True):
        closes = [e for e in incident if isinstance(e, FileActivity) and e.session_phase]
        assert closes
        assert not any(_authorised(policy, grants, e) for e in closes)


def test_service_accounts_leave_their_hosts_only_in_the_incident(policy, labels, events):
    """The stolen service account runs off its hosts; its twin on a new node stays inside them."""
    for malicious in (True, False):
        for incident in _incident_events(
            labels, events, "service_account_new_host", malicious=malicious
        ):
            reads = [e for e in incident if isinstance(e, FileActivity)]
            account = policy.service_account(_who(reads[0]))
            assert account is not None
            on_hosts = all(matches(e.device.hostname, account.hosts) for e in reads)
            assert on_hosts is not malicious
