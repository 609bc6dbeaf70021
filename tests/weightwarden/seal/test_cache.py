"""Incremental re-sealing: only changed files are re-hashed, and a stale digest is never reused."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from weightwarden.crypto.keys import load_private_key
from weightwarden.seal import DigestCache, SealOptions, default_cache_path, seal, verify
from weightwarden.seal._cache import RACY_WINDOW_NS

EIGHT = {f"shard-{i}.bin": bytes([i]) * (4096 + i) for i in range(8)}


@pytest.fixture
def private_key(key_pair):
    return load_private_key(key_pair.private)


def seal_with_cache(model: Path, key, cache_path: Path, *, racy_window_ns: int = 0, **kwargs):
    """Seal as the CLI does: a fresh cache object per run, closed afterwards.

    Files in these tests are written moments before sealing; the racy window is set to 0
    so they are cached at once (its own test below covers the default window).
    """
    cache = DigestCache(cache_path, racy_window_ns=racy_window_ns)
    try:
        result = seal(model, key, cache=cache, **kwargs)
    finally:
        cache.close()
    return result, cache


def digests(result) -> dict[str, str]:
    return {r.name: r.digest.hex() for r in result.manifest.resources}


def test_resealing_after_one_of_eight_files_changed_rehashes_only_that_file(
    make_model, private_key, tmp_path
):
    """7 cache hits and 1 miss, and the seal equals one made without any cache."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    first, cache = seal_with_cache(model, private_key, cache_path)
    assert (first.cache_hits, cache.hits, cache.misses) == (0, 0, 8)

    (model / "shard-3.bin").write_bytes(b"retrained")
    second, cache = seal_with_cache(model, private_key, cache_path)
    assert (second.cache_hits, cache.hits, cache.misses) == (7, 7, 1)
    assert digests(second)["shard-3.bin"] == hashlib.sha256(b"retrained").hexdigest()
    uncached = seal(model, private_key, signature_path=tmp_path / "uncached.sig")
    assert second.manifest == uncached.manifest

    third, cache = seal_with_cache(model, private_key, cache_path)
    assert (third.cache_hits, cache.misses) == (8, 0)


def test_a_same_size_rewrite_with_its_mtime_restored_is_still_rehashed(
    make_model, private_key, tmp_path
):
    """The ctime moves on every write and cannot be set back, so the stale digest is not reused."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path)

    target = model / "shard-5.bin"
    before = target.stat()
    forged = bytes([0xEE]) * before.st_size
    with target.open("r+b") as fh:
        fh.write(forged)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert after.st_ctime_ns != before.st_ctime_ns

    result, cache = seal_with_cache(model, private_key, cache_path)
    assert (result.cache_hits, cache.misses) == (7, 1)
    assert digests(result)["shard-5.bin"] == hashlib.sha256(forged).hexdigest()


def test_a_file_replaced_by_rename_is_rehashed(make_model, private_key, tmp_path):
    """A new inode behind the same name (how most tools save) misses the cache."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path)
    target = model / "shard-0.bin"
    before = target.stat()
    replacement = model / ".tmp-replacement"
    replacement.write_bytes(b"\xaa" * before.st_size)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement.replace(target)
    result, cache = seal_with_cache(model, private_key, cache_path)
    assert (result.cache_hits, cache.misses) == (7, 1)
    assert digests(result)["shard-0.bin"] == hashlib.sha256(b"\xaa" * before.st_size).hexdigest()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (SealOptions(), SealOptions(hash="blake3")),
        (SealOptions(shard_size=1024), SealOptions(shard_size=2048)),
        (SealOptions(), SealOptions(shard_size=1 << 20)),
    ],
    ids=["sha256-then-blake3", "shard-size-changed", "files-then-shards"],
)
def test_digests_are_cached_per_algorithm_and_shard_size(
    make_model, private_key, tmp_path, first, second
):
    """A digest made with other parameters is never taken for this one."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path, options=first)
    result, cache = seal_with_cache(model, private_key, cache_path, options=second)
    assert (result.cache_hits, cache.hits) == (0, 0)
    assert result.manifest == seal(model, private_key, options=second).manifest


def test_changing_one_file_of_a_sharded_seal_rehashes_only_its_shards(
    make_model, private_key, tmp_path
):
    """Every shard of the changed file is re-hashed; every shard of the others is a hit."""
    model = make_model({"big": os.urandom(4000), "small": b"s" * 100})
    cache_path = tmp_path / "digests.sqlite"
    options = SealOptions(shard_size=1000)
    seal_with_cache(model, private_key, cache_path, options=options)
    with (model / "big").open("r+b") as fh:
        fh.write(b"X")
    result, cache = seal_with_cache(model, private_key, cache_path, options=options)
    assert (result.cache_hits, cache.misses) == (1, 4)


def test_the_cache_file_is_private(tmp_path):
    """The cache is created 0600 in a 0700 folder: whoever writes it can fool a default verify."""
    path = tmp_path / "cache-home" / "weightwarden" / "digests.sqlite"
    DigestCache(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_default_cache_lives_under_xdg_cache_home(tmp_path):
    """$XDG_CACHE_HOME/weightwarden/digests.sqlite, else ~/.cache."""
    assert default_cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "weightwarden" / "digests.sqlite"
    )
    assert default_cache_path({}) == Path.home() / ".cache" / "weightwarden" / "digests.sqlite"


def test_verify_through_the_cache_hashes_nothing_when_nothing_changed(
    make_model, private_key, tmp_path
):
    """A default verify after a seal finds every digest in the cache."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path)
    cache = DigestCache(cache_path)
    try:
        result = verify(model, private_key.public, cache=cache)
    finally:
        cache.close()
    assert result.intact
    assert (cache.hits, cache.misses) == (8, 0)


def _poison(cache_path: Path, file: Path, *, digest: bytes | None = None) -> None:
    """Make the cache entry of ``file`` match its current stamp, optionally with ``digest``."""
    st = file.stat()
    with sqlite3.connect(cache_path) as db:
        changed = db.execute(
            "UPDATE digests SET dev=?, ino=?, size=?, mtime_ns=?, ctime_ns=?, "
            "digest=COALESCE(?, digest) WHERE path=?",
            (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest, str(file)),
        ).rowcount
    db.close()
    assert changed == 1


def test_verify_full_catches_tampering_hidden_by_a_poisoned_cache(
    make_model, key_pair, private_key, tmp_path, cli
):
    """`verify --full` catches a tampered file even when a poisoned cache fools a default verify.

    Whoever can write the cache can make a default verify trust a stale digest: that is the
    documented trust boundary (the cache is 0600 in a 0700 folder). --full never reads it.
    """
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path)

    target = model / "shard-2.bin"
    with target.open("r+b") as fh:
        fh.write(b"backdoor")
    _poison(cache_path, target)  # the old digest now claims to describe the new content

    args = ["verify", model, "--public-key", key_pair.public, "--json"]
    fooled = cli(*args, "--cache-file", cache_path)
    assert (fooled.code, fooled.json()["intact"]) == (0, True)

    full = cli(*args, "--full", "--cache-file", cache_path)
    assert full.code == 1, full
    assert full.json()["modified"] == ["shard-2.bin"]
    assert full.json()["bytes_hashed"] == sum(len(v) for v in EIGHT.values())


def test_verify_full_ignores_a_wrong_digest_for_an_unchanged_file(
    make_model, key_pair, private_key, tmp_path, cli
):
    """A poisoned entry makes a default verify cry wolf; --full re-hashes and finds it intact."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path)
    _poison(cache_path, model / "shard-6.bin", digest=b"\x00" * 32)

    args = ["verify", model, "--public-key", key_pair.public, "--json"]
    default = cli(*args, "--cache-file", cache_path)
    assert (default.code, default.json()["modified"]) == (1, ["shard-6.bin"])
    full = cli(*args, "--full", "--cache-file", cache_path)
    assert (full.code, full.json()["intact"]) == (0, True)


def test_verify_full_does_not_even_open_the_cache(make_model, key_pair, private_key, tmp_path, cli):
    """--full with a cache path that does not exist leaves it uncreated."""
    model = make_model({"a": b"1"})
    seal(model, private_key)
    cache_path = tmp_path / "never" / "digests.sqlite"
    result = cli(
        "verify", model, "--public-key", key_pair.public, "--full", "--cache-file", cache_path
    )
    assert result.code == 0, result
    assert not cache_path.parent.exists()


def test_the_cli_reports_cache_hits_after_one_file_changed(make_model, key_pair, cli):
    """`seal --json` twice through the default cache: the second run reports 7 hits of 8."""
    model = make_model(EIGHT)
    time.sleep(RACY_WINDOW_NS / 1e9)  # let the files age past the racy window
    args = ["seal", model, "--private-key", key_pair.private, "--json"]
    first = cli(*args)
    assert (first.code, first.json()["cache_hits"]) == (0, 0), first
    (model / "shard-1.bin").write_bytes(b"changed")
    second = cli(*args)
    assert (second.code, second.json()["cache_hits"]) == (0, 7), second
    cache_file = cli.cache_home / "weightwarden" / "digests.sqlite"
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    verified = cli("verify", model, "--public-key", key_pair.public, "--json")
    assert (verified.code, verified.json()["intact"]) == (0, True)


def test_no_cache_touches_no_cache(make_model, key_pair, cli):
    """--no-cache hashes everything and creates no cache file."""
    model = make_model(EIGHT)
    result = cli("seal", model, "--private-key", key_pair.private, "--no-cache", "--json")
    assert (result.code, result.json()["cache_hits"]) == (0, 0)
    assert not cli.cache_home.exists()


@pytest.mark.parametrize("content", [b"this is not sqlite at all" * 100, None])
def test_an_unusable_cache_file_is_a_usage_error(make_model, key_pair, tmp_path, cli, content):
    """A corrupt cache or a cache path that is a folder: exit 2, one line, no traceback."""
    model = make_model({"a": b"1"})
    cache_path = tmp_path / "bad-cache"
    if content is None:
        cache_path.mkdir()
    else:
        cache_path.write_bytes(content)
    line = cli(
        "seal", model, "--private-key", key_pair.private, "--cache-file", cache_path
    ).usage_error()
    assert "bad-cache" in line


def test_a_file_changed_within_the_racy_window_is_not_cached(make_model, private_key, tmp_path):
    """A digest is not cached while a same-tick rewrite could keep the file's ctime."""
    model = make_model(EIGHT)
    cache_path = tmp_path / "digests.sqlite"
    seal_with_cache(model, private_key, cache_path, racy_window_ns=10**12)
    second, _ = seal_with_cache(model, private_key, cache_path, racy_window_ns=10**12)
    assert second.cache_hits == 0
