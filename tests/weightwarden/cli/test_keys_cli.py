"""`weightwarden keys generate` as a user runs it: modes, refusals, passphrases, key types."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from weightwarden.crypto.keys import load_private_key, load_public_key

if TYPE_CHECKING:
    from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_generate_writes_a_0600_private_key_whatever_the_umask(tmp_path, cli, umask):
    """PREFIX.key is 0600 and PREFIX.pub 0644 under a permissive or a strict umask."""
    result = cli("keys", "generate", "--out", tmp_path / "seal", umask=umask)
    assert (result.code, result.stderr) == (0, ""), result
    private, public = tmp_path / "seal.key", tmp_path / "seal.pub"
    assert (mode(private), mode(public)) == (0o600, 0o644)
    assert f"wrote {private} (private, mode 0600) and {public} (public)" in result.stdout


def test_the_default_key_is_ecdsa_p256(tmp_path, cli):
    """Without --type the key is the one the reference verifier accepts."""
    assert cli("keys", "generate", "--out", tmp_path / "k").code == 0
    key = load_private_key(tmp_path / "k.key").key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert (
        load_public_key(tmp_path / "k.pub").pem == load_private_key(tmp_path / "k.key").public.pem
    )


@pytest.mark.parametrize("existing", ["k.key", "k.pub"])
def test_generate_refuses_to_overwrite_either_file(tmp_path, cli, existing):
    """An existing key file is kept byte for byte: exit 2, one line, nothing else written."""
    (tmp_path / existing).write_bytes(b"the only copy of an important key")
    line = cli("keys", "generate", "--out", tmp_path / "k").usage_error()
    assert "already exists" in line
    assert (tmp_path / existing).read_bytes() == b"the only copy of an important key"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


@pytest.mark.parametrize(("key_type", "curve"), [("ed25519", None), ("ecdsa-p384", "secp384r1")])
def test_other_key_types_seal_and_verify_with_weightwarden(
    make_model, tmp_path, cli, key_type, curve
):
    """ed25519 and ecdsa-p384 keys make seals that `weightwarden verify` accepts and checks."""
    assert cli("keys", "generate", "--out", tmp_path / "k", "--type", key_type).code == 0
    key = load_private_key(tmp_path / "k.key").key
    if curve is None:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == curve
    model = make_model({"a": b"1", "b/c": b"2"})
    assert cli("seal", model, "--private-key", tmp_path / "k.key").code == 0
    assert cli("verify", model, "--public-key", tmp_path / "k.pub").code == 0
    (model / "a").write_bytes(b"x")
    assert cli("verify", model, "--public-key", tmp_path / "k.pub").code == 1


def test_a_passphrase_file_encrypts_the_key(make_model, tmp_path, cli):
    """--passphrase-file: the key is encrypted PKCS#8; seal needs the same passphrase."""
    passfile = tmp_path / "pass"
    passfile.write_text("open sesame\n")
    assert cli("keys", "generate", "--out", tmp_path / "k", "--passphrase-file", passfile).code == 0
    assert (tmp_path / "k.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert mode(tmp_path / "k.key") == 0o600
    load_private_key(tmp_path / "k.key", b"open sesame")  # the trailing newline is not part of it
    model = make_model({"a": b"1"})
    line = cli("seal", model, "--private-key", tmp_path / "k.key").usage_error()
    assert "is encrypted" in line
    sealed = cli("seal", model, "--private-key", tmp_path / "k.key", "--passphrase-file", passfile)
    assert sealed.code == 0, sealed


def test_the_passphrase_environment_variable_encrypts_the_key(make_model, tmp_path, cli):
    """$WEIGHTWARDEN_KEY_PASSPHRASE works for generate and seal; a wrong one is exit 2."""
    env = {"WEIGHTWARDEN_KEY_PASSPHRASE": "from the environment"}
    assert cli("keys", "generate", "--out", tmp_path / "k", env=env).code == 0
    load_private_key(tmp_path / "k.key", b"from the environment")
    model = make_model({"a": b"1"})
    assert cli("seal", model, "--private-key", tmp_path / "k.key", env=env).code == 0
    wrong = {"WEIGHTWARDEN_KEY_PASSPHRASE": "guess"}
    line = cli("seal", model, "--private-key", tmp_path / "k.key", env=wrong).usage_error()
    assert "wrong passphrase" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--type", "rsa"], "invalid choice: 'rsa'"),
        (["--passphrase-file", "/nonexistent/pass"], "cannot read passphrase file"),
    ],
)
def test_bad_generate_arguments_exit_2_with_one_line(tmp_path, cli, args, fragment):
    """Unknown types and unreadable passphrase files: exit 2, one line, no key written."""
    line = cli("keys", "generate", "--out", tmp_path / "k", *args).usage_error()
    assert fragment in line
    assert not (tmp_path / "k.key").exists()


def test_an_empty_passphrase_file_is_refused(tmp_path, cli):
    """An empty passphrase would silently write an unencrypted key: refused instead."""
    (tmp_path / "pass").write_text("\n")
    line = cli(
        "keys", "generate", "--out", tmp_path / "k", "--passphrase-file", tmp_path / "pass"
    ).usage_error()
    assert "is empty" in line
    assert not (tmp_path / "k.key").exists()


def test_generate_into_a_missing_folder_exits_2(tmp_path, cli):
    """--out under a folder that does not exist is a one-line error."""
    line = cli("keys", "generate", "--out", tmp_path / "missing" / "k").usage_error()
    assert "cannot create" in line


def test_keys_without_an_action_exits_2(cli):
    """`weightwarden keys` alone asks for an action on one line."""
    assert "required" in cli("keys").usage_error()
