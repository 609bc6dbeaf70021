"""`weightwarden agent events`: the spool read back, as OCSF lines or a table, in a real process."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from agent.spool import DB_NAME, Spool
from weightwarden.events import (
    EXTENSION_KEY,
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    User,
    canonical_bytes,
    from_json_line,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    RunCli = Callable[..., Any]
    """The ``cli`` fixture of tests/conftest.py: runs ``weightwarden`` in a subprocess."""

AGENT = "agent-1"
HOST = "gpu-01"


def file_event(i: int, *, at: int, path: str | None = None) -> FileActivity:
    """A file open by ``cat`` as alice, numbered ``i``, at time ``at`` (ms)."""
    user = User(uid=1000, name="alice")
    return FileActivity(
        uid=f"file-{i}",
        time=at,
        device=Device(hostname=HOST, agent_id=AGENT),
        activity=FileActivityType.OPEN,
        actor=Actor(
            process=Process(
                pid=4000 + i, attribution=Attribution.FULL, exe="/usr/bin/cat", user=user
            ),
            user=user,
        ),
        file=FileRef(path=path or f"/weights/run/model-{i}.safetensors", size=4 << 20),
        bytes_read=3 << 20,
        fraction_read=0.75,
    )


@pytest.fixture
def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def spool_dir(tmp_path: Path, now_ms: int) -> Path:
    """A closed spool holding five events: two 3 hours old, three 1 minute old."""
    directory = tmp_path / "spool"
    hours_ago, minute_ago = now_ms - 3 * 3_600_000, now_ms - 60_000
    with Spool(directory, agent_id=AGENT, hostname=HOST) as spool:
        spool.append([file_event(i, at=hours_ago + i) for i in range(2)])
        spool.append([file_event(i, at=minute_ago + i) for i in range(2, 5)])
    return directory


def without_chain(line: str) -> bytes:
    """The line's event with the chain key removed, serialised canonically."""
    obj = json.loads(line)
    del obj["unmapped"][EXTENSION_KEY]["chain"]
    if not obj["unmapped"][EXTENSION_KEY]:
        del obj["unmapped"][EXTENSION_KEY]
    if not obj["unmapped"]:
        del obj["unmapped"]
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_ocsf_prints_one_event_per_line_with_its_chain_link(cli: RunCli, spool_dir: Path) -> None:
    """Each line decodes to the stored event and carries seq and hashes under the extension."""
    result = cli("agent", "events", "--spool", spool_dir)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    previous = "0" * 64
    for seq, line in enumerate(lines, start=1):
        event = from_json_line(line)
        assert isinstance(event, FileActivity)
        chain = json.loads(line)["unmapped"][EXTENSION_KEY]["chain"]
        assert chain["seq"] == seq
        assert chain["agent_id"] == AGENT
        assert chain["prev_hash"] == previous
        payload = without_chain(line)
        assert payload == canonical_bytes(event)
        assert chain["payload_hash"] == hashlib.sha256(payload).hexdigest()
        assert json.loads(line)["unmapped"][EXTENSION_KEY]["fraction_read"] == 0.75
        previous = chain["link_hash"]


def test_table_prints_time_seq_activity_user_process_bytes_and_path(
    cli: RunCli, spool_dir: Path
) -> None:
    """The table has a header and one aligned line per event."""
    result = cli("agent", "events", "--spool", spool_dir, "--format", "table")
    assert result.code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["TIME", "SEQ", "ACTIVITY", "USER", "PROCESS", "READ", "PATH"]
    assert len(rows) == 5
    cells = rows[2].split()
    assert cells[0].endswith("Z")
    assert cells[1:] == [
        "3",
        "file",
        "open",
        "alice",
        "cat[4002]",
        "3.0",
        "MiB",
        "(75%)",
        "/weights/run/model-2.safetensors",
    ]


def test_since_filters_by_event_time_relative_or_iso(
    cli: RunCli, spool_dir: Path, now_ms: int
) -> None:
    """--since 10m keeps the recent three; an ISO time between the groups does the same."""
    recent = cli("agent", "events", "--spool", spool_dir, "--since", "10m")
    assert recent.code == 0, recent.stderr
    assert [from_json_line(line).uid for line in recent.stdout.splitlines()] == [
        "file-2",
        "file-3",
        "file-4",
    ]
    middle = datetime.fromtimestamp((now_ms - 3_600_000) / 1000, tz=UTC).isoformat()
    iso = cli("agent", "events", "--spool", spool_dir, "--since", middle)
    assert iso.stdout == recent.stdout
    everything = cli("agent", "events", "--spool", spool_dir, "--since", "1d")
    assert len(everything.stdout.splitlines()) == 5


def test_limit_stops_after_n_events_oldest_first(cli: RunCli, spool_dir: Path) -> None:
    """--limit 2 prints seq 1 and 2."""
    result = cli("agent", "events", "--spool", spool_dir, "--limit", "2", "--format", "table")
    assert result.code == 0, result.stderr
    assert [row.split()[1] for row in result.stdout.splitlines()[1:]] == ["1", "2"]


def test_reads_beside_a_running_writer(cli: RunCli, tmp_path: Path, now_ms: int) -> None:
    """The daemon keeps the spool open; the command reads what it has committed."""
    with Spool(tmp_path / "live", agent_id=AGENT, hostname=HOST) as spool:
        spool.append([file_event(i, at=now_ms) for i in range(3)])
        result = cli("agent", "events", "--spool", tmp_path / "live")
        spool.append([file_event(3, at=now_ms)])
    assert result.code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3


def test_hostile_file_names_are_escaped_in_the_table(
    cli: RunCli, tmp_path: Path, now_ms: int
) -> None:
    """A name holding a newline or a terminal escape prints as escapes, on one line."""
    with Spool(tmp_path / "s", agent_id=AGENT, hostname=HOST) as spool:
        spool.append([file_event(0, at=now_ms, path="/weights/evil\n\x1b[2Jname")])
    result = cli("agent", "events", "--spool", tmp_path / "s", "--format", "table")
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout
    rows = result.stdout.splitlines()
    assert len(rows) == 2
    assert rows[1].endswith("/weights/evil\\n\\x1b[2Jname")


def test_an_empty_spool_prints_nothing_but_the_header(cli: RunCli, tmp_path: Path) -> None:
    """No events: OCSF prints nothing, the table only its header; both succeed."""
    Spool(tmp_path / "empty", agent_id=AGENT, hostname=HOST).close()
    assert cli("agent", "events", "--spool", tmp_path / "empty").stdout == ""
    table = cli("agent", "events", "--spool", tmp_path / "empty", "--format", "table")
    assert table.code == 0
    assert len(table.stdout.splitlines()) == 1


def test_reading_creates_no_file(cli: RunCli, spool_dir: Path) -> None:
    """Opening the spool read-only leaves the directory exactly as it was."""
    before = sorted(p.name for p in spool_dir.iterdir())
    assert cli("agent", "events", "--spool", spool_dir, "--format", "table").code == 0
    assert sorted(p.name for p in spool_dir.iterdir()) == before


def test_a_missing_spool_directory_is_a_usage_error(cli: RunCli, tmp_path: Path) -> None:
    """Exit 2 with one line; nothing is created."""
    missing = tmp_path / "missing"
    assert "no such directory" in cli("agent", "events", "--spool", missing).usage_error()
    assert not missing.exists()


def test_a_folder_that_is_not_a_spool_is_a_usage_error(cli: RunCli, tmp_path: Path) -> None:
    """An empty folder, a garbage file and a foreign SQLite database are each refused."""
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "not a weightwarden spool" in cli("agent", "events", "--spool", folder).usage_error()
    assert list(folder.iterdir()) == []
    (folder / DB_NAME).write_bytes(b"garbage" * 1000)
    assert "not a weightwarden spool" in cli("agent", "events", "--spool", folder).usage_error()
    (folder / DB_NAME).unlink()
    connection = sqlite3.connect(folder / DB_NAME)
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    connection.close()
    assert "not a weightwarden spool" in cli("agent", "events", "--spool", folder).usage_error()
    assert sorted(p.name for p in folder.iterdir()) == [DB_NAME]


@pytest.mark.parametrize("since", ["yesterday", "10x", "2024-13-01", ""])
def test_a_bad_since_is_a_usage_error(cli: RunCli, spool_dir: Path, since: str) -> None:
    """--since must be ISO-8601 or a duration like 10m."""
    assert "--since" in cli("agent", "events", "--spool", spool_dir, "--since", since).usage_error()


def test_a_bad_limit_or_format_is_a_usage_error(cli: RunCli, spool_dir: Path) -> None:
    """--limit 0 and an unknown --format fail with exit 2 and one line."""
    assert "--limit" in cli("agent", "events", "--spool", spool_dir, "--limit", "0").usage_error()
    assert "--format" in cli("agent", "events", "--spool", spool_dir, "--format", "x").usage_error()
