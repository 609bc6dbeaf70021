"""`weightwarden seal` and `weightwarden verify` as a user runs them, in a real process.

Exit codes, stdout listings, --json, and a one-line error for every bad input.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from weightwarden.crypto.keys import generate_key, load_private_key, write_key_pair
from weightwarden.seal import seal
from weightwarden.seal._bundle import make_bundle

if TYPE_CHECKING:
    from collections.abc import Callable

SEAL_JSON_KEYS = {
    "model",
    "signature",
    "root_digest",
    "files",
    "bytes",
    "cache_hits",
    "seconds",
    "serialization",
}
VERIFY_JSON_KEYS = {
    "model",
    "signature",
    "intact",
    "signature_valid",
    "reason",
    "modified",
    "added",
    "removed",
    "files_checked",
    "bytes_hashed",
    "seconds",
}
FILES = {"config.json": b"{}\n", "w/model.safetensors": b"\x01" * 3000, "tokenizer.json": b"[]"}


def test_seal_then_verify_an_untouched_model_exits_0_quietly(make_model, key_pair, cli):
    """The bundle lands beside the model; verify says intact; nothing is written to stderr."""
    model = make_model(FILES, name="ckpt")
    sealed = cli("seal", model, "--private-key", key_pair.private)
    assert (sealed.code, sealed.stderr) == (0, ""), sealed
    assert f"sealed {model} -> {model.parent / 'ckpt.sig'} (3 files" in sealed.stdout
    assert (model.parent / "ckpt.sig").is_file()
    verified = cli("verify", model, "--public-key", key_pair.public)
    assert (verified.code, verified.stderr) == (0, ""), verified
    assert verified.stdout.startswith(f"intact: {model} matches {model.parent / 'ckpt.sig'}")


def test_verify_exits_1_and_lists_every_modified_added_and_removed_file(make_model, key_pair, cli):
    """A finding, not an error: exit 1, each changed file on its own line, stderr empty."""
    model = make_model(FILES)
    assert cli("seal", model, "--private-key", key_pair.private).code == 0
    (model / "w" / "model.safetensors").write_bytes(b"\x02" * 3000)
    (model / "backdoor.py").write_text("import os\n")
    (model / "w" / "extra.bin").write_bytes(b"")
    (model / "tokenizer.json").unlink()
    result = cli("verify", model, "--public-key", key_pair.public)
    assert (result.code, result.stderr) == (1, ""), result
    assert result.stdout.splitlines() == [
        f"NOT INTACT: {model}: model content differs from its seal",
        "  modified: w/model.safetensors",
        "  added: backdoor.py",
        "  added: w/extra.bin",
        "  removed: tokenizer.json",
    ]


def test_seal_json_has_the_documented_keys(make_model, key_pair, cli):
    """`seal --json` prints one JSON object describing the seal."""
    model = make_model(FILES)
    result = cli("seal", model, "--private-key", key_pair.private, "--json", "--shard-size", "1KiB")
    assert result.code == 0, result
    out = result.json()
    assert set(out) == SEAL_JSON_KEYS
    assert out["model"] == str(model)
    assert out["signature"] == f"{model}.sig"
    assert (out["files"], out["bytes"], out["cache_hits"]) == (3, 3005, 0)
    assert len(bytes.fromhex(out["root_digest"])) == 32
    assert out["serialization"]["method"] == "shards"
    assert out["serialization"]["shard_size"] == 1024


def test_verify_json_has_the_documented_keys_intact_or_not(make_model, key_pair, cli):
    """`verify --json` prints the same keys whether intact or tampered, exit 0 or 1."""
    model = make_model(FILES)
    assert cli("seal", model, "--private-key", key_pair.private).code == 0
    intact = cli("verify", model, "--public-key", key_pair.public, "--json")
    assert intact.code == 0
    assert set(intact.json()) == VERIFY_JSON_KEYS
    assert intact.json() | {"seconds": 0} == {
        "model": str(model),
        "signature": f"{model}.sig",
        "intact": True,
        "signature_valid": True,
        "reason": "",
        "modified": [],
        "added": [],
        "removed": [],
        "files_checked": 3,
        "bytes_hashed": 3005,
        "seconds": 0,
    }
    (model / "config.json").write_text('{"evil": true}\n')
    tampered = cli("verify", model, "--public-key", key_pair.public, "--json")
    assert tampered.code == 1
    assert set(tampered.json()) == VERIFY_JSON_KEYS
    assert tampered.json()["modified"] == ["config.json"]
    assert tampered.json()["reason"] == "model content differs from its seal"


def test_an_altered_signature_is_reported_as_not_intact(make_model, key_pair, cli):
    """A payload edited without the key (and the hint dropped) fails the signature: exit 1."""
    model = make_model(FILES)
    assert cli("seal", model, "--private-key", key_pair.private).code == 0
    sig = Path(f"{model}.sig")
    obj = json.loads(sig.read_bytes())
    payload = base64.b64decode(obj["dsseEnvelope"]["payload"]).replace(
        b"config.json", b"confiG.json"
    )
    obj["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    del obj["verificationMaterial"]["publicKey"]["hint"]
    sig.write_text(json.dumps(obj))
    result = cli("verify", model, "--public-key", key_pair.public, "--json")
    assert result.code == 1, result
    assert (result.json()["intact"], result.json()["signature_valid"]) == (False, False)
    assert "signature does not verify" in result.json()["reason"]


def test_a_single_file_model_seals_beside_itself(tmp_path, key_pair, cli):
    """w.bin seals to w.bin.sig; a change is listed by the file's own name."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    assert cli("seal", weights, "--private-key", key_pair.private).code == 0
    assert (tmp_path / "w.bin.sig").is_file()
    weights.write_bytes(b"weightz")
    result = cli("verify", weights, "--public-key", key_pair.public)
    assert result.code == 1
    assert "  modified: w.bin" in result.stdout.splitlines()


def test_a_signature_inside_the_model_folder_seals_and_verifies(make_model, key_pair, cli):
    """--signature inside the folder: the bundle is left out of its own seal."""
    model = make_model(FILES)
    sig = model / "model.sig"
    assert cli("seal", model, "--private-key", key_pair.private, "--signature", sig).code == 0
    result = cli("verify", model, "--public-key", key_pair.public, "--signature", sig, "--json")
    assert (result.code, result.json()["files_checked"]) == (0, 3), result


def test_ignore_paths_relative_and_absolute_are_accepted(make_model, key_pair, cli):
    """--ignore-paths takes names relative to the folder and absolute paths inside it."""
    model = make_model({**FILES, "logs/a.txt": b"1", "scratch.bin": b"2"})
    result = cli(
        "seal", model, "--private-key", key_pair.private, "--json",
        "--ignore-paths", "logs", str(model / "scratch.bin"),
    )  # fmt: skip
    assert (result.code, result.json()["files"]) == (0, 3), result
    (model / "scratch.bin").write_bytes(b"changed")
    (model / "logs" / "b.txt").write_bytes(b"new")
    assert cli("verify", model, "--public-key", key_pair.public).code == 0


def test_passphrase_protected_keys_seal_via_file_or_environment(make_model, tmp_path, cli):
    """--passphrase-file and $WEIGHTWARDEN_KEY_PASSPHRASE both unlock an encrypted key."""
    private, public = write_key_pair(generate_key(), tmp_path / "enc", passphrase=b"s3cret")
    model = make_model(FILES)
    passfile = tmp_path / "pass.txt"
    passfile.write_text("s3cret\n")
    by_file = cli("seal", model, "--private-key", private, "--passphrase-file", passfile)
    assert by_file.code == 0, by_file
    by_env = cli(
        "seal", model, "--private-key", private, env={"WEIGHTWARDEN_KEY_PASSPHRASE": "s3cret"}
    )
    assert by_env.code == 0, by_env
    assert cli("verify", model, "--public-key", public).code == 0


# ------------------------------------------------------------------ bad inputs: exit 2, one line


@dataclass(frozen=True, slots=True, kw_only=True)
class Ctx:
    """What a bad-input case may point at: a sealed model, keys and a scratch folder."""

    model: Path
    sig: Path
    key: Path
    pub: Path
    other_key: Path
    tmp: Path


def _rsa_key(ctx: Ctx) -> Path:
    path = ctx.tmp / "rsa.key"
    path.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _encrypted_key(ctx: Ctx) -> Path:
    private, _ = write_key_pair(generate_key(), ctx.tmp / "enc", passphrase=b"right")
    return private


def _passfile(ctx: Ctx, text: str) -> Path:
    path = ctx.tmp / "pass.txt"
    path.write_text(text)
    return path


def _link(ctx: Ctx, target: str) -> Path:
    (ctx.model / "link").symlink_to(target)
    return ctx.model


def _fifo(ctx: Ctx) -> Path:
    os.mkfifo(ctx.model / "pipe")
    return ctx.model


def _bundle(ctx: Ctx, data: bytes) -> Path:
    path = ctx.tmp / "bad.sig"
    path.write_bytes(data)
    return path


def _edited_bundle(ctx: Ctx, edit: Callable[[dict], None]) -> Path:
    obj = json.loads(ctx.sig.read_bytes())
    edit(obj)
    return _bundle(ctx, json.dumps(obj).encode())


def _seal_args(ctx: Ctx, *extra: object) -> list[object]:
    return ["seal", ctx.model, "--private-key", ctx.key, "--signature", ctx.tmp / "new.sig", *extra]


def _verify_args(ctx: Ctx, sig: Path | None = None, pub: Path | None = None) -> list[object]:
    return ["verify", ctx.model, "--public-key", pub or ctx.pub, "--signature", sig or ctx.sig]


_SEAL_CASES: dict[str, tuple[Callable[[Ctx], list[object]], str]] = {
    "missing key file": (
        lambda c: ["seal", c.model, "--private-key", c.tmp / "nope.key"],
        "private key .*nope.key does not exist",
    ),
    "rsa key": (
        lambda c: ["seal", c.model, "--private-key", _rsa_key(c)],
        "is RSAPrivateKey: use ECDSA",
    ),
    "public key as private key": (
        lambda c: ["seal", c.model, "--private-key", c.pub],
        "is not a PEM private key",
    ),
    "encrypted key without passphrase": (
        lambda c: ["seal", c.model, "--private-key", _encrypted_key(c)],
        "is encrypted: give its passphrase with --passphrase-file",
    ),
    "wrong passphrase": (
        lambda c: [
            *("seal", c.model, "--private-key", _encrypted_key(c)),
            *("--passphrase-file", _passfile(c, "wrong\n")),
        ],
        "wrong passphrase for private key",
    ),
    "passphrase for an unencrypted key": (
        lambda c: ["seal", c.model, "--private-key", c.key, "--passphrase-file", _passfile(c, "x")],
        "is not encrypted: drop the passphrase",
    ),
    "empty passphrase file": (
        lambda c: [
            "seal",
            c.model,
            "--private-key",
            c.key,
            "--passphrase-file",
            _passfile(c, "\n"),
        ],
        "passphrase file .* is empty",
    ),
    "missing passphrase file": (
        lambda c: ["seal", c.model, "--private-key", c.key, "--passphrase-file", c.tmp / "nope"],
        "cannot read passphrase file",
    ),
    "missing model path": (
        lambda c: ["seal", c.tmp / "no-model", "--private-key", c.key],
        "model path .*no-model does not exist",
    ),
    "symlink pointing outside": (
        lambda c: _seal_args(c, "--allow-symlinks") if _link(c, "/etc/hostname") else [],
        "symlink link points outside the model folder",
    ),
    "symlink climbing out": (
        lambda c: _seal_args(c, "--allow-symlinks") if _link(c, "../../..") else [],
        "symlink link points outside the model folder",
    ),
    "symlink refused without --allow-symlinks": (
        lambda c: _seal_args(c) if _link(c, "config.json") else [],
        r"link is a symlink: refused \(pass --allow-symlinks",
    ),
    "fifo in the model": (
        lambda c: _seal_args(c) if _fifo(c) else [],
        "pipe is not a regular file",
    ),
    "shard size zero": (lambda c: _seal_args(c, "--shard-size", "0"), "--shard-size"),
    "shard size negative": (lambda c: _seal_args(c, "--shard-size", "-1"), "--shard-size"),
    "shard size SI unit": (lambda c: _seal_args(c, "--shard-size", "1GB"), "1GiB"),
    "shard size not a number": (lambda c: _seal_args(c, "--shard-size", "big"), "--shard-size"),
    "shard size with blake3": (
        lambda c: _seal_args(c, "--shard-size", "1MiB", "--hash", "blake3"),
        "--shard-size applies to sha256 only",
    ),
    "unknown hash": (lambda c: _seal_args(c, "--hash", "md5"), "invalid choice: 'md5'"),
    "ignore path outside": (
        lambda c: _seal_args(c, "--ignore-paths", str(c.tmp)),
        "--ignore-paths .* is outside the model folder",
    ),
    "ignore path climbing out": (
        lambda c: _seal_args(c, "--ignore-paths", "../x"),
        "--ignore-paths ../x climbs out of the model folder",
    ),
    "zero workers": (lambda c: _seal_args(c, "--workers", "0"), "--workers"),
    "negative workers": (lambda c: _seal_args(c, "--workers", "-2"), "--workers"),
    "signature in a missing folder": (
        lambda c: ["seal", c.model, "--private-key", c.key, "--signature", c.tmp / "no" / "x.sig"],
        "folder .* does not exist",
    ),
}

_VERIFY_CASES: dict[str, tuple[Callable[[Ctx], list[object]], str]] = {
    "missing public key": (
        lambda c: _verify_args(c, pub=c.tmp / "nope.pub"),
        "public key .*nope.pub does not exist",
    ),
    "private key as public key": (
        lambda c: _verify_args(c, pub=c.key),
        "holds a private key: pass the .pub file instead",
    ),
    "missing signature": (
        lambda c: _verify_args(c, sig=c.tmp / "nope.sig"),
        "does not exist: seal the model first",
    ),
    "corrupt bundle": (
        lambda c: _verify_args(c, sig=_bundle(c, b"\x00\x9f garbage \xff")),
        "bundle is not valid JSON",
    ),
    "truncated bundle": (
        lambda c: _verify_args(c, sig=_bundle(c, c.sig.read_bytes()[: c.sig.stat().st_size // 2])),
        "was it truncated",
    ),
    "empty bundle": (lambda c: _verify_args(c, sig=_bundle(c, b"")), "was it truncated"),
    "deeply nested bundle": (
        lambda c: _verify_args(c, sig=_bundle(c, b"[" * 200_000 + b"]" * 200_000)),
        "nested too deeply",
    ),
    "bundle with an unknown field": (
        lambda c: _verify_args(c, sig=_edited_bundle(c, lambda o: o.update(extra=True))),
        r"unknown field\(s\) in bundle: \['extra'\]",
    ),
    "bundle with an unknown envelope field": (
        lambda c: _verify_args(
            c, sig=_edited_bundle(c, lambda o: o["dsseEnvelope"].update(note="x"))
        ),
        r"unknown field\(s\) in dsseEnvelope",
    ),
    "bundle with an unknown payload field": (
        lambda c: _verify_args(c, sig=_reseal_with_extra_statement_field(c)),
        r"unknown field\(s\) in statement",
    ),
    "bundle signed by another key": (
        lambda c: _verify_args(c, sig=_bundle_by(c, c.other_key)),
        "sealed with a different key",
    ),
    "model missing": (
        lambda c: ["verify", c.tmp / "gone", "--public-key", c.pub, "--signature", c.sig],
        "model path .*gone does not exist",
    ),
    "symlink planted after sealing": (
        lambda c: _verify_args(c) if _link(c, "/etc/hostname") else [],
        "link is a symlink: refused",
    ),
}


def _bundle_by(ctx: Ctx, private: Path) -> Path:
    path = ctx.tmp / "other.sig"
    seal(ctx.model, load_private_key(private), signature_path=path)
    return path


def _reseal_with_extra_statement_field(ctx: Ctx) -> Path:
    """A correctly signed bundle whose statement has an unknown field."""
    obj = json.loads(ctx.sig.read_bytes())
    statement = json.loads(base64.b64decode(obj["dsseEnvelope"]["payload"]))
    statement["comment"] = "unsigned metadata"
    payload = json.dumps(statement).encode()
    return _bundle(ctx, make_bundle(payload, load_private_key(ctx.key)))


@pytest.fixture
def ctx(make_model, key_pair, other_key_pair, tmp_path) -> Ctx:
    model = make_model(FILES)
    sig = tmp_path / "model.sig"
    seal(model, load_private_key(key_pair.private), signature_path=sig)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Ctx(
        model=model,
        sig=sig,
        key=key_pair.private,
        pub=key_pair.public,
        other_key=other_key_pair.private,
        tmp=scratch,
    )


@pytest.mark.parametrize("case", list(_SEAL_CASES) + list(_VERIFY_CASES))
def test_a_bad_input_exits_2_with_a_one_line_reason(ctx, cli, case):
    """Usage, key and format errors: exit 2, a single stderr line that says why, no traceback."""
    build, pattern = {**_SEAL_CASES, **_VERIFY_CASES}[case]
    result = cli(*build(ctx))
    line = result.usage_error()
    assert result.stdout == ""
    assert re.search(pattern, line), line
    assert not (ctx.tmp / "new.sig").exists()


@pytest.mark.usefixtures("unreadable_files_possible")
def test_a_file_root_cannot_read_is_a_clear_error(ctx, cli):
    """A mode-000 file (read without CAP_DAC_OVERRIDE when root): exit 2 naming the file."""
    target = ctx.model / "w" / "model.safetensors"
    target.chmod(0)
    try:
        sealed = cli(*_seal_args(ctx), honour_file_modes=True)
        verified = cli(*_verify_args(ctx), honour_file_modes=True)
    finally:
        target.chmod(0o644)
    for result in (sealed, verified):
        assert "cannot read w/model.safetensors: Permission denied" in result.usage_error()


@pytest.mark.usefixtures("unreadable_files_possible")
def test_a_folder_root_cannot_list_is_a_clear_error(ctx, cli):
    """A mode-000 folder inside the model: exit 2 naming it."""
    (ctx.model / "w").chmod(0)
    try:
        result = cli(*_seal_args(ctx), honour_file_modes=True)
    finally:
        (ctx.model / "w").chmod(0o755)
    assert "cannot list" in result.usage_error()


def test_a_signature_path_that_is_a_folder_exits_2(ctx, cli):
    """--signature naming an existing folder is a usage error with a one-line reason."""
    folder = ctx.tmp / "sigdir"
    folder.mkdir()
    cli("seal", ctx.model, "--private-key", ctx.key, "--signature", folder).usage_error()


def test_an_unexpected_failure_never_exits_0_or_1(ctx, cli):
    """Exit 1 means "tampered"; a failure to write the seal must never look like a verdict."""
    folder = ctx.tmp / "sigdir"
    folder.mkdir()
    result = cli("seal", ctx.model, "--private-key", ctx.key, "--signature", folder)
    assert result.code not in (0, 1), result
    assert result.stderr.splitlines()[-1].startswith("weightwarden: ")
