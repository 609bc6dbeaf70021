"""Event types: what weightwarden saw or concluded, as immutable values.

Inside weightwarden every event is one of the frozen dataclasses below; outside it is OCSF
1.3 JSON (see :mod:`weightwarden.events._ocsf`). The enums that OCSF numbers carry the
OCSF ids as their values, so ``FileActivityType.OPEN == 14`` is the OCSF ``activity_id``.

Times are integers: milliseconds since the Unix epoch, UTC, as OCSF writes them. One
representation everywhere keeps the OCSF round trip exact; :func:`epoch_ms` converts an
aware :class:`~datetime.datetime`.

Attribution is said, not guessed: every :class:`Process` carries an :class:`Attribution`
naming how its identity was learnt, and an :class:`Actor` with no process at all (the
inotify fallback sees no pid) is an event whose actor is unknown.

Constructors do not validate: values are built by trusted code or by
:func:`weightwarden.events.decode`, which validates untrusted input at the edge.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping  # noqa: TC003 - get_type_hints resolves dataclass fields at runtime
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TypeAlias

__all__ = [
    "Actor",
    "Analytic",
    "AnalyticType",
    "Attribution",
    "ComplianceFinding",
    "ComplianceStatus",
    "Contribution",
    "DetectionFinding",
    "Device",
    "Endpoint",
    "Event",
    "Explanation",
    "FileActivity",
    "FileActivityType",
    "FileRef",
    "FindingActivityType",
    "FindingStatus",
    "GpuUse",
    "NetworkActivity",
    "NetworkActivityType",
    "Process",
    "ProcessActivity",
    "ProcessActivityType",
    "SealInfo",
    "SealStatus",
    "SessionPhase",
    "Severity",
    "User",
    "epoch_ms",
]


class Severity(enum.IntEnum):
    """How bad an event is; values are OCSF ``severity_id``."""

    UNKNOWN = 0
    INFORMATIONAL = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5
    FATAL = 6
    OTHER = 99


class Attribution(enum.StrEnum):
    """How the process and user behind an event were learnt."""

    FULL = "full"
    """Read from the live process while the event was handled (``/proc/PID``)."""
    FROM_CACHE = "from_cache"
    """The process had exited; its identity came from the exec cache (proc connector, audit)."""
    PARTIAL = "partial"
    """Some fields are known (the pid, say) but others could not be read."""
    UNKNOWN = "unknown"
    """Attribution failed, or the producer did not say (OCSF from another source): trust
    the pid alone, and note that it may have been reused."""


class FileActivityType(enum.IntEnum):
    """What happened to a file; values are OCSF File System Activity ``activity_id`` (1001)."""

    UNKNOWN = 0
    CREATE = 1
    READ = 2
    UPDATE = 3
    DELETE = 4
    RENAME = 5
    SET_ATTRIBUTES = 6
    SET_SECURITY = 7
    GET_ATTRIBUTES = 8
    GET_SECURITY = 9
    ENCRYPT = 10
    DECRYPT = 11
    MOUNT = 12
    UNMOUNT = 13
    OPEN = 14
    OTHER = 99


class ProcessActivityType(enum.IntEnum):
    """What happened to a process; values are OCSF Process Activity ``activity_id`` (1007)."""

    UNKNOWN = 0
    LAUNCH = 1
    TERMINATE = 2
    OPEN = 3
    INJECT = 4
    SET_USER_ID = 5
    OTHER = 99


class NetworkActivityType(enum.IntEnum):
    """What happened on a connection; values are OCSF Network Activity ``activity_id`` (4001)."""

    UNKNOWN = 0
    OPEN = 1
    CLOSE = 2
    RESET = 3
    FAIL = 4
    REFUSE = 5
    TRAFFIC = 6
    LISTEN = 7
    OTHER = 99


class FindingActivityType(enum.IntEnum):
    """What happened to a finding; values are the OCSF Findings ``activity_id``."""

    UNKNOWN = 0
    CREATE = 1
    UPDATE = 2
    CLOSE = 3
    OTHER = 99


class FindingStatus(enum.IntEnum):
    """Where a finding stands in triage; values are OCSF finding ``status_id``."""

    UNKNOWN = 0
    NEW = 1
    IN_PROGRESS = 2
    SUPPRESSED = 3
    RESOLVED = 4
    ARCHIVED = 5
    DELETED = 6
    OTHER = 99


class ComplianceStatus(enum.IntEnum):
    """Outcome of an audit check; values are OCSF ``compliance.status_id``."""

    UNKNOWN = 0
    PASS = 1
    WARNING = 2
    FAIL = 3
    OTHER = 99


class AnalyticType(enum.IntEnum):
    """Kind of detector behind a finding; values are OCSF ``analytic.type_id``."""

    UNKNOWN = 0
    RULE = 1
    BEHAVIORAL = 2
    STATISTICAL = 3
    LEARNING = 4
    OTHER = 99


class SealStatus(enum.StrEnum):
    """What a seal check said about the file an event touched."""

    INTACT = "intact"
    """The file's content matches its seal."""
    TAMPERED = "tampered"
    """The file's content differs from its seal."""
    UNSEALED = "unsealed"
    """No seal covers this file."""
    UNVERIFIED = "unverified"
    """A seal exists but was not checked for this event (too large to re-hash inline, say)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A Unix account: the numeric uid is the identity, the name is for people."""

    uid: int
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One end of a network connection, or where an SSH session came from."""

    ip: str
    port: int | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """The host an event happened on, and the enrolled weightwarden agent that saw it."""

    hostname: str
    agent_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Process:
    """A process and the chain of processes that started it.

    Attributes:
        pid: Process id on the device.
        attribution: How this process's identity was learnt; says so when it failed.
        exe: Absolute path of the executable.
        cmd_line: Command line, arguments joined by spaces.
        user: The effective user the process runs as.
        login_user: The user who logged in (the audit login uid), which survives ``sudo``
            and ``su``: the person behind a root process.
        parent: The parent process, itself with a parent, up to where the chain was known.
        cgroup: The process's cgroup v2 path.
        container_id: The container the process runs in, if any.
        systemd_unit: The systemd unit the process belongs to.
        job_id: The batch or orchestration job (Slurm job id, Kubernetes pod uid).
        ssh_origin: Where the SSH session that started the process came from.
    """

    pid: int
    attribution: Attribution
    exe: str | None = None
    cmd_line: str | None = None
    user: User | None = None
    login_user: User | None = None
    parent: Process | None = None
    cgroup: str | None = None
    container_id: str | None = None
    systemd_unit: str | None = None
    job_id: str | None = None
    ssh_origin: Endpoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who did it: the process and the user the activity is attributed to.

    Both are ``None`` when the sensor could not tell (inotify carries no pid).
    """

    process: Process | None = None
    user: User | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRef:
    """A file as an event saw it.

    Attributes:
        path: Absolute path on the device.
        size: Size in bytes when the event was taken.
        hashes: Digest by algorithm name (``"sha256"``, ``"sha512"``, ``"md5"``, ``"sha1"``,
            or any other name such as ``"blake3"``), lower-case hex. Stored read-only.
    """

    path: str
    size: int | None = None
    hashes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hashes", MappingProxyType(dict(sorted(self.hashes.items()))))

    def __hash__(self) -> int:
        return hash((self.path, self.size, tuple(self.hashes.items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class SealInfo:
    """The outcome of checking a file against its seal when the event was taken."""

    status: SealStatus
    seal_uid: str | None = None
    detail: str | None = None


class SessionPhase(enum.StrEnum):
    """Where an access session stands when an event reports it."""

    OPEN = "open"
    PROGRESS = "progress"
    """The file is still held; reported every progress interval."""
    CLOSE = "close"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuUse:
    """A process's hold on one GPU (from NVML)."""

    index: int
    uuid: str | None = None
    used_memory: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Contribution:
    """One feature that pushed an anomaly score: its usual and its observed value."""

    feature: str
    actual: float
    typical: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Why a detection fired: the rule's text, or the features that contributed most."""

    rule: str | None = None
    contributions: tuple[Contribution, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Analytic:
    """The detector that produced a finding."""

    name: str
    kind: AnalyticType = AnalyticType.RULE
    uid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileActivity:
    """A process did something to a file: OCSF File System Activity (1001).

    Attributes:
        uid: Event id, unique per event.
        time: When it happened, milliseconds since the epoch (UTC).
        device: Where it happened.
        activity: What happened.
        actor: Who did it.
        file: The file acted on (for a rename, its old path).
        severity: How bad it is.
        file_result: The resulting file (for a rename, its new path).
        bytes_read: Bytes read through ``read(2)`` during the session (``/proc/PID/io``).
        mmap_bytes: Bytes of the file resident through ``mmap`` (``smaps`` Rss).
        fraction_read: Share of the file read, ``(bytes_read + mmap_bytes) / size``;
            above 1 when parts were read twice.
        session_uid: The access session (open to close) this event belongs to.
        sensor: The sensor that saw it (``fanotify``, ``inotify``, ``s3``).
        canary: The file is a canary (honeypot): any access is suspicious.
        seal: What a seal check said about the file.
        copy_source: Path of the sealed file this one is a copy of (same digest).
        session_phase: For session events: ``open``, ``progress`` (a file held a long
            time) or ``close``.
        related_paths: Other files this event concerns (the weights a GPU process holds).
        gpu: The GPU, for an event about a process holding one.
    """

    uid: str
    time: int
    device: Device
    activity: FileActivityType
    actor: Actor
    file: FileRef
    severity: Severity = Severity.INFORMATIONAL
    file_result: FileRef | None = None
    bytes_read: int | None = None
    mmap_bytes: int | None = None
    fraction_read: float | None = None
    session_uid: str | None = None
    sensor: str | None = None
    canary: bool = False
    seal: SealInfo | None = None
    copy_source: str | None = None
    session_phase: SessionPhase | None = None
    related_paths: tuple[str, ...] = ()
    gpu: GpuUse | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessActivity:
    """A process started, stopped or touched another: OCSF Process Activity (1007).

    Attributes:
        uid: Event id.
        time: Milliseconds since the epoch (UTC).
        device: Where it happened.
        activity: What happened.
        actor: The process (and user) that did it.
        process: The process it was done to; for a launch, the new process.
        severity: How bad it is.
        exit_code: The exit status, for a termination.
        sensor: The sensor that saw it.
    """

    uid: str
    time: int
    device: Device
    activity: ProcessActivityType
    actor: Actor
    process: Process
    severity: Severity = Severity.INFORMATIONAL
    exit_code: int | None = None
    sensor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkActivity:
    """A connection opened, closed or carried traffic: OCSF Network Activity (4001).

    Attributes:
        uid: Event id.
        time: Milliseconds since the epoch (UTC).
        device: Where it happened.
        activity: What happened.
        actor: The process (and user) behind the connection.
        src_endpoint: The initiator.
        dst_endpoint: The responder.
        severity: How bad it is.
        bytes_in: Bytes received by the initiator.
        bytes_out: Bytes sent by the initiator.
        session_uid: The file access session this connection is linked to (the process that
            read a checkpoint then opened this connection).
        sensor: The sensor that saw it.
    """

    uid: str
    time: int
    device: Device
    activity: NetworkActivityType
    actor: Actor
    src_endpoint: Endpoint
    dst_endpoint: Endpoint
    severity: Severity = Severity.INFORMATIONAL
    bytes_in: int | None = None
    bytes_out: int | None = None
    session_uid: str | None = None
    sensor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionFinding:
    """An alert: a detector concluded something is wrong. OCSF Detection Finding (2004).

    Attributes:
        uid: Event id of this finding record.
        time: Milliseconds since the epoch (UTC).
        severity: How bad it is.
        finding_uid: Id of the finding, the same across its create, update and close records.
        title: One line for the alert list.
        analytic: The rule or model that fired.
        activity: Whether this record creates, updates or closes the finding.
        description: What was seen, in sentences.
        status: Where the finding stands in triage.
        evidence_uids: Ids of the events that made it fire.
        explanation: Why it fired.
        device: The host it concerns, if one.
    """

    uid: str
    time: int
    severity: Severity
    finding_uid: str
    title: str
    analytic: Analytic
    activity: FindingActivityType = FindingActivityType.CREATE
    description: str | None = None
    status: FindingStatus = FindingStatus.NEW
    evidence_uids: tuple[str, ...] = ()
    explanation: Explanation | None = None
    device: Device | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ComplianceFinding:
    """One item of an access-control audit: OCSF Compliance Finding (2003).

    Attributes:
        uid: Event id of this record.
        time: Milliseconds since the epoch (UTC).
        severity: How bad a failure is.
        finding_uid: Id of the audit item, stable across reports.
        title: One line for the report.
        control: The control or requirement checked (``"HPCoC-6.limit-access"``).
        standards: The standards the control belongs to.
        status: Whether the check passed.
        activity: Whether this record creates, updates or closes the item.
        description: What was checked and what was found.
        status_detail: Why it passed or failed, in a sentence.
        resource: The weights (seal or path) the item is about.
        evidence_uids: Ids of the events the check relied on.
        device: The host it concerns, if one.
    """

    uid: str
    time: int
    severity: Severity
    finding_uid: str
    title: str
    control: str
    standards: tuple[str, ...]
    status: ComplianceStatus
    activity: FindingActivityType = FindingActivityType.CREATE
    description: str | None = None
    status_detail: str | None = None
    resource: str | None = None
    evidence_uids: tuple[str, ...] = ()
    device: Device | None = None


Event: TypeAlias = (
    FileActivity | ProcessActivity | NetworkActivity | DetectionFinding | ComplianceFinding
)
"""Any event weightwarden reads or writes."""


def epoch_ms(moment: datetime) -> int:
    """Return an aware datetime as whole milliseconds since the Unix epoch (floor).

    Raises:
        ValueError: ``moment`` is naive; a naive time cannot be placed on the timeline.
    """
    if moment.utcoffset() is None:
        raise ValueError("epoch_ms needs an aware datetime (tzinfo set), got a naive one")
    return (moment - _EPOCH) // _ONE_MS


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
