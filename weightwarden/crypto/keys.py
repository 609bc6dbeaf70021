"""Signing keys: generate, store (PEM PKCS#8, mode 0600), load, sign and verify.

Supported key types are ECDSA P-256 (the default, and what the OpenSSF model-signing
reference verifier accepts), ECDSA P-384, ECDSA P-521 (load only) and Ed25519 (weightwarden
verifies it; the reference verifier does not). ECDSA signatures are DER-encoded and hash
with SHA-256, SHA-384 or SHA-512 by curve size, as model_signing does.

Key material never reaches a log line. Private key files are created with ``O_EXCL`` and
mode 0600 so there is no window in which they are readable by others; an existing file is
never overwritten.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from weightwarden.errors import KeyFileError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "write_key_pair",
]

_MAX_KEY_FILE_BYTES = 64 * 1024


class KeyType(StrEnum):
    """Key algorithms weightwarden can generate."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    ED25519 = "ed25519"


_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.ECDSA_P256: ec.SECP256R1(),
    KeyType.ECDSA_P384: ec.SECP384R1(),
}
# By curve name, not key size: secp256k1 and brainpoolP256r1 are 256-bit too, and the
# reference verifier accepts only these three NIST curves.
_EC_HASH_BY_CURVE: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}

_SupportedPrivate = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_SupportedPublic = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def _ec_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    try:
        return _EC_HASH_BY_CURVE[key.curve.name]()
    except KeyError:
        raise KeyFileError(
            f"unsupported ECDSA curve {key.curve.name}: use P-256, P-384 or P-521"
        ) from None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key."""

    key: _SupportedPublic

    @property
    def pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, the form model_signing hashes into its key hint."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def hint(self) -> str:
        """SHA-256 hex of the PEM public key, as OpenSSF model signing records it."""
        return hashlib.sha256(self.pem).hexdigest()

    @property
    def is_ecdsa(self) -> bool:
        """Whether this is an ECDSA key (the only kind the reference verifier accepts)."""
        return isinstance(self.key, ec.EllipticCurvePublicKey)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Return whether ``signature`` is this key's signature over ``data``."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, data, ec.ECDSA(_ec_hash(self.key)))
            else:
                self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A signing key. Its repr never shows key material."""

    key: _SupportedPrivate

    def __repr__(self) -> str:
        return f"PrivateKey({type(self.key).__name__})"

    @property
    def public(self) -> PublicKey:
        """The matching verification key."""
        return PublicKey(self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``: DER ECDSA with the curve's hash, or raw Ed25519."""
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(data, ec.ECDSA(_ec_hash(self.key.public_key())))
        return self.key.sign(data)


def generate_key(key_type: KeyType = KeyType.ECDSA_P256) -> PrivateKey:
    """Generate a new private key of ``key_type``."""
    if key_type is KeyType.ED25519:
        return PrivateKey(ed25519.Ed25519PrivateKey.generate())
    return PrivateKey(ec.generate_private_key(_CURVES[key_type]))


def write_key_pair(
    key: PrivateKey, prefix: Path, passphrase: bytes | None = None
) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PKCS#8 PEM, 0600) and ``PREFIX.pub``; refuse to overwrite either.

    Raises:
        KeyFileError: a file already exists or cannot be written.
    """
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(
                f"{path} already exists: choose another --out prefix or move it away"
            )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_exclusive(private_path, private_pem, 0o600)
    _write_exclusive(public_path, key.public.pem, 0o644)
    return private_path, public_path


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)  # the umask must not loosen or tighten what we promise
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} is {size} bytes: not a {what} key file")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} key {path} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"{what} key {path} is a directory, not a PEM file") from None
    except PermissionError:
        raise KeyFileError(f"{what} key {path} is not readable by this user") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} key {path}: {exc.strerror}") from exc


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key; ECDSA P-256/384/521 or Ed25519.

    Raises:
        KeyFileError: missing, unreadable, not PEM, encrypted without a passphrase, wrong
            passphrase, or an unsupported key type.
    """
    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyFileError(
                f"private key {path} is encrypted: give its passphrase with --passphrase-file"
            ) from None
        raise KeyFileError(f"private key {path} is not encrypted: drop the passphrase") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"wrong passphrase for private key {path}") from exc
        raise KeyFileError(f"{path} is not a PEM private key (PKCS#8 or SEC1)") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _ec_hash(key.public_key())
        return PrivateKey(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return PrivateKey(key)
    raise KeyFileError(
        f"private key {path} is {type(key).__name__.removeprefix('_')}: "
        "use ECDSA P-256/P-384/P-521 or Ed25519 (weightwarden keys generate)"
    )


def load_public_key(path: Path) -> PublicKey:
    """Load a PEM public key (SubjectPublicKeyInfo); ECDSA P-256/384/521 or Ed25519.

    Raises:
        KeyFileError: missing, unreadable, not a PEM public key, or an unsupported type.
    """
    data = _read_key_file(path, "public")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} holds a private key: pass the .pub file instead")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not a PEM public key") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        _ec_hash(key)
        return PublicKey(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return PublicKey(key)
    raise KeyFileError(
        f"public key {path} is {type(key).__name__.removeprefix('_')}: "
        "use ECDSA P-256/P-384/P-521 or Ed25519"
    )
