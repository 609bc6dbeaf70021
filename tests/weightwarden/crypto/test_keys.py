"""Signing keys: generated, written 0600 without overwriting, loaded strictly, signing right."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from weightwarden.crypto.keys import (
    KeyType,
    PrivateKey,
    generate_key,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from weightwarden.errors import KeyFileError

if TYPE_CHECKING:
    from pathlib import Path

PASS = b"correct horse battery staple"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_pem(path: Path, key, fmt=serialization.PrivateFormat.PKCS8) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    )
    return path


def write_public_pem(path: Path, key) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.parametrize("key_type", list(KeyType))
def test_a_written_key_pair_loads_back_and_signs(tmp_path, key_type):
    """Every generated type round-trips through its PEM files and verifies its own signatures."""
    key = generate_key(key_type)
    private, public = write_key_pair(key, tmp_path / "k")
    assert (private.name, public.name) == ("k.key", "k.pub")
    loaded, pub = load_private_key(private), load_public_key(public)
    assert pub.pem == key.public.pem == loaded.public.pem
    signature = loaded.sign(b"payload")
    assert pub.verify(signature, b"payload")
    assert not pub.verify(signature, b"payloaD")


def test_the_default_key_type_is_ecdsa_p256():
    """ECDSA P-256 is what the reference verifier accepts, so it is the default."""
    key = generate_key()
    assert isinstance(key.key, ec.EllipticCurvePrivateKey)
    assert key.key.curve.name == "secp256r1"


@pytest.mark.parametrize(
    ("key_type", "algorithm"),
    [(KeyType.ECDSA_P256, hashes.SHA256()), (KeyType.ECDSA_P384, hashes.SHA384())],
)
def test_ecdsa_signatures_are_der_with_the_curves_hash(key_type, algorithm):
    """P-256 signs with SHA-256 and P-384 with SHA-384, as model_signing expects."""
    key = generate_key(key_type)
    signature = key.sign(b"data")
    assert isinstance(key.key, ec.EllipticCurvePrivateKey)
    key.key.public_key().verify(signature, b"data", ec.ECDSA(algorithm))


def test_a_p521_key_in_sec1_form_loads_and_signs_with_sha512(tmp_path):
    """P-521 is loadable (not generated), also as a SEC1 "EC PRIVATE KEY" file."""
    raw = ec.generate_private_key(ec.SECP521R1())
    path = write_pem(tmp_path / "p521.key", raw, serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"BEGIN EC PRIVATE KEY" in path.read_bytes()
    signature = load_private_key(path).sign(b"data")
    raw.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA512()))


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o777])
def test_the_private_key_is_0600_and_the_public_key_0644_whatever_the_umask(tmp_path, umask):
    """The modes are what is promised, neither loosened nor tightened by the umask."""
    old = os.umask(umask)
    try:
        private, public = write_key_pair(generate_key(), tmp_path / "k")
    finally:
        os.umask(old)
    assert (mode(private), mode(public)) == (0o600, 0o644)


def test_the_private_key_file_is_pkcs8_pem(tmp_path):
    """PKCS#8 PEM, and the public key is SubjectPublicKeyInfo PEM."""
    private, public = write_key_pair(generate_key(), tmp_path / "k")
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")


@pytest.mark.parametrize("existing", ["k.key", "k.pub"])
def test_an_existing_key_file_is_never_overwritten(tmp_path, existing):
    """Either file already there: KeyFileError, that file untouched, the other not created."""
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="already exists: choose another --out prefix"):
        write_key_pair(generate_key(), tmp_path / "k")
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_a_key_pair_cannot_be_written_into_a_missing_folder(tmp_path):
    """The error names the path instead of raising an OSError."""
    with pytest.raises(KeyFileError, match=r"cannot create .*k\.key"):
        write_key_pair(generate_key(), tmp_path / "missing" / "k")


def test_a_passphrase_encrypts_the_private_key(tmp_path):
    """The file is encrypted PKCS#8; it loads with the passphrase only."""
    private, _ = write_key_pair(generate_key(), tmp_path / "k", passphrase=PASS)
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert load_private_key(private, PASS).sign(b"x")
    with pytest.raises(KeyFileError, match="is encrypted: give its passphrase"):
        load_private_key(private)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(private, b"wrong")


def test_a_passphrase_for_an_unencrypted_key_is_refused(tmp_path):
    """A passphrase that protects nothing is a mistake worth reporting."""
    private, _ = write_key_pair(generate_key(), tmp_path / "k")
    with pytest.raises(KeyFileError, match="is not encrypted: drop the passphrase"):
        load_private_key(private, PASS)


def test_an_rsa_private_key_is_refused_by_name(tmp_path):
    """RSA is not a supported type; the message says which types are."""
    path = write_pem(tmp_path / "rsa.key", rsa.generate_private_key(65537, 2048))
    with pytest.raises(KeyFileError, match=r"is RSAPrivateKey: use ECDSA P-256/P-384/P-521"):
        load_private_key(path)


def test_an_rsa_public_key_is_refused_by_name(tmp_path):
    """The same holds for verification keys."""
    path = write_public_pem(tmp_path / "rsa.pub", rsa.generate_private_key(65537, 2048))
    with pytest.raises(KeyFileError, match="is RSAPublicKey"):
        load_public_key(path)


@pytest.mark.parametrize("curve", [ec.SECP256K1(), ec.BrainpoolP256R1(), ec.SECP224R1()])
def test_ecdsa_curves_other_than_nist_p256_p384_p521_are_refused(tmp_path, curve):
    """A 256-bit curve is not P-256: secp256k1 and brainpool seals would fail the reference."""
    raw = ec.generate_private_key(curve)
    with pytest.raises(KeyFileError, match=f"unsupported ECDSA curve {curve.name}"):
        load_private_key(write_pem(tmp_path / "k.key", raw))
    with pytest.raises(KeyFileError, match=f"unsupported ECDSA curve {curve.name}"):
        load_public_key(write_public_pem(tmp_path / "k.pub", raw))


def test_a_public_key_passed_as_the_private_key_is_refused(tmp_path):
    """Mixing up the two files is a clear KeyFileError."""
    _, public = write_key_pair(generate_key(), tmp_path / "k")
    with pytest.raises(KeyFileError, match="is not a PEM private key"):
        load_private_key(public)


def test_a_private_key_passed_as_the_public_key_is_refused(tmp_path):
    """Verifying never needs the private key; passing it says to pass the .pub instead."""
    private, _ = write_key_pair(generate_key(), tmp_path / "k")
    with pytest.raises(KeyFileError, match=r"holds a private key: pass the \.pub file"):
        load_public_key(private)


@pytest.mark.parametrize("loader", [load_private_key, load_public_key])
def test_unreadable_key_inputs_are_key_errors(tmp_path, loader):
    """Missing, a folder, too large, not PEM: each is a KeyFileError naming the path."""
    with pytest.raises(KeyFileError, match="does not exist"):
        loader(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="is a directory"):
        loader(tmp_path)
    huge = tmp_path / "huge"
    huge.write_bytes(b"-" * (64 * 1024 + 1))
    with pytest.raises(KeyFileError, match="bytes: not a"):
        loader(huge)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x30\x82 not pem")
    with pytest.raises(KeyFileError, match="is not a PEM"):
        loader(garbage)


def test_the_hint_is_the_sha256_of_the_pem_public_key():
    """As OpenSSF model signing records it in verificationMaterial.publicKey.hint."""
    key = generate_key()
    assert key.public.hint == hashlib.sha256(key.public.pem).hexdigest()


def test_a_private_key_repr_shows_no_key_material():
    """Logging or printing a key never reveals it."""
    key = generate_key(KeyType.ED25519)
    assert repr(key) == "PrivateKey(Ed25519PrivateKey)"
    assert isinstance(key, PrivateKey)
    raw = key.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert raw.hex() not in repr(key)


def test_only_ecdsa_keys_are_flagged_for_the_reference_verifier():
    """is_ecdsa tells the CLI when to warn that the reference verifier will refuse a seal."""
    assert generate_key(KeyType.ECDSA_P384).public.is_ecdsa
    assert not generate_key(KeyType.ED25519).public.is_ecdsa
    assert isinstance(generate_key(KeyType.ED25519).key, ed25519.Ed25519PrivateKey)
