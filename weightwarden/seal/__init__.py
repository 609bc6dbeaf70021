"""Checkpoint seals in the OpenSSF Model Signing v1.0 format: hash, sign, verify.

seal(model, key) -> SealResult          writes a Sigstore bundle beside the model
verify(model, public_key) -> VerificationResult   intact, or exactly what differs
"""

from weightwarden.seal._bundle import BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, pae
from weightwarden.seal._cache import DigestCache, default_cache_path
from weightwarden.seal._hashing import HashAlgorithm
from weightwarden.seal._manifest import PREDICATE_TYPE, ContentDiff, Manifest, Serialization
from weightwarden.seal._seal import (
    Progress,
    SealOptions,
    SealResult,
    VerificationResult,
    build_manifest,
    default_signature_path,
    load_manifest,
    seal,
    verify,
)

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "ContentDiff",
    "DigestCache",
    "HashAlgorithm",
    "Manifest",
    "Progress",
    "SealOptions",
    "SealResult",
    "Serialization",
    "VerificationResult",
    "build_manifest",
    "default_cache_path",
    "default_signature_path",
    "load_manifest",
    "pae",
    "seal",
    "verify",
]
