"""Shared fixtures: real model folders, real key pairs, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from weightwarden.crypto.keys import KeyType, generate_key, write_key_pair
from weightwarden.safetensors import TensorSpec, write_safetensors

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

PASSPHRASE_ENV = "WEIGHTWARDEN_KEY_PASSPHRASE"  # noqa: S105 -- the variable's name, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """Paths of a PEM private key and its public key."""

    private: Path
    public: Path


def _key_pair(directory: Path, key_type: KeyType) -> KeyPair:
    private, public = write_key_pair(generate_key(key_type), directory / key_type.value)
    return KeyPair(private=private, public=public)


@pytest.fixture(scope="session")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """An ECDSA P-256 key pair (the default type, the one the reference verifier accepts)."""
    return _key_pair(tmp_path_factory.mktemp("keys"), KeyType.ECDSA_P256)


@pytest.fixture(scope="session")
def other_key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A second, unrelated ECDSA P-256 key pair."""
    return _key_pair(tmp_path_factory.mktemp("other-keys"), KeyType.ECDSA_P256)


@pytest.fixture(scope="session")
def ed25519_key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """An Ed25519 key pair (weightwarden verifies it, the reference verifier does not)."""
    return _key_pair(tmp_path_factory.mktemp("ed-keys"), KeyType.ED25519)


@pytest.fixture(scope="session")
def p384_key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """An ECDSA P-384 key pair."""
    return _key_pair(tmp_path_factory.mktemp("p384-keys"), KeyType.ECDSA_P384)


def write_files(root: Path, files: Mapping[str, bytes]) -> Path:
    """Create ``root`` holding ``files`` (POSIX relative name -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def _build_checkpoint(root: Path) -> None:
    """A small checkpoint shaped like a real one: safetensors shards, config, tokenizer."""
    root.mkdir(parents=True)
    for shard in range(2):
        write_safetensors(
            root / f"model-{shard + 1:05d}-of-00002.safetensors",
            [
                TensorSpec(name=f"layers.{shard}.attn.weight", dtype="BF16", shape=(64, 96)),
                TensorSpec(name=f"layers.{shard}.mlp.weight", dtype="F32", shape=(32, 64)),
            ],
            seed=f"weightwarden-test-{shard}".encode(),
        )
    (root / "config.json").write_text('{"architectures": ["TestForCausalLM"], "hidden_size": 64}\n')
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (root / "tokenizer" / "special_tokens_map.json").write_text("{}\n")


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """Build a model folder under tmp_path: a small real checkpoint, or the given files.

    ``make_model()`` makes a checkpoint (two safetensors shards, config.json and a
    tokenizer/ folder); ``make_model({"a": b"1", "sub/b": b"2"}, name="m")`` makes exactly
    those files.
    """
    counter = iter(range(1_000_000))

    def make(files: Mapping[str, bytes] | None = None, *, name: str | None = None) -> Path:
        root = tmp_path / (name or f"model-{next(counter)}")
        if files is None:
            _build_checkpoint(root)
            return root
        return write_files(root, files)

    return make


@dataclass(frozen=True, slots=True, kw_only=True)
class CliResult:
    """What one run of the ``weightwarden`` command did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Stdout decoded as JSON."""
        return json.loads(self.stdout)

    def usage_error(self) -> str:
        """Assert a usage/key/format error (exit 2, one stderr line, no traceback); return it."""
        assert self.code == 2, (self.code, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("weightwarden"), lines[0]
        assert ": error: " in lines[0], lines[0]
        return lines[0]


def weightwarden_command() -> list[str]:
    """The installed ``weightwarden`` script next to this interpreter, else its entry point."""
    script = Path(sys.executable).with_name("weightwarden")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from weightwarden.cli import main; sys.exit(main())"]


class Cli:
    """Runs ``weightwarden`` as a real subprocess with a private cache and no passphrase."""

    def __init__(self, cache_home: Path) -> None:
        self.cache_home = cache_home

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a run gets: ours, minus any passphrase, with XDG_CACHE_HOME set."""
        env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
        env["XDG_CACHE_HOME"] = str(self.cache_home)
        env.update(extra or {})
        return env

    def __call__(
        self,
        *args: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        umask: int = -1,
        cwd: Path | None = None,
        honour_file_modes: bool = False,
    ) -> CliResult:
        """Run ``weightwarden ARGS`` and return its exit code and output.

        ``honour_file_modes`` runs it without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so that
        even root cannot read a chmod 000 file (see :func:`file_modes_bind`).
        """
        prefix = _NO_DAC_OVERRIDE if honour_file_modes and os.geteuid() == 0 else []
        proc = subprocess.run(
            [*prefix, *weightwarden_command(), *map(str, args)],
            capture_output=True,
            text=True,
            env=self.env(env),
            umask=umask,
            cwd=cwd,
            timeout=120,
            check=False,
        )
        return CliResult(code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


_NO_DAC_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def file_modes_bind() -> str | None:
    """None if a ``honour_file_modes`` run cannot read a mode-000 file, else why not."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv") is None:
        return "running as root and util-linux setpriv (to drop CAP_DAC_OVERRIDE) is missing"
    probe = subprocess.run(
        [*_NO_DAC_OVERRIDE, "true"], capture_output=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        return "running as root without the right to drop CAP_DAC_OVERRIDE"
    return None


@pytest.fixture(scope="session")
def unreadable_files_possible() -> None:
    """Skip unless a file can be made unreadable to the CLI (root reads anything by default)."""
    reason = file_modes_bind()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Run the real ``weightwarden`` command; its digest cache lives under tmp_path."""
    return Cli(tmp_path / "xdg-cache")


@pytest.fixture(scope="session")
def reference_verify() -> Callable[[Path, Path, Path], Exception | None]:
    """Verify with model_signing's Python API, in-process: None if it accepts, else its error.

    Skips where the reference verifier (PyPI ``model-signing``) is not installed.
    """
    verifying = pytest.importorskip("model_signing.verifying")

    def check(model: Path, signature: Path, public_key: Path) -> Exception | None:
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(
                model, signature
            )
        except Exception as exc:  # noqa: BLE001 -- any refusal counts; callers inspect it
            return exc
        return None

    return check


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A temporary folder every user can enter and read (tests run readers as nobody)."""
    path = Path(tempfile.mkdtemp(prefix="ww-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
