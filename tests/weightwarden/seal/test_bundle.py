"""The Sigstore v0.3 bundle and its DSSE envelope: made, read strictly, verified before decoding."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from weightwarden.crypto.keys import KeyType, generate_key
from weightwarden.errors import BundleFormatError, KeyFileError
from weightwarden.seal import BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, pae
from weightwarden.seal._bundle import make_bundle, open_bundle, read_bundle_file

KEY = generate_key(KeyType.ECDSA_P256)
OTHER = generate_key(KeyType.ECDSA_P256)
PAYLOAD = b'{"_type": "https://in-toto.io/Statement/v1"}'


def bundle_obj(payload: bytes = PAYLOAD, key=KEY) -> dict[str, Any]:
    return json.loads(make_bundle(payload, key))


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_pae_is_the_dsse_v1_encoding():
    """The DSSE specification's own example."""
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters():
    """Lengths are byte lengths, so a multi-byte payload cannot shift the boundary."""
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_a_bundle_has_the_shape_model_signing_writes():
    """v0.3 media type, the key's hint, no tlog entries, one DSSE signature over the payload."""
    obj = bundle_obj()
    assert obj["mediaType"] == BUNDLE_MEDIA_TYPE == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert obj["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256(KEY.public.pem).hexdigest()},
        "tlogEntries": [],
    }
    envelope = obj["dsseEnvelope"]
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"]) == PAYLOAD
    assert len(envelope["signatures"]) == 1


def test_the_signature_is_der_ecdsa_sha256_over_the_pae():
    """Checked with cryptography directly, not with weightwarden's own verify."""
    obj = bundle_obj()
    sig = base64.b64decode(obj["dsseEnvelope"]["signatures"][0]["sig"])
    assert isinstance(KEY.public.key, ec.EllipticCurvePublicKey)
    KEY.public.key.verify(sig, pae(PAYLOAD_TYPE, PAYLOAD), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("key_type", list(KeyType))
def test_a_bundle_opens_with_its_key_and_yields_the_payload(key_type):
    """Every supported key type round-trips."""
    key = generate_key(key_type)
    check = open_bundle(make_bundle(PAYLOAD, key), key.public)
    assert check.valid
    assert check.payload == PAYLOAD


def test_a_bundle_naming_another_key_is_a_key_error():
    """A hint that does not match the given public key is a usage error, not a tamper finding."""
    with pytest.raises(KeyFileError, match="sealed with a different key"):
        open_bundle(make_bundle(PAYLOAD, OTHER), KEY.public)


def test_without_a_hint_a_wrong_key_just_fails_to_verify():
    """The hint is optional; without it the signature check decides, and the payload is withheld."""
    obj = bundle_obj(key=OTHER)
    del obj["verificationMaterial"]["publicKey"]["hint"]
    check = open_bundle(encode(obj), KEY.public)
    assert not check.valid
    assert check.payload is None
    assert "signature does not verify" in check.reason


def test_a_bundle_without_a_hint_still_verifies_with_the_right_key():
    """Omitting the hint is allowed, as in the reference verifier."""
    obj = bundle_obj()
    del obj["verificationMaterial"]["publicKey"]["hint"]
    assert open_bundle(encode(obj), KEY.public).valid


def test_an_altered_payload_fails_to_verify():
    """Changing one byte of the signed payload invalidates the seal; the payload is withheld."""
    obj = bundle_obj()
    obj["dsseEnvelope"]["payload"] = base64.b64encode(PAYLOAD.replace(b"v1", b"v2")).decode()
    check = open_bundle(encode(obj), KEY.public)
    assert (check.valid, check.payload) == (False, None)


def test_a_changed_payload_type_fails_to_verify_or_parse():
    """The payload type is covered by the PAE and must be in-toto."""
    obj = bundle_obj()
    obj["dsseEnvelope"]["payloadType"] = "application/json"
    with pytest.raises(BundleFormatError, match="payloadType 'application/json'"):
        open_bundle(encode(obj), KEY.public)


def test_only_the_first_signature_counts():
    """As in the reference verifier: a good second signature does not rescue a bad first one."""
    good = bundle_obj()["dsseEnvelope"]["signatures"][0]
    bad = bundle_obj(key=OTHER)["dsseEnvelope"]["signatures"][0]
    obj = bundle_obj()
    obj["dsseEnvelope"]["signatures"] = [bad, good]
    assert not open_bundle(encode(obj), KEY.public).valid
    obj["dsseEnvelope"]["signatures"] = [good, bad]
    assert open_bundle(encode(obj), KEY.public).valid


@pytest.mark.parametrize(
    "sig", [base64.b64encode(b"not DER").decode(), "", base64.b64encode(b"\x00" * 64).decode()]
)
def test_a_garbage_signature_is_invalid_not_a_crash(sig):
    """Malformed DER or an empty signature is an invalid signature, never an exception."""
    obj = bundle_obj()
    obj["dsseEnvelope"]["signatures"][0]["sig"] = sig
    assert not open_bundle(encode(obj), KEY.public).valid


def test_an_ecdsa_signature_checked_with_an_ed25519_key_is_invalid():
    """Key types that do not match fail the check cleanly."""
    ed = generate_key(KeyType.ED25519)
    obj = bundle_obj()
    del obj["verificationMaterial"]["publicKey"]["hint"]
    assert not open_bundle(encode(obj), ed.public).valid


def _mutated(mutate) -> bytes:
    obj = bundle_obj()
    mutate(obj)
    return encode(obj)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.update(extra=1), r"unknown field\(s\) in bundle: \['extra'\]"),
        (
            lambda o: o["verificationMaterial"].update(x509CertificateChain={}),
            "verificationMaterial",
        ),
        (lambda o: o["verificationMaterial"]["publicKey"].update(rawBytes="AA=="), "publicKey"),
        (lambda o: o["dsseEnvelope"].update(extra=[]), r"unknown field\(s\) in dsseEnvelope"),
        (lambda o: o["dsseEnvelope"]["signatures"][0].update(cert=""), r"signatures\[0\]"),
        (lambda o: o.pop("mediaType"), "bundle has no 'mediaType'"),
        (lambda o: o.pop("dsseEnvelope"), "bundle has no 'dsseEnvelope'"),
        (lambda o: o["verificationMaterial"].pop("publicKey"), "has no 'publicKey'"),
        (lambda o: o["dsseEnvelope"].pop("payload"), "has no 'payload'"),
        (lambda o: o["dsseEnvelope"]["signatures"][0].pop("sig"), "has no 'sig'"),
        (
            lambda o: o.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.2"),
            "mediaType",
        ),
        (lambda o: o.update(mediaType=3), "mediaType must be a str"),
        (lambda o: o["dsseEnvelope"].update(payload="***"), "payload is not valid base64"),
        (lambda o: o["dsseEnvelope"]["signatures"][0].update(sig="%%"), "sig is not valid base64"),
        (lambda o: o["dsseEnvelope"]["signatures"][0].update(keyid=7), "keyid must be a str"),
        (lambda o: o["dsseEnvelope"].update(signatures=[]), "signatures is empty"),
        (
            lambda o: o["dsseEnvelope"].update(signatures=["sig"]),
            r"signatures\[0\] is not an object",
        ),
        (lambda o: o["dsseEnvelope"].update(signatures={}), "signatures must be a list"),
        (lambda o: o["verificationMaterial"].update(tlogEntries=[{}]), "transparency-log entries"),
        (lambda o: o["verificationMaterial"]["publicKey"].update(hint=1), "hint must be a str"),
    ],
)
def test_a_malformed_bundle_is_a_bundle_format_error(mutate, message):
    """Reading is strict: unknown fields, missing fields and bad encodings are refused."""
    with pytest.raises(BundleFormatError, match=message):
        open_bundle(_mutated(mutate), KEY.public)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_a_truncated_bundle_is_a_bundle_format_error(fraction):
    """A bundle cut short says it is not valid JSON and asks whether it was truncated."""
    data = make_bundle(PAYLOAD, KEY).rstrip()
    with pytest.raises(BundleFormatError, match="was it truncated"):
        open_bundle(data[: int(len(data) * fraction)], KEY.public)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"\x00\x01 binary \x02", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'"bundle"', "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_a_corrupt_bundle_is_a_bundle_format_error(data, message):
    """Bytes that are not a bundle object are a format error, whatever they are."""
    with pytest.raises(BundleFormatError, match=message):
        open_bundle(data, KEY.public)


def test_reading_a_missing_bundle_says_to_seal_first(tmp_path):
    """A missing signature file is a format error that says what to do."""
    with pytest.raises(BundleFormatError, match="does not exist: seal the model first"):
        read_bundle_file(tmp_path / "model.sig")


def test_reading_a_folder_as_a_bundle_is_refused(tmp_path):
    """A directory is not a bundle."""
    with pytest.raises(BundleFormatError, match="is a directory"):
        read_bundle_file(tmp_path)


def test_a_bundle_larger_than_any_real_one_is_refused_unread(tmp_path):
    """The size bound holds before reading: a 256 MiB+ (sparse) file is refused."""
    huge = tmp_path / "huge.sig"
    with huge.open("wb") as fh:
        fh.truncate((256 << 20) + 1)
    with pytest.raises(BundleFormatError, match="too large to be a bundle"):
        read_bundle_file(huge)
