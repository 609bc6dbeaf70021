"""The sensor's output value and the bounded queue that carries it between threads."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from pathlib import Path

import pytest

import agent.sensors
from agent.sensors import RecordQueue, SensorEventKind, SensorRecord, SensorSource


def record(n: int) -> SensorRecord:
    return SensorRecord(
        kind=SensorEventKind.OPEN,
        source=SensorSource.FANOTIFY,
        monotonic=float(n),
        path=Path(f"/weights/{n}"),
        pid=n,
    )


def counting_clock() -> float:
    return 42.0


def test_public_api_is_pinned() -> None:
    """The package exports exactly its documented names."""
    assert sorted(agent.sensors.__all__) == [
        "FanotifySensor",
        "FanotifySupport",
        "InotifySensor",
        "RecordQueue",
        "RecordSink",
        "SensorEventKind",
        "SensorRecord",
        "SensorSource",
        "SensorStats",
        "probe_fanotify",
    ]


def test_records_are_frozen_and_keyword_only() -> None:
    """A record cannot be changed after it is made, nor made positionally."""
    made = record(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.pid = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        SensorRecord(SensorEventKind.OPEN, SensorSource.INOTIFY, 0.0, None)  # type: ignore[call-arg]


def test_queue_hands_records_over_in_order() -> None:
    """Records come out in the order they went in."""
    queue = RecordQueue(maxsize=8, clock=counting_clock)
    for n in range(5):
        queue(record(n))
    assert [queue.get(0) for _ in range(5)] == [record(n) for n in range(5)]
    assert queue.get(0) is None
    assert queue.dropped == 0


def test_a_full_queue_counts_drops_and_marks_the_gap_in_place() -> None:
    """Records that do not fit are counted, and an OVERFLOW record stands where they were."""
    queue = RecordQueue(maxsize=3, clock=counting_clock)
    for n in range(6):  # 0, 1, 2 fit; 3, 4, 5 are dropped
        queue(record(n))
    assert queue.dropped == 3
    assert [queue.get(0), queue.get(0)] == [record(0), record(1)]
    queue(record(6))  # room for the marker and this record
    out = [queue.get(0) for _ in range(3)]
    assert out[0] == record(2)
    marker = out[1]
    assert marker is not None
    assert (marker.kind, marker.source, marker.count, marker.path) == (
        SensorEventKind.OVERFLOW,
        SensorSource.QUEUE,
        3,
        None,
    )
    assert marker.monotonic == 42.0
    assert out[2] == record(6)
    assert queue.get(0) is None


def test_a_drained_queue_reports_its_gap_without_waiting_for_a_new_record() -> None:
    """Once what it held is consumed, the queue reports the drops that came after it."""
    queue = RecordQueue(maxsize=2, clock=counting_clock)
    for n in range(4):
        queue(record(n))
    assert [queue.get(0), queue.get(0)] == [record(0), record(1)]
    marker = queue.get(0)
    assert marker is not None
    assert (marker.kind, marker.count) == (SensorEventKind.OVERFLOW, 2)
    assert queue.get(0) is None


def test_a_consumer_thread_receives_what_a_producer_thread_puts() -> None:
    """get() waits for a record put from another thread."""
    queue = RecordQueue(maxsize=4, clock=counting_clock)
    producer = threading.Thread(target=queue, args=(record(7),))
    producer.start()
    assert queue.get(timeout=10) == record(7)
    producer.join()


def test_every_record_is_either_delivered_or_counted() -> None:
    """Under any interleaving of puts and gets, delivered + dropped == put."""
    queue = RecordQueue(maxsize=4, clock=counting_clock)
    put = delivered = 0
    for step in itertools.islice(itertools.cycle([3, 1, 7, 2, 0, 5]), 60):
        for _ in range(step):
            queue(record(put))
            put += 1
        while (got := queue.get(0)) is not None:
            if got.kind is not SensorEventKind.OVERFLOW:
                delivered += 1
    assert delivered + queue.dropped == put


def test_a_queue_needs_room_for_a_record_and_its_marker() -> None:
    """A queue smaller than two cannot report its own gaps, so it is refused."""
    with pytest.raises(ValueError, match="maxsize"):
        RecordQueue(maxsize=1, clock=counting_clock)
