"""Hashing files and shards in parallel, memory bounded, with an optional digest cache.

SHA-256 work units (whole files, or shards of ``shard_size`` bytes) run on a thread pool:
``hashlib`` releases the GIL while hashing, so two cores hash two units at once. BLAKE3 is
already multi-threaded inside one file, so its units run one after another. Each thread
reads through one reused buffer, so memory stays bounded whatever the file size; files are
read with ``read``, not ``mmap``, because a file truncated under an ``mmap`` kills the
process with SIGBUS.

A unit is hashed from an open descriptor whose ``fstat`` is taken before and after reading:
if size, mtime or ctime moved, the file changed while being hashed and sealing it would
record a state that never existed on disk, so it fails. The cache is consulted with that
same ``fstat``, so a changed file can never reuse a stale digest.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import blake3

from weightwarden.errors import SealInputError
from weightwarden.seal._cache import DigestCache, FileStamp, RangeKey

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path, PurePosixPath

__all__ = ["HashAlgorithm", "Unit", "hash_units", "plan_units"]

HashAlgorithm = Literal["sha256", "blake3"]

_SHA256_BUFFER = 4 << 20
_BLAKE3_BUFFER = 16 << 20  # blake3 splits a large update across its own threads


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Unit:
    """A byte range of one model file to hash; ``end`` is exclusive."""

    name: PurePosixPath
    path: Path
    start: int
    end: int
    whole_file: bool


def plan_units(
    files: Sequence[tuple[PurePosixPath, Path, int]], shard_size: int | None
) -> list[Unit]:
    """Split files into work units: one per file, or shards as model_signing cuts them.

    Sharding follows OpenSSF model signing exactly: shards of ``shard_size`` bytes, the last
    one shorter, and an empty file yields no shard at all.
    """
    units: list[Unit] = []
    for name, path, size in files:
        if shard_size is None:
            units.append(Unit(name=name, path=path, start=0, end=size, whole_file=True))
            continue
        for start in range(0, size, shard_size):
            end = min(start + shard_size, size)
            units.append(Unit(name=name, path=path, start=start, end=end, whole_file=False))
    return units


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[int, bytearray] = {}

    def get(self, size: int) -> bytearray:
        buf = self.buffers.get(size)
        if buf is None:
            buf = self.buffers[size] = bytearray(size)
        return buf


_BUFFERS = _Buffers()


def _new_hasher(algorithm: HashAlgorithm) -> _Hasher:
    if algorithm == "blake3":
        hasher: _Hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        return hasher
    return hashlib.sha256()


def _hash_unit(
    unit: Unit,
    algorithm: HashAlgorithm,
    cache: DigestCache | None,
    cache_key: str,
    progress: Callable[[int], None],
) -> bytes:
    try:
        fd = os.open(unit.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise SealInputError(f"cannot read {unit.name}: {exc.strerror}") from exc
    try:
        before = os.fstat(fd)
        if before.st_size < unit.end or (unit.whole_file and before.st_size != unit.end):
            raise SealInputError(
                f"{unit.name} changed size while sealing; seal again once writing has finished"
            )
        stamp = FileStamp.of(before)
        key = RangeKey(str(unit.path), cache_key, unit.start, unit.end)
        cached = cache.get(key, stamp=stamp) if cache is not None else None
        if cached is not None:
            progress(unit.end - unit.start)
            return cached
        digest = _read_and_hash(fd, unit, algorithm, progress)
        after = FileStamp.of(os.fstat(fd))
    except OSError as exc:
        raise SealInputError(f"cannot read {unit.name}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if after != stamp:
        raise SealInputError(
            f"{unit.name} changed while it was being hashed; seal again once writing has finished"
        )
    if cache is not None:
        cache.put(key, stamp=stamp, digest=digest)
    return digest


def _read_and_hash(
    fd: int, unit: Unit, algorithm: HashAlgorithm, progress: Callable[[int], None]
) -> bytes:
    hasher = _new_hasher(algorithm)
    buf = _BUFFERS.get(_BLAKE3_BUFFER if algorithm == "blake3" else _SHA256_BUFFER)
    view = memoryview(buf)
    remaining = unit.end - unit.start
    offset = unit.start
    os.posix_fadvise(fd, unit.start, remaining, os.POSIX_FADV_SEQUENTIAL)
    while remaining > 0:
        n = os.preadv(fd, [view[: min(len(buf), remaining)]], offset)
        if n == 0:
            raise SealInputError(
                f"{unit.name} was truncated while sealing; seal again once writing has finished"
            )
        hasher.update(view[:n])
        offset += n
        remaining -= n
        progress(n)
    return hasher.digest()


def hash_units(
    units: Sequence[Unit],
    *,
    algorithm: HashAlgorithm,
    cache_key: str,
    cache: DigestCache | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[bytes]:
    """Hash every unit and return the raw digests in the same order.

    Args:
        units: what to hash, usually from :func:`plan_units`.
        algorithm: ``sha256`` or ``blake3``.
        cache_key: names the digest parameters (algorithm and shard size) in the cache.
        cache: a digest cache, or None to hash everything.
        workers: threads for SHA-256 (default: one per CPU); BLAKE3 uses its own.
        progress: called with the number of bytes done, from worker threads.

    Raises:
        SealInputError: a file is unreadable or changed while being hashed.
    """
    report = progress or (lambda _n: None)
    if algorithm == "blake3":
        return [_hash_unit(u, algorithm, cache, cache_key, report) for u in units]
    n_workers = workers or os.cpu_count() or 1
    if n_workers == 1 or len(units) <= 1:
        return [_hash_unit(u, algorithm, cache, cache_key, report) for u in units]
    # Largest units first keeps both cores busy to the end; results return in input order.
    order = sorted(range(len(units)), key=lambda i: units[i].end - units[i].start, reverse=True)
    results: list[bytes] = [b""] * len(units)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="seal-hash") as pool:
        futures = {
            pool.submit(_hash_unit, units[i], algorithm, cache, cache_key, report): i for i in order
        }
        for future, i in futures.items():
            results[i] = future.result()
    return results
