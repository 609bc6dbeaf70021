"""`weightwarden collector enroll|agents|revoke`, in real processes."""

from __future__ import annotations

import time

from collector.enrollment import EnrollRequest, enroll, hash_token
from collector.store import SqliteStore
from weightwarden.crypto.keys import generate_key


def _store(directory):
    return SqliteStore(directory / "collector.sqlite")


def test_enroll_prints_one_token_that_enrolls_its_host_once(tmp_path, ww):
    """The token is the only stdout line; it redeems once, for its host, and is stored hashed."""
    directory = tmp_path / "c"
    ww("collector", "init", "--dir", directory)
    run = ww("collector", "enroll", "--dir", directory, "--host", "gpu-01", "--ttl", "2h")
    assert run.code == 0, run.stderr
    [token] = run.stdout.splitlines()
    assert token.startswith("wwe_")
    assert "gpu-01" in run.stderr
    assert token not in run.stderr
    store = _store(directory)
    try:
        pem = generate_key().public.pem.decode()
        now = time.time_ns() // 1_000_000
        request = EnrollRequest(token=token, host="gpu-01", public_key_pem=pem)
        assert enroll(store, request, now=now).agent_id == "gpu-01"
        assert not store.redeem_token(token_hash=hash_token(token), host="gpu-01", now=now)
    finally:
        store.close()
    assert token.encode() not in (directory / "collector.sqlite").read_bytes()


def test_agents_lists_and_revoke_refuses_an_agent(tmp_path, ww):
    """`agents` shows the enrolled agent, `revoke` marks it; an unknown agent is exit 2."""
    directory = tmp_path / "c"
    ww("collector", "init", "--dir", directory)
    store = _store(directory)
    try:
        store.register_agent(
            agent_id="gpu-01", public_key_pem=generate_key().public.pem.decode(), now=1
        )
    finally:
        store.close()
    listing = ww("collector", "agents", "--dir", directory)
    assert listing.code == 0
    header, row = listing.stdout.splitlines()
    assert header.split()[:2] == ["AGENT", "ENROLLED"]
    assert row.split()[0] == "gpu-01"
    assert row.split()[2] == "-"
    assert ww("collector", "revoke", "--dir", directory, "gpu-01").code == 0
    assert ww("collector", "agents", "--dir", directory).stdout.splitlines()[1].split()[2] != "-"
    assert "no agent" in ww("collector", "revoke", "--dir", directory, "gpu-77").one_line_error()


def test_enroll_refuses_bad_hosts_and_durations(tmp_path, ww):
    """A host that cannot name an agent or a bad --ttl is a one-line error, exit 2."""
    directory = tmp_path / "c"
    ww("collector", "init", "--dir", directory)
    assert (
        "--host" in ww("collector", "enroll", "--dir", directory, "--host", "a b").one_line_error()
    )
    assert (
        "--ttl"
        in ww(
            "collector", "enroll", "--dir", directory, "--host", "a", "--ttl", "soon"
        ).one_line_error()
    )


def test_db_url_works_without_a_directory(tmp_path, ww):
    """--db names the database directly; no collector.toml is needed."""
    db = tmp_path / "direct.sqlite"
    SqliteStore(db).close()
    run = ww("collector", "enroll", "--db", f"sqlite://{db}", "--host", "gpu-02")
    assert run.code == 0, run.stderr
    assert ww("collector", "agents", "--db", str(db)).code == 0
    assert "sqlite:///" in ww("collector", "agents", "--db", "sqlite://rel").one_line_error()
