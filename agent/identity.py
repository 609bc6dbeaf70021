"""The agent's identity key: the ECDSA P-256 key that signs every batch it ships.

The key lives in the agent's state folder as ``identity.key`` (PKCS#8 PEM, mode 0600)
beside ``identity.pub``. It is written whole to a temporary file created with ``O_EXCL``
and mode 0600, then hard-linked into place: never readable by others, never seen
half-written, never overwritten. :func:`load_or_create_identity` creates both on the first start and
loads them on every later one. The collector learns the public key at enrollment
(:mod:`agent.enroll`) and from then on accepts only batches this key signed, so losing
the key means enrolling again, and a copied key lets the copier speak for the agent:
the file is checked to be a private key of the right type, readable by its owner only.

What can go wrong, each a :class:`~weightwarden.errors.KeyFileError` naming the file:

- ``identity.key`` is not a PEM private key (truncated or edited), or is of another type
  (Ed25519, P-384, RSA): the agent will not guess; restore it or, if the agent was never
  enrolled, delete both files and start again.
- ``identity.key`` is readable by group or others: ``chmod 600`` it (and consider it
  leaked).
- ``identity.pub`` does not match ``identity.key``, or exists without it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from weightwarden.crypto.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    generate_key,
    load_private_key,
    load_public_key,
)
from weightwarden.errors import KeyFileError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["IDENTITY_NAME", "AgentIdentity", "load_or_create_identity"]

IDENTITY_NAME: Final = "identity"
"""File name stem in the state folder: ``identity.key`` and ``identity.pub``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentIdentity:
    """The agent's signing key and where it is kept. Its repr shows no key material.

    Attributes:
        key: The private key (ECDSA P-256) that signs batches.
        state_dir: The folder holding ``identity.key``, ``identity.pub`` and, once
            enrolled, ``enrollment.json``.
        created: Whether this call generated the key (the first start).
    """

    key: PrivateKey
    state_dir: Path
    created: bool = False

    @property
    def public(self) -> PublicKey:
        """The public key the collector registers at enrollment."""
        return self.key.public

    @property
    def key_path(self) -> Path:
        """``STATE_DIR/identity.key``."""
        return self.state_dir / f"{IDENTITY_NAME}.key"

    @property
    def public_path(self) -> Path:
        """``STATE_DIR/identity.pub``."""
        return self.state_dir / f"{IDENTITY_NAME}.pub"

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of the public key PEM (what ``enrollment.json`` records)."""
        return self.public.hint


def load_or_create_identity(state_dir: Path) -> AgentIdentity:
    """Load the agent's identity key from ``state_dir``; create it on the first start.

    Creates ``state_dir`` (mode 0700) if missing. If another process creates the key at
    the same moment, exactly one key wins and both load it. A missing ``identity.pub``
    beside an existing key is written again from the key.

    Raises:
        KeyFileError: The key file is corrupt, of the wrong type, readable by group or
            others, or does not match ``identity.pub``; or the folder cannot be written.
    """
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create the agent state folder {state_dir}: {exc.strerror or exc}"
        ) from exc
    key_path = state_dir / f"{IDENTITY_NAME}.key"
    public_path = state_dir / f"{IDENTITY_NAME}.pub"
    created = False
    if not _exists(key_path):
        if _exists(public_path):
            raise KeyFileError(
                f"{public_path} exists but {key_path} does not: the identity key was lost. "
                "Restore it from backup, or move the .pub away, start again and re-enroll "
                "this agent with a new token"
            )
        pem = generate_key(KeyType.ECDSA_P256).key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        created = _publish(key_path, pem, 0o600)
    key = _load_key(key_path)
    _publish(public_path, key.public.pem, 0o644)
    if load_public_key(public_path).pem != key.public.pem:
        raise KeyFileError(
            f"{public_path} does not match {key_path}: one of them was replaced. Restore "
            f"the pair, or delete {public_path} to write it again from the key"
        )
    return AgentIdentity(key=key, state_dir=state_dir, created=created)


def _exists(path: Path) -> bool:
    """Whether anything (even a dangling symlink) is at ``path``."""
    return os.path.lexists(path)


def _load_key(path: Path) -> PrivateKey:
    """Load and check the identity key: a private P-256 key that only its owner can read."""
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read identity key {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"identity key {path} is not a regular file")
    if mode & 0o077:
        raise KeyFileError(
            f"identity key {path} has mode {stat.S_IMODE(mode):04o}: it must be readable by "
            f"its owner only (chmod 600 {path}); treat a key others could read as leaked"
        )
    try:
        key = load_private_key(path)
    except KeyFileError as exc:
        raise KeyFileError(
            f"identity key {path} is unusable ({exc}). Restore it from backup; if this "
            "agent was never enrolled, delete identity.key and identity.pub and start again"
        ) from exc
    inner = key.key
    if not isinstance(inner, ec.EllipticCurvePrivateKey) or inner.curve.name != "secp256r1":
        kind = inner.curve.name if isinstance(inner, ec.EllipticCurvePrivateKey) else "Ed25519"
        raise KeyFileError(
            f"identity key {path} is {kind}, not ECDSA P-256: agent identities are P-256 "
            "keys that weightwarden generates; move it away and re-enroll this agent"
        )
    return key


def _publish(path: Path, data: bytes, mode: int) -> bool:
    """Put ``data`` at ``path`` complete or not at all, never replacing a file there.

    The bytes go to a temporary file (``O_EXCL``, ``mode``) that is synced and then
    hard-linked to ``path``: a concurrent reader sees no file or the whole key, never a
    half-written one, and of two concurrent creators exactly one wins.

    Returns:
        Whether this call created ``path`` (False: something was there already).

    Raises:
        KeyFileError: The folder cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask must neither loosen nor tighten what we promise
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
                out.flush()
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return True
