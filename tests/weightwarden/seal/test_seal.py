"""Sealing and verifying a model end to end: what is signed, what is caught, the golden bundle.

The golden bundle lives in ``golden/``: a fixed model folder, a fixed ECDSA P-256 key made
for these tests only (it protects nothing), and a bundle sealed with them. ECDSA signatures
are randomized, so the golden test checks that the committed bundle still verifies (here and
with the reference verifier) and that a fresh seal signs byte-for-byte the same payload.
``WEIGHTWARDEN_UPDATE_GOLDEN=1 pytest tests/weightwarden/seal/test_seal.py`` rewrites the
golden model files and bundle (and makes the key if it is missing); review the diff.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightwarden.cli import main
from weightwarden.crypto.keys import (
    KeyType,
    PrivateKey,
    generate_key,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from weightwarden.errors import SealInputError, UsageError
from weightwarden.seal import (
    SealOptions,
    default_signature_path,
    seal,
    verify,
)

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_MODEL = GOLDEN / "model"
GOLDEN_BUNDLE = GOLDEN / "model.sig"
GOLDEN_KEY = GOLDEN / "golden.key"
GOLDEN_PUB = GOLDEN / "golden.pub"
UPDATE_GOLDEN = os.environ.get("WEIGHTWARDEN_UPDATE_GOLDEN") == "1"
GOLDEN_FILES: dict[str, bytes] = {
    "config.json": b'{"architectures": ["GoldenForCausalLM"], "hidden_size": 64}\n',
    "a/b": b"a/b sorts before a.b: path components, not strings\n",
    "a.b": b"a.b sorts after a/b\n",
    "empty.bin": b"",
    "weights/model-00001-of-00002.safetensors": hashlib.shake_256(b"golden-1").digest(4096),
    "weights/model-00002-of-00002.safetensors": hashlib.shake_256(b"golden-2").digest(5000),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload_of(bundle: Path) -> bytes:
    return base64.b64decode(json.loads(bundle.read_bytes())["dsseEnvelope"]["payload"])


def statement_of(bundle: Path) -> dict[str, Any]:
    return json.loads(payload_of(bundle))


def resources_of(bundle: Path) -> list[tuple[str, str, str]]:
    return [
        (r["name"], r["algorithm"], r["digest"])
        for r in statement_of(bundle)["predicate"]["resources"]
    ]


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_cli(*args: str | os.PathLike[str]) -> tuple[int, str]:
    """Run the CLI in this process (fast, for property tests); return exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def private_key(key_pair) -> PrivateKey:
    return load_private_key(key_pair.private)


# ---------------------------------------------------------------- what a seal contains


def test_a_seal_records_every_file_with_its_sha256_sorted_by_components(make_model, private_key):
    """Resources are exactly the files, sorted by path components, each with hashlib's SHA-256."""
    files = {"b": b"2", "a.b": b"3", "a/b": b"1", "sub/deeper/c": b"4", "empty": b""}
    model = make_model(files, name="ckpt")
    result = seal(model, private_key)
    assert result.signature_path == model.parent / "ckpt.sig"
    order = ["a/b", "a.b", "b", "empty", "sub/deeper/c"]
    assert resources_of(result.signature_path) == [(n, "sha256", sha256(files[n])) for n in order]
    statement = statement_of(result.signature_path)
    root = hashlib.sha256(b"".join(hashlib.sha256(files[n]).digest() for n in order))
    assert statement["subject"] == [{"name": "ckpt", "digest": {"sha256": root.hexdigest()}}]
    assert result.bytes_hashed == sum(len(v) for v in files.values())


def test_an_empty_file_is_a_resource_with_the_empty_digest(make_model, private_key):
    """Empty files are sealed (their removal or growth is caught)."""
    model = make_model({"empty": b""})
    result = seal(model, private_key)
    assert resources_of(result.signature_path) == [("empty", "sha256", sha256(b""))]
    (model / "empty").write_bytes(b"x")
    assert verify(model, private_key.public).diff.modified == ("empty",)


def test_a_single_file_model_is_one_resource_named_dot(tmp_path, private_key):
    """A file seals to FILE.sig with one resource "."; a change is reported by the file's name."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    result = seal(weights, private_key)
    assert result.signature_path == tmp_path / "w.bin.sig" == default_signature_path(weights)
    assert resources_of(result.signature_path) == [(".", "sha256", sha256(b"weights"))]
    assert statement_of(result.signature_path)["subject"][0]["name"] == "w.bin"
    assert verify(weights, private_key.public).intact
    weights.write_bytes(b"weightz")
    tampered = verify(weights, private_key.public)
    assert not tampered.intact
    assert tampered.diff.modified == ("w.bin",)


def test_sharded_seals_hash_each_range_as_model_signing_cuts_them(make_model, private_key):
    """Shards of N bytes, the last one short, named path:start:end; empty files have none."""
    data = bytes(range(256)) * 4  # 1024 bytes
    model = make_model({"w": data, "small": b"abc", "empty": b""})
    result = seal(model, private_key, options=SealOptions(shard_size=300))
    algo = "sha256-sharded-300"
    assert resources_of(result.signature_path) == [
        ("small:0:3", algo, sha256(b"abc")),
        ("w:0:300", algo, sha256(data[0:300])),
        ("w:300:600", algo, sha256(data[300:600])),
        ("w:600:900", algo, sha256(data[600:900])),
        ("w:900:1024", algo, sha256(data[900:1024])),
    ]
    assert statement_of(result.signature_path)["predicate"]["serialization"]["shard_size"] == 300
    assert verify(model, private_key.public).intact
    with (model / "w").open("r+b") as fh:
        fh.seek(700)
        fh.write(b"\xff")
    assert verify(model, private_key.public).diff.modified == ("w",)


def test_blake3_seals_record_blake3_digests(make_model, private_key):
    """--hash blake3 records hash_type blake3 and the blake3 digest of each file."""
    model = make_model({"a": b"alpha", "b": b""})
    result = seal(model, private_key, options=SealOptions(hash="blake3"))
    assert resources_of(result.signature_path) == [
        ("a", "blake3", blake3.blake3(b"alpha").hexdigest()),
        ("b", "blake3", blake3.blake3(b"").hexdigest()),
    ]
    assert verify(model, private_key.public).intact


def test_the_number_of_hashing_threads_does_not_change_the_payload(
    make_model, private_key, tmp_path
):
    """One worker or eight, files or shards: the signed statement is the same."""
    model = make_model({f"f{i}": os.urandom(1000 + i) for i in range(6)})
    for options in (SealOptions(), SealOptions(shard_size=256)):
        payloads = {
            payload_of(
                seal(
                    model,
                    private_key,
                    signature_path=tmp_path / f"{w}.sig",
                    options=options,
                    workers=w,
                ).signature_path
            )
            for w in (1, 2, 8)
        }
        assert len(payloads) == 1


def test_a_real_checkpoint_seals_and_verifies(make_model, private_key):
    """The safetensors checkpoint from the shared fixture is intact right after sealing."""
    model = make_model()
    seal(model, private_key)
    result = verify(model, private_key.public)
    assert result.intact
    assert result.signature_valid
    assert result.files_checked == 5
    assert result.reason == ""


def test_sealing_writes_no_stray_temporary_files(make_model, private_key):
    """The bundle is written atomically: nothing but the bundle appears beside the model."""
    model = make_model({"a": b"1"}, name="m")
    before = set(model.parent.iterdir())
    seal(model, private_key)
    assert set(model.parent.iterdir()) - before == {model.parent / "m.sig"}


def test_a_signature_path_that_is_a_folder_is_a_usage_error(make_model, private_key, tmp_path):
    """Sealing onto an existing folder is refused with a UsageError, not an OSError."""
    model = make_model({"a": b"1"})
    (tmp_path / "sigdir").mkdir()
    with pytest.raises(UsageError, match="sigdir"):
        seal(model, private_key, signature_path=tmp_path / "sigdir")


def test_a_signature_inside_the_model_folder_is_left_out_and_recorded(make_model, private_key):
    """The bundle does not seal itself: its name joins ignore_paths and verify skips it."""
    model = make_model({"a": b"1"})
    sig = model / "sigs" / "model.sig"
    sig.parent.mkdir()
    seal(model, private_key, signature_path=sig)
    statement = statement_of(sig)
    assert "sigs/model.sig" in statement["predicate"]["serialization"]["ignore_paths"]
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["a"]
    assert verify(model, private_key.public, signature_path=sig).intact


# ---------------------------------------------------------------- ignore rules


def test_ignore_paths_may_be_relative_or_absolute_inside_the_folder(make_model, private_key):
    """Both forms are recorded relative to the folder; ignored files may then change freely."""
    model = make_model({"a": b"1", "logs/run.txt": b"x", "tmp.bin": b"y"})
    options = SealOptions(ignore_paths=("logs", str(model / "tmp.bin")))
    result = seal(model, private_key, options=options)
    statement = statement_of(result.signature_path)
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["a"]
    ignores = statement["predicate"]["serialization"]["ignore_paths"]
    assert {"logs", "tmp.bin"} <= set(ignores)
    (model / "logs" / "run.txt").write_bytes(b"more log")
    (model / "logs" / "new.txt").write_bytes(b"new")
    (model / "tmp.bin").unlink()
    assert verify(model, private_key.public).intact


@pytest.mark.parametrize("outside", ["/etc/hostname", "../sibling"])
def test_an_ignore_path_outside_the_folder_is_a_usage_error(make_model, private_key, outside):
    """Absolute paths outside the folder and climbing relative paths are refused."""
    model = make_model({"a": b"1"})
    with pytest.raises(UsageError, match="--ignore-paths"):
        seal(model, private_key, options=SealOptions(ignore_paths=(outside,)))
    assert not default_signature_path(model).exists()


def test_git_paths_are_ignored_by_default_and_recorded(make_model, private_key):
    """.git, .github, .gitattributes and .gitignore are left out unless asked for."""
    files = {".git/HEAD": b"ref", ".github/ci.yml": b"x", ".gitignore": b"*", "w": b"1"}
    model = make_model(files)
    result = seal(model, private_key)
    statement = statement_of(result.signature_path)
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["w"]
    assert statement["predicate"]["serialization"]["ignore_paths"] == [
        ".git",
        ".gitattributes",
        ".github",
        ".gitignore",
    ]
    (model / ".git" / "HEAD").write_bytes(b"other")
    assert verify(model, private_key.public).intact

    included = seal(model, private_key, options=SealOptions(ignore_git_paths=False))
    names = [r["name"] for r in statement_of(included.signature_path)["predicate"]["resources"]]
    assert names == [".git/HEAD", ".github/ci.yml", ".gitignore", "w"]
    (model / ".gitignore").write_bytes(b"")
    assert verify(model, private_key.public).diff.modified == (".gitignore",)


# ---------------------------------------------------------------- options and refusals


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shard_size": 0}, "--shard-size must be a positive"),
        ({"shard_size": -5}, "--shard-size must be a positive"),
        ({"shard_size": 1024, "hash": "blake3"}, "--shard-size applies to sha256 only"),
    ],
)
def test_impossible_options_are_usage_errors(kwargs, message):
    """SealOptions refuses combinations it cannot honour."""
    with pytest.raises(UsageError, match=message):
        SealOptions(**kwargs)


def test_a_symlink_is_refused_unless_allowed_and_then_recorded(make_model, private_key):
    """allow_symlinks is recorded in the seal, and verify follows the link the same way."""
    model = make_model({"a": b"1"})
    (model / "link").symlink_to("a")
    with pytest.raises(SealInputError, match="link is a symlink"):
        seal(model, private_key)
    result = seal(model, private_key, options=SealOptions(allow_symlinks=True))
    assert statement_of(result.signature_path)["predicate"]["serialization"]["allow_symlinks"]
    assert [n for n, _, _ in resources_of(result.signature_path)] == ["a", "link"]
    assert verify(model, private_key.public).intact
    (model / "a").write_bytes(b"2")
    assert verify(model, private_key.public).diff.modified == ("a", "link")


def test_verifying_a_missing_model_is_a_seal_input_error(make_model, private_key, tmp_path):
    """A model folder that is gone cannot be verified (it is not "everything removed")."""
    model = make_model({"a": b"1"}, name="gone")
    sig = tmp_path / "gone.sig"
    seal(model, private_key, signature_path=sig)
    (model / "a").unlink()
    model.rmdir()
    with pytest.raises(SealInputError, match="does not exist"):
        verify(model, private_key.public, signature_path=sig)


def test_a_seal_checked_with_another_key_is_not_intact(make_model, private_key, other_key_pair):
    """Without a hint to name the key, a signature by another key is an invalid seal (data)."""
    model = make_model({"a": b"1"})
    sig = seal(model, private_key).signature_path
    obj = json.loads(sig.read_bytes())
    del obj["verificationMaterial"]["publicKey"]["hint"]
    sig.write_text(json.dumps(obj))
    result = verify(model, load_public_key(other_key_pair.public))
    assert (result.intact, result.signature_valid) == (False, False)
    assert "signature does not verify" in result.reason
    assert result.diff.intact
    assert result.files_checked == 0


# ---------------------------------------------------------------- files changing under us


class _MutateOnFirstAdvance:
    """A progress sink that changes the file being hashed as soon as hashing reports bytes."""

    def __init__(self, path: Path, *, truncate: bool) -> None:
        self.path = path
        self.truncate = truncate
        self.fired = False

    def begin(self, total_bytes: int) -> None:
        assert total_bytes > 0

    def advance(self, n_bytes: int) -> None:
        assert n_bytes > 0
        if self.fired:
            return
        self.fired = True
        if self.truncate:
            os.truncate(self.path, 0)
        else:
            with self.path.open("ab") as fh:
                fh.write(b"appended while hashing")


@pytest.mark.parametrize(
    "options",
    [SealOptions(), SealOptions(hash="blake3"), SealOptions(shard_size=1 << 20)],
    ids=["sha256", "blake3", "shards"],
)
def test_a_file_that_grows_while_being_hashed_fails_the_seal(make_model, private_key, options):
    """Sealing a state that never existed on disk is refused, and no bundle is written."""
    model = make_model({"w": os.urandom(3 << 20)})
    progress = _MutateOnFirstAdvance(model / "w", truncate=False)
    with pytest.raises(SealInputError, match="w changed while it was being hashed; seal again"):
        seal(model, private_key, options=options, progress=progress)
    assert progress.fired
    assert not default_signature_path(model).exists()


def test_a_file_truncated_while_being_hashed_fails_the_seal(make_model, private_key):
    """A file cut short mid-read (past one read buffer) is a clear error, not a short digest."""
    model = make_model({"w": os.urandom(9 << 20)})
    progress = _MutateOnFirstAdvance(model / "w", truncate=True)
    with pytest.raises(SealInputError, match=r"^w (was truncated|changed) .*; seal again once"):
        seal(model, private_key, progress=progress)
    assert not default_signature_path(model).exists()


# ---------------------------------------------------------------- the property


_component = st.sampled_from(["a", "b", "a.b", "w.bin", "sub"])
_name = st.lists(_component, min_size=1, max_size=2).map("/".join)
_NEW_NAMES = ("new", "sub/new.bin", "a/new", "a.b.new", "z/y/x")


def _conflicts(name: str, others: set[str]) -> bool:
    """Whether ``name`` cannot exist beside ``others`` (equal, or one is the other's folder)."""
    return any(name == o or o.startswith(name + "/") or name.startswith(o + "/") for o in others)


@st.composite
def _models(draw: st.DrawFn) -> dict[str, bytes]:
    raw = draw(st.dictionaries(_name, st.binary(min_size=1, max_size=48), min_size=1, max_size=4))
    files: dict[str, bytes] = {}
    for name in sorted(raw, key=len):
        if not _conflicts(name, set(files)):
            files[name] = raw[name]
    return files


@st.composite
def _tamperings(draw: st.DrawFn, files: dict[str, bytes]) -> tuple[str, ...]:
    kind = draw(st.sampled_from(["flip", "add", "remove", "rename"]))
    name = draw(st.sampled_from(sorted(files)))
    free = [n for n in _NEW_NAMES if not _conflicts(n, set(files))]
    if kind == "flip":
        offset = draw(st.integers(0, len(files[name]) - 1))
        bit = draw(st.integers(0, 7))
        return ("flip", name, str(offset), str(bit))
    if kind == "add":
        return ("add", draw(st.sampled_from(free)))
    if kind == "remove":
        return ("remove", name)
    return ("rename", name, draw(st.sampled_from(free)))


def _tamper(model: Path, tampering: tuple[str, ...]) -> dict[str, list[str]]:
    """Apply the tampering; return the verify --json lists it must produce."""
    kind, name = tampering[0], tampering[1]
    expected: dict[str, list[str]] = {"modified": [], "added": [], "removed": []}
    if kind == "flip":
        offset, bit = int(tampering[2]), int(tampering[3])
        with (model / name).open("r+b") as fh:
            fh.seek(offset)
            byte = fh.read(1)[0]
            fh.seek(offset)
            fh.write(bytes([byte ^ (1 << bit)]))
        expected["modified"] = [name]
    elif kind == "add":
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(b"planted")
        expected["added"] = [name]
    elif kind == "remove":
        (model / name).unlink()
        expected["removed"] = [name]
    else:
        new = tampering[2]
        (model / new).parent.mkdir(parents=True, exist_ok=True)
        (model / name).rename(model / new)
        expected["added"], expected["removed"] = [new], [name]
    return expected


@pytest.mark.reference
@settings(max_examples=25, deadline=None)
@given(data=st.data(), files=_models())
def test_any_tampering_is_caught_by_verify_and_by_the_reference(
    data, files, key_pair, reference_verify
):
    """Any flipped bit, added, removed or renamed file fails both verifiers, naming the files.

    An untouched seal passes `weightwarden verify` and model_signing's verifier; after one
    tampering `weightwarden verify` exits 1 naming exactly the changed files, and
    model_signing's verifier raises.
    """
    tampering = data.draw(_tamperings(files), label="tampering")
    with tempfile.TemporaryDirectory() as tmp:
        model, sig = Path(tmp) / "model", Path(tmp) / "model.sig"
        write_files(model, files)
        seal(model, load_private_key(key_pair.private), signature_path=sig)
        verify_args = ("verify", model, "--public-key", key_pair.public, "--signature", sig)
        code, out = run_cli(*verify_args, "--json", "--no-cache")
        assert (code, json.loads(out)["intact"]) == (0, True)
        assert reference_verify(model, sig, key_pair.public) is None

        expected = _tamper(model, tampering)

        code, out = run_cli(*verify_args, "--json", "--no-cache")
        result = json.loads(out)
        assert code == 1
        assert (result["intact"], result["signature_valid"]) == (False, True)
        assert {k: result[k] for k in expected} == expected
        assert isinstance(reference_verify(model, sig, key_pair.public), ValueError)


# ---------------------------------------------------------------- the golden bundle


def _update_golden() -> None:
    """Rewrite the golden model and bundle (WEIGHTWARDEN_UPDATE_GOLDEN=1)."""
    if GOLDEN_MODEL.exists():
        for path in sorted(GOLDEN_MODEL.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        GOLDEN_MODEL.rmdir()
    write_files(GOLDEN_MODEL, GOLDEN_FILES)
    if not GOLDEN_KEY.exists():
        write_key_pair(generate_key(KeyType.ECDSA_P256), GOLDEN / "golden")
    GOLDEN_BUNDLE.unlink(missing_ok=True)
    seal(GOLDEN_MODEL, load_private_key(GOLDEN_KEY), signature_path=GOLDEN_BUNDLE)


@pytest.fixture(scope="module")
def golden() -> Path:
    """The golden folder, rewritten first when WEIGHTWARDEN_UPDATE_GOLDEN=1."""
    if UPDATE_GOLDEN:
        _update_golden()
    return GOLDEN


def test_the_golden_model_is_unchanged(golden):
    """The committed model files are exactly the spec (no edits, no line-ending conversion)."""
    model = golden / "model"
    on_disk = {
        p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()
    }
    assert on_disk == GOLDEN_FILES


def test_the_golden_bundle_still_verifies(golden):
    """The committed bundle verifies with weightwarden against the committed model and key."""
    result = verify(
        golden / "model",
        load_public_key(golden / "golden.pub"),
        signature_path=golden / "model.sig",
    )
    assert result.intact, result


@pytest.mark.reference
def test_the_golden_bundle_verifies_with_the_reference(golden, reference_verify):
    """model_signing accepts the committed golden bundle."""
    assert reference_verify(golden / "model", golden / "model.sig", golden / "golden.pub") is None


def test_a_fresh_seal_signs_the_golden_payload_byte_for_byte(golden, tmp_path):
    """Same model, same key: the payload is identical and the bundle differs only in its sig."""
    fresh = seal(
        golden / "model",
        load_private_key(golden / "golden.key"),
        signature_path=tmp_path / "fresh.sig",
    ).signature_path
    assert payload_of(fresh) == payload_of(golden / "model.sig")
    mine, theirs = json.loads(fresh.read_bytes()), json.loads((golden / "model.sig").read_bytes())
    mine["dsseEnvelope"]["signatures"][0]["sig"] = theirs["dsseEnvelope"]["signatures"][0]["sig"]
    assert mine == theirs


def test_the_golden_payload_digests_are_hashlib_sha256_of_the_files(golden):
    """An independent check of the golden statement: digests, order and subject."""
    statement = statement_of(golden / "model.sig")
    order = sorted(GOLDEN_FILES, key=lambda n: PurePosixPath(n).parts)
    assert order[:2] == ["a/b", "a.b"]
    assert [(r["name"], r["digest"]) for r in statement["predicate"]["resources"]] == [
        (n, sha256(GOLDEN_FILES[n])) for n in order
    ]
    root = hashlib.sha256(b"".join(hashlib.sha256(GOLDEN_FILES[n]).digest() for n in order))
    assert statement["subject"] == [{"name": "model", "digest": {"sha256": root.hexdigest()}}]
