import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightwarden.errors import EventFormatError, UsageError
from weightwarden.events import (
    MAX_PROCESS_DEPTH,
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
    Event,
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
    canonical_bytes,
    decode,
    encode,
    from_json_line,
    to_json_line,
)

# Hypothesis has no timing assertion here: CI machines are shared and slow.
quick = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies: arbitrary valid events ------------------------------------------------

text = st.text(max_size=12)
ids = st.integers(min_value=0, max_value=2**32)
big = st.integers(min_value=0, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


users = st.builds(User, uid=ids, name=maybe(text))
endpoints = st.builds(
    Endpoint,
    ip=st.ip_addresses().map(str),
    port=maybe(st.integers(min_value=0, max_value=65535)),
    hostname=maybe(text),
)
devices = st.builds(Device, hostname=text, agent_id=maybe(text))


def _process(parent: st.SearchStrategy[Process | None]) -> st.SearchStrategy[Process]:
    return st.builds(
        Process,
        pid=ids,
        attribution=st.sampled_from(Attribution),
        exe=maybe(text),
        cmd_line=maybe(text),
        user=maybe(users),
        login_user=maybe(users),
        parent=parent,
        cgroup=maybe(text),
        container_id=maybe(text),
        systemd_unit=maybe(text),
        job_id=maybe(text),
        ssh_origin=maybe(endpoints),
    )


processes = st.recursive(_process(st.none()), _process, max_leaves=4)
actors = st.builds(Actor, process=maybe(processes), user=maybe(users))
algorithms = st.sampled_from(
    ["md5", "sha1", "sha256", "sha512", "ctph", "tlsh", "quickxorhash", "blake3", "unknown"]
) | st.text(min_size=1, max_size=8)
files = st.builds(
    FileRef,
    path=text,
    size=maybe(big),
    hashes=st.dictionaries(algorithms, st.text("0123456789abcdef", max_size=16), max_size=4),
)
common = {"uid": text, "time": big, "severity": st.sampled_from(Severity)}

file_activities = st.builds(
    FileActivity,
    **common,
    device=devices,
    activity=st.sampled_from(FileActivityType),
    actor=actors,
    file=files,
    file_result=maybe(files),
    bytes_read=maybe(big),
    mmap_bytes=maybe(big),
    fraction_read=maybe(st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
    session_uid=maybe(text),
    sensor=maybe(text),
    canary=st.booleans(),
    seal=maybe(
        st.builds(
            SealInfo,
            status=st.sampled_from(SealStatus),
            seal_uid=maybe(text),
            detail=maybe(text),
        )
    ),
    copy_source=maybe(text),
    session_phase=maybe(st.sampled_from(SessionPhase)),
    related_paths=st.lists(text, max_size=3).map(tuple),
    gpu=maybe(
        st.builds(GpuUse, index=st.integers(0, 64), uuid=maybe(text), used_memory=maybe(big))
    ),
)
process_activities = st.builds(
    ProcessActivity,
    **common,
    device=devices,
    activity=st.sampled_from(ProcessActivityType),
    actor=actors,
    process=processes,
    exit_code=maybe(st.integers(min_value=-(2**31), max_value=2**31)),
    sensor=maybe(text),
)
network_activities = st.builds(
    NetworkActivity,
    **common,
    device=devices,
    activity=st.sampled_from(NetworkActivityType),
    actor=actors,
    src_endpoint=endpoints,
    dst_endpoint=endpoints,
    bytes_in=maybe(big),
    bytes_out=maybe(big),
    session_uid=maybe(text),
    sensor=maybe(text),
)
detection_findings = st.builds(
    DetectionFinding,
    **common,
    device=maybe(devices),
    activity=st.sampled_from(FindingActivityType),
    finding_uid=text,
    title=text,
    description=maybe(text),
    analytic=st.builds(Analytic, name=text, kind=st.sampled_from(AnalyticType), uid=maybe(text)),
    status=st.sampled_from(FindingStatus),
    evidence_uids=st.lists(text, max_size=3).map(tuple),
    explanation=maybe(
        st.builds(
            Explanation,
            rule=maybe(text),
            contributions=st.lists(
                st.builds(Contribution, feature=text, actual=finite, typical=finite), max_size=3
            ).map(tuple),
        )
    ),
)
compliance_findings = st.builds(
    ComplianceFinding,
    **common,
    device=maybe(devices),
    activity=st.sampled_from(FindingActivityType),
    finding_uid=text,
    title=text,
    control=text,
    standards=st.lists(text, max_size=3).map(tuple),
    status=st.sampled_from(ComplianceStatus),
    description=maybe(text),
    status_detail=maybe(text),
    resource=maybe(text),
    evidence_uids=st.lists(text, max_size=3).map(tuple),
)
any_event = st.one_of(
    file_activities,
    process_activities,
    network_activities,
    detection_findings,
    compliance_findings,
)


def ocsf(event: Event) -> Any:
    """Encode for tests that index into the result freely."""
    return encode(event)


# --- round trips -------------------------------------------------------------------------


@quick
@given(any_event)
def test_decode_inverts_encode_for_every_event(event: Event) -> None:
    """Any event encodes to OCSF and decodes back to an equal event."""
    assert decode(encode(event)) == event


@quick
@given(any_event)
def test_encode_inverts_decode_for_weightwarden_output(event: Event) -> None:
    """An OCSF object weightwarden wrote decodes and re-encodes to the same object."""
    produced = encode(event)
    assert encode(decode(copy.deepcopy(produced))) == produced


@quick
@given(any_event)
def test_json_line_round_trip_is_exact(event: Event) -> None:
    """A JSON line parses back to the same event and holds exactly the encoded object."""
    line = to_json_line(event)
    assert "\n" not in line
    assert from_json_line(line) == event
    assert from_json_line(line.encode("utf-8")) == event
    assert json.loads(line) == encode(event)


@quick
@given(any_event)
def test_canonical_bytes_survive_a_round_trip(event: Event) -> None:
    """Decoding and re-encoding an event reproduces its canonical bytes exactly."""
    data = canonical_bytes(event)
    assert canonical_bytes(from_json_line(data)) == data
    assert data == to_json_line(event).encode("utf-8")


CLASS_IDS = {
    FileActivity: (1001, 1),
    ProcessActivity: (1007, 1),
    NetworkActivity: (4001, 4),
    DetectionFinding: (2004, 2),
    ComplianceFinding: (2003, 2),
}


@quick
@given(any_event)
def test_every_class_has_its_ocsf_ids(event: Event) -> None:
    """Each event class encodes its OCSF class, category, type uid and metadata."""
    encoded = ocsf(event)
    class_uid, category_uid = CLASS_IDS[type(event)]
    assert encoded["class_uid"] == class_uid
    assert encoded["category_uid"] == category_uid
    assert encoded["activity_id"] == event.activity
    assert encoded["type_uid"] == class_uid * 100 + event.activity
    assert encoded["severity_id"] == event.severity
    assert encoded["time"] == event.time
    assert encoded["metadata"] == {
        "version": "1.3.0",
        "product": {"name": "weightwarden", "vendor_name": "weightwarden"},
        "uid": event.uid,
    }


# --- the mapping, field by field ----------------------------------------------------------


def _file_activity() -> FileActivity:
    shell = Process(pid=1, attribution=Attribution.FULL, exe="/bin/bash")
    cat = Process(
        pid=4242,
        attribution=Attribution.FROM_CACHE,
        exe="/usr/bin/cp",
        cmd_line="cp /ckpt/model.safetensors /tmp/x",
        user=User(uid=0, name="root"),
        login_user=User(uid=1000, name="alice"),
        parent=shell,
        cgroup="/user.slice/user-1000.slice/session-3.scope",
        container_id="c0ffee",
        systemd_unit="session-3.scope",
        job_id="slurm-981",
        ssh_origin=Endpoint(ip="192.0.2.7", port=51022),
    )
    return FileActivity(
        uid="ev-1",
        time=1_714_564_800_123,
        device=Device(hostname="gpu-01", agent_id="agent-7"),
        activity=FileActivityType.RENAME,
        severity=Severity.HIGH,
        actor=Actor(process=cat, user=User(uid=1000, name="alice")),
        file=FileRef(
            path="/ckpt/model.safetensors",
            size=1024,
            hashes={"sha256": "aa" * 32, "blake3": "bb" * 32},
        ),
        file_result=FileRef(path="/scratch/x"),
        bytes_read=512,
        mmap_bytes=256,
        fraction_read=0.75,
        session_uid="sess-9",
        sensor="fanotify",
        canary=True,
        seal=SealInfo(status=SealStatus.TAMPERED, seal_uid="seal-3", detail="digest differs"),
        copy_source="/ckpt/model.safetensors",
    )


def test_file_activity_maps_to_ocsf_attributes() -> None:
    """Actor, process chain, file and fingerprints land on their OCSF attributes."""
    encoded = ocsf(_file_activity())
    assert encoded["activity_id"] == 5
    assert encoded["type_uid"] == 100105
    assert encoded["severity_id"] == 4
    assert encoded["time"] == 1_714_564_800_123
    assert encoded["metadata"]["uid"] == "ev-1"
    assert encoded["device"]["hostname"] == "gpu-01"
    assert encoded["device"]["uid"] == "agent-7"
    process = encoded["actor"]["process"]
    assert process["pid"] == 4242
    assert process["cmd_line"] == "cp /ckpt/model.safetensors /tmp/x"
    assert process["file"]["path"] == "/usr/bin/cp"
    assert process["user"] == {"uid": "0", "name": "root"}
    assert process["container"] == {"uid": "c0ffee"}
    assert process["parent_process"]["pid"] == 1
    assert process["parent_process"]["file"]["path"] == "/bin/bash"
    assert process["xattributes"]["attribution"] == "from_cache"
    assert process["xattributes"]["login_uid"] == 1000
    assert process["xattributes"]["ssh_origin"] == {"ip": "192.0.2.7", "port": 51022}
    assert encoded["actor"]["user"] == {"uid": "1000", "name": "alice"}
    assert encoded["file"]["path"] == "/ckpt/model.safetensors"
    assert encoded["file"]["size"] == 1024
    assert encoded["file"]["hashes"] == [
        {"algorithm_id": 99, "algorithm": "blake3", "value": "bb" * 32},
        {"algorithm_id": 3, "algorithm": "SHA-256", "value": "aa" * 32},
    ]
    assert encoded["file_result"]["path"] == "/scratch/x"
    assert encoded["unmapped"] == {
        "weightwarden": {
            "bytes_read": 512,
            "mmap_bytes": 256,
            "fraction_read": 0.75,
            "session_uid": "sess-9",
            "sensor": "fanotify",
            "canary": True,
            "seal": {"status": "tampered", "uid": "seal-3", "detail": "digest differs"},
            "copy_source": "/ckpt/model.safetensors",
        }
    }


def test_extension_object_is_omitted_when_empty() -> None:
    """An event with no weightwarden extras carries no unmapped object."""
    event = ProcessActivity(
        uid="p-1",
        time=0,
        device=Device(hostname="h"),
        activity=ProcessActivityType.LAUNCH,
        actor=Actor(),
        process=Process(pid=7, attribution=Attribution.UNKNOWN),
    )
    encoded = ocsf(event)
    assert "unmapped" not in encoded
    assert encoded["actor"] == {}
    assert encoded["process"] == {"pid": 7, "xattributes": {"attribution": "unknown"}}


def test_detection_finding_carries_evidence_and_explanation() -> None:
    """A detection names its analytic, evidence event uids and contributing features."""
    finding = DetectionFinding(
        uid="f-1",
        time=5,
        severity=Severity.CRITICAL,
        finding_uid="alert-1",
        title="Bulk read of sealed weights",
        description="alice read 98% of model.safetensors then opened a connection",
        analytic=Analytic(name="bulk_read", kind=AnalyticType.STATISTICAL, uid="r-1"),
        evidence_uids=("ev-1", "ev-2"),
        explanation=Explanation(
            rule="fraction_read > 0.9",
            contributions=(Contribution(feature="bytes_read", actual=9.5e10, typical=1e6),),
        ),
    )
    encoded = ocsf(finding)
    assert encoded["class_uid"] == 2004
    assert encoded["finding_info"]["uid"] == "alert-1"
    assert encoded["finding_info"]["analytic"]["type_id"] == 3
    assert encoded["finding_info"]["related_events"] == [{"uid": "ev-1"}, {"uid": "ev-2"}]
    assert encoded["status_id"] == 1
    assert encoded["unmapped"]["weightwarden"]["explanation"] == {
        "rule": "fraction_read > 0.9",
        "contributions": [{"feature": "bytes_read", "actual": 9.5e10, "typical": 1e6}],
    }
    assert decode(encoded) == finding


def test_compliance_finding_carries_control_and_status() -> None:
    """An audit item names its control, standards and pass/fail status."""
    item = ComplianceFinding(
        uid="c-1",
        time=5,
        severity=Severity.MEDIUM,
        finding_uid="grant-unused/alice/llm-70b",
        title="Grant never used",
        control="HPCoC-6.limit-access",
        standards=("Hiroshima Process ICoC, Action 6",),
        status=ComplianceStatus.FAIL,
        status_detail="alice holds read on llm-70b but did not read it in 90 days",
        resource="llm-70b",
    )
    encoded = ocsf(item)
    assert encoded["class_uid"] == 2003
    assert encoded["compliance"]["control"] == "HPCoC-6.limit-access"
    assert encoded["compliance"]["status_id"] == 3
    assert encoded["resources"] == [{"name": "llm-70b"}]
    assert decode(encoded) == item


def test_network_activity_maps_endpoints_and_traffic() -> None:
    """Endpoints and byte counts use OCSF's src_endpoint, dst_endpoint and traffic."""
    event = NetworkActivity(
        uid="n-1",
        time=5,
        device=Device(hostname="gpu-01"),
        activity=NetworkActivityType.TRAFFIC,
        actor=Actor(user=User(uid=1000)),
        src_endpoint=Endpoint(ip="10.0.0.5", port=40000),
        dst_endpoint=Endpoint(ip="2001:db8::1", port=443, hostname="exfil.example"),
        bytes_out=10**10,
        session_uid="sess-9",
    )
    encoded = ocsf(event)
    assert encoded["type_uid"] == 400106
    assert encoded["dst_endpoint"] == {
        "ip": "2001:db8::1",
        "port": 443,
        "hostname": "exfil.example",
    }
    assert encoded["traffic"] == {"bytes_out": 10**10}
    assert encoded["unmapped"]["weightwarden"]["session_uid"] == "sess-9"


# --- canonical bytes ------------------------------------------------------------------------

GOLDEN = (
    '{"activity_id":1,"activity_name":"Launch","actor":{"user":{"name":"bob","uid":"1001"}},'
    '"category_name":"System Activity","category_uid":1,"class_name":"Process Activity",'
    '"class_uid":1007,"device":{"hostname":"gpu-01","type":"Unknown","type_id":0},'
    '"metadata":{"product":{"name":"weightwarden","vendor_name":"weightwarden"},'
    '"uid":"p-1","version":"1.3.0"},"process":{"cmd_line":"python train.py --name=模型",'
    '"file":{"name":"python3","path":"/usr/bin/python3","type":"Regular File","type_id":1},'
    '"name":"python3","pid":77,"xattributes":{"attribution":"full"}},'
    '"severity":"Informational","severity_id":1,"time":1700000000000,'
    '"type_name":"Process Activity: Launch","type_uid":100701}'
)


def _golden_event() -> ProcessActivity:
    return ProcessActivity(
        uid="p-1",
        time=1_700_000_000_000,
        device=Device(hostname="gpu-01"),
        activity=ProcessActivityType.LAUNCH,
        actor=Actor(user=User(uid=1001, name="bob")),
        process=Process(
            pid=77,
            attribution=Attribution.FULL,
            exe="/usr/bin/python3",
            cmd_line="python train.py --name=模型",
        ),
    )


def test_canonical_bytes_are_pinned() -> None:
    """Canonical bytes are sorted-key, whitespace-free UTF-8; chains depend on this form."""
    assert canonical_bytes(_golden_event()) == GOLDEN.encode("utf-8")


def test_canonical_bytes_ignore_the_order_fields_arrived_in() -> None:
    """An OCSF object with its keys in another order gives the same canonical bytes."""
    reordered = dict(reversed(list(json.loads(GOLDEN).items())))
    assert canonical_bytes(decode(reordered)) == GOLDEN.encode("utf-8")


def test_canonical_bytes_differ_when_any_field_differs() -> None:
    """Changing one field of an event changes its canonical bytes."""
    base = canonical_bytes(_golden_event())
    other = _golden_event()
    variants = [
        ProcessActivity(**{**_fields(other), "time": other.time + 1}),
        ProcessActivity(**{**_fields(other), "uid": "p-2"}),
        ProcessActivity(**{**_fields(other), "severity": Severity.LOW}),
    ]
    assert all(canonical_bytes(variant) != base for variant in variants)


def _fields(event: ProcessActivity) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__dataclass_fields__}


# --- input from other producers -------------------------------------------------------------


def _foreign_file_event() -> dict[str, Any]:
    return {
        "class_uid": 1001,
        "category_uid": 1,
        "activity_id": 2,
        "type_uid": 100102,
        "severity_id": 1,
        "time": 1_714_564_800_000,
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "SomeEDR", "vendor_name": "Example"},
            "profiles": ["host"],
        },
        "device": {"hostname": "ws-9", "type_id": 2, "os": {"name": "Linux", "type_id": 200}},
        "actor": {
            "process": {
                "pid": 12,
                "name": "rsync",
                "file": {"name": "rsync", "type_id": 1},
                "user": {"uid": 1000, "name": "carol", "type_id": 1},
                "integrity": "Medium",
            },
            "session": {"uid": "abc"},
        },
        "file": {"path": "/data/w.bin", "name": "w.bin", "type_id": 1, "owner": {"uid": "0"}},
        "observables": [{"name": "file.path", "type_id": 7, "value": "/data/w.bin"}],
        "unmapped": {"vendor": {"rule": 7}},
        "raw_data": "opaque",
    }


def test_foreign_ocsf_event_is_read_and_extras_ignored() -> None:
    """An event from another OCSF producer decodes; attributes weightwarden lacks are ignored."""
    event = decode(_foreign_file_event())
    assert isinstance(event, FileActivity)
    assert event.activity is FileActivityType.READ
    assert event.file == FileRef(path="/data/w.bin")
    assert event.actor.process is not None
    assert event.actor.process.exe == "rsync"
    assert event.actor.process.user == User(uid=1000, name="carol")
    assert event.actor.process.attribution is Attribution.UNKNOWN
    assert event.device == Device(hostname="ws-9")


def test_foreign_event_without_uid_gets_a_stable_derived_uid() -> None:
    """A missing metadata.uid becomes a digest of the event: same input, same uid."""
    first = decode(_foreign_file_event())
    second = decode(_foreign_file_event())
    changed = _foreign_file_event()
    changed["time"] += 1
    assert first.uid.startswith("ocsf-sha256:")
    assert first.uid == second.uid
    assert decode(changed).uid != first.uid


def test_null_optional_attributes_read_as_absent() -> None:
    """An optional attribute given as JSON null is read as absent."""
    obj = ocsf(_file_activity())
    obj["file_result"] = None
    obj["actor"]["process"]["cmd_line"] = None
    event = decode(obj)
    assert isinstance(event, FileActivity)
    assert event.file_result is None
    assert event.actor.process is not None
    assert event.actor.process.cmd_line is None


# --- malformed input ------------------------------------------------------------------------


def _bad(obj: dict[str, Any]) -> str:
    with pytest.raises(EventFormatError) as caught:
        decode(obj)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_event_format_error_is_a_usage_error() -> None:
    """A malformed event is the caller's input problem: exit code 2."""
    assert issubclass(EventFormatError, UsageError)
    assert EventFormatError.exit_code == 2


def test_missing_class_uid_is_named() -> None:
    """An object without class_uid is rejected, naming the field."""
    obj = ocsf(_golden_event())
    del obj["class_uid"]
    assert _bad(obj) == (
        "OCSF event: class_uid: expected an integer from 0 to 9223372036854775807, "
        "got nothing (the field is missing)"
    )


def test_unknown_class_lists_the_classes_read() -> None:
    """An OCSF class weightwarden does not read is rejected with the ones it does."""
    obj = ocsf(_golden_event())
    obj["class_uid"] = 3002
    message = _bad(obj)
    assert message.startswith("OCSF event: class_uid: expected one of 1001 (File System Activity)")
    assert message.endswith("got 3002")


INT = "expected an integer from 0 to 9223372036854775807"
ATTRIBUTIONS = '"full", "from_cache", "partial", "unknown"'


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("time",), "yesterday", f'time: {INT}, got "yesterday"'),
        (("time",), True, f"time: {INT}, got true"),
        (("process", "pid"), "77", f'process.pid: {INT}, got "77"'),
        (("process", "pid"), -1, f"process.pid: {INT}, got -1"),
        (
            ("actor", "user", "uid"),
            "S-1-5-18",
            'actor.user.uid: expected a numeric id like "1000", got "S-1-5-18"',
        ),
        (("actor",), [1], "actor: expected an object, got an array"),
        (
            ("metadata", "version"),
            "2.0.0",
            'metadata.version: expected an OCSF 1.x version like "1.3.0", got "2.0.0"',
        ),
        (("activity_id",), 42, "activity_id: expected one of 0, 1, 2, 3, 4, 5, 99, got 42"),
        (("severity_id",), 7, "severity_id: expected one of 0, 1, 2, 3, 4, 5, 6, 99, got 7"),
        (
            ("type_uid",),
            100702,
            "type_uid: expected 100701 (class_uid * 100 + activity_id), got 100702",
        ),
        (("category_uid",), 2, "category_uid: expected 1 for class 1007, got 2"),
        (("device", "hostname"), None, "device.hostname: expected a string, got null"),
        (
            ("process", "xattributes", "attribution"),
            "guess",
            f'process.xattributes.attribution: expected one of {ATTRIBUTIONS}, got "guess"',
        ),
    ],
)
def test_wrong_types_name_the_field_and_expectation(
    path: tuple[str, ...], value: object, expected: str
) -> None:
    """A field of the wrong type or value is rejected with its dotted path and expectation."""
    obj = ocsf(_golden_event())
    obj["actor"]["user"] = {"uid": "1001"}
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert _bad(obj) == f"OCSF event: {expected}"


def test_missing_required_object_is_named() -> None:
    """A file activity without its file is rejected naming file."""
    obj = ocsf(_file_activity())
    del obj["file"]
    assert _bad(obj) == "OCSF event: file: expected an object, got nothing (the field is missing)"


def test_bad_fingerprint_is_named_by_index() -> None:
    """A malformed fingerprint names its position in the list."""
    obj = ocsf(_file_activity())
    obj["file"]["hashes"][1]["value"] = 5
    assert _bad(obj) == "OCSF event: file.hashes[1].value: expected a string, got 5"


def test_bad_ip_address_is_rejected() -> None:
    """An endpoint whose ip is not an address is rejected."""
    obj = ocsf(_file_activity())
    obj["actor"]["process"]["xattributes"]["ssh_origin"]["ip"] = "not-an-ip"
    assert _bad(obj) == (
        "OCSF event: actor.process.xattributes.ssh_origin.ip: "
        'expected an IPv4 or IPv6 address, got "not-an-ip"'
    )


def test_too_deep_process_chain_is_rejected_not_recursed() -> None:
    """A parent chain deeper than the limit is an error, not a RecursionError."""
    process: dict[str, Any] = {"pid": 1}
    for pid in range(2, MAX_PROCESS_DEPTH + 3):
        process = {"pid": pid, "parent_process": process}
    obj = ocsf(_golden_event())
    obj["process"] = process
    assert "parent_process: expected at most 64 parent processes" in _bad(obj)


def test_long_values_are_shortened_in_messages() -> None:
    """A huge bad value is cut short so the message stays one readable line."""
    obj = ocsf(_golden_event())
    obj["time"] = "x" * 10_000
    assert len(_bad(obj)) < 200


def test_non_object_input_is_rejected() -> None:
    """A JSON array or number is not an event."""
    with pytest.raises(EventFormatError, match="expected a JSON object, got an array"):
        decode([1, 2])  # type: ignore[arg-type]
    with pytest.raises(EventFormatError, match="expected a JSON object, got 5"):
        from_json_line("5")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{", "not valid JSON"),
        ('{"time": NaN}', "NaN is not a JSON number"),
        ('{"a": 1, "a": 2}', 'duplicate key "a"'),
        (b"\xff\xfe{", "not valid JSON"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_bad_json_lines_are_rejected(line: str | bytes, reason: str) -> None:
    """Unparseable, ambiguous or pathological JSON is an EventFormatError, never a crash."""
    with pytest.raises(EventFormatError, match=reason):
        from_json_line(line)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found: list[tuple[object, ...]] = []
    if isinstance(obj, dict):
        items: list[tuple[object, object]] = list(obj.items())
    elif isinstance(obj, list):
        items = list(enumerate(obj))
    else:
        return found
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@quick
@given(any_event, st.data())
def test_corrupted_events_decode_or_fail_cleanly(event: Event, data: st.DataObject) -> None:
    """Replacing or deleting any attribute never crashes decode: an event or EventFormatError."""
    obj = ocsf(event)
    path = data.draw(st.sampled_from(_paths(obj)))
    parent: Any = obj
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(json_values)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    outcome = _decode_or_error(obj)
    if isinstance(outcome, EventFormatError):
        assert "\n" not in str(outcome)
    else:
        assert decode(encode(outcome)) == outcome


def _decode_or_error(obj: dict[str, Any]) -> Event | EventFormatError:
    try:
        return decode(obj)
    except EventFormatError as exc:
        return exc
