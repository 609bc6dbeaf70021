r"""The JSON form of process snapshots, and the exec watcher's line protocol.

The exec watcher (`agent.attribution._watcher`) runs the proc connector listener in a
child process and sends every change of its exec cache to the daemon as one JSON object
per line. This module turns `ProcessInfo`, `CachedProcess` and the watcher's messages
into those lines and back. It never uses pickle or marshal: a line is data, and decoding
it can only ever build the value types below.

Encoding is plain JSON (ASCII only; undecodable bytes that ``/proc`` parsing kept as lone
surrogates travel as ``\udcXX`` escapes and come back unchanged). Enums travel as their
values, tuples as lists, frozensets as sorted lists, and every field is written, so a
value survives the round trip exactly (floats included: JSON keeps Python's shortest
round-tripping repr).

Decoding is strict and total: a line that is not exactly what the encoder writes (invalid
UTF-8 or JSON, NaN or Infinity, a duplicate, unknown or missing key, a wrong type, an
integer out of range, an unknown enum value or message kind, a wrong protocol version)
raises `WeightwardenError` naming the offending field (``snapshot.entry.info.parents[2].uid:
expected an integer in [0, 4294967295], got str 'x'``); no other exception escapes, and
nothing half-decoded is returned.

Each line is one object ``{"v": 1, "kind": KIND, ...fields}``:

- ``snapshot`` (`SnapshotMessage`): an `ExecCache.put` of ``entry``.
- ``exit`` (`ExitMessage`): an `ExecCache.mark_exited` of ``pid`` at ``at``.
- ``update`` (`UpdateMessage`): an `ExecCache.update` of ``pid`` to ``info``.
- ``stats`` (`StatsMessage`): the child's `ConnectorStats` and `RelayStats`.
- ``ready`` (`ReadyMessage`): the child is subscribed and has scanned ``/proc``.
- ``failed`` (`FailedMessage`): the child cannot go on, and why; it exits next.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agent.attribution._exec_cache import CachedProcess, SnapshotSource
from agent.attribution._proc_connector import ConnectorStats
from agent.attribution._process_info import Ancestor, ProcessInfo, ReadQuality, SshOrigin
from weightwarden.errors import WeightwardenError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "WIRE_VERSION",
    "ExitMessage",
    "FailedMessage",
    "ReadyMessage",
    "RelayStats",
    "SnapshotMessage",
    "StatsMessage",
    "UpdateMessage",
    "WatcherMessage",
    "cached_process_from_json",
    "cached_process_to_json",
    "decode_message",
    "encode_message",
    "process_info_from_json",
    "process_info_to_json",
]

WIRE_VERSION = 1
"""The protocol version every line carries as ``v``; any other version is rejected."""

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_COUNTER = (1 << 63) - 1
_PORT = 65535
_SHOWN = 40  # characters of a bad value quoted in an error message

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMessage:
    """The child's cache took this snapshot (``ExecCache.put``)."""

    entry: CachedProcess


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitMessage:
    """The running process ``pid`` exited at ``at`` (``ExecCache.mark_exited``)."""

    pid: int
    at: float
    """CLOCK_MONOTONIC seconds, from the kernel's event timestamp."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateMessage:
    """The running process ``pid`` changed identity, e.g. its uid (``ExecCache.update``)."""

    pid: int
    info: ProcessInfo
    """The snapshot after the change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStats:
    """Counters of the exec watcher child's relay to its parent; all but two only grow."""

    lines: int
    """Messages written to the parent."""
    coalesced: int
    """Fork stubs and uid changes not sent because an exec snapshot of the same process
    replaced them in the same batch (the parent's cache ends the same without them)."""
    backlog_bytes: int
    """Encoded lines waiting for the parent to read them (now)."""
    backlog_peak_bytes: int
    """The largest backlog so far."""
    stalls: int
    """Times the listener waited for the parent because the backlog reached its bound."""
    encode_errors: int
    """Messages that could not be encoded (logged, not sent)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsMessage:
    """The child's listener and relay counters."""

    connector: ConnectorStats
    relay: RelayStats


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadyMessage:
    """The child subscribed, scanned ``/proc`` and is listening."""

    pid: int
    monotonic: float
    """The child's ``time.monotonic()`` when it sent this, to check the clock is shared."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedMessage:
    """The child cannot do its job (subscription refused, listener died); it exits next."""

    reason: str


WatcherMessage = (
    SnapshotMessage | ExitMessage | UpdateMessage | StatsMessage | ReadyMessage | FailedMessage
)


# --- encoding -------------------------------------------------------------------------------


def _ssh_to_json(origin: SshOrigin | None) -> dict[str, object] | None:
    if origin is None:
        return None
    return {
        "client_address": origin.client_address,
        "client_port": origin.client_port,
        "server_address": origin.server_address,
        "server_port": origin.server_port,
    }


def _ancestor_to_json(ancestor: Ancestor) -> dict[str, object]:
    return {
        "pid": ancestor.pid,
        "start_time": ancestor.start_time,
        "uid": ancestor.uid,
        "user": ancestor.user,
        "comm": ancestor.comm,
        "exe": ancestor.exe,
    }


def process_info_to_json(info: ProcessInfo) -> dict[str, object]:
    """Return the JSON-ready form of a snapshot (every field, enums as values)."""
    return {
        "pid": info.pid,
        "ppid": info.ppid,
        "comm": info.comm,
        "state": info.state,
        "kernel_thread": info.kernel_thread,
        "uid": info.uid,
        "euid": info.euid,
        "user": info.user,
        "login_uid": info.login_uid,
        "login_user": info.login_user,
        "exe": info.exe,
        "exe_deleted": info.exe_deleted,
        "cmdline": list(info.cmdline),
        "start_time": info.start_time,
        "cgroup": info.cgroup,
        "container_id": info.container_id,
        "container_runtime": info.container_runtime,
        "systemd_unit": info.systemd_unit,
        "slurm_job_id": info.slurm_job_id,
        "pod_uid": info.pod_uid,
        "ssh_origin": _ssh_to_json(info.ssh_origin),
        "parents": [_ancestor_to_json(ancestor) for ancestor in info.parents],
        "read_quality": info.read_quality.value,
        "unread": sorted(info.unread),
    }


def cached_process_to_json(entry: CachedProcess) -> dict[str, object]:
    """Return the JSON-ready form of a cache entry."""
    return {
        "info": process_info_to_json(entry.info),
        "start_ticks": entry.start_ticks,
        "started_at": entry.started_at,
        "seen_at": entry.seen_at,
        "exited_at": entry.exited_at,
        "source": entry.source.value,
    }


def _stats_to_json(stats: ConnectorStats) -> dict[str, object]:
    return {name: getattr(stats, name) for name in _STATS_FIELDS}


def _message_fields(message: WatcherMessage) -> tuple[str, dict[str, object]]:
    match message:
        case SnapshotMessage(entry=entry):
            return "snapshot", {"entry": cached_process_to_json(entry)}
        case ExitMessage(pid=pid, at=at):
            return "exit", {"pid": pid, "at": at}
        case UpdateMessage(pid=pid, info=info):
            return "update", {"pid": pid, "info": process_info_to_json(info)}
        case StatsMessage(connector=stats, relay=relay):
            return "stats", {
                "connector": _stats_to_json(stats),
                "relay": {name: getattr(relay, name) for name in _RELAY_FIELDS},
            }
        case ReadyMessage(pid=pid, monotonic=monotonic):
            return "ready", {"pid": pid, "monotonic": monotonic}
        case FailedMessage(reason=reason):
            return "failed", {"reason": reason}
    raise WeightwardenError(f"not a watcher message: {type(message).__name__}")


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def encode_message(message: WatcherMessage) -> bytes:
    """Encode a message as one line of ASCII JSON, newline included.

    Raises:
        WeightwardenError: the message holds a value JSON cannot carry (NaN, infinity).
    """
    kind, fields = _message_fields(message)
    try:
        text = _JSON_ENCODER.encode({"v": WIRE_VERSION, "kind": kind, **fields})
    except ValueError as exc:
        raise WeightwardenError(f"cannot encode the {kind} message as JSON: {exc}") from exc
    return text.encode("ascii") + b"\n"


# --- decoding -------------------------------------------------------------------------------


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > _SHOWN:
        text = text[: _SHOWN - 3] + "..."
    return f"{type(value).__name__} {text}"


class _Invalid(Exception):  # noqa: N818 (internal signal, surfaced as WeightwardenError)
    """A value does not fit; ``path`` collects where, innermost first, as it propagates.

    Field names are only formatted on this error path, so decoding a good line builds
    no strings.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.path: list[str] = []


def _expected(expected: str, value: object) -> _Invalid:
    return _Invalid(f"expected {expected}, got {_describe(value)}")


def _integer(low: int, high: int) -> Callable[[object], int]:
    def decode(value: object) -> int:
        if type(value) is not int or not low <= value <= high:
            raise _expected(f"an integer in [{low}, {high}]", value)
        return value

    return decode


def _text(value: object) -> str:
    if type(value) is not str:
        raise _expected("a string", value)
    return value


def _flag(value: object) -> bool:
    if type(value) is not bool:
        raise _expected("true or false", value)
    return value


def _seconds(value: object) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is int:
        return float(value)
    raise _expected("a finite number of seconds", value)


def _optional(decode: Callable[[object], _T]) -> Callable[[object], _T | None]:
    def decode_optional(value: object) -> _T | None:
        return None if value is None else decode(value)

    return decode_optional


def _enum_value(cls: type[_E]) -> Callable[[object], _E]:
    by_value = {member.value: member for member in cls}
    expected = "one of " + ", ".join(repr(value) for value in by_value)

    def decode(value: object) -> _E:
        if type(value) is not str or value not in by_value:
            raise _expected(expected, value)
        return by_value[value]

    return decode


def _tuple_of(decode: Callable[[object], _T]) -> Callable[[object], tuple[_T, ...]]:
    def decode_tuple(value: object) -> tuple[_T, ...]:
        if type(value) is not list:
            raise _expected("a list", value)
        items: list[_T] = []
        try:
            for item in value:
                items.append(decode(item))  # noqa: PERF401 (len(items) locates a failure)
        except _Invalid as exc:
            exc.path.append(f"[{len(items)}]")
            raise
        return tuple(items)

    return decode_tuple


def _name_set(value: object) -> frozenset[str]:
    names = _tuple_of(_text)(value)
    unique = frozenset(names)
    if len(unique) != len(names):
        raise _expected("a list of distinct strings", value)
    return unique


def _record(
    cls: Callable[..., _T], spec: Mapping[str, Callable[[object], Any]]
) -> Callable[[object], _T]:
    """Decode an object with exactly the keys of ``spec`` into ``cls(**decoded)``."""
    keys = frozenset(spec)
    fields = tuple(spec.items())

    def decode(value: object) -> _T:
        if type(value) is not dict:
            raise _expected("an object", value)
        if value.keys() != keys:
            unknown = sorted(value.keys() - keys)
            if unknown:
                raise _Invalid(f"unknown field(s) {', '.join(unknown)}")
            raise _Invalid(f"missing field(s) {', '.join(sorted(keys - value.keys()))}")
        decoded: dict[str, Any] = {}
        name = ""
        try:
            for name, field in fields:
                decoded[name] = field(value[name])
        except _Invalid as exc:
            exc.path.append(f".{name}")
            raise
        return cls(**decoded)

    return decode


_pid = _integer(0, _U32)
_uid = _integer(0, _U32)
_ticks = _integer(0, _U64)
_port = _integer(0, _PORT)
_counter = _integer(0, _COUNTER)

_SSH_ORIGIN_FIELDS: Mapping[str, Callable[[object], Any]] = {
    "client_address": _text,
    "client_port": _optional(_port),
    "server_address": _optional(_text),
    "server_port": _optional(_port),
}
_ANCESTOR_FIELDS: Mapping[str, Callable[[object], Any]] = {
    "pid": _pid,
    "start_time": _optional(_ticks),
    "uid": _optional(_uid),
    "user": _optional(_text),
    "comm": _optional(_text),
    "exe": _optional(_text),
}
_PROCESS_INFO_FIELDS: Mapping[str, Callable[[object], Any]] = {
    "pid": _pid,
    "ppid": _optional(_pid),
    "comm": _optional(_text),
    "state": _optional(_text),
    "kernel_thread": _flag,
    "uid": _optional(_uid),
    "euid": _optional(_uid),
    "user": _optional(_text),
    "login_uid": _optional(_uid),
    "login_user": _optional(_text),
    "exe": _optional(_text),
    "exe_deleted": _flag,
    "cmdline": _tuple_of(_text),
    "start_time": _optional(_ticks),
    "cgroup": _optional(_text),
    "container_id": _optional(_text),
    "container_runtime": _optional(_text),
    "systemd_unit": _optional(_text),
    "slurm_job_id": _optional(_integer(0, _COUNTER)),
    "pod_uid": _optional(_text),
    "ssh_origin": _optional(_record(SshOrigin, _SSH_ORIGIN_FIELDS)),
    "parents": _tuple_of(_record(Ancestor, _ANCESTOR_FIELDS)),
    "read_quality": _enum_value(ReadQuality),
    "unread": _name_set,
}
_CACHED_PROCESS_FIELDS: Mapping[str, Callable[[object], Any]] = {
    "info": _record(ProcessInfo, _PROCESS_INFO_FIELDS),
    "start_ticks": _ticks,
    "started_at": _seconds,
    "seen_at": _seconds,
    "exited_at": _optional(_seconds),
    "source": _enum_value(SnapshotSource),
}
_STATS_FIELDS: Mapping[str, Callable[[object], Any]] = {
    "running": _flag,
    "priority": _text,
    "failure": _optional(_text),
    **dict.fromkeys(
        (
            "events",
            "execs",
            "forks",
            "uid_changes",
            "exits",
            "overruns",
            "resyncs",
            "handler_errors",
            "snapshots_vanished",
            "snapshots_lost",
        ),
        _counter,
    ),
}

_RELAY_FIELDS: Mapping[str, Callable[[object], Any]] = dict.fromkeys(
    ("lines", "coalesced", "backlog_bytes", "backlog_peak_bytes", "stalls", "encode_errors"),
    _counter,
)

_MESSAGES: Mapping[str, Callable[[object], WatcherMessage]] = {
    "snapshot": _record(SnapshotMessage, {"entry": _record(CachedProcess, _CACHED_PROCESS_FIELDS)}),
    "exit": _record(ExitMessage, {"pid": _pid, "at": _seconds}),
    "update": _record(
        UpdateMessage, {"pid": _pid, "info": _record(ProcessInfo, _PROCESS_INFO_FIELDS)}
    ),
    "stats": _record(
        StatsMessage,
        {
            "connector": _record(ConnectorStats, _STATS_FIELDS),
            "relay": _record(RelayStats, _RELAY_FIELDS),
        },
    ),
    "ready": _record(ReadyMessage, {"pid": _pid, "monotonic": _seconds}),
    "failed": _record(FailedMessage, {"reason": _text}),
}


def _decoded(decode: Callable[[object], _T], value: object, where: str) -> _T:
    """Run a decoder; turn its `_Invalid` into the domain error naming the full path."""
    try:
        return decode(value)
    except _Invalid as exc:
        path = where + "".join(reversed(exc.path))
        raise WeightwardenError(f"{path}: {exc.detail}") from None


_decode_info = _record(ProcessInfo, _PROCESS_INFO_FIELDS)
_decode_entry = _record(CachedProcess, _CACHED_PROCESS_FIELDS)


def process_info_from_json(value: object, *, where: str = "info") -> ProcessInfo:
    """Decode what `process_info_to_json` produced.

    Raises:
        WeightwardenError: ``value`` is not exactly a snapshot's JSON form; names the field.
    """
    return _decoded(_decode_info, value, where)


def cached_process_from_json(value: object, *, where: str = "entry") -> CachedProcess:
    """Decode what `cached_process_to_json` produced.

    Raises:
        WeightwardenError: ``value`` is not exactly a cache entry's JSON form; names the field.
    """
    return _decoded(_decode_entry, value, where)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
_ENVELOPE = frozenset({"v", "kind"})


def decode_message(line: bytes) -> WatcherMessage:
    """Decode one line (without or with its trailing newline) into a watcher message.

    Raises:
        WeightwardenError: the line is not a message this version writes; the message
            says what is wrong and where. Never any other exception.
    """
    try:
        value: object = _JSON_DECODER.decode(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WeightwardenError(f"not a JSON line: {exc}") from exc
    if type(value) is not dict:
        raise WeightwardenError(f"message: expected an object, got {_describe(value)}")
    version = value.get("v")
    if version != WIRE_VERSION or type(version) is not int:
        raise WeightwardenError(
            f"message.v: expected protocol version {WIRE_VERSION}, got {_describe(version)}"
        )
    kind = value.get("kind")
    decode = _MESSAGES.get(kind) if type(kind) is str else None
    if decode is None:
        raise WeightwardenError(
            f"message.kind: expected one of {', '.join(_MESSAGES)}, got {_describe(kind)}"
        )
    fields = {key: item for key, item in value.items() if key not in _ENVELOPE}
    return _decoded(decode, fields, str(kind))
