"""``weightwarden keys generate``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightwarden.cli._options import read_passphrase
from weightwarden.crypto.keys import KeyType, generate_key, write_key_pair

if TYPE_CHECKING:
    import argparse

__all__ = ["register"]


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``keys generate``."""
    keys = sub.add_parser("keys", help="manage signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    gen = keys_sub.add_parser(
        "generate",
        help="write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub",
        description=(
            "Generate a signing key pair. ecdsa-p256 (the default) is what the OpenSSF "
            "reference verifier accepts. The passphrase, if any, comes from --passphrase-file "
            "or $WEIGHTWARDEN_KEY_PASSPHRASE, never from the command line."
        ),
    )
    gen.add_argument("--out", type=Path, required=True, metavar="PREFIX")
    gen.add_argument("--type", choices=[t.value for t in KeyType], default=KeyType.ECDSA_P256.value)
    gen.add_argument("--passphrase-file", type=Path, metavar="FILE")
    gen.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    key = generate_key(KeyType(args.type))
    private_path, public_path = write_key_pair(key, args.out, read_passphrase(args.passphrase_file))
    print(f"wrote {private_path} (private, mode 0600) and {public_path} (public)")
    return 0
