from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.attribution import (
    Ancestor,
    CachedProcess,
    ConnectorStats,
    ProcessInfo,
    ReadQuality,
    SnapshotSource,
    SshOrigin,
    parse_cmdline,
    read_process,
)
from agent.attribution._codec import (
    WIRE_VERSION,
    ExitMessage,
    FailedMessage,
    ReadyMessage,
    RelayStats,
    SnapshotMessage,
    StatsMessage,
    UpdateMessage,
    WatcherMessage,
    cached_process_from_json,
    cached_process_to_json,
    decode_message,
    encode_message,
    process_info_from_json,
    process_info_to_json,
)
from weightwarden.errors import WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Callable

U32 = (1 << 32) - 1

texts = st.text(st.characters(), max_size=12)
optional_texts = st.none() | texts
pids = st.integers(0, U32)
optional_uids = st.none() | st.integers(0, U32)
optional_ticks = st.none() | st.integers(0, (1 << 64) - 1)
ports = st.none() | st.integers(0, 65535)
seconds = st.floats(allow_nan=False, allow_infinity=False)
counters = st.integers(0, (1 << 63) - 1)

ssh_origins = st.builds(
    SshOrigin,
    client_address=texts,
    client_port=ports,
    server_address=optional_texts,
    server_port=ports,
)
ancestors = st.builds(
    Ancestor,
    pid=pids,
    start_time=optional_ticks,
    uid=optional_uids,
    user=optional_texts,
    comm=optional_texts,
    exe=optional_texts,
)
infos = st.builds(
    ProcessInfo,
    pid=pids,
    ppid=st.none() | pids,
    comm=optional_texts,
    state=optional_texts,
    kernel_thread=st.booleans(),
    uid=optional_uids,
    euid=optional_uids,
    user=optional_texts,
    login_uid=optional_uids,
    login_user=optional_texts,
    exe=optional_texts,
    exe_deleted=st.booleans(),
    cmdline=st.lists(texts, max_size=4).map(tuple),
    start_time=optional_ticks,
    cgroup=optional_texts,
    container_id=optional_texts,
    container_runtime=optional_texts,
    systemd_unit=optional_texts,
    slurm_job_id=st.none() | counters,
    pod_uid=optional_texts,
    ssh_origin=st.none() | ssh_origins,
    parents=st.lists(ancestors, max_size=3).map(tuple),
    read_quality=st.sampled_from(ReadQuality),
    unread=st.frozensets(texts, max_size=4),
)
entries = st.builds(
    CachedProcess,
    info=infos,
    start_ticks=st.integers(0, (1 << 64) - 1),
    started_at=seconds,
    seen_at=seconds,
    exited_at=st.none() | seconds,
    source=st.sampled_from(SnapshotSource),
)
connector_stats = st.builds(
    ConnectorStats,
    running=st.booleans(),
    priority=texts,
    failure=optional_texts,
    events=counters,
    execs=counters,
    forks=counters,
    uid_changes=counters,
    exits=counters,
    overruns=counters,
    resyncs=counters,
    handler_errors=counters,
    snapshots_vanished=counters,
    snapshots_lost=counters,
)
relay_stats = st.builds(
    RelayStats,
    lines=counters,
    coalesced=counters,
    backlog_bytes=counters,
    backlog_peak_bytes=counters,
    stalls=counters,
    encode_errors=counters,
)
messages: st.SearchStrategy[WatcherMessage] = st.one_of(
    st.builds(SnapshotMessage, entry=entries),
    st.builds(ExitMessage, pid=pids, at=seconds),
    st.builds(UpdateMessage, pid=pids, info=infos),
    st.builds(StatsMessage, connector=connector_stats, relay=relay_stats),
    st.builds(ReadyMessage, pid=pids, monotonic=seconds),
    st.builds(FailedMessage, reason=texts),
)


def _same(a: WatcherMessage, b: WatcherMessage) -> bool:
    """Equality that also tells 0.0 from -0.0: the canonical encodings must match too."""
    return a == b and encode_message(a) == encode_message(b)


def _valid_snapshot_line() -> bytes:
    info = ProcessInfo(
        pid=42,
        ppid=1,
        uid=65534,
        user="nobody",
        exe="/usr/bin/cat",
        cmdline=("cat", "w.bin"),
        start_time=1000,
        parents=(Ancestor(pid=1, start_time=9, uid=0, user="root", comm="init", exe=None),),
        ssh_origin=SshOrigin(
            client_address="10.0.0.1", client_port=5000, server_address=None, server_port=22
        ),
        unread=frozenset({"login_uid"}),
    )
    entry = CachedProcess(
        info=info, start_ticks=1000, started_at=10.0, seen_at=10.5, source=SnapshotSource.EXEC
    )
    return encode_message(SnapshotMessage(entry=entry))


# --- round trips ----------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_every_message_survives_encode_then_decode(message: WatcherMessage) -> None:
    """decode(encode(m)) == m for every message kind, floats, surrogates and enums included."""
    line = encode_message(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.isascii()
    assert _same(decode_message(line), message)


@settings(max_examples=200)
@given(entries)
def test_cache_entries_survive_the_json_value_form(entry: CachedProcess) -> None:
    """An entry's JSON value form decodes back to an equal entry, after a trip through JSON."""
    text = json.dumps(cached_process_to_json(entry), allow_nan=False)
    decoded = cached_process_from_json(json.loads(text))
    assert _same(SnapshotMessage(entry=decoded), SnapshotMessage(entry=entry))


def test_a_real_snapshot_of_this_process_round_trips() -> None:
    """A snapshot read from /proc (parents, cgroup, enums, frozenset) decodes to itself."""
    info = read_process(os.getpid())
    assert info.parents
    assert process_info_from_json(json.loads(json.dumps(process_info_to_json(info)))) == info


def test_undecodable_argv_bytes_round_trip_as_escaped_surrogates() -> None:
    """Non-UTF-8 argv kept as lone surrogates travels as ASCII escapes and comes back."""
    argv = parse_cmdline(b"cat\0caf\xe9\xff.bin\0")
    message = UpdateMessage(pid=7, info=ProcessInfo(pid=7, cmdline=argv))
    line = encode_message(message)
    assert b"\\udce9" in line
    assert decode_message(line) == message


@pytest.mark.parametrize(
    "cls",
    [ProcessInfo, CachedProcess, Ancestor, SshOrigin, ConnectorStats, RelayStats],
    ids=lambda cls: cls.__name__,
)
def test_the_wire_form_carries_every_dataclass_field(cls: type) -> None:
    """A field added to a value type but not to the codec fails here, not silently."""
    info = ProcessInfo(
        pid=1,
        ssh_origin=SshOrigin(
            client_address="a", client_port=None, server_address=None, server_port=None
        ),
        parents=(Ancestor(pid=0, start_time=None, uid=None, user=None, comm=None, exe=None),),
    )
    entry = CachedProcess(
        info=info, start_ticks=0, started_at=0.0, seen_at=0.0, source=SnapshotSource.SCAN
    )
    stats = ConnectorStats(running=True, priority="normal", failure=None, **dict.fromkeys(
        (
            "events", "execs", "forks", "uid_changes", "exits", "overruns", "resyncs",
            "handler_errors", "snapshots_vanished", "snapshots_lost",
        ),
        0,
    ))  # fmt: skip
    relay = RelayStats(
        lines=0, coalesced=0, backlog_bytes=0, backlog_peak_bytes=0, stalls=0, encode_errors=0
    )
    wire = json.loads(encode_message(SnapshotMessage(entry=entry)))["entry"]
    stats_wire = json.loads(encode_message(StatsMessage(connector=stats, relay=relay)))
    forms = {
        CachedProcess: wire,
        ProcessInfo: wire["info"],
        SshOrigin: wire["info"]["ssh_origin"],
        Ancestor: wire["info"]["parents"][0],
        ConnectorStats: stats_wire["connector"],
        RelayStats: stats_wire["relay"],
    }
    assert set(forms[cls]) == {field.name for field in dataclasses.fields(cls)}


# --- strict decoding ------------------------------------------------------------------------


def _set(path: tuple[str | int, ...], new: object) -> Callable[[dict[str, Any]], None]:
    def edit(value: dict[str, Any]) -> None:
        target: Any = value
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = new

    return edit


def _drop_exe(value: dict[str, Any]) -> None:
    del value["entry"]["info"]["exe"]


INFO = ("entry", "info")
EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown field": _set((*INFO, "environ"), {}),
    "missing field": _drop_exe,
    "bool for int": _set((*INFO, "uid"), True),
    "float for int": _set((*INFO, "pid"), 42.0),
    "negative pid": _set((*INFO, "pid"), -1),
    "uid too large": _set((*INFO, "parents", 0, "uid"), 1 << 32),
    "bad enum": _set(("entry", "source"), "guess"),
    "tuple of non-strings": _set((*INFO, "cmdline"), ["cat", 3]),
    "duplicate unread": _set((*INFO, "unread"), ["uid", "uid"]),
    "string for object": _set((*INFO, "ssh_origin"), "10.0.0.1"),
    "wrong version": _set(("v",), 2),
    "unknown kind": _set(("kind",), "exec"),
    "null for required": _set(("entry", "started_at"), None),
}


def _edit(change: str) -> bytes:
    """Return a valid snapshot line with one edit applied to its JSON value."""
    value = json.loads(_valid_snapshot_line())
    EDITS[change](value)
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ("unknown field", "snapshot.entry.info: unknown field(s) environ"),
        ("missing field", "snapshot.entry.info: missing field(s) exe"),
        ("bool for int", "snapshot.entry.info.uid: expected an integer"),
        ("float for int", "snapshot.entry.info.pid: expected an integer"),
        ("negative pid", "snapshot.entry.info.pid: expected an integer in [0, 4294967295]"),
        ("uid too large", "snapshot.entry.info.parents[0].uid: expected an integer"),
        ("bad enum", "snapshot.entry.source: expected one of 'scan', 'fork', 'exec'"),
        ("tuple of non-strings", "snapshot.entry.info.cmdline[1]: expected a string, got int 3"),
        ("duplicate unread", "snapshot.entry.info.unread: expected a list of distinct strings"),
        ("string for object", "snapshot.entry.info.ssh_origin: expected an object"),
        ("wrong version", f"message.v: expected protocol version {WIRE_VERSION}, got int 2"),
        ("unknown kind", "message.kind: expected one of snapshot, exit"),
        ("null for required", "snapshot.entry.started_at: expected a finite number"),
    ],
)
def test_a_line_unlike_the_encoders_is_rejected_naming_the_field(change: str, names: str) -> None:
    """Each deviation from the encoder's form raises WeightwardenError saying where."""
    with pytest.raises(WeightwardenError) as caught:
        decode_message(_edit(change))
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (b"", "not a JSON line"),
        (b"{", "not a JSON line"),
        (b"\xff\xfe{}", "not a JSON line"),
        (b'{"v":1,"kind":"exit","pid":1,"at":NaN}', "NaN is not a JSON number"),
        (b'{"v":1,"kind":"exit","pid":1,"at":Infinity}', "Infinity is not a JSON number"),
        (b'{"v":1,"kind":"exit","pid":1,"pid":2,"at":1.0}', "duplicate key 'pid'"),
        (b'{"v":1,"kind":"exit","pid":1,"at":1.0} x', "not a JSON line"),
        (b"[1,2]", "message: expected an object, got list"),
        (b'{"v":true,"kind":"exit","pid":1,"at":1.0}', "message.v: expected protocol version"),
        (b'{"v":1,"kind":"exit","pid":1,"at":1e999}', "expected a finite number"),
        (b'{"v":1,"kind":"exit","pid":1,"at":"1.0"}', "exit.at: expected a finite number"),
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON line"),
    ],
    ids=range(12),
)
def test_malformed_json_is_a_clear_error(line: bytes, names: str) -> None:
    """Bad JSON, NaN, duplicates, trailing data and deep nesting all raise the domain error."""
    with pytest.raises(WeightwardenError) as caught:
        decode_message(line)
    assert names in str(caught.value)


def test_long_bad_values_are_quoted_shortly() -> None:
    """An error quotes at most a few dozen characters of the offending value."""
    line = b'{"v":1,"kind":"failed","reason":["' + b"x" * 10_000 + b'"]}'
    with pytest.raises(WeightwardenError) as caught:
        decode_message(line)
    assert len(str(caught.value)) < 200


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(line: bytes) -> None:
    """Any bytes decode to a message or raise WeightwardenError, never anything else."""
    with contextlib.suppress(WeightwardenError):
        decode_message(line)


@settings(max_examples=500)
@given(st.data())
def test_a_corrupted_valid_line_never_crashes_the_decoder(data: st.DataObject) -> None:
    """Flipping, cutting or inserting bytes in a real line never escapes WeightwardenError."""
    line = bytearray(_valid_snapshot_line())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(line) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            line[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del line[at:]
            if not line:
                break
        else:
            line[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = decode_message(bytes(line))
    except WeightwardenError:
        return
    assert isinstance(
        decoded,
        (SnapshotMessage, ExitMessage, UpdateMessage, StatsMessage, ReadyMessage, FailedMessage),
    )


@settings(max_examples=200)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=20,
), st.sampled_from(["snapshot", "exit", "update", "stats", "ready", "failed"]))  # fmt: skip
def test_any_json_under_a_valid_kind_never_crashes_the_decoder(value: object, kind: str) -> None:
    """Arbitrary JSON fields under a real kind decode or raise WeightwardenError."""
    fields = value if isinstance(value, dict) else {"x": value}
    line = json.dumps({**fields, "v": WIRE_VERSION, "kind": kind}).encode()
    with contextlib.suppress(WeightwardenError):
        decode_message(line)


def test_a_value_json_cannot_carry_is_refused_at_encoding() -> None:
    """Encoding NaN or infinity raises WeightwardenError instead of writing invalid JSON."""
    for at in (math.nan, math.inf):
        with pytest.raises(WeightwardenError, match="cannot encode the exit message"):
            encode_message(ExitMessage(pid=1, at=at))
