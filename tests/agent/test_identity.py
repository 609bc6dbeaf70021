"""The agent identity key: created once (0600, never half-written), loaded after, checked."""

from __future__ import annotations

import stat
import threading
from typing import TYPE_CHECKING

import pytest

from agent.identity import AgentIdentity, load_or_create_identity
from weightwarden.crypto import KeyType, generate_key, load_public_key, write_key_pair
from weightwarden.errors import KeyFileError

if TYPE_CHECKING:
    from pathlib import Path


def test_first_use_creates_a_p256_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The first call creates identity.key (0600) and identity.pub in a 0700 state folder."""
    state = tmp_path / "state"
    identity = load_or_create_identity(state)
    assert identity.created
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    assert identity.public_path.read_bytes() == identity.public.pem
    assert identity.key.key.curve.name == "secp256r1"  # type: ignore[union-attr]
    assert sorted(p.name for p in state.iterdir()) == ["identity.key", "identity.pub"]


def test_later_starts_load_the_same_key(tmp_path: Path) -> None:
    """A second call loads the existing key instead of making a new one."""
    first = load_or_create_identity(tmp_path)
    second = load_or_create_identity(tmp_path)
    assert not second.created
    assert second.public.pem == first.public.pem
    assert second.fingerprint == first.fingerprint
    signature = second.key.sign(b"batch")
    assert first.public.verify(signature, b"batch")


def test_repr_shows_no_key_material(tmp_path: Path) -> None:
    """The identity's repr names the key type, never its bytes."""
    identity = load_or_create_identity(tmp_path)
    assert "PRIVATE" not in repr(identity)
    assert "PrivateKey(ECPrivateKey)" in repr(identity)


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    """Eight threads creating the identity at once all end up with the same single key."""
    results: list[AgentIdentity | BaseException] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        try:
            results.append(load_or_create_identity(tmp_path / "state"))
        except BaseException as exc:  # noqa: BLE001 -- collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, AgentIdentity) for r in results), results
    identities = [r for r in results if isinstance(r, AgentIdentity)]
    assert len({i.public.pem for i in identities}) == 1
    assert sum(i.created for i in identities) == 1
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "identity.key",
        "identity.pub",
    ]


def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    """A truncated identity.key is refused with its path and what to do, never replaced."""
    identity = load_or_create_identity(tmp_path)
    data = identity.key_path.read_bytes()
    identity.key_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KeyFileError, match=r"identity key .*identity\.key is unusable"):
        load_or_create_identity(tmp_path)
    assert identity.key_path.read_bytes() == data[: len(data) // 2]


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.ECDSA_P384])
def test_key_of_another_type_is_refused(tmp_path: Path, key_type: KeyType) -> None:
    """An Ed25519 or P-384 identity.key is refused: agent identities are ECDSA P-256."""
    write_key_pair(generate_key(key_type), tmp_path / "identity")
    with pytest.raises(KeyFileError, match="not ECDSA P-256"):
        load_or_create_identity(tmp_path)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """An identity.key with mode 0644 is refused (treat it as leaked) rather than used."""
    identity = load_or_create_identity(tmp_path)
    identity.key_path.chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        load_or_create_identity(tmp_path)


def test_public_key_that_does_not_match_is_refused(tmp_path: Path) -> None:
    """An identity.pub of another key is an error naming both files."""
    identity = load_or_create_identity(tmp_path)
    identity.public_path.write_bytes(generate_key().public.pem)
    with pytest.raises(KeyFileError, match="does not match"):
        load_or_create_identity(tmp_path)


def test_missing_public_key_is_written_again(tmp_path: Path) -> None:
    """A deleted identity.pub is written again from the key."""
    identity = load_or_create_identity(tmp_path)
    identity.public_path.unlink()
    again = load_or_create_identity(tmp_path)
    assert load_public_key(again.public_path).pem == identity.public.pem


def test_public_key_without_private_key_is_refused(tmp_path: Path) -> None:
    """identity.pub alone means the key was lost: no silent new identity."""
    identity = load_or_create_identity(tmp_path)
    identity.key_path.unlink()
    with pytest.raises(KeyFileError, match="identity key was lost"):
        load_or_create_identity(tmp_path)
    assert not identity.key_path.exists()
