"""Sealing throughput against its peers, in one run, on data this script makes.

Cases (data in the page cache, MB = 10^6 bytes, median of --repeat runs):
  1. 4 x 512 MiB folder, default settings: hashlib single-thread SHA-256, coreutils
     sha256sum, model_signing's CLI ``sign key`` (when installed), ``weightwarden seal``.
  2. one 2 GiB file: hashlib single-thread vs ``weightwarden seal --shard-size``.
  3. re-seal after one of eight files changed vs the full seal of those eight files.
  4. ``weightwarden seal --hash blake3`` on the 4 x 512 MiB folder.

Commands run as subprocesses so every tool pays its own start-up. Prints MB/s and the
ratios the foundation issue sets targets for. Usage:

    .venv/bin/python benchmarks/seal.py [--dir DIR] [--repeat N] [--scale 1.0]

``--scale 0.1`` shrinks every file tenfold for a quick smoke run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from weightwarden.crypto.keys import load_private_key
from weightwarden.seal import SealOptions, seal

if TYPE_CHECKING:
    from collections.abc import Callable

MIB = 1 << 20
BIN = Path(sys.executable).parent


def _write_random(path: Path, size: int) -> None:
    chunk = os.urandom(8 * MIB)
    with path.open("wb") as out:
        left = size
        counter = 0
        while left > 0:
            n = min(left, len(chunk))
            # a counter keeps every chunk distinct without paying for urandom each time
            out.write(counter.to_bytes(8, "little") + chunk[8:n])
            counter += 1
            left -= n


def _warm(paths: list[Path]) -> None:
    for p in paths:
        with p.open("rb") as f:
            while f.read(16 * MIB):
                pass


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _hashlib_single(paths: list[Path]) -> None:
    buf = bytearray(8 * MIB)
    view = memoryview(buf)
    for p in paths:
        h = hashlib.sha256()
        with p.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _ww_seal(model: Path, key: Path, sig: Path, cache: Path | None, *extra: str) -> None:
    cache_args = ["--cache-file", str(cache)] if cache else ["--no-cache"]
    _run(
        [
            str(BIN / "weightwarden"),
            "seal",
            str(model),
            "--private-key",
            str(key),
            "--signature",
            str(sig),
            *cache_args,
            *extra,
        ]
    )


def main() -> int:
    """Make the data, time every case, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where to make data (default: a temp folder)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink sizes for a smoke run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ww-bench-", dir=args.dir))
    try:
        return _bench(work, args.repeat, args.scale)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(work: Path, repeat: int, scale: float) -> int:  # noqa: PLR0915
    size_512 = int(512 * MIB * scale)
    size_2g = int(2048 * MIB * scale)
    size_eighth = int(256 * MIB * scale)
    four = work / "four"
    four.mkdir()
    for i in range(4):
        _write_random(four / f"model-{i:05d}.safetensors", size_512)
    single = work / "single"
    single.mkdir()
    _write_random(single / "model.safetensors", size_2g)
    eight = work / "eight"
    eight.mkdir()
    for i in range(8):
        _write_random(eight / f"shard-{i}.safetensors", size_eighth)

    key = work / "bench"
    _run([str(BIN / "weightwarden"), "keys", "generate", "--out", str(key)])
    priv, _pub = Path(f"{key}.key"), Path(f"{key}.pub")
    sig = work / "out.sig"
    four_files, single_files, eight_files = _files(four), _files(single), _files(eight)
    _warm(four_files + single_files + eight_files)
    four_mb = sum(p.stat().st_size for p in four_files) / 1e6
    single_mb = sum(p.stat().st_size for p in single_files) / 1e6
    eight_mb = sum(p.stat().st_size for p in eight_files) / 1e6

    rows: list[tuple[str, float, float]] = []

    def record(label: str, mb: float, fn: Callable[[], object]) -> float:
        secs = _median_seconds(fn, repeat)
        rows.append((label, secs, mb / secs))
        print(f"  {label:58s} {secs:7.3f} s {mb / secs:9.0f} MB/s", flush=True)
        return mb / secs

    print(f"data: {four_mb:.0f} MB in 4 files, {single_mb:.0f} MB in 1 file; cpus={os.cpu_count()}")
    print("case 1: 4 x 512 MiB folder, default settings")
    hl_four = record(
        "hashlib sha256, 1 thread, 8 MiB reads", four_mb, lambda: _hashlib_single(four_files)
    )
    record("coreutils sha256sum", four_mb, lambda: _run(["sha256sum", *map(str, four_files)]))
    ms_cli = BIN / "model_signing"
    ms_four = None
    if ms_cli.exists():
        ms_four = record(
            "model_signing CLI sign key",
            four_mb,
            lambda: _run(
                [
                    str(ms_cli),
                    "sign",
                    "key",
                    str(four),
                    "--private_key",
                    str(priv),
                    "--signature",
                    str(sig),
                ]
            ),
        )
    else:
        print("  model_signing not installed: skipped")
    ww_four = record("weightwarden seal", four_mb, lambda: _ww_seal(four, priv, sig, None))
    key = load_private_key(priv)
    api_four = record(
        "weightwarden seal(), in-process API", four_mb, lambda: seal(four, key, signature_path=sig)
    )

    print("case 2: one 2 GiB file")
    hl_single = record("hashlib sha256, 1 thread", single_mb, lambda: _hashlib_single(single_files))
    shard = max(MIB, size_2g // 16)
    ww_shard = record(
        f"weightwarden seal --shard-size {shard}",
        single_mb,
        lambda: _ww_seal(single, priv, sig, None, "--shard-size", str(shard)),
    )
    api_shard = record(
        "weightwarden seal(shard_size), in-process API",
        single_mb,
        lambda: seal(single, key, signature_path=sig, options=SealOptions(shard_size=shard)),
    )

    print("case 3: re-seal after one of eight files changed")
    cache = work / "cache.sqlite"
    full = record(
        "weightwarden seal, full (no cache)", eight_mb, lambda: _ww_seal(eight, priv, sig, None)
    )
    _ww_seal(eight, priv, sig, cache)  # prime the cache
    victim = eight_files[3]

    def touch_and_reseal(*extra: str) -> None:
        with victim.open("r+b") as f:
            f.seek(1234)
            b = f.read(1)
            f.seek(1234)
            f.write(bytes([b[0] ^ 0xFF]))
        _ww_seal(eight, priv, sig, cache, *extra)

    reseal = record("weightwarden seal, re-seal one changed file", eight_mb, touch_and_reseal)
    sharded = ("--shard-size", str(max(MIB, size_eighth // 4)))
    full_sharded = record(
        "weightwarden seal --shard-size, full (no cache)",
        eight_mb,
        lambda: _ww_seal(eight, priv, sig, None, *sharded),
    )
    _ww_seal(eight, priv, sig, cache, *sharded)  # prime the cache for shards
    reseal_sharded = record(
        "weightwarden seal --shard-size, re-seal one changed file",
        eight_mb,
        lambda: touch_and_reseal(*sharded),
    )

    print("case 4: blake3")
    b3 = record(
        "weightwarden seal --hash blake3",
        four_mb,
        lambda: _ww_seal(four, priv, sig, None, "--hash", "blake3"),
    )

    print("\nratios (targets from the foundation issue)")
    if ms_four:
        print(
            f"  4x512 default vs model_signing CLI:   {ww_four / ms_four:5.2f}x  (target >= 1.3x)"
        )
    print(f"  4x512 default vs hashlib 1 thread:    {ww_four / hl_four:5.2f}x  (target >= 1.7x)")
    print(f"    in-process API vs hashlib 1 thread: {api_four / hl_four:5.2f}x  (no start-up)")
    print(f"  2 GiB --shard-size vs hashlib 1 thr:  {ww_shard / hl_single:5.2f}x  (target >= 1.8x)")
    print(f"    in-process API vs hashlib 1 thread: {api_shard / hl_single:5.2f}x  (no start-up)")
    print(f"  re-seal time / full seal time:        {full / reseal:5.2%}  (target <= 20 %)")
    print(
        f"  same, with --shard-size:              {full_sharded / reseal_sharded:5.2%}"
        "  (a changed file's shards hash on all cores)"
    )
    print(f"  blake3 throughput:                    {b3 / 1000:5.2f} GB/s (target >= 4 GB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
