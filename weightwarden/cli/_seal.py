"""``weightwarden seal`` and ``weightwarden verify``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightwarden.cli._options import (
    add_cache_options,
    byte_size,
    open_cache,
    positive_int,
    read_passphrase,
)
from weightwarden.cli._progress import TerminalProgress, wants_progress
from weightwarden.crypto.keys import load_private_key, load_public_key
from weightwarden.seal import SealOptions, seal, verify

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]

EXIT_INTACT = 0
EXIT_TAMPERED = 1


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add the ``seal`` and ``verify`` subcommands."""
    p = sub.add_parser(
        "seal",
        help="hash a checkpoint and sign it (OpenSSF model signing v1.0 bundle)",
        description="Hash MODEL_PATH (a folder or file) and write a signed bundle beside it.",
    )
    p.add_argument("model_path", type=Path, metavar="MODEL_PATH")
    p.add_argument("--private-key", type=Path, required=True, metavar="KEY")
    p.add_argument("--signature", type=Path, metavar="SIG", help="default: MODEL_PATH.sig")
    p.add_argument("--hash", choices=("sha256", "blake3"), default="sha256")
    p.add_argument(
        "--shard-size",
        type=byte_size,
        metavar="BYTES",
        help="split files into shards of BYTES (e.g. 1GiB) and hash them in parallel",
    )
    p.add_argument(
        "--ignore-paths",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="paths inside the model to leave out (folders include everything below)",
    )
    p.add_argument(
        "--no-ignore-git-paths",
        dest="ignore_git_paths",
        action="store_false",
        help="also seal .git, .github, .gitattributes and .gitignore",
    )
    p.add_argument("--allow-symlinks", action="store_true", help="follow links to files inside")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE")
    p.add_argument(
        "--workers", type=positive_int, metavar="N", help="hashing threads (default: CPUs)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_cache_options(p)
    p.set_defaults(func=_run_seal)

    v = sub.add_parser(
        "verify",
        help="check a checkpoint against its seal",
        description=(
            "Exit 0 if MODEL_PATH matches its seal, 1 if content differs (every modified, "
            "added and removed file is listed), 2 for usage, key or format errors."
        ),
    )
    v.add_argument("model_path", type=Path, metavar="MODEL_PATH")
    v.add_argument("--public-key", type=Path, required=True, metavar="PUB")
    v.add_argument("--signature", type=Path, metavar="SIG", help="default: MODEL_PATH.sig")
    v.add_argument("--full", action="store_true", help="re-hash every byte, ignoring the cache")
    v.add_argument(
        "--workers", type=positive_int, metavar="N", help="hashing threads (default: CPUs)"
    )
    v.add_argument("--json", action="store_true", help="print a JSON result")
    add_cache_options(v)
    v.set_defaults(func=_run_verify)


def _progress(label: str, *, json_output: bool) -> TerminalProgress | None:
    return TerminalProgress(label) if wants_progress(sys.stderr, json_output=json_output) else None


def _run_seal(args: argparse.Namespace) -> int:
    key = load_private_key(args.private_key, read_passphrase(args.passphrase_file))
    options = SealOptions(
        hash=args.hash,
        shard_size=args.shard_size,
        ignore_paths=tuple(args.ignore_paths),
        ignore_git_paths=args.ignore_git_paths,
        allow_symlinks=args.allow_symlinks,
    )
    cache = open_cache(args)
    progress = _progress("sealing", json_output=args.json)
    try:
        result = seal(
            args.model_path,
            key,
            signature_path=args.signature,
            options=options,
            cache=cache,
            workers=args.workers,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.finish()
        if cache is not None:
            cache.close()
    files = len({r.file for r in result.manifest.resources})
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(result.model_path),
                    "signature": str(result.signature_path),
                    "root_digest": result.manifest.root_digest.hex(),
                    "files": files,
                    "bytes": result.bytes_hashed,
                    "cache_hits": result.cache_hits,
                    "seconds": round(result.seconds, 3),
                    "serialization": result.manifest.serialization.to_json(),
                }
            )
        )
    else:
        rate = result.bytes_hashed / max(result.seconds, 1e-9) / 1e6
        print(
            f"sealed {result.model_path} -> {result.signature_path} "
            f"({files} files, {result.bytes_hashed / 1e6:.1f} MB, {result.seconds:.2f} s, "
            f"{rate:.0f} MB/s)"
        )
        if not key.public.is_ecdsa:
            print(
                "note: Ed25519 seals verify with weightwarden only; the OpenSSF reference "
                "verifier needs an ECDSA key",
                file=sys.stderr,
            )
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    public_key = load_public_key(args.public_key)
    cache = open_cache(args, disabled=args.full)
    progress = _progress("verifying", json_output=args.json)
    try:
        result = verify(
            args.model_path,
            public_key,
            signature_path=args.signature,
            cache=cache,
            workers=args.workers,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.finish()
        if cache is not None:
            cache.close()
    if args.json:
        print(json.dumps(result.to_json()))
    elif result.intact:
        print(
            f"intact: {result.model_path} matches {result.signature_path} "
            f"({result.files_checked} files, {result.bytes_hashed / 1e6:.1f} MB)"
        )
    else:
        print(f"NOT INTACT: {result.model_path}: {result.reason}")
        for label, names in (
            ("modified", result.diff.modified),
            ("added", result.diff.added),
            ("removed", result.diff.removed),
        ):
            for name in names:
                print(f"  {label}: {name}")
    return EXIT_INTACT if result.intact else EXIT_TAMPERED
