"""Seal on write: which checkpoint a path belongs to, when to seal, and the seal store."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.sealer import Change, SealPlanner, SealStore, checkpoint_of
from weightwarden.crypto.keys import PrivateKey, generate_key
from weightwarden.errors import UsageError
from weightwarden.events import Actor, Attribution, Process

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = "/data/ckpt"
QUIET_MS = 120_000
REVERIFY_MS = 2_000


# ------------------------------------------------------------------------- checkpoint_of


@pytest.mark.parametrize(
    ("path", "roots", "expected"),
    [
        ("/data/ckpt/step-1/model.safetensors", ["/data/ckpt"], "/data/ckpt/step-1"),
        ("/data/ckpt/step-1/model.safetensors", ["/data/ckpt/"], "/data/ckpt/step-1"),
        ("/data/ckpt/step-1/a/b/c.bin", ["/data/ckpt"], "/data/ckpt/step-1"),
        ("/data/ckpt/step-1", ["/data/ckpt"], "/data/ckpt/step-1"),
        ("/data/ckpt/final.safetensors", ["/data/ckpt"], "/data/ckpt/final.safetensors"),
        ("/data/ckpt", ["/data/ckpt"], None),
        ("/data/ckpt/", ["/data/ckpt"], None),
        ("/data/ckpt2/step-1/model.bin", ["/data/ckpt"], None),
        ("/data/ckpt2", ["/data/ckpt/"], None),
        ("/data", ["/data/ckpt"], None),
        ("/elsewhere/x", ["/data/ckpt", "/models"], None),
        ("/models/llama/w.bin", ["/data/ckpt", "/models"], "/models/llama"),
    ],
)
def test_checkpoint_of(path: str, roots: list[str], expected: str | None) -> None:
    """The checkpoint is the first-level entry of a root; a root itself or a sibling is none."""
    assert checkpoint_of(path, roots) == expected


# ------------------------------------------------------------------------- SealPlanner


def _planner(*, max_changes: int = 100) -> SealPlanner:
    return SealPlanner([ROOT], quiet_ms=QUIET_MS, reverify_ms=REVERIFY_MS, max_changes=max_changes)


def _change(path: str, time: int, pid: int = 42) -> Change:
    actor = Actor(process=Process(pid=pid, attribution=Attribution.FULL))
    return Change(path=path, time=time, actor=actor, event_uid=f"event-{pid}-{time}")


def test_a_checkpoint_is_due_for_sealing_once_quiet_for_the_interval() -> None:
    """Written at t, due at exactly t + quiet, not a millisecond before."""
    planner = _planner()
    assert planner.on_change(_change(f"{ROOT}/step-1/model.bin", 1_000)) == f"{ROOT}/step-1"
    assert planner.due_seals(1_000 + QUIET_MS - 1) == []
    assert planner.due_seals(1_000 + QUIET_MS) == [f"{ROOT}/step-1"]


def test_every_write_restarts_the_quiet_interval() -> None:
    """A checkpoint still being written is not sealed: the last change counts."""
    planner = _planner()
    planner.on_change(_change(f"{ROOT}/step-1/a.bin", 1_000))
    planner.on_change(_change(f"{ROOT}/step-1/b.bin", 60_000))
    assert planner.due_seals(1_000 + QUIET_MS) == []
    assert planner.due_seals(60_000 + QUIET_MS) == [f"{ROOT}/step-1"]


def test_a_change_reported_late_does_not_move_the_quiet_interval_back() -> None:
    """An older event processed after a newer one keeps the newer time."""
    planner = _planner()
    planner.on_change(_change(f"{ROOT}/step-1/a.bin", 50_000))
    planner.on_change(_change(f"{ROOT}/step-1/b.bin", 10_000))
    assert planner.due_seals(10_000 + QUIET_MS) == []
    assert planner.due_seals(50_000 + QUIET_MS) == [f"{ROOT}/step-1"]


def test_changes_outside_the_roots_are_not_ours() -> None:
    """A path outside every root, or a root itself, plans nothing."""
    planner = _planner()
    assert planner.on_change(_change("/data/ckpt2/step-1/a.bin", 0)) is None
    assert planner.on_change(_change(ROOT, 0)) is None
    assert planner.due_seals(10 * QUIET_MS) == []


def test_postpone_waits_another_quiet_interval() -> None:
    """Not quiet after all (a recent mtime): the checkpoint is due again a full interval later."""
    planner = _planner()
    planner.on_change(_change(f"{ROOT}/step-1/a.bin", 0))
    assert planner.due_seals(QUIET_MS) == [f"{ROOT}/step-1"]
    planner.postpone(f"{ROOT}/step-1", QUIET_MS)
    assert planner.due_seals(2 * QUIET_MS - 1) == []
    assert planner.due_seals(2 * QUIET_MS) == [f"{ROOT}/step-1"]


def test_postpone_of_a_checkpoint_not_waiting_does_nothing() -> None:
    """Postponing a sealed or unknown checkpoint does not make it a candidate."""
    planner = _planner()
    planner.mark_sealed(f"{ROOT}/step-1")
    planner.postpone(f"{ROOT}/step-1", 0)
    planner.postpone(f"{ROOT}/step-2", 0)
    assert planner.due_seals(10 * QUIET_MS) == []


def test_an_unsealed_checkpoint_found_at_start_up_is_due_at_once() -> None:
    """A candidate has been quiet since before the agent started."""
    planner = _planner()
    planner.candidate(f"{ROOT}/step-1", 5_000)
    assert planner.due_seals(5_000) == [f"{ROOT}/step-1"]


def test_a_sealed_checkpoint_is_never_a_candidate() -> None:
    """Start-up does not re-seal what already has a seal."""
    planner = _planner()
    planner.mark_sealed(f"{ROOT}/step-1")
    planner.candidate(f"{ROOT}/step-1", 5_000)
    assert planner.is_sealed(f"{ROOT}/step-1")
    assert planner.due_seals(5_000 + QUIET_MS) == []


def test_sealing_clears_the_pending_seal() -> None:
    """Once sealed, a checkpoint is no longer due for sealing."""
    planner = _planner()
    planner.on_change(_change(f"{ROOT}/step-1/a.bin", 0))
    planner.mark_sealed(f"{ROOT}/step-1")
    assert planner.due_seals(QUIET_MS) == []
    assert planner.due_verifications(QUIET_MS) == []


def test_changes_to_a_sealed_checkpoint_become_one_verification_with_every_change() -> None:
    """A burst of writes is verified once, after the delay, and names each change."""
    planner = _planner()
    checkpoint = f"{ROOT}/step-1"
    planner.mark_sealed(checkpoint)
    first = _change(f"{checkpoint}/config.json", 10_000, pid=7)
    second = _change(f"{checkpoint}/model.bin", 10_500, pid=8)
    assert planner.on_change(first) == checkpoint
    assert planner.on_change(second) == checkpoint
    assert planner.due_seals(10 * QUIET_MS) == []
    assert planner.due_verifications(10_500 + REVERIFY_MS - 1) == []
    assert planner.due_verifications(10_500 + REVERIFY_MS) == [(checkpoint, [first, second])]
    assert planner.due_verifications(10_500 + 10 * REVERIFY_MS) == []
    assert planner.is_sealed(checkpoint)


def test_a_later_change_after_a_verification_schedules_another() -> None:
    """Each quiet burst after a verification is verified again."""
    planner = _planner()
    checkpoint = f"{ROOT}/step-1"
    planner.mark_sealed(checkpoint)
    planner.on_change(_change(f"{checkpoint}/a", 0))
    assert len(planner.due_verifications(REVERIFY_MS)) == 1
    late = _change(f"{checkpoint}/b", 50_000)
    planner.on_change(late)
    assert planner.due_verifications(50_000 + REVERIFY_MS) == [(checkpoint, [late])]


def test_the_changes_kept_for_a_verification_are_capped() -> None:
    """A flood of writes keeps at most max_changes of them, but still verifies."""
    planner = _planner(max_changes=3)
    checkpoint = f"{ROOT}/step-1"
    planner.mark_sealed(checkpoint)
    changes = [_change(f"{checkpoint}/f{i}", 1_000 + i) for i in range(10)]
    for change in changes:
        planner.on_change(change)
    assert planner.due_verifications(1_000 + 9 + REVERIFY_MS - 1) == []
    ((due, kept),) = planner.due_verifications(1_000 + 9 + REVERIFY_MS)
    assert due == checkpoint
    assert len(kept) == 3
    assert all(c in changes for c in kept)


def test_a_change_while_a_seal_is_being_made_is_verified_after_sealing() -> None:
    """A write that lands after hashing began may be missing from the seal: it is re-verified."""
    planner = _planner()
    checkpoint = f"{ROOT}/step-1"
    before = _change(f"{checkpoint}/model.bin", 0)
    planner.on_change(before)
    hashing_began = QUIET_MS
    assert planner.due_seals(hashing_began) == [checkpoint]
    planner.postpone(checkpoint, hashing_began)  # what the daemon does while the seal runs
    during = _change(f"{checkpoint}/model.bin", hashing_began + 300, pid=66)
    planner.on_change(during)
    planner.mark_sealed(checkpoint, since=hashing_began)
    assert planner.due_seals(hashing_began + 10 * QUIET_MS) == []
    assert planner.due_verifications(hashing_began + 300 + REVERIFY_MS) == [(checkpoint, [during])]


def test_a_change_during_sealing_past_the_cap_still_triggers_a_verification() -> None:
    """Even when the change list is full, a write after hashing began is re-verified."""
    planner = _planner(max_changes=2)
    checkpoint = f"{ROOT}/step-1"
    planner.on_change(_change(f"{checkpoint}/a", 0))
    planner.on_change(_change(f"{checkpoint}/b", 1))
    planner.on_change(_change(f"{checkpoint}/c", QUIET_MS + 5))
    planner.mark_sealed(checkpoint, since=QUIET_MS)
    assert planner.due_verifications(QUIET_MS + 5 + REVERIFY_MS) == [(checkpoint, [])]


def test_changes_before_hashing_began_are_not_re_verified() -> None:
    """The writes that made the checkpoint are in the seal: no verification for them."""
    planner = _planner()
    planner.on_change(_change(f"{ROOT}/step-1/model.bin", 0))
    planner.postpone(f"{ROOT}/step-1", QUIET_MS)
    planner.mark_sealed(f"{ROOT}/step-1", since=QUIET_MS + 1)
    assert planner.due_verifications(10 * QUIET_MS) == []


def test_marking_sealed_without_a_start_time_forgets_the_changes_that_led_to_it() -> None:
    """Without ``since`` (a seal found at start-up), pending writes are not re-verified."""
    planner = _planner()
    planner.on_change(_change(f"{ROOT}/step-1/model.bin", 0))
    planner.mark_sealed(f"{ROOT}/step-1")
    assert planner.due_verifications(10 * QUIET_MS) == []


def test_forget_retires_a_checkpoint_and_its_pending_work() -> None:
    """A removed checkpoint is neither sealed nor waiting for anything."""
    planner = _planner()
    planner.mark_sealed(f"{ROOT}/a")
    planner.on_change(_change(f"{ROOT}/a/x", 0))
    planner.on_change(_change(f"{ROOT}/b/x", 0))
    planner.forget(f"{ROOT}/a")
    planner.forget(f"{ROOT}/b")
    assert not planner.is_sealed(f"{ROOT}/a")
    assert planner.due_seals(10 * QUIET_MS) == []
    assert planner.due_verifications(10 * QUIET_MS) == []


# ------------------------------------------------------------------------- SealStore


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    """A real ECDSA P-256 sealing key."""
    return generate_key()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """The agent's state folder (created by the store)."""
    return tmp_path / "state"


@pytest.fixture
def store(state: Path, key: PrivateKey) -> Iterator[SealStore]:
    """A seal store in a fresh state folder."""
    opened = SealStore(state, key)
    yield opened
    opened.close()


@pytest.fixture
def checkpoint(make_model: Callable[..., Path]) -> Path:
    """A real checkpoint folder (safetensors shards, config, tokenizer) in a weight root."""
    return make_model(name="weights/step-1000")


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_seal_writes_the_bundle_in_the_state_folder_and_records_it(
    store: SealStore, state: Path, checkpoint: Path
) -> None:
    """Sealing leaves the weight root untouched: the bundle and index live in the state folder."""
    root = checkpoint.parent
    before = _listing(root)
    result = store.seal(str(checkpoint), 1_234)
    assert _listing(root) == before
    assert result.signature_path.is_relative_to(state / "seals")
    assert result.signature_path.is_file()
    assert (state / "seals" / "index.json").is_file()
    record = store.records[str(checkpoint)]
    assert record.signature == str(result.signature_path)
    assert record.root_digest == result.manifest.root_digest.hex()
    assert record.sealed_at == 1_234
    assert record.files == 5


def test_a_single_file_checkpoint_is_sealed(
    store: SealStore, make_model: Callable[..., Path]
) -> None:
    """A first-level file of a root is a checkpoint of its own, sealed and verified alone."""
    root = make_model({"final.safetensors": b"weights" * 1000}, name="weights")
    checkpoint = str(root / "final.safetensors")
    store.seal(checkpoint, 1)
    assert store.records[checkpoint].files == 1
    result = store.verify(checkpoint)
    assert result is not None
    assert result.intact


def test_a_checkpoint_whose_name_is_not_utf8_has_its_own_bundle_path(store: SealStore) -> None:
    """Undecodable bytes in a checkpoint's name do not stop the store from naming its bundle."""
    odd = os.fsdecode(b"/data/ckpt/ck\xff")
    other = os.fsdecode(b"/data/ckpt/ck\xfe")
    assert store.signature_path(odd) != store.signature_path(other)
    assert store.signature_path(odd).parent == store.signature_path("/data/ckpt/a").parent


def test_a_checkpoint_whose_name_is_not_utf8_is_sealed_and_verified(
    store: SealStore, state: Path, key: PrivateKey, tmp_path: Path
) -> None:
    """A folder named with undecodable bytes is sealed like any other, and found on reopen."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/weights/ck\xff"))
    folder.mkdir(parents=True)
    (folder / "w\udcfe.bin").write_bytes(b"weights")
    checkpoint = str(folder)
    store.seal(checkpoint, 1)
    store.close()
    reopened = SealStore(state, key)
    try:
        assert checkpoint in reopened.records
        result = reopened.verify(checkpoint)
        assert result is not None
        assert result.intact
        (folder / "w\udcfe.bin").write_bytes(b"changed")
        changed = reopened.verify(checkpoint)
        assert changed is not None
        assert changed.diff.modified == ("w\udcfe.bin",)
    finally:
        reopened.close()


def test_a_file_renamed_to_a_non_utf8_name_in_a_sealed_checkpoint_is_a_change(
    store: SealStore, checkpoint: Path
) -> None:
    """Renaming a sealed file to undecodable bytes cannot hide it from verification."""
    store.seal(str(checkpoint), 1)
    renamed = Path(os.fsdecode(os.fsencode(checkpoint) + b"/config\xff.json"))
    (checkpoint / "config.json").rename(renamed)
    result = store.verify(str(checkpoint))
    assert result is not None
    assert not result.intact
    assert result.diff.removed == ("config.json",)
    assert result.diff.added == (renamed.name,)


def test_checkpoints_with_the_same_name_in_two_roots_get_separate_bundles(
    store: SealStore, make_model: Callable[..., Path]
) -> None:
    """``/a/step-1`` and ``/b/step-1`` never overwrite each other's bundle."""
    one = make_model({"w": b"1"}, name="a/step-1")
    two = make_model({"w": b"2"}, name="b/step-1")
    store.seal(str(one), 1)
    store.seal(str(two), 2)
    assert store.signature_path(str(one)) != store.signature_path(str(two))
    for folder in (one, two):
        result = store.verify(str(folder))
        assert result is not None
        assert result.intact


def test_the_index_survives_a_reopen(
    store: SealStore, state: Path, key: PrivateKey, checkpoint: Path
) -> None:
    """A restarted agent knows what it sealed and can still verify it."""
    store.seal(str(checkpoint), 99)
    records = dict(store.records)
    store.close()
    reopened = SealStore(state, key)
    try:
        assert reopened.records == records
        result = reopened.verify(str(checkpoint))
        assert result is not None
        assert result.intact
    finally:
        reopened.close()


def test_verify_reports_exactly_what_changed(store: SealStore, checkpoint: Path) -> None:
    """A modified, an added and a removed file are each named in the verification."""
    store.seal(str(checkpoint), 1)
    intact = store.verify(str(checkpoint))
    assert intact is not None
    assert intact.intact
    with (checkpoint / "config.json").open("a") as out:
        out.write(" ")
    (checkpoint / "extra.bin").write_bytes(b"planted")
    (checkpoint / "tokenizer" / "special_tokens_map.json").unlink()
    result = store.verify(str(checkpoint))
    assert result is not None
    assert result.signature_valid
    assert not result.intact
    assert result.diff.modified == ("config.json",)
    assert result.diff.added == ("extra.bin",)
    assert result.diff.removed == ("tokenizer/special_tokens_map.json",)


def test_verify_of_a_removed_checkpoint_is_none(store: SealStore, checkpoint: Path) -> None:
    """A checkpoint that no longer exists at all has nothing to verify."""
    store.seal(str(checkpoint), 1)
    for path in sorted(checkpoint.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    checkpoint.rmdir()
    assert store.verify(str(checkpoint)) is None


def test_manifest_returns_the_sealed_manifest(store: SealStore, checkpoint: Path) -> None:
    """The stored seal's manifest comes back once its signature verifies."""
    result = store.seal(str(checkpoint), 1)
    assert store.manifest(str(checkpoint)) == result.manifest


def test_manifest_is_none_when_the_bundle_was_tampered_with(
    store: SealStore, checkpoint: Path
) -> None:
    """A bundle whose signed statement was edited is not trusted: no manifest."""
    store.seal(str(checkpoint), 1)
    bundle_path = store.signature_path(str(checkpoint))
    bundle = json.loads(bundle_path.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    bundle_path.write_text(json.dumps(bundle))
    assert store.manifest(str(checkpoint)) is None
    result = store.verify(str(checkpoint))
    assert result is not None
    assert not result.signature_valid
    assert not result.intact


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b"null",
        b'{"/data/ckpt/a": 3}',
        b'{"/data/ckpt/a": {"checkpoint": "/data/ckpt/a", "bogus": 1}}',
        b"\xff\xfe",
        (
            b'{"a": {"checkpoint": "a", "signature": 1, "root_digest": "", "sealed_at": 1, '
            b'"files": 1}}'
        ),
        (
            b'{"a": {"checkpoint": "a", "signature": "s", "root_digest": "", "sealed_at": true, '
            b'"files": 1}}'
        ),
    ],
)
def test_a_corrupt_index_is_a_clear_usage_error(
    state: Path, key: PrivateKey, content: bytes
) -> None:
    """An unreadable index stops the store with a message naming the file and what to do."""
    (state / "seals").mkdir(parents=True)
    index = state / "seals" / "index.json"
    index.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        SealStore(state, key)
    assert str(index) in str(caught.value)
    assert "move it away" in str(caught.value)
