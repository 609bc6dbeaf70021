"""Seal checkpoints once they finish writing; re-verify sealed ones when anything changes.

A *checkpoint* is a first-level entry (folder or file) of a weight root: with root
``/data/ckpt``, ``/data/ckpt/step-1000/`` and ``/data/ckpt/final.safetensors`` are two
checkpoints. A checkpoint is *quiet* when no write, create, delete or rename inside it has
been seen for the quiet interval and no file in it has an mtime that recent (a long write
that has not closed yet still moves mtime). A quiet, unsealed checkpoint is sealed with
the agent's key; the bundle is kept in the agent's state folder, never inside the weight
root, so sealing does not itself look like a change.

A change inside a sealed checkpoint schedules a re-verification after a short delay (so a
burst of writes is verified once); the verification names every modified, added and removed
file, and the event that triggered it names the process. A checkpoint found tampered stays
sealed with its original bundle: the seal records what was approved, and only an operator
re-seals.

:class:`SealPlanner` is pure (paths and times in, actions out); :class:`SealStore` owns the
state folder and calls :mod:`weightwarden.seal`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from weightwarden.errors import UsageError
from weightwarden.seal import DigestCache, load_manifest, seal, verify

if TYPE_CHECKING:
    from collections.abc import Sequence

    from weightwarden.crypto.keys import PrivateKey, PublicKey
    from weightwarden.events import Actor
    from weightwarden.seal import Manifest, SealResult, VerificationResult

__all__ = ["Change", "SealPlanner", "SealRecord", "SealStore", "checkpoint_of"]


def checkpoint_of(path: str, roots: Sequence[str]) -> str | None:
    """The checkpoint (first-level entry of a weight root) containing ``path``, if any."""
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            first = path[len(prefix) :].split("/", 1)[0]
            return prefix + first if first else None
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A write-like event inside a checkpoint, kept to name who changed a sealed one."""

    path: str
    time: int
    actor: Actor | None
    event_uid: str


@dataclass(slots=True)
class _Pending:
    last_change: int
    changes: list[Change] = field(default_factory=list)


class SealPlanner:
    """Decides when to seal and when to re-verify; all times in milliseconds."""

    def __init__(
        self, roots: Sequence[str], *, quiet_ms: int, reverify_ms: int, max_changes: int = 100
    ) -> None:
        self._roots = list(roots)
        self._quiet = quiet_ms
        self._reverify = reverify_ms
        self._max_changes = max_changes
        self._sealed: set[str] = set()
        self._dirty: dict[str, _Pending] = {}
        self._suspect: dict[str, _Pending] = {}

    @property
    def quiet_ms(self) -> int:
        """The quiet interval."""
        return self._quiet

    def mark_sealed(self, checkpoint: str, *, since: int | None = None) -> None:
        """The checkpoint has a seal now (or had one when the agent started).

        Args:
            checkpoint: The sealed checkpoint.
            since: When hashing for this seal began. A change seen from then on may be
                missing from the seal, so it is kept and re-verified like a change to a
                sealed checkpoint. None (a seal found at start-up) drops pending changes.
        """
        self._sealed.add(checkpoint)
        pending = self._dirty.pop(checkpoint, None)
        if since is None or pending is None:
            return
        late = [c for c in pending.changes if c.time >= since]
        capped = len(pending.changes) >= self._max_changes and pending.last_change >= since
        if not late and not capped:
            return
        target = self._suspect.setdefault(checkpoint, _Pending(last_change=pending.last_change))
        target.last_change = max(target.last_change, pending.last_change)
        target.changes.extend(late[: self._max_changes - len(target.changes)])

    def forget(self, checkpoint: str) -> None:
        """The checkpoint is gone and its seal retired."""
        self._sealed.discard(checkpoint)
        self._dirty.pop(checkpoint, None)
        self._suspect.pop(checkpoint, None)

    def is_sealed(self, checkpoint: str) -> bool:
        """Whether the checkpoint carries a seal."""
        return checkpoint in self._sealed

    def candidate(self, checkpoint: str, now: int) -> None:
        """An unsealed checkpoint found at start-up: seal it once quiet."""
        if checkpoint not in self._sealed:
            self._dirty.setdefault(checkpoint, _Pending(last_change=now - self._quiet))

    def on_change(self, change: Change) -> str | None:
        """Record a write-like event; return its checkpoint if it is one of ours."""
        checkpoint = checkpoint_of(change.path, self._roots)
        if checkpoint is None:
            return None
        table = self._suspect if checkpoint in self._sealed else self._dirty
        pending = table.setdefault(checkpoint, _Pending(last_change=change.time))
        pending.last_change = max(pending.last_change, change.time)
        if len(pending.changes) < self._max_changes:
            pending.changes.append(change)
        return checkpoint

    def due_seals(self, now: int) -> list[str]:
        """Unsealed checkpoints whose last change is older than the quiet interval."""
        return [c for c, p in self._dirty.items() if now - p.last_change >= self._quiet]

    def postpone(self, checkpoint: str, now: int) -> None:
        """Not quiet after all (a recent mtime, a file changing while hashed): wait again."""
        if checkpoint in self._dirty:
            self._dirty[checkpoint].last_change = now

    def due_verifications(self, now: int) -> list[tuple[str, list[Change]]]:
        """Sealed checkpoints changed at least ``reverify`` ago; cleared once returned."""
        due = [c for c, p in self._suspect.items() if now - p.last_change >= self._reverify]
        return [(c, self._suspect.pop(c).changes) for c in due]


@dataclass(frozen=True, slots=True, kw_only=True)
class SealRecord:
    """A seal the agent made: the checkpoint, its bundle, and its root digest."""

    checkpoint: str
    signature: str
    root_digest: str
    sealed_at: int
    files: int


_RECORD_TYPES = {
    "checkpoint": str,
    "signature": str,
    "root_digest": str,
    "sealed_at": int,
    "files": int,
}


def _parse_index(raw: object) -> dict[str, SealRecord]:
    """The records of a parsed index.

    Raises:
        TypeError: not an object of records, or a record with missing, unknown or
            wrongly typed fields (an edited or damaged index).
    """
    if not isinstance(raw, dict):
        msg = f"expected a JSON object, got {type(raw).__name__}"
        raise TypeError(msg)
    records = {k: SealRecord(**v) for k, v in raw.items()}
    for record in records.values():
        for name, kind in _RECORD_TYPES.items():
            value = getattr(record, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                msg = f"{record.checkpoint!r}: {name} must be {kind.__name__}, got {value!r}"
                raise TypeError(msg)
    return records


class SealStore:
    """Bundles and their index in ``state_dir/seals``, written atomically.

    A checkpoint holding a name that is not UTF-8 is sealed and verified without the digest
    cache (which cannot store such names), so it is fully re-hashed each time: never left
    unsealed, and a file renamed to such a name still shows up as a change.
    """

    def __init__(self, state_dir: Path, key: PrivateKey) -> None:
        self._dir = state_dir / "seals"
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._index_path = self._dir / "index.json"
        self._key = key
        self._public: PublicKey = key.public
        self._cache = DigestCache(state_dir / "digests.sqlite")
        self.records: dict[str, SealRecord] = self._load()

    def _load(self) -> dict[str, SealRecord]:
        if not self._index_path.exists():
            return {}
        try:
            records = _parse_index(json.loads(self._index_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            msg = f"seal index {self._index_path} is unreadable ({exc}); move it away to re-seal"
            raise UsageError(msg) from exc
        return records

    def _save(self) -> None:
        data = json.dumps(
            {k: {f: getattr(r, f) for f in r.__slots__} for k, r in self.records.items()},
            indent=1,
            sort_keys=True,
        )
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".index.", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(self._index_path)

    def signature_path(self, checkpoint: str) -> Path:
        """Where the bundle for ``checkpoint`` lives."""
        digest = hashlib.sha256(os.fsencode(checkpoint)).hexdigest()[:24]
        return self._dir / f"{Path(checkpoint).name}.{digest}.sig"

    def seal(self, checkpoint: str, now: int) -> SealResult:
        """Seal ``checkpoint`` and record it.

        Raises:
            SealInputError: a file changed while hashed, or the checkpoint cannot be read.
        """
        signature_path = self.signature_path(checkpoint)
        try:
            result = seal(
                Path(checkpoint), self._key, signature_path=signature_path, cache=self._cache
            )
        except UnicodeEncodeError:  # the digest cache cannot store a non-UTF-8 name
            result = seal(Path(checkpoint), self._key, signature_path=signature_path)
        self.records[checkpoint] = SealRecord(
            checkpoint=checkpoint,
            signature=str(result.signature_path),
            root_digest=result.manifest.root_digest.hex(),
            sealed_at=now,
            files=len({r.file for r in result.manifest.resources}),
        )
        self._save()
        return result

    def verify(self, checkpoint: str) -> VerificationResult | None:
        """Re-verify a sealed checkpoint; None if it no longer exists at all."""
        record = self.records[checkpoint]
        if not Path(checkpoint).exists():
            return None
        signature_path = Path(record.signature)
        try:
            return verify(
                Path(checkpoint), self._public, signature_path=signature_path, cache=self._cache
            )
        except UnicodeEncodeError:  # same; a rename to such a name must still be seen
            return verify(Path(checkpoint), self._public, signature_path=signature_path)

    def manifest(self, checkpoint: str) -> Manifest | None:
        """The manifest of a stored seal, if its bundle still verifies with the agent's key."""
        return load_manifest(Path(self.records[checkpoint].signature), self._public)

    def close(self) -> None:
        """Release the digest cache."""
        self._cache.close()
