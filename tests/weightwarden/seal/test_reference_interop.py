"""Interoperability with the OpenSSF reference, model_signing 1.1.1, in both directions.

Our seals must pass model_signing's verifier (its CLI for default seals, its Python API for
sharded and blake3 seals, which its CLI cannot verify), and bundles made by model_signing's
CLI and API must pass ``weightwarden verify``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weightwarden.crypto.keys import load_private_key
from weightwarden.seal import SealOptions, seal

pytestmark = pytest.mark.reference

FILES = {
    "config.json": b'{"hidden_size": 64}\n',
    "weights/model-00001-of-00002.safetensors": hashlib.shake_256(b"interop-1").digest(5000),
    "weights/model-00002-of-00002.safetensors": hashlib.shake_256(b"interop-2").digest(3000),
    "a/b": b"1",
    "a.b": b"2",
    "empty": b"",
}


def reference_cli() -> Path:
    path = Path(sys.executable).with_name("model_signing")
    if not path.is_file():
        pytest.skip("model_signing's CLI is not installed beside this interpreter")
    return path


def reference_sign(model: Path, sig: Path, private_key: Path, **hashing_kwargs) -> None:
    """Sign with model_signing's Python API (ECDSA key mode)."""
    hashing = pytest.importorskip("model_signing.hashing")
    signing = pytest.importorskip("model_signing.signing")
    config = signing.Config().use_elliptic_key_signer(private_key=private_key)
    if hashing_kwargs:
        config.set_hashing_config(hashing.Config().use_shard_serialization(**hashing_kwargs))
    config.sign(model, sig)


# ------------------------------------------------------------ our seals, their verifier


def test_a_default_seal_passes_the_reference_cli(make_model, key_pair, cli, tmp_path):
    """`model_signing verify key` accepts `weightwarden seal` with default options."""
    model = make_model(FILES)
    sig = tmp_path / "model.sig"
    assert cli("seal", model, "--private-key", key_pair.private, "--signature", sig).code == 0
    proc = subprocess.run(
        [
            reference_cli(),
            "verify",
            "key",
            model,
            "--public_key",
            key_pair.public,
            "--signature",
            sig,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verification succeeded" in proc.stdout


@pytest.mark.parametrize(
    "options",
    [
        SealOptions(),
        SealOptions(shard_size=1024),
        SealOptions(shard_size=1 << 30),
        SealOptions(hash="blake3"),
        SealOptions(ignore_paths=("a",)),
    ],
    ids=["files", "shards-1KiB", "shards-1GiB", "blake3", "ignore-paths"],
)
def test_our_seals_pass_the_reference_api(
    make_model, key_pair, reference_verify, tmp_path, options
):
    """Sharded (--shard-size) and --hash blake3 seals verify through model_signing's API."""
    model = make_model(FILES)
    sig = tmp_path / "model.sig"
    seal(model, load_private_key(key_pair.private), signature_path=sig, options=options)
    assert reference_verify(model, sig, key_pair.public) is None
    (model / "a.b").write_bytes(b"tampered")
    assert isinstance(reference_verify(model, sig, key_pair.public), ValueError)


def test_a_p384_seal_passes_the_reference(make_model, p384_key_pair, reference_verify, tmp_path):
    """ECDSA P-384 (signed over SHA-384) is accepted too."""
    model = make_model(FILES)
    sig = tmp_path / "model.sig"
    seal(model, load_private_key(p384_key_pair.private), signature_path=sig)
    assert reference_verify(model, sig, p384_key_pair.public) is None


def test_a_single_file_seal_passes_the_reference(tmp_path, key_pair, reference_verify):
    """The "." resource of a single-file model is what model_signing expects."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(2048))
    sig = seal(weights, load_private_key(key_pair.private)).signature_path
    assert reference_verify(weights, sig, key_pair.public) is None


def test_a_seal_stored_inside_the_model_folder_passes_the_reference(
    make_model, key_pair, reference_verify
):
    """The signature's own name is recorded in ignore_paths, which model_signing honours."""
    model = make_model(FILES)
    sig = model / "model.sig"
    seal(model, load_private_key(key_pair.private), signature_path=sig)
    assert reference_verify(model, sig, key_pair.public) is None


def test_an_ed25519_seal_is_refused_by_the_reference(
    make_model, ed25519_key_pair, reference_verify, cli, tmp_path
):
    """Documented: model_signing's key mode takes ECDSA only, and `seal` says so on stderr."""
    model = make_model(FILES)
    sig = tmp_path / "model.sig"
    sealed = cli("seal", model, "--private-key", ed25519_key_pair.private, "--signature", sig)
    assert sealed.code == 0, sealed
    assert "Ed25519 seals verify with weightwarden only" in sealed.stderr
    verified = cli("verify", model, "--public-key", ed25519_key_pair.public, "--signature", sig)
    assert verified.code == 0, verified
    assert reference_verify(model, sig, ed25519_key_pair.public) is not None


# ------------------------------------------------------------ their bundles, our verifier


def _check_with_weightwarden(cli, model: Path, sig: Path, public: Path, tamper: str) -> None:
    """Intact -> exit 0; then one byte of ``tamper`` flipped -> exit 1 naming it."""
    intact = cli("verify", model, "--public-key", public, "--signature", sig, "--json")
    assert (intact.code, intact.json()["intact"]) == (0, True), intact
    with (model / tamper).open("r+b") as fh:
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    tampered = cli("verify", model, "--public-key", public, "--signature", sig, "--json")
    assert tampered.code == 1, tampered
    assert tampered.json()["modified"] == [tamper]


def test_a_bundle_from_the_reference_cli_passes_weightwarden_verify(
    make_model, key_pair, cli, tmp_path
):
    """`model_signing sign key` -> `weightwarden verify` exits 0, then 1 after tampering."""
    model = make_model(FILES)
    sig = tmp_path / "ref.sig"
    proc = subprocess.run(
        [
            reference_cli(),
            "sign",
            "key",
            model,
            "--private_key",
            key_pair.private,
            "--signature",
            sig,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_with_weightwarden(
        cli, model, sig, key_pair.public, "weights/model-00002-of-00002.safetensors"
    )


def test_a_reference_bundle_inside_the_model_folder_passes_weightwarden_verify(
    make_model, key_pair, cli
):
    """model_signing ignores its own signature file by name; so does weightwarden."""
    model = make_model(FILES)
    sig = model / "model.sig"
    reference_sign(model, sig, key_pair.private)
    _check_with_weightwarden(cli, model, sig, key_pair.public, "config.json")


@pytest.mark.parametrize("shard_size", [1000, 4096, 1_000_000_000])
def test_a_sharded_reference_bundle_passes_weightwarden_verify(
    make_model, key_pair, cli, tmp_path, shard_size
):
    """use_shard_serialization bundles (shard_size written as a float) verify here."""
    model = make_model(FILES)
    sig = tmp_path / "ref.sig"
    reference_sign(model, sig, key_pair.private, shard_size=shard_size)
    _check_with_weightwarden(
        cli, model, sig, key_pair.public, "weights/model-00001-of-00002.safetensors"
    )


def test_a_blake3_reference_bundle_passes_weightwarden_verify(make_model, key_pair, cli, tmp_path):
    """model_signing's blake3 (which it never shards) verifies here."""
    model = make_model(FILES)
    sig = tmp_path / "ref.sig"
    reference_sign(model, sig, key_pair.private, hashing_algorithm="blake3")
    payload = json.loads(sig.read_bytes())["dsseEnvelope"]["payload"]
    statement = json.loads(base64.b64decode(payload))
    assert statement["predicate"]["serialization"]["hash_type"] == "blake3"
    _check_with_weightwarden(cli, model, sig, key_pair.public, "a/b")


def test_a_p384_reference_bundle_passes_weightwarden_verify(
    make_model, p384_key_pair, cli, tmp_path
):
    """model_signing's P-384 signatures (over SHA-384) verify here."""
    model = make_model(FILES)
    sig = tmp_path / "ref.sig"
    reference_sign(model, sig, p384_key_pair.private)
    _check_with_weightwarden(cli, model, sig, p384_key_pair.public, "config.json")


def test_the_reference_refuses_unknown_bundle_fields_as_weightwarden_does(
    make_model, key_pair, reference_verify, cli, tmp_path
):
    """Both parsers are strict: an extra top-level field is refused by each."""
    model = make_model(FILES)
    sig = tmp_path / "model.sig"
    seal(model, load_private_key(key_pair.private), signature_path=sig)
    obj = json.loads(sig.read_bytes())
    obj["extra"] = {}
    sig.write_text(json.dumps(obj))
    assert reference_verify(model, sig, key_pair.public) is not None
    line = cli("verify", model, "--public-key", key_pair.public, "--signature", sig).usage_error()
    assert "unknown field(s) in bundle: ['extra']" in line
