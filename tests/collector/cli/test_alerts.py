"""`weightwarden alerts list|show|ack|resolve` over a real store, in real processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collector.config import init_directory
from collector.ingest import IngestLimits, Ingestor
from collector.store import SqliteStore


@pytest.fixture
def collector(tmp_path, sim_agent, make):
    """A collector directory whose store holds a canary alert and a chain-gap alert."""
    layout = init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))
    store = SqliteStore(layout.db)
    try:
        agent = sim_agent("gpu-01")
        store.register_agent(agent_id="gpu-01", public_key_pem=agent.public_pem, now=1)
        ticks = iter(range(1_000_000, 2_000_000, 1000))
        ingest = Ingestor(store, limits=IngestLimits(), clock=lambda: next(ticks)).ingest
        hostile = make.canary_open("gpu-01")
        hostile = type(hostile)(
            **{
                **{f: getattr(hostile, f) for f in hostile.__dataclass_fields__},
                "file": type(hostile.file)(path="/weights/canary/\x1b[2Jevil.safetensors"),
            }
        )
        assert ingest(agent.seal(agent.record(make.file_open("gpu-01"), hostile))).status == 200
        items = agent.record_opens(5)
        assert ingest(agent.seal(items[3:])).status == 200  # events 3-5 never arrive
    finally:
        store.close()
    return layout.directory


def _ids(ww, directory, *args) -> list[str]:
    run = ww("alerts", "list", "--dir", directory, "--format", "ocsf", *args)
    assert run.code == 0, run.stderr
    return [json.loads(line)["finding_info"]["uid"] for line in run.stdout.splitlines()]


def test_list_shows_newest_first_and_filters_by_status_and_time(collector, ww):
    """The gap alert (newer) comes first; --status and --since filter."""
    table = ww("alerts", "list", "--dir", collector)
    assert table.code == 0
    rows = table.stdout.splitlines()[1:]
    assert [row.split()[2] for row in rows] == ["HIGH", "CRITICAL"]
    assert "Chain gap: agent gpu-01 events 3-5 missing" in rows[0]
    assert len(_ids(ww, collector)) == 2
    assert len(_ids(ww, collector, "--status", "new")) == 2
    assert _ids(ww, collector, "--status", "resolved") == []
    assert len(_ids(ww, collector, "--since", "1970-01-01T00:16:40")) == 2
    assert len(_ids(ww, collector, "--since", "1970-01-01T00:16:40.500Z")) == 1
    assert (
        "--since" in ww("alerts", "list", "--dir", collector, "--since", "later").one_line_error()
    )


def test_table_output_escapes_terminal_control_characters(collector, ww):
    """A hostile file name cannot drive the terminal: escape sequences are shown escaped."""
    out = ww("alerts", "list", "--dir", collector).stdout
    assert "\x1b" not in out
    assert "\\x1b[2Jevil" in out
    shown = ww("alerts", "show", "--dir", collector, _ids(ww, collector)[1])
    assert "\x1b" not in shown.stdout


def test_show_explains_an_integrity_alert_and_its_stored_evidence(collector, ww):
    """Show prints the rule, why it fired, what was found, and the evidence events."""
    gap = _ids(ww, collector)[0]
    run = ww("alerts", "show", "--dir", collector, gap)
    assert run.code == 0, run.stderr
    assert "weightwarden.integrity.gap" in run.stdout
    assert "Why:         Sequence numbers were skipped" in run.stdout
    assert "quarantine" in run.stdout
    assert "1 event(s), 1 in the store" in run.stdout
    assert "gpu-01#6" in run.stdout


def test_ack_and_resolve_record_the_disposition(collector, ww):
    """Ack moves an alert to acknowledged, resolve to resolved, each with the disposition."""
    canary = _ids(ww, collector)[1]
    ack = ww("alerts", "ack", "--dir", collector, canary[:10], "--disposition", "benign")
    assert ack.code == 0, ack.stderr
    assert ack.stdout.strip() == f"{canary}: acknowledged (benign)"
    ww(
        "alerts",
        "resolve",
        "--dir",
        collector,
        canary,
        "--disposition",
        "false_positive",
        "--note",
        "red-team exercise",
    )
    [line] = ww(
        "alerts", "list", "--dir", collector, "--format", "ocsf", "--status", "resolved"
    ).stdout.splitlines()
    triage = json.loads(line)["unmapped"]["weightwarden"]["triage"]
    assert (triage["status"], triage["disposition"], triage["note"]) == (
        "resolved",
        "false_positive",
        "red-team exercise",
    )


def test_unknown_ids_and_bad_dispositions_are_usage_errors(collector, ww):
    """An id that matches nothing, a too-short prefix, or a made-up disposition: exit 2."""
    assert (
        "no alert" in ww("alerts", "show", "--dir", collector, "nothing-like-it").one_line_error()
    )
    assert (
        "no alert"
        in ww("alerts", "ack", "--dir", collector, "ww", "--disposition", "benign").one_line_error()
    )
    run = ww("alerts", "ack", "--dir", collector, "x", "--disposition", "maybe")
    assert run.code == 2
    assert "Traceback" not in run.stderr
