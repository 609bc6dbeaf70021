"""The Sigstore bundle (v0.3 JSON) holding a DSSE envelope, as OpenSSF model signing writes it.

Key mode: ``verificationMaterial.publicKey.hint`` is the SHA-256 hex of the PEM public key,
``tlogEntries`` is empty, and the envelope carries one signature over the DSSE
pre-authentication encoding (PAE) of the in-toto payload.

Reading is strict (no unknown fields, every type checked) and verification comes before
decoding: :func:`open_bundle` returns the payload bytes only after the signature checks
out against the given key, so unverified bytes never become a manifest.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightwarden.errors import BundleFormatError, KeyFileError

if TYPE_CHECKING:
    from pathlib import Path

    from weightwarden.crypto.keys import PrivateKey, PublicKey

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "SignatureCheck",
    "make_bundle",
    "open_bundle",
    "pae",
    "read_bundle_file",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
_MAX_BUNDLE_BYTES = 256 << 20


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def make_bundle(payload: bytes, key: PrivateKey) -> bytes:
    """Sign ``payload`` (an in-toto statement) and wrap it in a bundle, as JSON bytes."""
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.public.hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2) + "\n").encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureCheck:
    """The outcome of checking a bundle's signature: the payload only if it verified."""

    valid: bool
    payload: bytes | None
    reason: str = ""


def read_bundle_file(path: Path) -> bytes:
    """Read a bundle file, bounded in size.

    Raises:
        BundleFormatError: missing, unreadable, or too large to be a bundle.
    """
    try:
        size = path.stat().st_size
        if size > _MAX_BUNDLE_BYTES:
            raise BundleFormatError(f"signature {path} is {size} bytes: too large to be a bundle")
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleFormatError(f"signature {path} does not exist: seal the model first") from None
    except IsADirectoryError:
        raise BundleFormatError(f"signature {path} is a directory, not a bundle file") from None
    except OSError as exc:
        raise BundleFormatError(f"cannot read signature {path}: {exc.strerror}") from exc


def _field(obj: dict[str, Any], key: str, kind: type, where: str, *, optional: bool = False) -> Any:  # noqa: ANN401
    if key not in obj:
        if optional:
            return None
        raise BundleFormatError(f"bundle: {where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise BundleFormatError(f"bundle: {where}.{key} must be a {kind.__name__}")
    return value


def _only(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BundleFormatError(f"bundle: unknown field(s) in {where}: {unknown}")


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleFormatError(f"bundle: {where} is not valid base64") from None


def _parse_material(material: dict[str, Any]) -> str | None:
    """Return the public-key hint, if any; refuse transparency-log (keyless) bundles."""
    _only(material, {"publicKey", "tlogEntries"}, "verificationMaterial")
    key_id = _field(material, "publicKey", dict, "verificationMaterial")
    _only(key_id, {"hint"}, "verificationMaterial.publicKey")
    hint: str | None = _field(key_id, "hint", str, "verificationMaterial.publicKey", optional=True)
    if _field(material, "tlogEntries", list, "verificationMaterial", optional=True):
        raise BundleFormatError(
            "bundle carries transparency-log entries: this is a Sigstore (keyless) bundle, "
            "not a key-mode seal"
        )
    return hint


def _parse_envelope(envelope: dict[str, Any]) -> tuple[bytes, str, bytes]:
    """Return payload, payload type and the first signature of a DSSE envelope."""
    _only(envelope, {"payload", "payloadType", "signatures"}, "dsseEnvelope")
    payload = _b64(_field(envelope, "payload", str, "dsseEnvelope"), "dsseEnvelope.payload")
    payload_type: str = _field(envelope, "payloadType", str, "dsseEnvelope")
    if payload_type != PAYLOAD_TYPE:
        raise BundleFormatError(f"bundle: payloadType {payload_type!r} is not {PAYLOAD_TYPE}")
    signatures = _field(envelope, "signatures", list, "dsseEnvelope")
    if not signatures:
        raise BundleFormatError("bundle: dsseEnvelope.signatures is empty")
    for i, sig_obj in enumerate(signatures):
        where = f"dsseEnvelope.signatures[{i}]"
        if not isinstance(sig_obj, dict):
            raise BundleFormatError(f"bundle: {where} is not an object")
        _only(sig_obj, {"sig", "keyid"}, where)
        _field(sig_obj, "keyid", str, where, optional=True)
        _field(sig_obj, "sig", str, where)
    # As the reference verifier does, only the first signature counts.
    return payload, payload_type, _b64(signatures[0]["sig"], "dsseEnvelope.signatures[0].sig")


def open_bundle(data: bytes, public_key: PublicKey) -> SignatureCheck:
    """Parse a bundle strictly and check its signature against ``public_key``.

    Returns:
        A :class:`SignatureCheck` whose payload is set only when the signature verifies.

    Raises:
        BundleFormatError: not JSON, not a v0.3 bundle, unknown fields, bad encodings.
        KeyFileError: the bundle names a different public key (its hint does not match).
    """
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleFormatError(f"bundle is not valid JSON ({exc}); was it truncated?") from None
    except RecursionError:
        raise BundleFormatError("bundle is not a bundle: its JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise BundleFormatError("bundle is not a JSON object")
    _only(obj, {"mediaType", "verificationMaterial", "dsseEnvelope"}, "bundle")
    media_type = _field(obj, "mediaType", str, "bundle")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise BundleFormatError(f"bundle: mediaType {media_type!r} is not {BUNDLE_MEDIA_TYPE}")

    hint = _parse_material(_field(obj, "verificationMaterial", dict, "bundle"))
    payload, payload_type, signature = _parse_envelope(_field(obj, "dsseEnvelope", dict, "bundle"))
    if hint and hint != public_key.hint:
        raise KeyFileError(
            "the bundle was sealed with a different key (its public-key hint does not match "
            "the --public-key given)"
        )
    if not public_key.verify(signature, pae(payload_type, payload)):
        return SignatureCheck(
            valid=False,
            payload=None,
            reason="signature does not verify: the bundle was altered or not made with this key",
        )
    return SignatureCheck(valid=True, payload=payload)
