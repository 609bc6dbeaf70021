"""The manifest: every resource of a model with its digest, and how the digests were made.

This is the OpenSSF Model Signing v1.0 payload: an in-toto Statement v1 with predicate type
``https://model_signing/signature/v1.0``, one subject named after the model whose SHA-256
is taken over the concatenated raw resource digests in listed order, and a predicate with
``serialization`` (every parameter that changes a digest) and ``resources``.

Parsing is strict: an unknown key, a wrong type, an unsorted or duplicated resource, or a
subject digest that does not match the resources is a :class:`BundleFormatError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from weightwarden.errors import BundleFormatError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from weightwarden.seal._hashing import HashAlgorithm

__all__ = [
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "ContentDiff",
    "Manifest",
    "Resource",
    "Serialization",
    "diff_manifests",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_HASH_TYPES: tuple[HashAlgorithm, ...] = ("sha256", "blake3")
_DIGEST_BYTES = 32


def _require(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:  # noqa: ANN401 -- JSON
    if key not in obj:
        raise BundleFormatError(f"signature payload: {where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleFormatError(
            f"signature payload: {where}.{key} must be a {kind.__name__}, "
            f"got {type(value).__name__}"
        )
    return value


def _integer(value: object, where: str) -> int:
    """An integer, also when written as an integral float.

    model_signing builds its payload through a protobuf ``Struct``, whose numbers are all
    doubles, so its sharded bundles carry ``"shard_size": 1000000000.0``.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BundleFormatError(
        f"signature payload: {where} must be an integer, got {type(value).__name__}"
    )


def _only_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise BundleFormatError(
            f"signature payload: unknown field(s) in {where}: {sorted(unknown)}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Serialization:
    """How the resources were cut and hashed; recorded beside the digests they produced."""

    method: Literal["files", "shards"]
    hash_type: HashAlgorithm
    allow_symlinks: bool
    ignore_paths: tuple[str, ...]
    shard_size: int | None = None

    @property
    def algorithm(self) -> str:
        """The per-resource algorithm name model_signing records."""
        if self.method == "shards":
            return f"{self.hash_type}-sharded-{self.shard_size}"
        return self.hash_type

    def to_json(self) -> dict[str, Any]:
        """The ``predicate.serialization`` object."""
        out: dict[str, Any] = {"method": self.method, "hash_type": self.hash_type}
        if self.method == "shards":
            out["shard_size"] = self.shard_size
        out["allow_symlinks"] = self.allow_symlinks
        if self.ignore_paths:
            out["ignore_paths"] = list(self.ignore_paths)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Serialization:
        """Parse ``predicate.serialization`` strictly."""
        where = "predicate.serialization"
        method = _require(obj, "method", str, where)
        if method not in ("files", "shards"):
            raise BundleFormatError(
                f"signature payload: unsupported serialization method {method!r}"
            )
        allowed = {"method", "hash_type", "allow_symlinks", "ignore_paths"}
        if method == "shards":
            allowed.add("shard_size")
        _only_keys(obj, allowed, where)
        hash_type = _require(obj, "hash_type", str, where)
        if hash_type not in _HASH_TYPES:
            raise BundleFormatError(
                f"signature payload: unsupported hash_type {hash_type!r} "
                "(expected sha256 or blake3)"
            )
        allow_symlinks = _require(obj, "allow_symlinks", bool, where)
        ignore_paths = obj.get("ignore_paths", [])
        if not isinstance(ignore_paths, list) or not all(isinstance(p, str) for p in ignore_paths):
            raise BundleFormatError(
                f"signature payload: {where}.ignore_paths must be a list of strings"
            )
        shard_size = None
        if method == "shards":
            shard_size = _integer(_require(obj, "shard_size", object, where), f"{where}.shard_size")
            if shard_size <= 0:
                raise BundleFormatError(
                    f"signature payload: shard_size must be positive, got {shard_size}"
                )
        return cls(
            method=method,
            hash_type=hash_type,
            allow_symlinks=allow_symlinks,
            ignore_paths=tuple(ignore_paths),
            shard_size=shard_size,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """One file, or one shard ``path:start:end`` of a file, and its raw digest."""

    name: str
    algorithm: str
    digest: bytes
    file: PurePosixPath
    start: int = 0

    def sort_key(self) -> tuple[tuple[str, ...], int]:
        """Order of resources: by path components, then shard start."""
        return self.file.parts, self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A model's resources in canonical order, with the serialization that produced them."""

    model_name: str
    serialization: Serialization
    resources: tuple[Resource, ...]

    @property
    def root_digest(self) -> bytes:
        """SHA-256 over the concatenated raw resource digests, in listed order."""
        h = hashlib.sha256()
        for r in self.resources:
            h.update(r.digest)
        return h.digest()

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 that gets signed."""
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.model_name, "digest": {"sha256": self.root_digest.hex()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": self.serialization.to_json(),
                "resources": [
                    {"name": r.name, "algorithm": r.algorithm, "digest": r.digest.hex()}
                    for r in self.resources
                ],
            },
        }

    @classmethod
    def from_statement(cls, obj: Any) -> Manifest:  # noqa: ANN401 -- decoded JSON
        """Parse a verified payload strictly; the subject digest must match the resources."""
        if not isinstance(obj, dict):
            raise BundleFormatError("signature payload is not a JSON object")
        _only_keys(obj, {"_type", "subject", "predicateType", "predicate"}, "statement")
        if _require(obj, "_type", str, "statement") != STATEMENT_TYPE:
            raise BundleFormatError(f"signature payload: _type must be {STATEMENT_TYPE}")
        predicate_type = _require(obj, "predicateType", str, "statement")
        if predicate_type != PREDICATE_TYPE:
            raise BundleFormatError(
                f"signature payload: predicateType {predicate_type!r} is not {PREDICATE_TYPE}"
            )
        subjects = _require(obj, "subject", list, "statement")
        if len(subjects) != 1 or not isinstance(subjects[0], dict):
            raise BundleFormatError("signature payload: expected exactly one subject")
        subject = subjects[0]
        _only_keys(subject, {"name", "digest"}, "subject")
        model_name = _require(subject, "name", str, "subject")
        subject_digest = _require(subject, "digest", dict, "subject")
        expected_root = _require(subject_digest, "sha256", str, "subject.digest")
        predicate = _require(obj, "predicate", dict, "statement")
        _only_keys(predicate, {"serialization", "resources"}, "predicate")
        serialization = Serialization.from_json(
            _require(predicate, "serialization", dict, "predicate")
        )
        resources = tuple(
            _parse_resource(raw, serialization, i)
            for i, raw in enumerate(_require(predicate, "resources", list, "predicate"))
        )
        keys = [r.sort_key() for r in resources]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise BundleFormatError("signature payload: resources are not sorted and unique")
        manifest = cls(model_name=model_name, serialization=serialization, resources=resources)
        if manifest.root_digest.hex() != expected_root:
            raise BundleFormatError(
                "signature payload: subject digest does not match the listed resources"
            )
        return manifest


def _parse_resource(raw: Any, serialization: Serialization, index: int) -> Resource:  # noqa: ANN401
    where = f"resources[{index}]"
    if not isinstance(raw, dict):
        raise BundleFormatError(f"signature payload: {where} is not an object")
    _only_keys(raw, {"name", "algorithm", "digest"}, where)
    name = _require(raw, "name", str, where)
    algorithm = _require(raw, "algorithm", str, where)
    if algorithm != serialization.algorithm:
        raise BundleFormatError(
            f"signature payload: {where}.algorithm is {algorithm!r}, "
            f"expected {serialization.algorithm!r}"
        )
    digest_hex = _require(raw, "digest", str, where)
    try:
        digest = bytes.fromhex(digest_hex)
    except ValueError:
        raise BundleFormatError(f"signature payload: {where}.digest is not hex") from None
    if len(digest) != _DIGEST_BYTES:
        raise BundleFormatError(f"signature payload: {where}.digest is not 32 bytes")
    start = 0
    file_name = name
    if serialization.method == "shards":
        parts = name.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():  # noqa: PLR2004
            raise BundleFormatError(
                f"signature payload: {where}.name {name!r} is not path:start:end"
            )
        file_name, start = parts[0], int(parts[1])
    path = PurePosixPath(file_name)
    if path.is_absolute() or ".." in path.parts:
        raise BundleFormatError(f"signature payload: {where}.name {name!r} escapes the model")
    return Resource(name=name, algorithm=algorithm, digest=digest, file=path, start=start)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentDiff:
    """Files whose content differs between a seal and the model on disk."""

    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def intact(self) -> bool:
        """Whether nothing differs."""
        return not (self.modified or self.added or self.removed)


def _by_file(manifest: Manifest) -> dict[PurePosixPath, list[tuple[str, bytes]]]:
    out: dict[PurePosixPath, list[tuple[str, bytes]]] = {}
    for r in manifest.resources:
        out.setdefault(r.file, []).append((r.name, r.digest))
    return out


def diff_manifests(
    expected: Manifest, actual: Manifest, *, single_file_name: str = "."
) -> ContentDiff:
    """Compare file by file (a file of several shards differs if any shard differs).

    A single-file model's resource is named "." in the manifest; reports use
    ``single_file_name`` instead.
    """
    want, have = _by_file(expected), _by_file(actual)

    def show(f: PurePosixPath) -> str:
        return single_file_name if f == PurePosixPath(".") else str(f)

    return ContentDiff(
        modified=tuple(show(f) for f in want if f in have and want[f] != have[f]),
        added=tuple(show(f) for f in have if f not in want),
        removed=tuple(show(f) for f in want if f not in have),
    )
