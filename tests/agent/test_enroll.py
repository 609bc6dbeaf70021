"""Enrollment against a real collector peer on loopback: tokens, records, TLS pins."""

from __future__ import annotations

import json
import socket
import stat
from typing import TYPE_CHECKING

import pytest

from agent.enroll import ENROLLMENT_NAME, enroll, ensure_enrolled, load_enrollment
from agent.identity import AgentIdentity, load_or_create_identity
from agent.shipper import CollectorUnreachableError, PinMismatchError
from weightwarden.errors import ConfigError, UsageError, WeightwardenError

if TYPE_CHECKING:
    from pathlib import Path

AGENT = "gpu-01"
TOKEN = "tok-0123456789abcdef"  # noqa: S105 -- a test token for a test peer


@pytest.fixture
def identity(tmp_path: Path) -> AgentIdentity:
    return load_or_create_identity(tmp_path / "state")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_enrollment_registers_the_key_and_records_it(collector_peer, identity) -> None:
    """A good token registers the agent's public key; enrollment.json (0600) records it."""
    collector_peer.add_token(TOKEN, AGENT)
    enrollment = enroll(collector_peer.url, TOKEN, agent_id=AGENT, identity=identity)
    assert collector_peer.keys[AGENT].pem == identity.public.pem
    assert enrollment.collector_url == collector_peer.url
    assert enrollment.agent_id == AGENT
    assert enrollment.key_sha256 == identity.fingerprint
    assert enrollment.pinned_sha256 is None
    path = identity.state_dir / ENROLLMENT_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(path.read_text())
    assert record["collector_url"] == collector_peer.url
    assert record["agent_id"] == AGENT
    assert record["enrolled_at"].endswith("Z")
    assert TOKEN not in path.read_text()
    assert load_enrollment(identity.state_dir) == enrollment


def test_later_starts_skip_enrollment(collector_peer, identity) -> None:
    """With a matching enrollment.json, no request is made and no token is needed."""
    collector_peer.add_token(TOKEN, AGENT)
    first = ensure_enrolled(collector_peer.url, TOKEN, agent_id=AGENT, identity=identity)
    url = collector_peer.url
    collector_peer.stop()
    again = ensure_enrolled(url, None, agent_id=AGENT, identity=identity)
    assert again == first
    assert collector_peer.requests == 1


@pytest.mark.parametrize(
    ("issued_for", "uses"),
    [(None, 1), ("gpu-02", 1), (AGENT, 2)],
    ids=["unknown-token", "token-for-another-host", "token-used-twice"],
)
def test_refused_token_is_a_usage_error(
    collector_peer, identity, issued_for: str | None, uses: int
) -> None:
    """A 403 (unknown, other host's or used token) says so, and records nothing."""
    if issued_for is not None:
        collector_peer.add_token(TOKEN, issued_for)
    other = load_or_create_identity(identity.state_dir.parent / "other")
    for _ in range(uses - 1):
        enroll(collector_peer.url, TOKEN, agent_id=AGENT, identity=other)
    with pytest.raises(UsageError, match="enrollment refused: token unknown, used, expired"):
        enroll(collector_peer.url, TOKEN, agent_id=AGENT, identity=identity)
    assert load_enrollment(identity.state_dir) is None


def test_unreachable_collector_is_a_clear_error(identity) -> None:
    """Nothing listening: a CollectorUnreachableError naming the URL (exit 70, retried)."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CollectorUnreachableError, match=f"cannot reach the collector at {url}"):
        enroll(url, TOKEN, agent_id=AGENT, identity=identity)
    assert not isinstance(CollectorUnreachableError("x"), UsageError)


def test_collector_failure_is_not_a_usage_error(collector_peer, identity) -> None:
    """A 5xx at enrollment is a WeightwardenError (the agent retries on restart)."""
    collector_peer.add_token(TOKEN, AGENT)
    collector_peer.handle_enroll = lambda _body: (503, {"error": "database is starting"})
    with pytest.raises(WeightwardenError, match="database is starting") as caught:
        enroll(collector_peer.url, TOKEN, agent_id=AGENT, identity=identity)
    assert not isinstance(caught.value, UsageError)


def test_pinned_https_enrollment_works(tls_collector_peer, identity) -> None:
    """Over HTTPS with the right pin (any case, colons allowed) enrollment succeeds."""
    tls_collector_peer.add_token(TOKEN, AGENT)
    pin = tls_collector_peer.tls.sha256
    spelled = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
    enrollment = enroll(
        tls_collector_peer.url, TOKEN, agent_id=AGENT, identity=identity, pinned_sha256=spelled
    )
    assert enrollment.pinned_sha256 == pin
    assert tls_collector_peer.keys[AGENT].pem == identity.public.pem


def test_https_with_a_ca_file_verifies_the_certificate(tls_collector_peer, identity) -> None:
    """With ca_file (the self-signed certificate itself) the chain and name are verified."""
    tls_collector_peer.add_token(TOKEN, AGENT)
    enroll(
        tls_collector_peer.url,
        TOKEN,
        agent_id=AGENT,
        identity=identity,
        ca_file=tls_collector_peer.tls.cert,
    )
    assert AGENT in tls_collector_peer.keys


def test_unverifiable_certificate_is_refused(tls_collector_peer, identity) -> None:
    """Without a pin or a CA that signs it, a self-signed collector is not trusted."""
    tls_collector_peer.add_token(TOKEN, AGENT)
    with pytest.raises(CollectorUnreachableError, match="does not verify"):
        enroll(tls_collector_peer.url, TOKEN, agent_id=AGENT, identity=identity)
    assert tls_collector_peer.requests == 0


def test_pin_mismatch_never_sends_the_token(tls_collector_peer, tls_files, identity) -> None:
    """A certificate other than the pinned one is refused before any request is sent."""
    tls_collector_peer.add_token(TOKEN, AGENT)
    other_pin = tls_files("impostor").sha256
    with pytest.raises(PinMismatchError, match="not the pinned"):
        enroll(
            tls_collector_peer.url,
            TOKEN,
            agent_id=AGENT,
            identity=identity,
            pinned_sha256=other_pin,
        )
    assert tls_collector_peer.requests == 0
    assert TOKEN in tls_collector_peer.tokens


@pytest.mark.parametrize(
    ("url", "pin", "message"),
    [
        ("ftp://127.0.0.1", None, "must be http"),
        ("http://127.0.0.1:1", "ab" * 32, "needs an https"),
        ("https://127.0.0.1:1", "not-a-digest", "64 hex digits"),
        ("https://user:pw@127.0.0.1:1", None, "must not carry credentials"),
    ],
)
def test_bad_collector_settings_are_config_errors(identity, url, pin, message) -> None:
    """A wrong scheme, a pin on plain HTTP, a malformed pin or credentials: ConfigError."""
    with pytest.raises(ConfigError, match=message):
        enroll(url, TOKEN, agent_id=AGENT, identity=identity, pinned_sha256=pin)


def test_not_enrolled_without_a_token_is_a_usage_error(identity) -> None:
    """No record and no token: the error says how to get one."""
    with pytest.raises(UsageError, match="not enrolled yet: pass --enroll-token"):
        ensure_enrolled("http://127.0.0.1:1", None, agent_id=AGENT, identity=identity)


def test_another_collector_needs_a_new_enrollment(new_collector_peer, identity) -> None:
    """A record for collector A does not cover collector B: B needs its own token."""
    first, second = new_collector_peer(), new_collector_peer()
    first.add_token(TOKEN, AGENT)
    ensure_enrolled(first.url, TOKEN, agent_id=AGENT, identity=identity)
    with pytest.raises(UsageError, match=f"enrolled with {first.url}"):
        ensure_enrolled(second.url, None, agent_id=AGENT, identity=identity)
    second.add_token("tok-b", AGENT)
    enrollment = ensure_enrolled(second.url, "tok-b", agent_id=AGENT, identity=identity)
    assert enrollment.collector_url == second.url
    assert load_enrollment(identity.state_dir) == enrollment


def test_corrupt_enrollment_record_is_a_usage_error(identity) -> None:
    """An edited enrollment.json is refused with what to do, not silently redone."""
    (identity.state_dir / ENROLLMENT_NAME).write_text('{"format": 1, "agent_id": 7}')
    with pytest.raises(UsageError, match="not a valid enrollment record"):
        load_enrollment(identity.state_dir)
