"""Canaries: decoy checkpoints that nobody has a reason to open, so any open is an alarm.

:func:`plant` writes decoy checkpoints into a folder. Each decoy looks like a Hugging Face
training checkpoint: a folder named like ``checkpoint-48000`` holding safetensors shards
(``model-00001-of-00003.safetensors``, or ``model.safetensors`` below 16 MiB) whose
headers describe a plausible Llama-style model, the shard index, ``config.json``,
``generation_config.json``, a tokenizer (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) and ``trainer_state.json``. Tensor data is pseudo-random
bytes from SHAKE-256 of a fresh 32-byte secret seed per shard, so no two decoys share
content and a decoy never matches a real checkpoint's digest. The content is safetensors
(never pickle): a tool that loads a decoy gets noise, never code execution.

A decoy's tensor data is ``size`` bytes to within 2 % (sizes from 1 MiB; 64 MiB by default).
Its files are written under a hidden temporary name and renamed into place at the end,
so an interrupted plant leaves no half-written decoy. When run as root, the files take
the owner and group of the folder they are planted in, so they look like their
neighbours.

Where the list of decoys lives
------------------------------
The registry of planted canaries is **not** kept beside the decoys: an intruder who lists
the folder must not learn which checkpoints are bait. It is a JSON file in the agent's
state folder (``/var/lib/weightwarden/canaries.json`` by default, ``agent.canary_registry``
in the agent config, ``--registry`` on the command line), written atomically with mode
0600 and updated under an exclusive ``flock`` so concurrent plants do not lose entries.
Each entry holds the path, size, SHA-256, planting time, the decoy it belongs to, and the
file's device and inode numbers.

Lookup
------
:meth:`CanaryRegistry.is_canary` is a set lookup by path, and by ``(st_dev, st_ino)``
when the caller passes the identity of the opened file (``fstat`` of the event's
descriptor), so a canary that was renamed or hard-linked keeps its mark. Limits: a
canary that is deleted frees its inode, which a later file may reuse, and device numbers
of some filesystems (btrfs subvolumes, NFS) can change across reboots or remounts;
:meth:`CanaryRegistry.load` therefore re-reads the identity of every canary still at its
path. A copy of a canary is a new inode: it is found by the copy detector, not here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightwarden.errors import ConfigError, UsageError
from weightwarden.safetensors import TensorSpec, write_safetensors

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "DEFAULT_DECOY_SIZE",
    "DEFAULT_REGISTRY",
    "MIN_DECOY_SIZE",
    "Canary",
    "CanaryRegistry",
    "DecoyShape",
    "decoy_shape",
    "plant",
    "record_canaries",
]

DEFAULT_DECOY_SIZE = 64 << 20
"""Bytes of tensor data per decoy checkpoint unless asked otherwise."""
MIN_DECOY_SIZE = 1 << 20
"""Smallest decoy: below this a checkpoint with a tokenizer looks implausible."""
DEFAULT_REGISTRY = Path("/var/lib/weightwarden/canaries.json")
"""The registry in the agent's default state folder (``agent.config.DEFAULT_STATE_DIR``)."""

_REGISTRY_VERSION = 1
_SHARDED_FROM = 16 << 20
_HIDDEN_SIZES = (4096, 3072, 2560, 2048, 1536, 1024, 768, 512, 384, 256, 128, 64)
_MIN_LAYERS = 4
_LAYER_SHARE = 0.7
_BF16 = 2
_HEAD_DIM = 64
_VOCAB_STEP = 64
_NAME_STYLES = ("checkpoint-{step}", "global_step{step}", "step_{step:07d}")
_ENTRY_KEYS = frozenset(
    {"path", "decoy", "size", "sha256", "planted_at", "device", "inode", "weights"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Canary:
    """One planted decoy file.

    Attributes:
        path: Absolute path where it was planted.
        decoy: The decoy checkpoint folder it belongs to.
        size: Size in bytes.
        sha256: SHA-256 of its content, lower-case hex.
        planted_at: When it was planted, milliseconds since the epoch (UTC).
        device: ``st_dev`` of the file when planted.
        inode: ``st_ino`` of the file when planted.
        weights: True for a safetensors shard, False for config, tokenizer and index files.
    """

    path: str
    decoy: str
    size: int
    sha256: str
    planted_at: int
    device: int
    inode: int
    weights: bool

    def to_json(self) -> dict[str, object]:
        """The registry entry."""
        return {
            "path": self.path,
            "decoy": self.decoy,
            "size": self.size,
            "sha256": self.sha256,
            "planted_at": self.planted_at,
            "device": self.device,
            "inode": self.inode,
            "weights": self.weights,
        }

    @classmethod
    def from_json(cls, obj: object, where: str) -> Canary:
        """Parse one registry entry strictly.

        Raises:
            ValueError: a key is missing or unknown, or a value is out of range.
            TypeError: a value has the wrong type (``where`` names it).
        """
        if not isinstance(obj, dict):
            raise TypeError(f"{where} is not an object")
        unknown = set(obj) - _ENTRY_KEYS
        missing = _ENTRY_KEYS - set(obj)
        if unknown or missing:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        for key in ("path", "decoy", "sha256"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise TypeError(f"{where}.{key} must be a non-empty string")
        for key in ("size", "planted_at", "device", "inode"):
            value = obj[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{where}.{key} must be an integer")
            if value < 0:
                raise ValueError(f"{where}.{key} must not be negative")
        if not isinstance(obj["weights"], bool):
            raise TypeError(f"{where}.weights must be true or false")
        if not os.path.isabs(obj["path"]):  # noqa: PTH117 -- a str check, no Path needed
            raise ValueError(f"{where}.path must be absolute")
        return cls(
            path=obj["path"],
            decoy=obj["decoy"],
            size=obj["size"],
            sha256=obj["sha256"],
            planted_at=obj["planted_at"],
            device=obj["device"],
            inode=obj["inode"],
            weights=obj["weights"],
        )


class CanaryRegistry:
    """The planted canaries, indexed for a constant-time lookup on every file event."""

    def __init__(self, canaries: Iterable[Canary] = ()) -> None:
        self._by_path: dict[str, Canary] = {}
        self._by_identity: dict[tuple[int, int], Canary] = {}
        for canary in canaries:
            self._add(canary, (canary.device, canary.inode))

    def _add(self, canary: Canary, identity: tuple[int, int]) -> None:
        self._by_path[canary.path] = canary
        self._by_identity[identity] = canary

    def __len__(self) -> int:
        return len(self._by_path)

    def __iter__(self) -> Iterator[Canary]:
        return iter(sorted(self._by_path.values(), key=lambda c: c.path))

    @property
    def canaries(self) -> tuple[Canary, ...]:
        """Every canary, sorted by path."""
        return tuple(self)

    def directories(self) -> frozenset[str]:
        """The folders holding canaries, which the daemon must watch (maybe outside the roots)."""
        return frozenset(os.path.dirname(c.path) for c in self._by_path.values())  # noqa: PTH120

    def lookup(
        self, path: str | os.PathLike[str], *, identity: tuple[int, int] | None = None
    ) -> Canary | None:
        """Return the canary at ``path``, or with ``identity`` ``(st_dev, st_ino)``, or None.

        No I/O: pass ``identity`` from an ``fstat`` the caller already made so a renamed
        canary is still recognised.
        """
        found = self._by_path.get(os.fspath(path))
        if found is None and identity is not None:
            found = self._by_identity.get(identity)
        return found

    def is_canary(
        self, path: str | os.PathLike[str], *, identity: tuple[int, int] | None = None
    ) -> bool:
        """Whether an open of ``path`` (with that ``(st_dev, st_ino)``) is an open of a canary."""
        return self.lookup(path, identity=identity) is not None

    def merged(self, canaries: Iterable[Canary]) -> CanaryRegistry:
        """A registry with ``canaries`` added (an entry for the same path is replaced)."""
        by_path = dict(self._by_path)
        by_path.update((c.path, c) for c in canaries)
        return CanaryRegistry(by_path.values())

    def to_json(self) -> dict[str, object]:
        """The registry file's content."""
        return {"version": _REGISTRY_VERSION, "canaries": [c.to_json() for c in self]}

    @classmethod
    def from_json(cls, obj: object, source: str = "<registry>") -> CanaryRegistry:
        """Parse a registry file's content strictly.

        Raises:
            ConfigError: the content is not a version-1 registry; names ``source``.
        """
        try:
            canaries = _parse_entries(obj)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: not a valid canary registry: {exc}; restore it from backup, or "
                "remove it and plant canaries again"
            ) from exc
        return cls(canaries)

    @classmethod
    def load(cls, path: Path) -> CanaryRegistry:
        """Read the registry at ``path``; a missing file is an empty registry.

        Each canary still present at its path is also indexed under the identity it has
        now, in case its device number changed since it was planted.

        Raises:
            ConfigError: the file is unreadable or malformed (the daemon cannot do canary
                detection, so it must not start as if it could).
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the canary registry: {exc.strerror}") from exc
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{path}: the canary registry is not JSON ({exc}); restore it from backup, or "
                "remove it and plant canaries again"
            ) from exc
        registry = cls.from_json(obj, str(path))
        for canary in registry.canaries:
            try:
                st = Path(canary.path).lstat()
            except OSError:
                continue  # moved or deleted: the recorded identity still applies
            if st.st_size == canary.size:
                registry._by_identity[(st.st_dev, st.st_ino)] = canary  # noqa: SLF001
        return registry

    def save(self, path: Path) -> None:
        """Write the registry atomically, mode 0600 (the list of decoys is itself a secret).

        Raises:
            UsageError: the folder cannot be created or written.
        """
        data = json.dumps(self.to_json(), indent=1).encode() + b"\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise UsageError(
                f"cannot write the canary registry in {path.parent}: {exc.strerror}; "
                "pass --registry PATH to a folder you can write"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _parse_entries(obj: object) -> list[Canary]:
    if not isinstance(obj, dict) or set(obj) != {"version", "canaries"}:
        raise TypeError("expected an object with exactly 'version' and 'canaries'")
    if obj["version"] != _REGISTRY_VERSION:
        raise ValueError(f"unsupported version {obj['version']!r}")
    entries = obj["canaries"]
    if not isinstance(entries, list):
        raise TypeError("'canaries' must be a list")
    return [Canary.from_json(e, f"canaries[{i}]") for i, e in enumerate(entries)]


def record_canaries(registry_path: Path, canaries: Iterable[Canary]) -> CanaryRegistry:
    """Add ``canaries`` to the registry file under an exclusive lock; return the new registry.

    The lock is ``flock`` on ``REGISTRY.lock`` beside the registry, so two plants running at
    once both land.

    Raises:
        ConfigError: the existing registry is malformed.
        UsageError: the registry folder cannot be written.
    """
    lock_path = registry_path.with_name(registry_path.name + ".lock")
    try:
        registry_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot lock the canary registry {registry_path}: {exc.strerror}; "
            "pass --registry PATH to a folder you can write"
        ) from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        registry = CanaryRegistry.load(registry_path).merged(canaries)
        registry.save(registry_path)
    finally:
        os.close(lock_fd)
    return registry


@dataclass(frozen=True, slots=True, kw_only=True)
class DecoyShape:
    """The model a decoy pretends to be: Llama-style, bfloat16.

    Attributes:
        hidden: Hidden size.
        intermediate: MLP width.
        layers: Transformer blocks.
        vocab: Vocabulary size (a multiple of 64, as padded vocabularies are).
        shards: Safetensors files the tensors are split across.
    """

    hidden: int
    intermediate: int
    layers: int
    vocab: int
    shards: int

    @property
    def heads(self) -> int:
        """Attention heads (head size 64)."""
        return max(1, self.hidden // _HEAD_DIM)

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data across all shards."""
        return sum(t.nbytes for shard in self.shard_tensors() for t in shard)

    def shard_tensors(self) -> list[list[TensorSpec]]:
        """The tensors of each shard: embeddings first, layers spread evenly, head last."""
        h, inter = self.hidden, self.intermediate
        h1 = (h,)
        layers: list[list[TensorSpec]] = []
        for i in range(self.layers):
            p = f"model.layers.{i}"
            layers.append(
                [
                    TensorSpec(name=f"{p}.input_layernorm.weight", dtype="BF16", shape=(h,)),
                    TensorSpec(name=f"{p}.mlp.down_proj.weight", dtype="BF16", shape=(h, inter)),
                    TensorSpec(name=f"{p}.mlp.gate_proj.weight", dtype="BF16", shape=(inter, h)),
                    TensorSpec(name=f"{p}.mlp.up_proj.weight", dtype="BF16", shape=(inter, h)),
                    TensorSpec(name=f"{p}.post_attention_layernorm.weight", dtype="BF16", shape=h1),
                    TensorSpec(name=f"{p}.self_attn.k_proj.weight", dtype="BF16", shape=(h, h)),
                    TensorSpec(name=f"{p}.self_attn.o_proj.weight", dtype="BF16", shape=(h, h)),
                    TensorSpec(name=f"{p}.self_attn.q_proj.weight", dtype="BF16", shape=(h, h)),
                    TensorSpec(name=f"{p}.self_attn.v_proj.weight", dtype="BF16", shape=(h, h)),
                ]
            )
        shards: list[list[TensorSpec]] = [[] for _ in range(self.shards)]
        shards[0].append(
            TensorSpec(name="model.embed_tokens.weight", dtype="BF16", shape=(self.vocab, h))
        )
        for i, block in enumerate(layers):
            shards[min(self.shards - 1, i * self.shards // self.layers)].extend(block)
        shards[-1].append(TensorSpec(name="lm_head.weight", dtype="BF16", shape=(self.vocab, h)))
        shards[-1].append(TensorSpec(name="model.norm.weight", dtype="BF16", shape=(h,)))
        return shards


def _layer_bytes(hidden: int, intermediate: int) -> int:
    return _BF16 * (4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden)


def _intermediate(hidden: int) -> int:
    return math.ceil(8 * hidden / 3 / 256) * 256


def decoy_shape(size: int, *, shards: int | None = None) -> DecoyShape:
    """Choose a plausible model whose tensor data is ``size`` bytes to within 2 %.

    The hidden size is the largest that leaves room for at least four layers in 70 % of
    the budget; the vocabulary fills the rest. ``shards`` defaults to one file below
    16 MiB and three above.

    Raises:
        UsageError: ``size`` is below :data:`MIN_DECOY_SIZE`.
    """
    if size < MIN_DECOY_SIZE:
        raise UsageError(f"--size must be at least 1MiB for a plausible decoy, got {size}")
    hidden = _HIDDEN_SIZES[-1]
    for candidate in _HIDDEN_SIZES:
        if _MIN_LAYERS * _layer_bytes(candidate, _intermediate(candidate)) <= _LAYER_SHARE * size:
            hidden = candidate
            break
    inter = _intermediate(hidden)
    layers = max(1, int(_LAYER_SHARE * size) // _layer_bytes(hidden, inter))
    rest = size - layers * _layer_bytes(hidden, inter) - _BF16 * hidden
    vocab = max(_VOCAB_STEP, rest // (2 * _BF16 * hidden) // _VOCAB_STEP * _VOCAB_STEP)
    n_shards = shards if shards is not None else (1 if size < _SHARDED_FROM else 3)
    return DecoyShape(
        hidden=hidden,
        intermediate=inter,
        layers=layers,
        vocab=vocab,
        shards=max(1, min(n_shards, layers)),
    )


def _shard_names(shards: int) -> list[str]:
    if shards == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]


def _json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, indent=2).encode() + b"\n"


def _side_files(shape: DecoyShape, step: int, shard_names: list[str]) -> dict[str, bytes]:
    """config.json, tokenizer and trainer files as a Hugging Face Trainer would leave them."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.heads,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "vocab_size": shape.vocab,
    }
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    byte_tokens = {f"<0x{b:02X}>": b + 3 for b in range(256)}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": tok, "special": True, "normalized": False}
            for i, tok in enumerate(("<unk>", "<s>", "</s>"))
        ],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]},
        "model": {
            "type": "BPE",
            "unk_token": "<unk>",
            "byte_fallback": True,
            "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, **byte_tokens},
            "merges": [],
        },
    }
    files = {
        "config.json": _json_bytes(config),
        "generation_config.json": _json_bytes(
            {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.46.2"}
        ),
        "special_tokens_map.json": _json_bytes(specials),
        "tokenizer.json": _json_bytes(tokenizer),
        "tokenizer_config.json": _json_bytes(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "model_max_length": 4096,
                "tokenizer_class": "LlamaTokenizer",
                **specials,
            }
        ),
        "trainer_state.json": _json_bytes(
            {"global_step": step, "epoch": round(step / 12_000, 4), "log_history": []}
        ),
    }
    if len(shard_names) > 1:
        weight_map = {
            t.name: name
            for name, tensors in zip(shard_names, shape.shard_tensors(), strict=True)
            for t in tensors
        }
        files["model.safetensors.index.json"] = _json_bytes(
            {
                "metadata": {"total_size": shape.tensor_bytes},
                "weight_map": dict(sorted(weight_map.items())),
            }
        )
    return files


def _decoy_name(directory: Path, taken: set[str], rng: random.Random) -> tuple[str, int]:
    while True:
        step = rng.randrange(2, 400) * 250
        name = rng.choice(_NAME_STYLES).format(step=step)
        if name not in taken and not (directory / name).exists():
            taken.add(name)
            return name, step


def _write_decoy(
    tmp: Path, shape: DecoyShape, step: int, owner: tuple[int, int] | None
) -> list[tuple[str, bool, str]]:
    """Write one decoy's files into ``tmp``; return (name, is_weights, sha256) for each.

    Digests are taken while writing: reading a decoy back would itself look like an
    intruder touching a canary.
    """
    tmp.chmod(0o755)
    names = _shard_names(shape.shards)
    written: list[tuple[str, bool, str]] = []
    for name, tensors in zip(names, shape.shard_tensors(), strict=True):
        done = write_safetensors(tmp / name, tensors, seed=secrets.token_bytes(32))
        written.append((name, True, done.sha256))
    for name, content in _side_files(shape, step, names).items():
        (tmp / name).write_bytes(content)
        written.append((name, False, hashlib.sha256(content).hexdigest()))
    for name, _, _ in written:
        (tmp / name).chmod(0o644)
    if owner is not None:
        for path in (tmp, *(tmp / name for name, _, _ in written)):
            os.chown(path, *owner)
    return written


def plant(
    directory: Path,
    *,
    count: int = 1,
    size: int = DEFAULT_DECOY_SIZE,
    shards: int | None = None,
    rng: random.Random | None = None,
    now_ms: int | None = None,
) -> list[Canary]:
    """Write ``count`` decoy checkpoints of about ``size`` bytes each into ``directory``.

    Does not touch the registry: pass the result to :func:`record_canaries`.

    Args:
        directory: An existing folder (often a weight root, or beside one).
        count: How many decoy checkpoints.
        size: Bytes of tensor data per decoy (at least :data:`MIN_DECOY_SIZE`).
        shards: Safetensors files per decoy (default: by size, see :func:`decoy_shape`).
        rng: Chooses folder names and step numbers (default: the OS's randomness). The
            tensor data always comes from fresh secret seeds.
        now_ms: The planting time to record (default: now).

    Returns:
        Every file planted, decoy by decoy.

    Raises:
        UsageError: ``directory`` is not a folder, ``count`` or ``size`` is out of range,
            or the files cannot be written (nothing half-written is left behind).
    """
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    shape = decoy_shape(size, shards=shards)
    if not directory.is_dir():
        raise UsageError(f"cannot plant canaries in {directory}: it is not a folder")
    root = directory.resolve()
    chooser = rng or secrets.SystemRandom()
    planted_at = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    root_stat = root.stat()
    owner = (root_stat.st_uid, root_stat.st_gid) if os.geteuid() == 0 else None
    taken: set[str] = set()
    canaries: list[Canary] = []
    for _ in range(count):
        name, step = _decoy_name(root, taken, chooser)
        try:
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        except OSError as exc:
            raise UsageError(f"cannot write in {root}: {exc.strerror}") from exc
        try:
            written = _write_decoy(tmp, shape, step, owner)
            final = root / name
            tmp.rename(final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UsageError(f"cannot write a decoy in {root}: {exc.strerror}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for file_name, weights, sha256 in written:
            path = final / file_name
            st = path.stat()
            canaries.append(
                Canary(
                    path=str(path),
                    decoy=str(final),
                    size=st.st_size,
                    sha256=sha256,
                    planted_at=planted_at,
                    device=st.st_dev,
                    inode=st.st_ino,
                    weights=weights,
                )
            )
    return canaries
