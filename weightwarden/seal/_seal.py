"""Seal a model (hash, build the manifest, sign, write the bundle) and verify it later.

A seal made with an ECDSA key and default options is an OpenSSF Model Signing v1.0 bundle
that ``model_signing verify key`` accepts; bundles made by model_signing verify here.
Verification re-hashes the model with the serialization recorded in the signed payload
and reports every modified, added and removed file: a mismatch is a result, not an error.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from weightwarden.errors import BundleFormatError, UsageError
from weightwarden.seal._bundle import make_bundle, open_bundle, read_bundle_file
from weightwarden.seal._hashing import HashAlgorithm, hash_units, plan_units
from weightwarden.seal._manifest import (
    ContentDiff,
    Manifest,
    Resource,
    Serialization,
    diff_manifests,
)
from weightwarden.seal._walk import DEFAULT_IGNORES, list_model_files, model_name_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from weightwarden.crypto.keys import PrivateKey, PublicKey
    from weightwarden.seal._cache import DigestCache

__all__ = [
    "Progress",
    "SealOptions",
    "SealResult",
    "VerificationResult",
    "build_manifest",
    "default_signature_path",
    "load_manifest",
    "seal",
    "verify",
]


class Progress(Protocol):
    """Receives how much hashing there is to do, then how much got done (from any thread)."""

    def begin(self, total_bytes: int) -> None:
        """Hashing of ``total_bytes`` starts."""

    def advance(self, n_bytes: int) -> None:
        """``n_bytes`` more were hashed (or found in the cache)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SealOptions:
    """Every choice that changes the digests of a seal."""

    hash: HashAlgorithm = "sha256"
    shard_size: int | None = None
    ignore_paths: tuple[str, ...] = ()
    ignore_git_paths: bool = True
    allow_symlinks: bool = False

    def __post_init__(self) -> None:
        """Reject combinations that cannot be honoured."""
        if self.shard_size is not None and self.shard_size <= 0:
            raise UsageError(
                f"--shard-size must be a positive number of bytes, got {self.shard_size}"
            )
        if self.shard_size is not None and self.hash == "blake3":
            raise UsageError(
                "--shard-size applies to sha256 only: blake3 already hashes one file on all cores"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SealResult:
    """What a seal wrote and what it cost."""

    model_path: Path
    signature_path: Path
    manifest: Manifest
    bytes_hashed: int
    seconds: float
    cache_hits: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationResult:
    """Whether a model still matches its seal, and if not, exactly what differs."""

    model_path: Path
    signature_path: Path
    signature_valid: bool
    reason: str
    diff: ContentDiff
    files_checked: int
    bytes_hashed: int
    seconds: float

    @property
    def intact(self) -> bool:
        """True only when the signature verifies and no file differs."""
        return self.signature_valid and self.diff.intact

    def to_json(self) -> dict[str, object]:
        """A machine-readable summary (``verify --json``)."""
        return {
            "model": str(self.model_path),
            "signature": str(self.signature_path),
            "intact": self.intact,
            "signature_valid": self.signature_valid,
            "reason": self.reason,
            "modified": list(self.diff.modified),
            "added": list(self.diff.added),
            "removed": list(self.diff.removed),
            "files_checked": self.files_checked,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
        }


def default_signature_path(model_path: Path) -> Path:
    """Beside the model: ``ckpt/`` seals to ``ckpt.sig``, ``w.bin`` to ``w.bin.sig``."""
    resolved = model_path.resolve()
    return resolved.with_name(resolved.name + ".sig")


def _relative_inside(model_root: Path, path: Path) -> PurePosixPath | None:
    resolved = path.resolve()
    if model_root.is_dir() and resolved.is_relative_to(model_root):
        return PurePosixPath(resolved.relative_to(model_root).as_posix())
    return None


def _normalise_ignores(model_root: Path, paths: Iterable[str]) -> list[str]:
    out = []
    for p in paths:
        candidate = Path(p)
        if candidate.is_absolute():
            rel = _relative_inside(model_root, candidate)
            if rel is None:
                raise UsageError(f"--ignore-paths {p} is outside the model folder {model_root}")
            out.append(str(rel))
        else:
            pure = PurePosixPath(p)
            if ".." in pure.parts:
                raise UsageError(f"--ignore-paths {p} climbs out of the model folder")
            out.append(str(pure))
    return out


def build_manifest(
    model_path: Path,
    serialization: Serialization,
    *,
    extra_ignores: Iterable[PurePosixPath] = (),
    cache: DigestCache | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[Manifest, int]:
    """Hash the model as ``serialization`` says; return the manifest and bytes read.

    Raises:
        SealInputError: a refused symlink, a path escaping the folder, a special or
            unreadable file, or a file that changed while being hashed.
    """
    ignores = frozenset(PurePosixPath(p) for p in serialization.ignore_paths) | frozenset(
        extra_ignores
    )
    files = list_model_files(
        model_path, ignore_paths=ignores, allow_symlinks=serialization.allow_symlinks
    )
    units = plan_units([(f.name, f.path, f.size) for f in files], serialization.shard_size)
    if cache is not None:
        cache.preload(f.path for f in files)
    total = sum(u.end - u.start for u in units)
    if progress is not None:
        progress.begin(total)
    digests = hash_units(
        units,
        algorithm=serialization.hash_type,
        cache_key=serialization.algorithm,
        cache=cache,
        workers=workers,
        progress=progress.advance if progress is not None else None,
    )
    if cache is not None:
        cache.flush()
    resources = tuple(
        Resource(
            name=f"{u.name}:{u.start}:{u.end}" if serialization.method == "shards" else str(u.name),
            algorithm=serialization.algorithm,
            digest=d,
            file=u.name,
            start=u.start,
        )
        for u, d in zip(units, digests, strict=True)
    )
    manifest = Manifest(
        model_name=model_name_of(model_path), serialization=serialization, resources=resources
    )
    return manifest, total


def seal(
    model_path: Path,
    key: PrivateKey,
    *,
    signature_path: Path | None = None,
    options: SealOptions | None = None,
    cache: DigestCache | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> SealResult:
    """Hash ``model_path``, sign its manifest with ``key`` and write the bundle atomically."""
    opts = options or SealOptions()
    started = time.perf_counter()
    sig_path = (signature_path or default_signature_path(model_path)).absolute()
    root = model_path.resolve()
    ignores = _normalise_ignores(root, opts.ignore_paths)
    if opts.ignore_git_paths:
        ignores += DEFAULT_IGNORES
    sig_inside = _relative_inside(root, sig_path)
    if sig_inside is not None:
        ignores.append(str(sig_inside))
    serialization = Serialization(
        method="shards" if opts.shard_size is not None else "files",
        hash_type=opts.hash,
        allow_symlinks=opts.allow_symlinks,
        ignore_paths=tuple(sorted(set(ignores))),
        shard_size=opts.shard_size,
    )
    hits_before = cache.hits if cache is not None else 0
    manifest, hashed = build_manifest(
        model_path, serialization, cache=cache, workers=workers, progress=progress
    )
    payload = json.dumps(manifest.to_statement(), indent=2).encode()
    _write_atomically(sig_path, make_bundle(payload, key))
    return SealResult(
        model_path=root,
        signature_path=sig_path,
        manifest=manifest,
        bytes_hashed=hashed,
        seconds=time.perf_counter() - started,
        cache_hits=(cache.hits - hits_before) if cache is not None else 0,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write the bundle through a temporary file and rename, so no reader sees half of it."""
    if not path.parent.is_dir():
        raise UsageError(f"cannot write signature {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise UsageError(f"--signature {path} is a folder: name a file")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write signature in {path.parent}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write signature {path}: {exc.strerror}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_manifest(signature_path: Path, public_key: PublicKey) -> Manifest | None:
    """The manifest a bundle signs, if its signature verifies with ``public_key``; else None.

    Raises:
        BundleFormatError: the bundle is missing, malformed or has unknown fields.
        KeyFileError: the bundle names a different key.
    """
    check = open_bundle(read_bundle_file(signature_path), public_key)
    if not check.valid or check.payload is None:
        return None
    try:
        statement = json.loads(check.payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleFormatError(f"signed payload is not JSON: {exc}") from None
    return Manifest.from_statement(statement)


def verify(
    model_path: Path,
    public_key: PublicKey,
    *,
    signature_path: Path | None = None,
    cache: DigestCache | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> VerificationResult:
    """Check the bundle's signature, then re-hash the model and diff it against the seal.

    Raises:
        BundleFormatError: the bundle is missing, malformed or has unknown fields.
        KeyFileError: the bundle names a different key than ``public_key``.
        SealInputError: the model cannot be read as the seal's serialization requires.
    """
    started = time.perf_counter()
    sig_path = (signature_path or default_signature_path(model_path)).absolute()
    root = model_path.resolve() if model_path.exists() else model_path.absolute()
    expected = load_manifest(sig_path, public_key)
    if expected is None:
        return VerificationResult(
            model_path=root,
            signature_path=sig_path,
            signature_valid=False,
            reason="signature does not verify: the bundle was altered or not made with this key",
            diff=ContentDiff(),
            files_checked=0,
            bytes_hashed=0,
            seconds=time.perf_counter() - started,
        )
    sig_inside = _relative_inside(root, sig_path) if model_path.exists() else None
    actual, hashed = build_manifest(
        model_path,
        expected.serialization,
        extra_ignores=[sig_inside] if sig_inside is not None else [],
        cache=cache,
        workers=workers,
        progress=progress,
    )
    diff = diff_manifests(expected, actual, single_file_name=root.name)
    return VerificationResult(
        model_path=root,
        signature_path=sig_path,
        signature_valid=True,
        reason="" if diff.intact else "model content differs from its seal",
        diff=diff,
        files_checked=len({r.file for r in actual.resources}),
        bytes_hashed=hashed,
        seconds=time.perf_counter() - started,
    )
