"""``weightwarden demo``: the main job on embedded defaults, end to end on this machine.

Builds a small model folder, makes a key, seals the folder, verifies it, then tampers with
it (one flipped byte, one added file, one removed file) and shows verification catching
every change. Everything happens in a temporary folder that is removed afterwards unless
``--keep`` is given. Exit 0 means every step behaved as a sealed checkpoint should.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightwarden.crypto.keys import generate_key, load_private_key, load_public_key, write_key_pair
from weightwarden.safetensors import TensorSpec, write_safetensors
from weightwarden.seal import seal, verify

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``demo``."""
    p = sub.add_parser("demo", help="seal a demo checkpoint, tamper with it, catch it")
    p.add_argument("--dir", type=Path, help="work here instead of a temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument(
        "--seal-only",
        action="store_true",
        help="only the sealing part (no collector, agent or alerts)",
    )
    p.set_defaults(func=_run)


def _build_model(model: Path) -> None:
    model.mkdir(parents=True)
    for shard in range(2):
        write_safetensors(
            model / f"model-{shard + 1:05d}-of-00002.safetensors",
            [
                TensorSpec(name=f"layers.{shard}.attn.qkv.weight", dtype="BF16", shape=(512, 1536)),
                TensorSpec(name=f"layers.{shard}.mlp.up.weight", dtype="BF16", shape=(512, 2048)),
            ],
            seed=f"weightwarden-demo-{shard}".encode(),
        )
    (model / "config.json").write_text(
        '{"architectures": ["DemoForCausalLM"], "hidden_size": 512}\n'
    )
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}\n')


def _step(title: str) -> None:
    print(f"\n== {title}")


def _run(args: argparse.Namespace) -> int:
    chain = not args.seal_only
    if args.dir is not None:
        return _demo(args.dir, chain=chain)
    tmp = Path(tempfile.mkdtemp(prefix="weightwarden-demo-"))
    try:
        return _demo(tmp, chain=chain)
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _demo(work: Path, *, chain: bool) -> int:
    model = work / "checkpoint-1000"
    _step(f"building a demo checkpoint in {model}")
    _build_model(model)
    for f in sorted(model.iterdir()):
        print(f"  {f.name:40s} {f.stat().st_size:>10,d} bytes")

    _step("generating an ECDSA P-256 signing key (private key mode 0600)")
    private_path, public_path = write_key_pair(generate_key(), work / "seal")
    print(f"  {private_path}\n  {public_path}")

    _step("sealing (OpenSSF model signing v1.0 bundle)")
    result = seal(model, load_private_key(private_path))
    print(
        f"  {result.signature_path}: {len(result.manifest.resources)} resources, "
        f"root digest {result.manifest.root_digest.hex()[:16]}…"
    )

    public = load_public_key(public_path)
    _step("verifying the untouched checkpoint")
    clean = verify(model, public)
    print(f"  intact: {clean.intact}")

    _step("tampering: flip one byte, drop in a file, delete the tokenizer")
    shard = model / "model-00002-of-00002.safetensors"
    with shard.open("r+b") as fh:
        fh.seek(123_456)
        byte = fh.read(1)
        fh.seek(123_456)
        fh.write(bytes([byte[0] ^ 0x01]))
    (model / "backdoor.py").write_text("print('exfiltrate')\n")
    (model / "tokenizer.json").unlink()

    _step("verifying again")
    tampered = verify(model, public)
    print(f"  intact: {tampered.intact}")
    for label, names in (
        ("modified", tampered.diff.modified),
        ("added", tampered.diff.added),
        ("removed", tampered.diff.removed),
    ):
        for name in names:
            print(f"  {label}: {name}")

    caught = (
        clean.intact
        and not tampered.intact
        and tampered.diff.modified == (shard.name,)
        and tampered.diff.added == ("backdoor.py",)
        and tampered.diff.removed == ("tokenizer.json",)
    )
    print("  every change was caught" if caught else "  DEMO FAILED: a change went unnoticed")
    from weightwarden.cli._chain_demo import run_chain_demo  # noqa: PLC0415 -- only the demo needs it

    chained = run_chain_demo(work / "chain", _build_model) if chain else True
    _step("result")
    if caught and chained:
        print(
            "  sealing caught every change"
            + ("; the chain raised every expected alert" if chain else "")
        )
        return 0
    print("  DEMO FAILED: see above (process logs in processes.log under the work folder)")
    return 1
