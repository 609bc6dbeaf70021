"""Cryptography for weightwarden: signing keys and per-agent hash chains."""

from weightwarden.crypto.chain import (
    GENESIS,
    ChainLink,
    ChainProblem,
    ChainReport,
    ProblemKind,
    compute_link_hash,
    next_link,
    verify_chain,
)
from weightwarden.crypto.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    generate_key,
    load_private_key,
    load_public_key,
    write_key_pair,
)

__all__ = [
    "GENESIS",
    "ChainLink",
    "ChainProblem",
    "ChainReport",
    "KeyType",
    "PrivateKey",
    "ProblemKind",
    "PublicKey",
    "compute_link_hash",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "next_link",
    "verify_chain",
    "write_key_pair",
]
