import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from weightwarden import events
from weightwarden.events import (
    Actor,
    Attribution,
    Device,
    FileActivity,
    FileActivityType,
    FileRef,
    Process,
    Severity,
    User,
    epoch_ms,
)


def test_public_api_is_pinned() -> None:
    """The package exports exactly the documented names, and each one resolves."""
    assert events.__all__ == [
        "EXTENSION_KEY",
        "MAX_PROCESS_DEPTH",
        "OCSF_VERSION",
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
        "canonical_bytes",
        "decode",
        "encode",
        "epoch_ms",
        "from_json_line",
        "to_json_line",
    ]
    for name in events.__all__:
        assert getattr(events, name) is not None


def _event(**changes: object) -> FileActivity:
    base = FileActivity(
        uid="ev-1",
        time=1_700_000_000_000,
        device=Device(hostname="gpu-01"),
        activity=FileActivityType.OPEN,
        actor=Actor(process=Process(pid=42, attribution=Attribution.FULL), user=User(uid=1000)),
        file=FileRef(path="/ckpt/model.safetensors", size=10, hashes={"sha256": "ab"}),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    """Assigning to an event field raises instead of silently changing a record."""
    event = _event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.uid = "other"  # type: ignore[misc]


def test_events_take_keyword_arguments_only() -> None:
    """Positional construction is refused, so a reordered field cannot shift values."""
    with pytest.raises(TypeError):
        User(1000, "alice")  # type: ignore[call-arg]


def test_file_hashes_are_read_only_and_sorted() -> None:
    """FileRef keeps its own read-only copy of the hashes, sorted by algorithm."""
    source = {"sha512": "cd", "blake3": "ef", "sha256": "ab"}
    ref = FileRef(path="/w", hashes=source)
    source["md5"] = "00"
    assert dict(ref.hashes) == {"blake3": "ef", "sha256": "ab", "sha512": "cd"}
    assert list(ref.hashes) == ["blake3", "sha256", "sha512"]
    with pytest.raises(TypeError):
        ref.hashes["md5"] = "00"  # type: ignore[index]


def test_events_are_hashable_and_equal_by_value() -> None:
    """Two events with equal fields are equal and hash alike, hashes mapping included."""
    first = _event(file=FileRef(path="/w", hashes={"a": "1", "b": "2"}))
    second = _event(file=FileRef(path="/w", hashes={"b": "2", "a": "1"}))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, _event(uid="ev-2")}) == 2


def test_default_severity_of_an_activity_is_informational() -> None:
    """An activity event nobody graded is informational, not unknown."""
    assert _event().severity is Severity.INFORMATIONAL


def test_enum_values_are_ocsf_ids() -> None:
    """The activity and severity enums carry the OCSF 1.3 ids as their values."""
    assert [int(m) for m in FileActivityType][:7] == [0, 1, 2, 3, 4, 5, 6]
    assert int(FileActivityType.CREATE) == 1
    assert int(FileActivityType.READ) == 2
    assert int(FileActivityType.UPDATE) == 3
    assert int(FileActivityType.DELETE) == 4
    assert int(FileActivityType.RENAME) == 5
    assert int(FileActivityType.OPEN) == 14
    assert int(Severity.CRITICAL) == 5


def test_epoch_ms_converts_aware_datetimes_in_any_zone() -> None:
    """An aware datetime becomes whole milliseconds since the epoch, whatever its zone."""
    moment = datetime(2024, 5, 1, 12, 0, 0, 123_999, tzinfo=UTC)
    assert epoch_ms(moment) == 1_714_564_800_123
    shifted = moment.astimezone(timezone(timedelta(hours=9)))
    assert epoch_ms(shifted) == 1_714_564_800_123
    assert epoch_ms(datetime(1970, 1, 1, tzinfo=UTC)) == 0


def test_epoch_ms_refuses_naive_datetimes() -> None:
    """A naive datetime has no place on the timeline, so it is refused."""
    with pytest.raises(ValueError, match="naive"):
        epoch_ms(datetime(2024, 5, 1, 12, 0, 0))  # noqa: DTZ001 - the naive value is the point
