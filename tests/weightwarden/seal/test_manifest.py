"""The in-toto statement: what a seal signs, parsed strictly, and the diff of two manifests."""

from __future__ import annotations

import copy
import hashlib
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightwarden.errors import BundleFormatError
from weightwarden.seal import PREDICATE_TYPE, ContentDiff, Manifest, Serialization
from weightwarden.seal._manifest import STATEMENT_TYPE, Resource, diff_manifests

FILES = Serialization(method="files", hash_type="sha256", allow_symlinks=False, ignore_paths=())
SHARDS = Serialization(
    method="shards", hash_type="sha256", allow_symlinks=False, ignore_paths=(".git",), shard_size=4
)


def digest_of(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def files_manifest(contents: dict[str, bytes], *, model_name: str = "model") -> Manifest:
    resources = tuple(
        Resource(name=name, algorithm="sha256", digest=digest_of(data), file=PurePosixPath(name))
        for name, data in sorted(contents.items(), key=lambda kv: PurePosixPath(kv[0]).parts)
    )
    return Manifest(model_name=model_name, serialization=FILES, resources=resources)


def shard_manifest(contents: dict[str, bytes]) -> Manifest:
    resources = []
    for name, data in sorted(contents.items(), key=lambda kv: PurePosixPath(kv[0]).parts):
        for start in range(0, len(data), 4):
            end = min(start + 4, len(data))
            resources.append(
                Resource(
                    name=f"{name}:{start}:{end}",
                    algorithm="sha256-sharded-4",
                    digest=digest_of(data[start:end]),
                    file=PurePosixPath(name),
                    start=start,
                )
            )
    return Manifest(model_name="model", serialization=SHARDS, resources=tuple(resources))


def test_the_statement_is_the_openssf_model_signing_payload():
    """An in-toto v1 statement; the subject digest is SHA-256 over the raw resource digests."""
    manifest = files_manifest({"b": b"2", "a/x": b"1"})
    expected_root = hashlib.sha256(digest_of(b"1") + digest_of(b"2")).hexdigest()
    assert manifest.to_statement() == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": expected_root}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [
                {"name": "a/x", "algorithm": "sha256", "digest": digest_of(b"1").hex()},
                {"name": "b", "algorithm": "sha256", "digest": digest_of(b"2").hex()},
            ],
        },
    }
    assert manifest.root_digest.hex() == expected_root


def test_sharded_serialization_records_the_shard_size_and_path_start_end_names():
    """Shards are named path:start:end with algorithm sha256-sharded-N and shard_size recorded."""
    statement = shard_manifest({"w": b"0123456789"}).to_statement()
    assert statement["predicate"]["serialization"] == {
        "method": "shards",
        "hash_type": "sha256",
        "shard_size": 4,
        "allow_symlinks": False,
        "ignore_paths": [".git"],
    }
    assert [(r["name"], r["algorithm"]) for r in statement["predicate"]["resources"]] == [
        ("w:0:4", "sha256-sharded-4"),
        ("w:4:8", "sha256-sharded-4"),
        ("w:8:10", "sha256-sharded-4"),
    ]


_names = st.sampled_from(["a", "b", "a.b", "a/b", "c/d/e", "z"])


@settings(max_examples=25, deadline=None)
@given(
    contents=st.dictionaries(_names, st.binary(max_size=12), max_size=5),
    sharded=st.booleans(),
)
def test_a_statement_parses_back_to_the_same_manifest(contents, sharded):
    """to_statement then from_statement is the identity, files or shards."""
    # "a" and "a/b" cannot both be files.
    if "a" in contents:
        contents.pop("a/b", None)
    manifest = shard_manifest(contents) if sharded else files_manifest(contents)
    assert Manifest.from_statement(manifest.to_statement()) == manifest


def test_a_blake3_statement_parses_back():
    """blake3 is a hash_type weightwarden records and reads back."""
    ser = Serialization(method="files", hash_type="blake3", allow_symlinks=True, ignore_paths=())
    manifest = Manifest(
        model_name="m",
        serialization=ser,
        resources=(
            Resource(name="a", algorithm="blake3", digest=b"\x01" * 32, file=PurePosixPath("a")),
        ),
    )
    assert Manifest.from_statement(manifest.to_statement()) == manifest


def test_a_float_shard_size_as_model_signing_writes_it_is_read_as_an_integer():
    """model_signing's protobuf Struct writes "shard_size": 4.0; that still means 4 bytes."""
    statement = shard_manifest({"w": b"0123456789"}).to_statement()
    statement["predicate"]["serialization"]["shard_size"] = 4.0
    parsed = Manifest.from_statement(statement)
    assert parsed.serialization.shard_size == 4
    assert type(parsed.serialization.shard_size) is int
    assert parsed.serialization.algorithm == "sha256-sharded-4"


def _valid() -> dict[str, Any]:
    return shard_manifest({"a": b"0123456", "b/c": b"x"}).to_statement()


def _locate(obj: Any, path: str) -> tuple[Any, int | str]:
    """The container holding the dotted ``path`` ("a.0.b") and the key within it."""
    keys: list[int | str] = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        obj = obj[key]
    return obj, keys[-1]


def _set(path: str, value: object):
    def mutate(obj: dict[str, Any]) -> None:
        container, key = _locate(obj, path)
        container[key] = value

    return mutate


def _delete(path: str):
    def mutate(obj: dict[str, Any]) -> None:
        container, key = _locate(obj, path)
        del container[key]

    return mutate


def _swap_first_resources(obj: dict[str, Any]) -> None:
    res = obj["predicate"]["resources"]
    res[0], res[1] = res[1], res[0]


def _duplicate_first_resource(obj: dict[str, Any]) -> None:
    res = obj["predicate"]["resources"]
    res.insert(1, copy.deepcopy(res[0]))


def _two_subjects(obj: dict[str, Any]) -> None:
    obj["subject"].append(copy.deepcopy(obj["subject"][0]))


R0 = "predicate.resources.0"
SER = "predicate.serialization"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("extra", 1), r"unknown field\(s\) in statement: \['extra'\]"),
        (_set("subject.0.annotations", {}), r"unknown field\(s\) in subject"),
        (_set("predicate.extra", []), r"unknown field\(s\) in predicate"),
        (_set(f"{SER}.chunk_size", 1), r"unknown field\(s\) in predicate.serialization"),
        (_set(f"{R0}.size", 7), r"unknown field\(s\) in resources\[0\]"),
        (_set("_type", "https://in-toto.io/Statement/v0.1"), "_type must be"),
        (_set("predicateType", "https://slsa.dev/provenance/v1"), "is not https://model_signing"),
        (_delete("predicate"), "statement has no 'predicate'"),
        (_delete(f"{SER}.hash_type"), "has no 'hash_type'"),
        (_delete(f"{SER}.shard_size"), "has no 'shard_size'"),
        (_delete(f"{R0}.digest"), r"resources\[0\] has no 'digest'"),
        (_set("subject", []), "exactly one subject"),
        (_two_subjects, "exactly one subject"),
        (_set("subject.0.digest.sha256", "00" * 32), "subject digest does not match"),
        (_set(f"{SER}.method", "tree"), "unsupported serialization method 'tree'"),
        (_set(f"{SER}.hash_type", "SHA256"), "unsupported hash_type 'SHA256'"),
        (_set(f"{SER}.hash_type", "blake2"), "unsupported hash_type 'blake2'"),
        (_set(f"{SER}.allow_symlinks", "false"), "allow_symlinks must be a bool"),
        (_set(f"{SER}.ignore_paths", ".git"), "ignore_paths must be a list of strings"),
        (_set(f"{SER}.shard_size", 0), "shard_size must be positive"),
        (_set(f"{SER}.shard_size", True), "shard_size must be an integer, got bool"),
        (_set(f"{SER}.shard_size", 4.5), "shard_size must be an integer, got float"),
        (_set(f"{SER}.shard_size", "4"), "shard_size must be an integer, got str"),
        (_set(f"{R0}.algorithm", "sha256"), "algorithm is 'sha256', expected 'sha256-sharded-4'"),
        (_set(f"{R0}.digest", "zz" * 32), "digest is not hex"),
        (_set(f"{R0}.digest", "ab" * 31), "digest is not 32 bytes"),
        (_set(f"{R0}.digest", 7), "digest must be a str"),
        (_set(f"{R0}.name", "a"), "'a' is not path:start:end"),
        (_set(f"{R0}.name", "a:x:4"), "is not path:start:end"),
        (_set(f"{R0}.name", "../a:0:4"), "escapes the model"),
        (_set(f"{R0}.name", "/etc/a:0:4"), "escapes the model"),
        (_set("predicate.resources.0", "a"), r"resources\[0\] is not an object"),
        (_swap_first_resources, "not sorted and unique"),
        (_duplicate_first_resource, "not sorted and unique"),
    ],
)
def test_a_malformed_statement_is_a_bundle_format_error(mutate, message):
    """Parsing is strict: unknown fields, wrong types and inconsistent digests are refused."""
    statement = _valid()
    mutate(statement)
    with pytest.raises(BundleFormatError, match=message):
        Manifest.from_statement(statement)


@pytest.mark.parametrize("payload", [[], "statement", None, 3])
def test_a_statement_that_is_not_an_object_is_refused(payload):
    """Only a JSON object can be a statement."""
    with pytest.raises(BundleFormatError, match="not a JSON object"):
        Manifest.from_statement(payload)


def test_a_files_statement_with_a_shard_size_is_refused():
    """shard_size belongs to sharded serialization only."""
    statement = files_manifest({"a": b"1"}).to_statement()
    statement["predicate"]["serialization"]["shard_size"] = 4
    with pytest.raises(BundleFormatError, match="unknown field"):
        Manifest.from_statement(statement)


def test_the_diff_lists_modified_added_and_removed_files():
    """Each changed file appears once, under the right heading, in manifest order."""
    before = files_manifest({"a": b"1", "b": b"2", "c": b"3"})
    after = files_manifest({"a": b"1", "b": b"changed", "d": b"4", "e/f": b"5"})
    assert diff_manifests(before, after) == ContentDiff(
        modified=("b",), added=("d", "e/f"), removed=("c",)
    )
    assert not diff_manifests(before, after).intact
    assert diff_manifests(before, before).intact


def test_a_changed_shard_marks_its_file_modified_once():
    """Shards roll up to their file: two changed shards of one file are one modified file."""
    before = shard_manifest({"w": b"0123456789", "x": b"abc"})
    after = shard_manifest({"w": b"X1234X6789", "x": b"abc"})
    assert diff_manifests(before, after) == ContentDiff(modified=("w",))


def test_a_file_grown_by_a_shard_is_modified_not_added():
    """A new trailing shard changes the file's shard list: the file is modified."""
    before = shard_manifest({"w": b"0123"})
    after = shard_manifest({"w": b"01234567"})
    assert diff_manifests(before, after) == ContentDiff(modified=("w",))


def test_a_single_file_model_is_reported_by_its_file_name():
    """The "." resource of a single-file model is shown as the file's name."""
    one = Manifest(
        model_name="w.bin",
        serialization=FILES,
        resources=(
            Resource(name=".", algorithm="sha256", digest=digest_of(b"1"), file=PurePosixPath(".")),
        ),
    )
    two = Manifest(
        model_name="w.bin",
        serialization=FILES,
        resources=(
            Resource(name=".", algorithm="sha256", digest=digest_of(b"2"), file=PurePosixPath(".")),
        ),
    )
    assert diff_manifests(one, two, single_file_name="w.bin") == ContentDiff(modified=("w.bin",))


def test_the_predicate_type_and_statement_type_are_the_openssf_ones():
    """The constants match OpenSSF Model Signing v1.0."""
    assert PREDICATE_TYPE == "https://model_signing/signature/v1.0"
    assert STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
