"""SessionTracker: one session per open … close, usage samples, progress, a bounded table."""

from __future__ import annotations

import pytest

from agent.sessions import Session, SessionTracker
from weightwarden.events import Actor, Attribution, Process, User

INTERVAL_MS = 60_000


def _actor(pid: int) -> Actor:
    user = User(uid=1000, name="alice")
    return Actor(process=Process(pid=pid, attribution=Attribution.FULL, user=user), user=user)


def _tracker(*, max_sessions: int = 100) -> SessionTracker:
    return SessionTracker(
        agent_id="host-a", progress_interval_ms=INTERVAL_MS, max_sessions=max_sessions
    )


def _open(
    tracker: SessionTracker, pid: int, path: str, now: int, size: int | None = 100
) -> Session:
    return tracker.open(pid=pid, path=path, now=now, size=size, actor=_actor(pid))


def test_open_then_close_returns_the_session_and_forgets_it() -> None:
    """A close ends the session opened by the same pid on the same path."""
    tracker = _tracker()
    opened = _open(tracker, 10, "/w/a", 1_000)
    assert len(tracker) == 1
    closed = tracker.close(pid=10, path="/w/a")
    assert closed == opened
    assert len(tracker) == 0
    assert tracker.close(pid=10, path="/w/a") is None


def test_sessions_get_distinct_uids_prefixed_with_the_agent_id() -> None:
    """Two opens in the same millisecond still get different session uids."""
    tracker = _tracker()
    first = _open(tracker, 10, "/w/a", 5)
    second = _open(tracker, 11, "/w/a", 5)
    assert first.uid != second.uid
    assert first.uid.startswith("host-a:")
    assert second.uid.startswith("host-a:")


def test_two_opens_of_one_file_by_one_process_close_last_in_first_out() -> None:
    """The newest session of (pid, path) ends first: fanotify does not say which fd closed."""
    tracker = _tracker()
    older = _open(tracker, 10, "/w/a", 1)
    newer = _open(tracker, 10, "/w/a", 2)
    assert tracker.close(pid=10, path="/w/a") == newer
    assert tracker.close(pid=10, path="/w/a") == older
    assert tracker.close(pid=10, path="/w/a") is None


def test_a_close_only_ends_the_session_of_its_own_pid_and_path() -> None:
    """Another process's session, or another file of the same process, stays open."""
    tracker = _tracker()
    mine = _open(tracker, 10, "/w/a", 1)
    other_pid = _open(tracker, 11, "/w/a", 1)
    other_file = _open(tracker, 10, "/w/b", 1)
    assert tracker.close(pid=12, path="/w/a") is None
    assert tracker.close(pid=10, path="/w/a") == mine
    assert tracker.open_sessions() == [other_pid, other_file]
    assert tracker.for_pid(10) == [other_file]


def test_observe_keeps_the_largest_value_seen_for_each_measure() -> None:
    """A later, smaller sample (a seek back, pages evicted) never lowers what was read."""
    tracker = _tracker()
    uid = _open(tracker, 10, "/w/a", 1).uid
    tracker.observe(uid, bytes_read=40, mmap_bytes=None)
    tracker.observe(uid, bytes_read=10, mmap_bytes=30)
    tracker.observe(uid, bytes_read=None, mmap_bytes=20)
    closed = tracker.close(pid=10, path="/w/a")
    assert closed is not None
    assert (closed.bytes_read, closed.mmap_bytes) == (40, 30)


def test_observe_of_a_closed_session_is_ignored() -> None:
    """A sample that arrives after the close changes nothing and does not resurrect it."""
    tracker = _tracker()
    uid = _open(tracker, 10, "/w/a", 1).uid
    tracker.close(pid=10, path="/w/a")
    tracker.observe(uid, bytes_read=5, mmap_bytes=5)
    assert len(tracker) == 0


def test_a_session_with_no_sample_keeps_bytes_read_unknown() -> None:
    """Nothing measured means None (unknown), never a guessed zero."""
    tracker = _tracker()
    _open(tracker, 10, "/w/a", 1)
    closed = tracker.close(pid=10, path="/w/a")
    assert closed is not None
    assert closed.bytes_read is None
    assert closed.mmap_bytes is None
    assert closed.fraction_read is None


@pytest.mark.parametrize(
    ("size", "bytes_read", "mmap_bytes", "fraction"),
    [
        (100, 25, None, 0.25),
        (100, None, 50, 0.5),
        (100, 25, 60, 0.6),  # the larger of the two measures, not their sum
        (100, 0, None, 0.0),
        (100, 250, None, 1.0),  # capped: re-reads and readahead overshoot the size
        (100, None, 4096, 1.0),
        (0, 0, None, 1.0),  # an empty file opened is an empty file read whole
        (None, 25, None, None),  # size unknown: no fraction
    ],
)
def test_fraction_read(
    size: int | None, bytes_read: int | None, mmap_bytes: int | None, fraction: float | None
) -> None:
    """The share of the file read is max(read, mapped) / size, capped at 1, None if unknown."""
    tracker = _tracker()
    uid = _open(tracker, 10, "/w/a", 1, size=size).uid
    tracker.observe(uid, bytes_read=bytes_read, mmap_bytes=mmap_bytes)
    closed = tracker.close(pid=10, path="/w/a")
    assert closed is not None
    assert closed.fraction_read == fraction


def test_progress_is_due_once_per_interval() -> None:
    """A held file is due at each full interval after the open, and once only per interval."""
    tracker = _tracker()
    opened = _open(tracker, 10, "/w/a", 1_000)
    assert tracker.due_progress(1_000) == []
    assert tracker.due_progress(1_000 + INTERVAL_MS - 1) == []
    due = tracker.due_progress(1_000 + INTERVAL_MS)
    assert [s.uid for s in due] == [opened.uid]
    assert due[0].last_progress_at == 1_000 + INTERVAL_MS
    assert tracker.due_progress(1_000 + INTERVAL_MS) == []
    assert tracker.due_progress(1_000 + 2 * INTERVAL_MS - 1) == []
    assert [s.uid for s in tracker.due_progress(1_000 + 2 * INTERVAL_MS)] == [opened.uid]


def test_progress_carries_the_samples_and_the_session_stays_open() -> None:
    """A progress report is a snapshot: the session keeps its samples and can still close."""
    tracker = _tracker()
    uid = _open(tracker, 10, "/w/a", 0).uid
    tracker.observe(uid, bytes_read=30, mmap_bytes=None)
    (due,) = tracker.due_progress(INTERVAL_MS)
    assert due.bytes_read == 30
    assert len(tracker) == 1
    closed = tracker.close(pid=10, path="/w/a")
    assert closed is not None
    assert closed.last_progress_at == INTERVAL_MS


def test_only_sessions_whose_interval_elapsed_are_due() -> None:
    """Sessions opened at different times come due at different times."""
    tracker = _tracker()
    early = _open(tracker, 10, "/w/a", 0)
    _open(tracker, 11, "/w/b", INTERVAL_MS // 2)
    assert [s.uid for s in tracker.due_progress(INTERVAL_MS)] == [early.uid]


def test_a_full_tracker_evicts_the_oldest_session_and_counts_it() -> None:
    """The table is bounded: the oldest open session makes room and is counted as evicted."""
    tracker = _tracker(max_sessions=2)
    oldest = _open(tracker, 1, "/w/a", 1)
    middle = _open(tracker, 2, "/w/a", 2)
    newest = _open(tracker, 3, "/w/a", 3)
    assert tracker.evicted == 1
    assert len(tracker) == 2
    assert tracker.open_sessions() == [middle, newest]
    assert tracker.close(pid=oldest.pid, path=oldest.path) is None
    _open(tracker, 4, "/w/a", 4)
    assert tracker.evicted == 2
    assert tracker.open_sessions()[0].uid == newest.uid


def test_eviction_of_one_of_two_sessions_of_a_key_leaves_the_other_closable() -> None:
    """Evicting the older of two sessions on one (pid, path) keeps the newer one reachable."""
    tracker = _tracker(max_sessions=2)
    _open(tracker, 1, "/w/a", 1)
    newer = _open(tracker, 1, "/w/a", 2)
    _open(tracker, 2, "/w/b", 3)
    assert tracker.evicted == 1
    assert tracker.close(pid=1, path="/w/a") == newer
    assert tracker.close(pid=1, path="/w/a") is None


@pytest.mark.parametrize(("interval", "bound"), [(0, 10), (-1, 10), (1000, 0)])
def test_a_tracker_without_room_or_interval_is_refused(interval: int, bound: int) -> None:
    """No room for a session, or progress every tick, is a programming error caught early."""
    with pytest.raises(ValueError, match="SessionTracker"):
        SessionTracker(agent_id="a", progress_interval_ms=interval, max_sessions=bound)


def test_discard_ends_exactly_the_named_session() -> None:
    """A session ended by uid leaves the other session of its (pid, path) closable."""
    tracker = _tracker()
    older = _open(tracker, 10, "/w/a", 1)
    newer = _open(tracker, 10, "/w/a", 2)
    assert tracker.discard(older.uid) == older
    assert tracker.discard(older.uid) is None
    assert tracker.close(pid=10, path="/w/a") == newer
    assert len(tracker) == 0
