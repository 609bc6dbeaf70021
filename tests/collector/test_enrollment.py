"""Enrollment tokens: random, stored hashed, one use, expiring, bound to a host."""

from __future__ import annotations

import json

import pytest

from collector.enrollment import (
    EnrollmentError,
    EnrollRequest,
    enroll,
    hash_token,
    issue_token,
    parse_request,
    valid_host,
)
from weightwarden.crypto.keys import KeyType, generate_key
from weightwarden.errors import UsageError

PEM = generate_key().public.pem.decode()


def test_tokens_are_random_and_only_their_hash_is_kept(store):
    """Two tokens differ; the store holds the SHA-256, and the repr hides the secret."""
    first = issue_token(store, host="gpu-01", ttl_ms=1000, now=10)
    second = issue_token(store, host="gpu-01", ttl_ms=1000, now=10)
    assert first.token != second.token
    assert len(first.token) > 40
    assert first.expires_at == 1010
    assert first.token not in repr(first)
    assert store.redeem_token(token_hash=hash_token(first.token), host="gpu-01", now=11)


def test_a_token_enrolls_once_before_it_expires_for_its_host(store):
    """Enroll redeems: another host, or a second use (even after a revocation), is 403."""
    token = issue_token(store, host="gpu-01", ttl_ms=1000, now=0).token
    with pytest.raises(EnrollmentError) as foreign:
        enroll(store, EnrollRequest(token=token, host="gpu-02", public_key_pem=PEM), now=1)
    assert foreign.value.status == 403
    assert enroll(store, EnrollRequest(token=token, host="gpu-01", public_key_pem=PEM), now=1)
    store.revoke_agent("gpu-01", now=2)
    with pytest.raises(EnrollmentError) as used:
        enroll(store, EnrollRequest(token=token, host="gpu-01", public_key_pem=PEM), now=2)
    assert used.value.status == 403


def test_enrollment_checks_host_expiry_and_an_active_agent(store):
    """Wrong host 403, expired 403, the same live agent again 409."""
    late = issue_token(store, host="gpu-01", ttl_ms=10, now=0).token
    with pytest.raises(EnrollmentError) as expired:
        enroll(store, EnrollRequest(token=late, host="gpu-01", public_key_pem=PEM), now=10)
    assert expired.value.status == 403
    good = issue_token(store, host="gpu-01", ttl_ms=10, now=0).token
    record = enroll(store, EnrollRequest(token=good, host="gpu-01", public_key_pem=PEM), now=5)
    assert (record.agent_id, record.enrolled_at) == ("gpu-01", 5)
    assert store.agent("gpu-01").public_key_pem == PEM
    again = issue_token(store, host="gpu-01", ttl_ms=10, now=0).token
    with pytest.raises(EnrollmentError) as twice:
        enroll(store, EnrollRequest(token=again, host="gpu-01", public_key_pem=PEM), now=6)
    assert twice.value.status == 409


def test_requests_are_parsed_strictly():
    """Exactly token, host and a supported PEM key; anything else is 400."""
    ed = generate_key(KeyType.ED25519).public.pem.decode()
    body = {"token": "t", "host": "gpu-01", "public_key": ed}
    assert parse_request(json.dumps(body).encode()).public_key_pem == ed
    for bad in (
        b"{",
        b"null",
        json.dumps({**body, "more": 1}).encode(),
        json.dumps({**body, "host": "../etc"}).encode(),
        json.dumps({**body, "public_key": PEM.replace("A", "B", 3)}).encode(),
        json.dumps({**body, "token": ""}).encode(),
        "\ud800".encode("utf-8", "surrogatepass"),
    ):
        with pytest.raises(EnrollmentError) as refused:
            parse_request(bad)
        assert refused.value.status == 400


def test_host_names_and_ttls_are_checked_when_issuing(memory_store):
    """A host must look like a host name, and a TTL must be positive."""
    assert valid_host("gpu-01.cluster.example")
    assert not valid_host("-x")
    assert not valid_host("a" * 256)
    with pytest.raises(UsageError, match="--host"):
        issue_token(memory_store, host="a b", ttl_ms=10, now=0)
    with pytest.raises(UsageError, match="--ttl"):
        issue_token(memory_store, host="ab", ttl_ms=0, now=0)
