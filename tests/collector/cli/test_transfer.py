"""`weightwarden collector import|export` and `verify-log`, in real processes."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime

from collector.config import init_directory
from collector.ingest import IngestLimits, Ingestor
from collector.store import SqliteStore
from weightwarden.events import to_json_line


def _directory(tmp_path):
    return init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))


def test_import_stores_ocsf_lines_once_and_raises_their_alerts(tmp_path, ww, make):
    """Imported events are stored as import:SOURCE; importing again raises no alert twice."""
    layout = _directory(tmp_path)
    lines = [make.file_open("laptop-7"), make.copied("laptop-7", removable=True)]
    source = tmp_path / "siem.jsonl"
    source.write_text("\n".join(to_json_line(e) for e in lines) + "\n\n")
    first = ww("collector", "import", str(source), "--format", "ocsf", "--dir", layout.directory)
    assert first.code == 0, first.stderr
    assert "imported 2 new events (0 already stored)" in first.stdout
    assert "as import:siem.jsonl; 1 alert(s)" in first.stdout
    again = ww("collector", "import", str(source), "--format", "ocsf", "--dir", layout.directory)
    assert "imported 0 new events (2 already stored)" in again.stdout
    assert "; 0 alert(s) raised" in again.stdout
    renamed = ww(
        "collector", "import", str(source), "--format", "ocsf", "--source", "other",
        "--dir", layout.directory,
    )  # fmt: skip
    assert "; 0 alert(s) raised" in renamed.stdout  # the same events under another name
    alerts = ww("alerts", "list", "--dir", layout.directory, "--format", "ocsf").stdout
    [alert] = alerts.splitlines()
    assert json.loads(alert)["severity_id"] == 5
    exported = ww("collector", "export", "--format", "ocsf", "--dir", layout.directory)
    uids = [json.loads(line)["metadata"]["uid"] for line in exported.stdout.splitlines()]
    assert sorted(uids) == sorted(e.uid for e in lines)


def test_import_checks_every_line_before_storing_any(tmp_path, ww, make):
    """A bad line names file and line, exits 2, and nothing of the file is stored."""
    layout = _directory(tmp_path)
    source = tmp_path / "broken.jsonl"
    source.write_text(to_json_line(make.file_open("h")) + '\n{"class_uid": 1001}\n')
    line = ww(
        "collector", "import", str(source), "--format", "ocsf", "--dir", layout.directory
    ).one_line_error()
    assert f"{source}:2:" in line
    store = SqliteStore(layout.db)
    try:
        assert store.count_events() == 0
    finally:
        store.close()
    missing = ww(
        "collector", "import", str(tmp_path / "none"), "--format", "ocsf", "--dir", layout.directory
    )
    assert "cannot read" in missing.one_line_error()


def test_import_reads_stdin_with_a_source_name(tmp_path, ww, make):
    """FILE - reads stdin; it needs --source."""
    layout = _directory(tmp_path)
    text = to_json_line(make.file_open("h")) + "\n"
    run = ww(
        "collector",
        "import",
        "-",
        "--format",
        "ocsf",
        "--source",
        "pipe",
        "--dir",
        layout.directory,
        stdin=text,
    )
    assert "as import:pipe" in run.stdout
    assert (
        "--source"
        in ww(
            "collector", "import", "-", "--format", "ocsf", "--dir", layout.directory, stdin=text
        ).one_line_error()
    )


def test_export_carries_each_events_chain_link_and_since_filters(tmp_path, ww, sim_agent):
    """An agent's events export with unmapped.weightwarden.chain; --since cuts by event time."""
    layout = _directory(tmp_path)
    store = SqliteStore(layout.db)
    agent = sim_agent("gpu-01")
    try:
        store.register_agent(agent_id="gpu-01", public_key_pem=agent.public_pem, now=1)
        Ingestor(store, limits=IngestLimits(), clock=lambda: 5).ingest(
            agent.seal(agent.record_opens(3))
        )
    finally:
        store.close()
    out = tmp_path / "out.jsonl"
    run = ww("collector", "export", "--format", "ocsf", "--dir", layout.directory, "--output", out)
    assert run.code == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    chains = [row["unmapped"]["weightwarden"]["chain"] for row in rows]
    assert [c["seq"] for c in chains] == [1, 2, 3]
    assert chains[2]["link_hash"] == agent.head.link_hash
    since = ww(
        "collector",
        "export",
        "--format",
        "ocsf",
        "--dir",
        layout.directory,
        "--since",
        "1970-01-01T00:00:01.001Z",
    )
    assert len(since.stdout.splitlines()) == 2


def test_verify_log_passes_a_clean_record_and_names_an_edited_row(tmp_path, ww, sim_agent):
    """verify-log exits 0 on an intact record, 1 naming the row after a payload edit."""
    layout = _directory(tmp_path)
    store = SqliteStore(layout.db)
    agent = sim_agent("gpu-01")
    try:
        store.register_agent(agent_id="gpu-01", public_key_pem=agent.public_pem, now=1)
        Ingestor(store, limits=IngestLimits(), clock=lambda: 5).ingest(
            agent.seal(agent.record_opens(4))
        )
    finally:
        store.close()
    clean = ww("collector", "verify-log", "--dir", layout.directory)
    assert clean.code == 0, clean.stdout
    assert "gpu-01: 4 rows up to head seq 4: ok" in clean.stdout
    with sqlite3.connect(layout.db) as db:
        db.execute("UPDATE events SET payload = replace(payload, 'alice', 'bob') WHERE seq = 2")
    db.close()
    edited = ww("collector", "verify-log", "--dir", layout.directory)
    assert edited.code == 1
    assert "edited: seq 2" in edited.stdout
    as_json = ww("collector", "verify-log", "--dir", layout.directory, "--format", "json")
    problem = json.loads(as_json.stdout.splitlines()[0])
    assert (problem["agent_id"], problem["kind"], problem["seq"]) == ("gpu-01", "edited", 2)


def test_an_event_reusing_a_recorded_id_with_other_content_is_refused(tmp_path, ww, make):
    """Same id, different content: exit 2 naming the line; the record keeps the first."""
    layout = _directory(tmp_path)
    original = make.file_open("laptop-7")
    first = tmp_path / "first.jsonl"
    first.write_text(to_json_line(original) + "\n")
    assert ww("collector", "import", first, "--format", "ocsf", "--dir", layout.directory).code == 0
    forged = dataclasses.replace(original, time=original.time + 1)
    extra = make.file_open("laptop-7")
    second = tmp_path / "second.jsonl"
    second.write_text(to_json_line(extra) + "\n" + to_json_line(forged) + "\n")
    run = ww("collector", "import", second, "--format", "ocsf", "--dir", layout.directory)
    error = run.one_line_error()
    assert f"{second}:2: event {original.uid} differs" in error
    exported = ww("collector", "export", "--format", "ocsf", "--dir", layout.directory).stdout
    [line] = exported.splitlines()
    assert json.loads(line)["time"] == original.time  # the forged one and the extra: not stored
    within = tmp_path / "within.jsonl"
    within.write_text(to_json_line(extra) + "\n" + to_json_line(dataclasses.replace(extra, time=9)))
    error = ww("collector", "import", within, "--format", "ocsf", "--dir", layout.directory)
    assert f"{within}:2: event {extra.uid} differs" in error.one_line_error()
