"""OCSF 1.3 JSON for weightwarden events: encode, decode, JSON lines and canonical bytes.

Import and export speak the same OCSF, so any OCSF source can feed the collector and any
SIEM can read what weightwarden writes. :func:`decode` validates at the edge: it reads the
fields weightwarden knows, tolerates every other attribute a producer adds, and turns
anything malformed into an :class:`~weightwarden.errors.EventFormatError` naming the field.

Mapping
=======
Every event carries ``class_uid``, ``category_uid``, ``activity_id``, ``type_uid``
(``class_uid * 100 + activity_id``), ``severity_id``, ``time`` (ms since the epoch),
``metadata`` (``version`` "1.3.0", ``product`` {``name``, ``vendor_name``} "weightwarden",
``uid`` = the event's ``uid``) and, where known, ``device`` {``hostname``, ``uid`` = the
agent id}; ``device`` is required for the activity classes and optional for findings.
The captions (``class_name``, ``activity_name``, ``severity`` ...) and derived attributes
(``file.name``, ``type_id``) are written for readers and ignored on decode. On decode an
attribute given as JSON ``null`` counts as absent.

======================  =====  ==================================================
class                   uid    weightwarden fields
======================  =====  ==================================================
File System Activity    1001   ``actor``, ``file``, ``file_result``
Process Activity        1007   ``actor``, ``process``, ``exit_code``
Network Activity        4001   ``actor``, ``src_endpoint``, ``dst_endpoint``,
                               ``traffic`` {``bytes_in``, ``bytes_out``}
Detection Finding       2004   ``finding_info`` {``uid``, ``title``, ``desc``,
                               ``analytic`` {``name``, ``type_id``, ``uid``},
                               ``related_events`` [{``uid``}]}, ``status_id``
Compliance Finding      2003   ``finding_info`` (as above, no analytic),
                               ``compliance`` {``control``, ``standards``,
                               ``status_id``, ``status_detail``},
                               ``resources`` [{``name``}]
======================  =====  ==================================================

A process is ``{pid, cmd_line, name, file {path, name, type_id}, user {uid, name},
container {uid}, parent_process {...}, xattributes {...}}``, recursively (at most
:data:`MAX_PROCESS_DEPTH` parents are read). A user's ``uid`` is written as a decimal
string (OCSF ``user.uid`` is a string) and read from a string of digits or an integer.
File hashes are OCSF ``fingerprints``: ``[{algorithm_id, algorithm, value}]``, with ids
1 MD5, 2 SHA-1, 3 SHA-256, 4 SHA-512, 5 CTPH, 6 TLSH, 7 quickXorHash; any other algorithm
(blake3, say) is id 99 with its name in ``algorithm``.

Process context (``xattributes`` of every process object)
=========================================================
``attribution``
    Always written: ``"full"``, ``"from_cache"``, ``"partial"`` or ``"unknown"``
    (:class:`~weightwarden.events.Attribution`); read as ``"unknown"`` when absent.
``login_uid``, ``login_user_name``
    The audit login user, who stays the same through ``sudo`` and ``su``.
``cgroup``, ``systemd_unit``, ``job_id``
    Where the process runs: cgroup v2 path, systemd unit, Slurm job or Kubernetes pod.
``ssh_origin``
    ``{ip, port, hostname}`` of the SSH client that started the session.

Extension data (``unmapped.weightwarden``)
==========================================
What OCSF has no attribute for travels in the event's ``unmapped`` object under the key
``weightwarden``; the object is omitted when empty. Other keys of ``unmapped`` belong to
other producers and are ignored.

File System Activity:
    ``bytes_read`` (int): bytes read through ``read(2)`` during the access session.
    ``mmap_bytes`` (int): bytes of the file resident through ``mmap``.
    ``fraction_read`` (number): ``(bytes_read + mmap_bytes) / size``, may exceed 1.
    ``session_uid`` (str): the access session (open to close) the event belongs to.
    ``sensor`` (str): the sensor that saw it: ``fanotify``, ``inotify``, ``s3`` ...
    ``canary`` (true): the file is a canary; written only when true.
    ``seal`` ({``status``, ``uid``, ``detail``}): the seal check, ``status`` one of
    ``intact``, ``tampered``, ``unsealed``, ``unverified``.
    ``copy_source`` (str): path of the sealed file this file is a copy of.
    ``session_phase`` (str): ``open``, ``progress`` or ``close`` for session events.
    ``related_paths`` ([str]): other files the event concerns; written only when non-empty.
    ``gpu`` ({``index``, ``uuid``, ``used_memory``}): the GPU a process holds.
Process Activity:
    ``sensor`` (str).
Network Activity:
    ``session_uid`` (str): the file access session this connection is linked to.
    ``sensor`` (str).
Detection Finding:
    ``explanation`` ({``rule``, ``contributions``}): the rule's text, and the features
    that contributed most as ``[{feature, actual, typical}]``.

Canonical bytes
===============
:func:`canonical_bytes` is the encoded event as JSON with sorted keys, no whitespace,
non-ASCII characters written as UTF-8 and no NaN or infinity. Hash chains and signatures
cover these bytes, so the encoding above is a contract: changing it invalidates old chains.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar

from weightwarden.errors import EventFormatError
from weightwarden.events._model import (
    Actor,
    Analytic,
    AnalyticType,
    Attribution,
    ComplianceFinding,
    ComplianceStatus,
    Contribution,
    DetectionFinding,
    Device,
    Endpoint,
    Explanation,
    FileActivity,
    FileActivityType,
    FileRef,
    FindingActivityType,
    FindingStatus,
    GpuUse,
    NetworkActivity,
    NetworkActivityType,
    Process,
    ProcessActivity,
    ProcessActivityType,
    SealInfo,
    SealStatus,
    SessionPhase,
    Severity,
    User,
)

if TYPE_CHECKING:
    from weightwarden.events._model import Event

__all__ = [
    "EXTENSION_KEY",
    "MAX_PROCESS_DEPTH",
    "OCSF_VERSION",
    "canonical_bytes",
    "decode",
    "encode",
    "from_json_line",
    "to_json_line",
]

OCSF_VERSION: Final = "1.3.0"
"""The OCSF schema version weightwarden writes; decode accepts any 1.x."""
PRODUCT: Final = "weightwarden"
EXTENSION_KEY: Final = "weightwarden"
"""Key of weightwarden's object inside an event's ``unmapped``."""
MAX_PROCESS_DEPTH: Final = 64
"""Most parent processes decode follows; a deeper chain is rejected, not recursed into."""

_MAX_INT: Final = 2**63 - 1
_MAX_PORT: Final = 65535
_SHOWN: Final = 40
"""Longest value an error message repeats."""

FILE_ACTIVITY: Final = 1001
PROCESS_ACTIVITY: Final = 1007
NETWORK_ACTIVITY: Final = 4001
COMPLIANCE_FINDING: Final = 2003
DETECTION_FINDING: Final = 2004

_CLASS_NAMES: Final = {
    FILE_ACTIVITY: "File System Activity",
    PROCESS_ACTIVITY: "Process Activity",
    NETWORK_ACTIVITY: "Network Activity",
    COMPLIANCE_FINDING: "Compliance Finding",
    DETECTION_FINDING: "Detection Finding",
}
_CATEGORIES: Final = {1: "System Activity", 2: "Findings", 4: "Network Activity"}
_KNOWN_CLASSES: Final = ", ".join(f"{uid} ({name})" for uid, name in _CLASS_NAMES.items())

# Keyed by (enum, name): IntEnum members of different enums with one value compare equal.
_CAPTION_OVERRIDES: Final[Mapping[tuple[type[enum.IntEnum], str], str]] = {
    (ProcessActivityType, "SET_USER_ID"): "Set User ID",
    (AnalyticType, "LEARNING"): "Learning (ML/DL)",
}

_FINGERPRINT_IDS: Final = {
    "md5": (1, "MD5"),
    "sha1": (2, "SHA-1"),
    "sha256": (3, "SHA-256"),
    "sha512": (4, "SHA-512"),
    "ctph": (5, "CTPH"),
    "tlsh": (6, "TLSH"),
    "quickxorhash": (7, "quickXorHash"),
}
_FINGERPRINT_NAMES: Final = {num: name for name, (num, _) in _FINGERPRINT_IDS.items()}
_OTHER_ALGORITHM: Final = 99
_UNKNOWN_ALGORITHM: Final = 0

_REGULAR_FILE: Final = {"type_id": 1, "type": "Regular File"}
_UNKNOWN_DEVICE_TYPE: Final = {"type_id": 0, "type": "Unknown"}

_E = TypeVar("_E", bound=enum.IntEnum)
_S = TypeVar("_S", bound=enum.StrEnum)

Json: TypeAlias = dict[str, object]


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def encode(event: Event) -> Json:
    """Return ``event`` as an OCSF 1.3 object of JSON types (dicts, lists, str, int, float).

    ``decode(encode(event)) == event`` for every event, and ``encode(decode(d)) == d`` for
    every ``d`` that :func:`encode` produced.
    """
    if isinstance(event, FileActivity):
        return _encode_file_activity(event)
    if isinstance(event, ProcessActivity):
        return _encode_process_activity(event)
    if isinstance(event, NetworkActivity):
        return _encode_network_activity(event)
    if isinstance(event, DetectionFinding):
        return _encode_detection_finding(event)
    if isinstance(event, ComplianceFinding):  # pragma: no branch - the union is closed
        return _encode_compliance_finding(event)
    raise TypeError(f"not a weightwarden event: {type(event).__name__}")  # pragma: no cover


def decode(obj: Mapping[str, object]) -> Event:
    """Read an OCSF object as a weightwarden event, dispatching on ``class_uid``.

    Attributes weightwarden does not know are ignored; captions are not checked. A
    missing ``metadata.uid`` is replaced by a digest of the object, so the same foreign
    event always gets the same uid.

    Raises:
        EventFormatError: The class is not one weightwarden reads, a required field is
            missing, or a field has the wrong type or an impossible value. The message
            names the dotted field and what was expected.
    """
    if not isinstance(obj, Mapping):
        raise EventFormatError(f"OCSF event: expected a JSON object, got {_describe(obj)}")
    root = _Fields(obj, "")
    class_uid = root.integer("class_uid")
    if class_uid not in _CLASS_NAMES:
        raise root.error("class_uid", f"one of {_KNOWN_CLASSES}", class_uid)
    if class_uid == FILE_ACTIVITY:
        return _decode_file_activity(root)
    if class_uid == PROCESS_ACTIVITY:
        return _decode_process_activity(root)
    if class_uid == NETWORK_ACTIVITY:
        return _decode_network_activity(root)
    if class_uid == DETECTION_FINDING:
        return _decode_detection_finding(root)
    return _decode_compliance_finding(root)


def _basename(path: str) -> str:
    """The last component of ``path`` as written (``pathlib`` costs 30 % of an encode)."""
    return path.rstrip("/").rpartition("/")[2]


def canonical_bytes(event: Event) -> bytes:
    """Return the stable byte form of ``event`` that hash chains and signatures cover.

    The OCSF encoding as JSON with sorted keys, ``,`` and ``:`` separators and no other
    whitespace, UTF-8, no NaN or infinity. Equal events give equal bytes.
    """
    return _dumps(encode(event)).encode("utf-8")


def to_json_line(event: Event) -> str:
    """Return ``event`` as one line of JSON (its canonical form), without the newline."""
    return _dumps(encode(event))


def from_json_line(line: str | bytes) -> Event:
    """Parse one JSON line (str, or UTF-8 bytes) and decode it as an event.

    Duplicate keys, ``NaN`` and ``Infinity`` are rejected: two parsers must never read
    different events from the same bytes.

    Raises:
        EventFormatError: The line is not one JSON object, or :func:`decode` rejects it.
    """
    try:
        obj = json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except RecursionError as exc:
        raise EventFormatError("OCSF event: JSON nested too deeply to be an event") from exc
    except ValueError as exc:
        raise EventFormatError(f"OCSF event: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise EventFormatError(f"OCSF event: expected a JSON object, got {_describe(obj)}")
    return decode(obj)


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------


def _dumps(obj: Json) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _caption(member: enum.IntEnum) -> str:
    override = _CAPTION_OVERRIDES.get((type(member), member.name))
    return override or member.name.replace("_", " ").title()


def _header(
    class_uid: int,
    activity: enum.IntEnum,
    *,
    uid: str,
    time: int,
    severity: Severity,
    device: Device | None,
) -> Json:
    category_uid = class_uid // 1000
    class_name = _CLASS_NAMES[class_uid]
    activity_name = _caption(activity)
    out: Json = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": _CATEGORIES[category_uid],
        "activity_id": int(activity),
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + int(activity),
        "type_name": f"{class_name}: {activity_name}",
        "severity_id": int(severity),
        "severity": _caption(severity),
        "time": time,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": PRODUCT},
            "uid": uid,
        },
    }
    if device is not None:
        out["device"] = _encode_device(device)
    return out


def _put(out: Json, key: str, value: object) -> None:
    """Set ``key`` unless ``value`` is None: absent and unknown are the same in OCSF."""
    if value is not None:
        out[key] = value


def _with_extension(out: Json, extension: Json) -> Json:
    if extension:
        out["unmapped"] = {EXTENSION_KEY: extension}
    return out


def _encode_device(device: Device) -> Json:
    out: Json = {"hostname": device.hostname, **_UNKNOWN_DEVICE_TYPE}
    _put(out, "uid", device.agent_id)
    return out


def _encode_user(user: User) -> Json:
    out: Json = {"uid": str(user.uid)}
    _put(out, "name", user.name)
    return out


def _encode_endpoint(endpoint: Endpoint) -> Json:
    out: Json = {"ip": endpoint.ip}
    _put(out, "port", endpoint.port)
    _put(out, "hostname", endpoint.hostname)
    return out


def _encode_process(process: Process) -> Json:
    out: Json = {"pid": process.pid}
    _put(out, "cmd_line", process.cmd_line)
    if process.exe is not None:
        name = _basename(process.exe)
        out["name"] = name
        out["file"] = {"path": process.exe, "name": name, **_REGULAR_FILE}
    if process.user is not None:
        out["user"] = _encode_user(process.user)
    if process.container_id is not None:
        out["container"] = {"uid": process.container_id}
    if process.parent is not None:
        out["parent_process"] = _encode_process(process.parent)
    context: Json = {"attribution": process.attribution.value}
    if process.login_user is not None:
        context["login_uid"] = process.login_user.uid
        _put(context, "login_user_name", process.login_user.name)
    _put(context, "cgroup", process.cgroup)
    _put(context, "systemd_unit", process.systemd_unit)
    _put(context, "job_id", process.job_id)
    if process.ssh_origin is not None:
        context["ssh_origin"] = _encode_endpoint(process.ssh_origin)
    out["xattributes"] = context
    return out


def _encode_actor(actor: Actor) -> Json:
    out: Json = {}
    if actor.process is not None:
        out["process"] = _encode_process(actor.process)
    if actor.user is not None:
        out["user"] = _encode_user(actor.user)
    return out


def _encode_file(file: FileRef) -> Json:
    out: Json = {"path": file.path, "name": _basename(file.path), **_REGULAR_FILE}
    _put(out, "size", file.size)
    if file.hashes:
        out["hashes"] = [_encode_fingerprint(name, value) for name, value in file.hashes.items()]
    return out


def _encode_fingerprint(algorithm: str, value: str) -> Json:
    number, caption = _FINGERPRINT_IDS.get(algorithm, (_OTHER_ALGORITHM, algorithm))
    return {"algorithm_id": number, "algorithm": caption, "value": value}


def _encode_file_activity(event: FileActivity) -> Json:
    out = _header(
        FILE_ACTIVITY,
        event.activity,
        uid=event.uid,
        time=event.time,
        severity=event.severity,
        device=event.device,
    )
    out["actor"] = _encode_actor(event.actor)
    out["file"] = _encode_file(event.file)
    if event.file_result is not None:
        out["file_result"] = _encode_file(event.file_result)
    ext: Json = {}
    _put(ext, "bytes_read", event.bytes_read)
    _put(ext, "mmap_bytes", event.mmap_bytes)
    _put(ext, "fraction_read", None if event.fraction_read is None else float(event.fraction_read))
    _put(ext, "session_uid", event.session_uid)
    _put(ext, "sensor", event.sensor)
    if event.canary:
        ext["canary"] = True
    if event.seal is not None:
        seal: Json = {"status": event.seal.status.value}
        _put(seal, "uid", event.seal.seal_uid)
        _put(seal, "detail", event.seal.detail)
        ext["seal"] = seal
    _put(ext, "copy_source", event.copy_source)
    _put(ext, "session_phase", None if event.session_phase is None else event.session_phase.value)
    if event.related_paths:
        ext["related_paths"] = list(event.related_paths)
    if event.gpu is not None:
        gpu: Json = {"index": event.gpu.index}
        _put(gpu, "uuid", event.gpu.uuid)
        _put(gpu, "used_memory", event.gpu.used_memory)
        ext["gpu"] = gpu
    return _with_extension(out, ext)


def _encode_process_activity(event: ProcessActivity) -> Json:
    out = _header(
        PROCESS_ACTIVITY,
        event.activity,
        uid=event.uid,
        time=event.time,
        severity=event.severity,
        device=event.device,
    )
    out["actor"] = _encode_actor(event.actor)
    out["process"] = _encode_process(event.process)
    _put(out, "exit_code", event.exit_code)
    ext: Json = {}
    _put(ext, "sensor", event.sensor)
    return _with_extension(out, ext)


def _encode_network_activity(event: NetworkActivity) -> Json:
    out = _header(
        NETWORK_ACTIVITY,
        event.activity,
        uid=event.uid,
        time=event.time,
        severity=event.severity,
        device=event.device,
    )
    out["actor"] = _encode_actor(event.actor)
    out["src_endpoint"] = _encode_endpoint(event.src_endpoint)
    out["dst_endpoint"] = _encode_endpoint(event.dst_endpoint)
    traffic: Json = {}
    _put(traffic, "bytes_in", event.bytes_in)
    _put(traffic, "bytes_out", event.bytes_out)
    if traffic:
        out["traffic"] = traffic
    ext: Json = {}
    _put(ext, "session_uid", event.session_uid)
    _put(ext, "sensor", event.sensor)
    return _with_extension(out, ext)


def _finding_info(
    finding_uid: str, title: str, description: str | None, evidence_uids: Sequence[str]
) -> Json:
    info: Json = {"uid": finding_uid, "title": title}
    _put(info, "desc", description)
    if evidence_uids:
        info["related_events"] = [{"uid": uid} for uid in evidence_uids]
    return info


def _encode_detection_finding(event: DetectionFinding) -> Json:
    out = _header(
        DETECTION_FINDING,
        event.activity,
        uid=event.uid,
        time=event.time,
        severity=event.severity,
        device=event.device,
    )
    info = _finding_info(event.finding_uid, event.title, event.description, event.evidence_uids)
    analytic: Json = {
        "name": event.analytic.name,
        "type_id": int(event.analytic.kind),
        "type": _caption(event.analytic.kind),
    }
    _put(analytic, "uid", event.analytic.uid)
    info["analytic"] = analytic
    out["finding_info"] = info
    out["status_id"] = int(event.status)
    out["status"] = _caption(event.status)
    ext: Json = {}
    if event.explanation is not None:
        explanation: Json = {
            "contributions": [
                {"feature": c.feature, "actual": float(c.actual), "typical": float(c.typical)}
                for c in event.explanation.contributions
            ]
        }
        _put(explanation, "rule", event.explanation.rule)
        ext["explanation"] = explanation
    return _with_extension(out, ext)


def _encode_compliance_finding(event: ComplianceFinding) -> Json:
    out = _header(
        COMPLIANCE_FINDING,
        event.activity,
        uid=event.uid,
        time=event.time,
        severity=event.severity,
        device=event.device,
    )
    out["finding_info"] = _finding_info(
        event.finding_uid, event.title, event.description, event.evidence_uids
    )
    compliance: Json = {
        "control": event.control,
        "standards": list(event.standards),
        "status_id": int(event.status),
        "status": _caption(event.status),
    }
    _put(compliance, "status_detail", event.status_detail)
    out["compliance"] = compliance
    if event.resource is not None:
        out["resources"] = [{"name": event.resource}]
    return out


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


class _Missing:
    """Marks an absent key, distinct from an explicit JSON null."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


def _describe(value: object) -> str:
    """Say what a value is in one short line, as a JSON reader would write it."""
    if value is _MISSING:
        return "nothing (the field is missing)"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if value is None or isinstance(value, bool | str):
        text = json.dumps(value)
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        return f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class _Fields:
    """Typed reads from one JSON object of an event; errors name the dotted field."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, object], path: str) -> None:
        self._data = data
        self._path = path

    def where(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str, expected: str, got: object) -> EventFormatError:
        return EventFormatError(
            f"OCSF event: {self.where(key)}: expected {expected}, got {_describe(got)}"
        )

    def mapping(self) -> Mapping[str, object]:
        return self._data

    def raw(self, key: str) -> object:
        return self._data.get(key, _MISSING)

    def present(self, key: str) -> bool:
        value = self.raw(key)
        return value is not _MISSING and value is not None

    def string(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(key, "a string", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.error(key, "a string of Unicode characters", "a lone surrogate") from None
        return value

    def opt_string(self, key: str) -> str | None:
        return self.string(key) if self.present(key) else None

    def integer(self, key: str, *, minimum: int | None = 0, maximum: int = _MAX_INT) -> int:
        value = self.raw(key)
        low = -_MAX_INT - 1 if minimum is None else minimum
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= maximum:
            bounds = "an integer" if minimum is None else f"an integer from {low} to {maximum}"
            raise self.error(key, bounds, value)
        return value

    def opt_integer(
        self, key: str, *, minimum: int | None = 0, maximum: int = _MAX_INT
    ) -> int | None:
        return self.integer(key, minimum=minimum, maximum=maximum) if self.present(key) else None

    def number(self, key: str) -> float:
        value = self.raw(key)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise self.error(key, "a finite number", value)
        return float(value)

    def opt_number(self, key: str) -> float | None:
        return self.number(key) if self.present(key) else None

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if value is _MISSING or value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def obj(self, key: str) -> _Fields:
        value = self.raw(key)
        if not isinstance(value, Mapping):
            raise self.error(key, "an object", value)
        return _Fields(value, self.where(key))

    def opt_obj(self, key: str) -> _Fields | None:
        return self.obj(key) if self.present(key) else None

    def objects(self, key: str) -> list[_Fields]:
        """Read an array of objects; absent or null is empty."""
        value = self.raw(key)
        if value is _MISSING or value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.error(key, "an array of objects", value)
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self.error(f"{key}[{index}]", "an object", item)
            out.append(_Fields(item, f"{self.where(key)}[{index}]"))
        return out

    def strings(self, key: str) -> tuple[str, ...]:
        """Read a required array of strings."""
        value = self.raw(key)
        if not isinstance(value, list | tuple):
            raise self.error(key, "an array of strings", value)
        holder = _Fields({f"{key}[{i}]": item for i, item in enumerate(value)}, self._path)
        return tuple(holder.string(f"{key}[{i}]") for i in range(len(value)))

    def int_enum(self, key: str, kind: type[_E]) -> _E:
        value = self.integer(key, minimum=None)
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(str(int(m)) for m in kind)
            raise self.error(key, f"one of {allowed}", value) from None

    def str_enum(self, key: str, kind: type[_S]) -> _S:
        value = self.string(key)
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(json.dumps(m.value) for m in kind)
            raise self.error(key, f"one of {allowed}", value) from None

    def numeric_id(self, key: str) -> int:
        """Read a Unix id written as an integer or a string of decimal digits."""
        value = self.raw(key)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:  # noqa: PLR2004 - digits of 2**63
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
            raise self.error(key, 'a numeric id like "1000"', self.raw(key))
        return value


class _Header:
    """The fields every event class shares, read and cross-checked once."""

    __slots__ = ("device", "severity", "time", "uid")

    def __init__(self, root: _Fields, class_uid: int, activity: enum.IntEnum) -> None:
        category = root.opt_integer("category_uid")
        if category is not None and category != class_uid // 1000:
            raise root.error("category_uid", f"{class_uid // 1000} for class {class_uid}", category)
        type_uid = root.opt_integer("type_uid")
        expected_type = class_uid * 100 + int(activity)
        if type_uid is not None and type_uid != expected_type:
            raise root.error(
                "type_uid", f"{expected_type} (class_uid * 100 + activity_id)", type_uid
            )
        metadata = root.obj("metadata")
        version = metadata.string("version")
        if not version.startswith("1."):
            raise metadata.error("version", 'an OCSF 1.x version like "1.3.0"', version)
        uid = metadata.opt_string("uid")
        self.uid = _derived_uid(root) if uid is None else uid
        self.time = root.integer("time")
        self.severity = root.int_enum("severity_id", Severity)
        device = root.opt_obj("device")
        self.device = None if device is None else _decode_device(device)


def _derived_uid(root: _Fields) -> str:
    """A stable uid for a foreign event without ``metadata.uid``: a digest of its JSON."""
    try:
        text = json.dumps(root.mapping(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise root.obj("metadata").error(
            "uid", "a string (the event is not plain JSON, so none can be derived)", _MISSING
        ) from None
    return "ocsf-sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _extension(root: _Fields) -> _Fields:
    unmapped = root.opt_obj("unmapped")
    if unmapped is None:
        return _Fields({}, f"unmapped.{EXTENSION_KEY}")
    return unmapped.opt_obj(EXTENSION_KEY) or _Fields({}, f"unmapped.{EXTENSION_KEY}")


def _decode_device(fields: _Fields) -> Device:
    return Device(hostname=fields.string("hostname"), agent_id=fields.opt_string("uid"))


def _decode_user(fields: _Fields) -> User:
    return User(uid=fields.numeric_id("uid"), name=fields.opt_string("name"))


def _decode_endpoint(fields: _Fields) -> Endpoint:
    ip = fields.string("ip")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise fields.error("ip", "an IPv4 or IPv6 address", ip) from None
    return Endpoint(
        ip=ip,
        port=fields.opt_integer("port", maximum=_MAX_PORT),
        hostname=fields.opt_string("hostname"),
    )


def _decode_process(fields: _Fields, depth: int = 0) -> Process:
    parent_fields = fields.opt_obj("parent_process")
    if parent_fields is not None and depth >= MAX_PROCESS_DEPTH:
        raise fields.error(
            "parent_process", f"at most {MAX_PROCESS_DEPTH} parent processes", "a deeper chain"
        )
    exe_file = fields.opt_obj("file")
    exe = None
    if exe_file is not None:
        exe = exe_file.opt_string("path") or exe_file.opt_string("name")
    user = fields.opt_obj("user")
    container = fields.opt_obj("container")
    context = fields.opt_obj("xattributes") or _Fields({}, fields.where("xattributes"))
    attribution = (
        context.str_enum("attribution", Attribution)
        if context.present("attribution")
        else Attribution.UNKNOWN
    )
    login_user = None
    if context.present("login_uid"):
        login_user = User(
            uid=context.numeric_id("login_uid"), name=context.opt_string("login_user_name")
        )
    ssh_origin = context.opt_obj("ssh_origin")
    return Process(
        pid=fields.integer("pid"),
        attribution=attribution,
        exe=exe,
        cmd_line=fields.opt_string("cmd_line"),
        user=None if user is None else _decode_user(user),
        login_user=login_user,
        parent=None if parent_fields is None else _decode_process(parent_fields, depth + 1),
        cgroup=context.opt_string("cgroup"),
        container_id=None if container is None else container.opt_string("uid"),
        systemd_unit=context.opt_string("systemd_unit"),
        job_id=context.opt_string("job_id"),
        ssh_origin=None if ssh_origin is None else _decode_endpoint(ssh_origin),
    )


def _decode_actor(root: _Fields) -> Actor:
    actor = root.opt_obj("actor")
    if actor is None:
        return Actor()
    process = actor.opt_obj("process")
    user = actor.opt_obj("user")
    return Actor(
        process=None if process is None else _decode_process(process),
        user=None if user is None else _decode_user(user),
    )


def _decode_file(fields: _Fields) -> FileRef:
    hashes: dict[str, str] = {}
    for fingerprint in fields.objects("hashes"):
        number = fingerprint.integer("algorithm_id")
        if number in _FINGERPRINT_NAMES:
            name = _FINGERPRINT_NAMES[number]
        elif number in (_OTHER_ALGORITHM, _UNKNOWN_ALGORITHM):
            name = fingerprint.opt_string("algorithm") or "unknown"
        else:
            raise fingerprint.error(
                "algorithm_id", "an OCSF fingerprint algorithm id (0-7 or 99)", number
            )
        if name in hashes:
            raise fingerprint.error("algorithm", "each algorithm once per file", name)
        hashes[name] = fingerprint.string("value")
    return FileRef(path=fields.string("path"), size=fields.opt_integer("size"), hashes=hashes)


def _decode_file_activity(root: _Fields) -> FileActivity:
    activity = root.int_enum("activity_id", FileActivityType)
    header = _Header(root, FILE_ACTIVITY, activity)
    if header.device is None:
        raise root.error("device", "an object with the hostname", _MISSING)
    ext = _extension(root)
    seal = ext.opt_obj("seal")
    gpu = ext.opt_obj("gpu")
    file_result = root.opt_obj("file_result")
    return FileActivity(
        uid=header.uid,
        time=header.time,
        severity=header.severity,
        device=header.device,
        activity=activity,
        actor=_decode_actor(root),
        file=_decode_file(root.obj("file")),
        file_result=None if file_result is None else _decode_file(file_result),
        bytes_read=ext.opt_integer("bytes_read"),
        mmap_bytes=ext.opt_integer("mmap_bytes"),
        fraction_read=_fraction(ext),
        session_uid=ext.opt_string("session_uid"),
        sensor=ext.opt_string("sensor"),
        canary=ext.flag("canary"),
        seal=None
        if seal is None
        else SealInfo(
            status=seal.str_enum("status", SealStatus),
            seal_uid=seal.opt_string("uid"),
            detail=seal.opt_string("detail"),
        ),
        copy_source=ext.opt_string("copy_source"),
        session_phase=ext.str_enum("session_phase", SessionPhase)
        if ext.present("session_phase")
        else None,
        related_paths=ext.strings("related_paths") if ext.present("related_paths") else (),
        gpu=None
        if gpu is None
        else GpuUse(
            index=gpu.integer("index"),
            uuid=gpu.opt_string("uuid"),
            used_memory=gpu.opt_integer("used_memory"),
        ),
    )


def _fraction(ext: _Fields) -> float | None:
    value = ext.opt_number("fraction_read")
    if value is not None and value < 0:
        raise ext.error("fraction_read", "a number of at least 0", value)
    return value


def _decode_process_activity(root: _Fields) -> ProcessActivity:
    activity = root.int_enum("activity_id", ProcessActivityType)
    header = _Header(root, PROCESS_ACTIVITY, activity)
    if header.device is None:
        raise root.error("device", "an object with the hostname", _MISSING)
    return ProcessActivity(
        uid=header.uid,
        time=header.time,
        severity=header.severity,
        device=header.device,
        activity=activity,
        actor=_decode_actor(root),
        process=_decode_process(root.obj("process")),
        exit_code=root.opt_integer("exit_code", minimum=None),
        sensor=_extension(root).opt_string("sensor"),
    )


def _decode_network_activity(root: _Fields) -> NetworkActivity:
    activity = root.int_enum("activity_id", NetworkActivityType)
    header = _Header(root, NETWORK_ACTIVITY, activity)
    if header.device is None:
        raise root.error("device", "an object with the hostname", _MISSING)
    traffic = root.opt_obj("traffic") or _Fields({}, "traffic")
    ext = _extension(root)
    return NetworkActivity(
        uid=header.uid,
        time=header.time,
        severity=header.severity,
        device=header.device,
        activity=activity,
        actor=_decode_actor(root),
        src_endpoint=_decode_endpoint(root.obj("src_endpoint")),
        dst_endpoint=_decode_endpoint(root.obj("dst_endpoint")),
        bytes_in=traffic.opt_integer("bytes_in"),
        bytes_out=traffic.opt_integer("bytes_out"),
        session_uid=ext.opt_string("session_uid"),
        sensor=ext.opt_string("sensor"),
    )


def _evidence_uids(info: _Fields) -> tuple[str, ...]:
    return tuple(event.string("uid") for event in info.objects("related_events"))


def _decode_detection_finding(root: _Fields) -> DetectionFinding:
    activity = root.int_enum("activity_id", FindingActivityType)
    header = _Header(root, DETECTION_FINDING, activity)
    info = root.obj("finding_info")
    analytic = info.obj("analytic")
    explanation = _extension(root).opt_obj("explanation")
    return DetectionFinding(
        uid=header.uid,
        time=header.time,
        severity=header.severity,
        device=header.device,
        activity=activity,
        finding_uid=info.string("uid"),
        title=info.string("title"),
        description=info.opt_string("desc"),
        analytic=Analytic(
            name=analytic.string("name"),
            kind=analytic.int_enum("type_id", AnalyticType)
            if analytic.present("type_id")
            else AnalyticType.UNKNOWN,
            uid=analytic.opt_string("uid"),
        ),
        status=root.int_enum("status_id", FindingStatus)
        if root.present("status_id")
        else FindingStatus.UNKNOWN,
        evidence_uids=_evidence_uids(info),
        explanation=None if explanation is None else _decode_explanation(explanation),
    )


def _decode_explanation(fields: _Fields) -> Explanation:
    return Explanation(
        rule=fields.opt_string("rule"),
        contributions=tuple(
            Contribution(
                feature=item.string("feature"),
                actual=item.number("actual"),
                typical=item.number("typical"),
            )
            for item in fields.objects("contributions")
        ),
    )


def _decode_compliance_finding(root: _Fields) -> ComplianceFinding:
    activity = root.int_enum("activity_id", FindingActivityType)
    header = _Header(root, COMPLIANCE_FINDING, activity)
    info = root.obj("finding_info")
    compliance = root.obj("compliance")
    resources = root.objects("resources")
    return ComplianceFinding(
        uid=header.uid,
        time=header.time,
        severity=header.severity,
        device=header.device,
        activity=activity,
        finding_uid=info.string("uid"),
        title=info.string("title"),
        description=info.opt_string("desc"),
        control=compliance.string("control"),
        standards=compliance.strings("standards"),
        status=compliance.int_enum("status_id", ComplianceStatus)
        if compliance.present("status_id")
        else ComplianceStatus.UNKNOWN,
        status_detail=compliance.opt_string("status_detail"),
        resource=resources[0].opt_string("name") if resources else None,
        evidence_uids=_evidence_uids(info),
    )


# ---------------------------------------------------------------------------------------
# Strict JSON parsing
# ---------------------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {json.dumps(key)}")
        out[key] = value
    return out


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")
