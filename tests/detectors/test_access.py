"""Reading OCSF events into flat accesses: the agent's own, another producer's, and junk."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from detectors.access import UNKNOWN_USER, AccessKind, access_from_json, access_from_ocsf
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    Endpoint,
    FileActivity,
    FileActivityType,
    FileRef,
    NetworkActivity,
    NetworkActivityType,
    Process,
    SessionPhase,
    User,
    to_json_line,
)

AT = 1_767_571_200_000


def _agent_process() -> Process:
    root = User(uid=0, name="root")
    alice = User(uid=1000, name="alice")
    return Process(
        pid=4242,
        attribution=Attribution.FULL,
        exe="/opt/venv/bin/python3.11",
        user=root,
        login_user=alice,
        parent=Process(pid=4000, attribution=Attribution.FULL, exe="/usr/bin/sudo"),
        job_id="slurm-77",
    )


def test_an_agent_read_names_the_login_user_the_program_and_the_bytes_read():
    """Through sudo, the person is the login user; bytes are read calls plus mmap."""
    process = _agent_process()
    event = FileActivity(
        uid="e1",
        time=AT,
        device=Device(hostname="gpu-017", agent_id="gpu-017"),
        activity=FileActivityType.READ,
        actor=Actor(process=process, user=process.user),
        file=FileRef(path="/data/ckpt/step-9/model.safetensors", size=4096),
        bytes_read=1000,
        mmap_bytes=3000,
        fraction_read=1.0,
        session_uid="s-1",
        session_phase=SessionPhase.CLOSE,
    )

    access = access_from_json(to_json_line(event))

    assert access is not None
    assert (access.uid, access.time, access.host, access.kind) == ("e1", AT, "gpu-017", "read")
    assert (access.user, access.account) == ("alice", "root")
    assert (access.program, access.exe, access.parent_program) == (
        "python3.11",
        "/opt/venv/bin/python3.11",
        "sudo",
    )
    assert (access.path, access.size, access.bytes, access.fraction) == (
        "/data/ckpt/step-9/model.safetensors",
        4096,
        4000,
        1.0,
    )
    assert (access.session, access.phase, access.job) == ("s-1", "close", "slurm-77")


def test_an_agent_connection_names_its_destination_and_bytes_out():
    """Network Activity: destination address, name, port and bytes sent."""
    process = _agent_process()
    event = NetworkActivity(
        uid="n1",
        time=AT,
        device=Device(hostname="gpu-017", agent_id="gpu-017"),
        activity=NetworkActivityType.OPEN,
        actor=Actor(process=process, user=process.user),
        src_endpoint=Endpoint(ip="10.0.0.17", port=50123),
        dst_endpoint=Endpoint(ip="203.0.113.9", port=443, hostname="drive.example.com"),
        bytes_out=1 << 30,
    )

    access = access_from_json(to_json_line(event))

    assert access is not None
    assert access.kind is AccessKind.CONNECT
    assert (access.dst_ip, access.dst_host, access.dst_port, access.bytes_out) == (
        "203.0.113.9",
        "drive.example.com",
        443,
        1 << 30,
    )


def test_another_producers_ocsf_is_read_from_ocsfs_own_attributes():
    """A SIEM's OCSF: device.name, actor.user, dst_endpoint.domain, traffic.bytes_out."""
    read = {
        "class_uid": 1001,
        "activity_id": 2,
        "time": AT,
        "metadata": {"uid": "x1", "product": {"name": "some-edr"}},
        "device": {"name": "gpu-099"},
        "actor": {"user": {"name": "bob"}, "process": {"file": {"path": "/usr/bin/rsync"}}},
        "file": {"path": "/data/ckpt/step-1/model.safetensors", "size": 10},
    }
    connect = {
        "class_uid": 4001,
        "activity_id": 1,
        "time": AT + 1,
        "metadata": {"uid": "x2"},
        "device": {"hostname": "gpu-099"},
        "actor": {"user": {"uid": "1001"}},
        "dst_endpoint": {"ip": "198.51.100.7", "domain": "paste.example.net", "port": 22},
        "traffic": {"bytes_out": 5_000_000},
    }

    file_access = access_from_ocsf(read)
    net_access = access_from_ocsf(connect)

    assert file_access is not None
    assert (file_access.host, file_access.user, file_access.program, file_access.kind) == (
        "gpu-099",
        "bob",
        "rsync",
        "read",
    )
    assert file_access.bytes == 0  # no weightwarden extension: nothing claimed
    assert net_access is not None
    assert (net_access.user, net_access.dst_host, net_access.bytes_out) == (
        "uid:1001",
        "paste.example.net",
        5_000_000,
    )


def test_findings_and_events_without_an_id_or_a_time_are_not_accesses():
    """Only File, Network and Process Activity with metadata.uid and an integer time."""
    base = {"class_uid": 1001, "activity_id": 2, "time": AT, "metadata": {"uid": "u"}}
    assert access_from_ocsf(base) is not None
    assert access_from_ocsf(base | {"class_uid": 2004}) is None
    assert access_from_ocsf(base | {"metadata": {}}) is None
    assert access_from_ocsf(base | {"time": "2026-01-05T00:00:00Z"}) is None
    assert access_from_ocsf(base).user == UNKNOWN_USER
    assert access_from_json(b"not json") is None
    assert access_from_json(b"[1, 2]") is None


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # what JSON integers a store keeps
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "class_uid",
        "activity_id",
        "time",
        "metadata",
        "device",
        "actor",
        "file",
        "file_result",
        "dst_endpoint",
        "traffic",
        "unmapped",
        "severity_id",
    ]
)


@given(
    st.dictionaries(_keys, _json),
    st.sampled_from([1001, 1007, 4001]),
    st.sampled_from([1, 2, 5, 14]),
)
def test_malformed_attributes_count_as_absent_and_never_raise(obj, class_uid, activity):
    """Any shape under any key: an Access or None, never an exception."""
    obj = obj | {"class_uid": class_uid, "activity_id": activity, "metadata": {"uid": "u"}}
    obj["time"] = AT
    access = access_from_ocsf(obj)
    assert access is not None
    assert access_from_json(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)) == access
