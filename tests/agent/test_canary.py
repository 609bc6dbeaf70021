import hashlib
import json
import os
import random
import threading
from pathlib import Path

import pytest

from agent.canary import (
    MIN_DECOY_SIZE,
    Canary,
    CanaryRegistry,
    decoy_shape,
    plant,
    record_canaries,
)
from weightwarden.errors import ConfigError, UsageError
from weightwarden.safetensors import read_header

SIZE = 2 * MIN_DECOY_SIZE


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    path = tmp_path / "weights"
    path.mkdir()
    return path


def _tensor_entries(header: dict[str, object]) -> dict[str, dict[str, object]]:
    return {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def test_plant_writes_safetensors_whose_headers_describe_the_whole_file(weights_dir):
    """Every shard has a valid safetensors header whose data offsets end at the file's end."""
    canaries = plant(weights_dir, size=SIZE, shards=2)
    shards = [c for c in canaries if c.weights]
    assert len(shards) == 2
    for canary in shards:
        path = Path(canary.path)
        assert path.name.endswith(".safetensors")
        header = read_header(path)
        head_len = int.from_bytes(path.read_bytes()[:8], "little")
        data_end = max(e["data_offsets"][1] for e in _tensor_entries(header).values())  # type: ignore[index]
        assert 8 + head_len + data_end == path.stat().st_size
        assert not path.read_bytes().startswith(b"\x80")  # not a pickle


def test_plant_leaves_a_plausible_checkpoint_beside_the_shards(weights_dir):
    """A decoy has config.json, tokenizer files and an index that agree with the shards."""
    rng = random.Random(7)  # noqa: S311 -- chooses folder names, not secrets
    canaries = plant(weights_dir, size=SIZE, shards=2, rng=rng)
    decoy = Path(canaries[0].decoy)
    assert decoy.parent == weights_dir.resolve()
    assert decoy.name.startswith(("checkpoint-", "global_step", "step_"))
    names = {p.name for p in decoy.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= names
    config = json.loads((decoy / "config.json").read_text())
    index = json.loads((decoy / "model.safetensors.index.json").read_text())
    in_shards = {}
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        for name in _tensor_entries(read_header(decoy / shard)):
            in_shards[name] = shard
    assert index["weight_map"] == in_shards
    embed = _tensor_entries(read_header(decoy / "model-00001-of-00002.safetensors"))[
        "model.embed_tokens.weight"
    ]
    assert embed["shape"] == [config["vocab_size"], config["hidden_size"]]
    assert sum(1 for n in in_shards if n.endswith("q_proj.weight")) == config["num_hidden_layers"]
    assert {c.path for c in canaries} == {str(decoy / n) for n in names}


def test_plant_records_true_sizes_and_digests(weights_dir):
    """The size, SHA-256 and inode recorded for each file are those of the file on disk."""
    for canary in plant(weights_dir, size=SIZE):
        path = Path(canary.path)
        st = path.stat()
        assert (canary.size, canary.device, canary.inode) == (st.st_size, st.st_dev, st.st_ino)
        assert canary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_decoy_size_is_close_to_the_size_asked_for(weights_dir):
    """Tensor data is within 2 % of the requested size, from 1 MiB to 10 GiB."""
    for size in (MIN_DECOY_SIZE, 64 << 20, 10 << 30):
        shape = decoy_shape(size)
        assert 0.98 * size <= shape.tensor_bytes <= size
    weights = sum(c.size for c in plant(weights_dir, size=SIZE) if c.weights)
    assert 0.98 * SIZE <= weights <= 1.01 * SIZE


def test_every_decoy_has_unique_content(weights_dir):
    """Two decoys of the same shape share no shard digest."""
    canaries = plant(weights_dir, count=2, size=SIZE)
    decoys = {c.decoy for c in canaries}
    assert len(decoys) == 2
    digests = [c.sha256 for c in canaries if c.weights]
    assert len(digests) == len(set(digests))


def test_plant_leaves_no_marker_or_temporary_folder_in_the_directory(weights_dir):
    """Listing the folder shows checkpoints only: no registry, no hidden leftovers."""
    plant(weights_dir, count=2, size=SIZE)
    entries = sorted(p.name for p in weights_dir.iterdir())
    assert len(entries) == 2
    assert not any(name.startswith(".") for name in entries)
    for path in weights_dir.rglob("*"):
        if path.suffix == ".json":
            text = path.read_text().lower()
            assert "canary" not in text
            assert "weightwarden" not in text


def test_plant_refuses_what_it_cannot_do(weights_dir, tmp_path):
    """A missing folder, a zero count or a decoy under 1 MiB are usage errors."""
    with pytest.raises(UsageError, match="not a folder"):
        plant(tmp_path / "missing", size=SIZE)
    with pytest.raises(UsageError, match="--count"):
        plant(weights_dir, count=0, size=SIZE)
    with pytest.raises(UsageError, match="--size"):
        plant(weights_dir, size=MIN_DECOY_SIZE - 1)
    assert not any(weights_dir.iterdir())


def test_plant_as_root_gives_decoys_the_folder_owner(weights_dir):
    """Run as root, decoys take the owner and group of their folder, like their neighbours."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown planted files")
    os.chown(weights_dir, 65534, 65534)
    for canary in plant(weights_dir, size=SIZE):
        st = Path(canary.path).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_registry_round_trips_outside_the_directory_with_private_mode(weights_dir, tmp_path):
    """The registry is written where asked, mode 0600, and loads back to the same canaries."""
    registry_path = tmp_path / "state" / "canaries.json"
    canaries = plant(weights_dir, size=SIZE)
    registry = record_canaries(registry_path, canaries)
    assert registry_path.stat().st_mode & 0o777 == 0o600
    loaded = CanaryRegistry.load(registry_path)
    assert loaded.canaries == registry.canaries == tuple(sorted(canaries, key=lambda c: c.path))
    assert loaded.directories() == {canaries[0].decoy}


def test_is_canary_matches_by_path_and_by_identity_after_rename(weights_dir, tmp_path):
    """A canary is known by its path, and by (dev, inode) once an intruder renames it."""
    canaries = plant(weights_dir, size=SIZE)
    registry = record_canaries(tmp_path / "canaries.json", canaries)
    shard = next(c for c in canaries if c.weights)
    assert registry.is_canary(shard.path)
    assert registry.is_canary(Path(shard.path))
    moved = weights_dir / "innocent.safetensors"
    Path(shard.path).rename(moved)
    st = moved.stat()
    assert not registry.is_canary(moved)
    assert registry.lookup(moved, identity=(st.st_dev, st.st_ino)) == shard
    reloaded = CanaryRegistry.load(tmp_path / "canaries.json")
    assert reloaded.is_canary(moved, identity=(st.st_dev, st.st_ino))
    other = weights_dir / "real.bin"
    other.write_bytes(b"x")
    ost = other.stat()
    assert not registry.is_canary(other, identity=(ost.st_dev, ost.st_ino))


def test_concurrent_plants_both_land_in_the_registry(tmp_path):
    """Two record_canaries at once keep every entry (the registry is updated under a lock)."""
    registry_path = tmp_path / "canaries.json"
    batches = []
    for i in range(2):
        folder = tmp_path / f"w{i}"
        folder.mkdir()
        batches.append(plant(folder, size=MIN_DECOY_SIZE))
    threads = [threading.Thread(target=record_canaries, args=(registry_path, b)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loaded = CanaryRegistry.load(registry_path)
    assert len(loaded) == sum(len(b) for b in batches)


def test_missing_registry_is_empty_and_malformed_registry_is_a_config_error(tmp_path):
    """No registry yet means no canaries; a corrupt one stops the daemon with the file named."""
    assert len(CanaryRegistry.load(tmp_path / "none.json")) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=str(bad)):
        CanaryRegistry.load(bad)
    bad.write_text(json.dumps({"version": 1, "canaries": [{"path": "/x"}]}))
    with pytest.raises(ConfigError, match=r"canaries\[0\]"):
        CanaryRegistry.load(bad)
    bad.write_text(json.dumps({"version": 2, "canaries": []}))
    with pytest.raises(ConfigError, match="version"):
        CanaryRegistry.load(bad)


def test_canary_json_rejects_relative_paths_and_wrong_types():
    """Registry entries are parsed strictly: absolute path, integers, a boolean."""
    good = Canary(
        path="/w/c/model.safetensors",
        decoy="/w/c",
        size=1,
        sha256="00",
        planted_at=0,
        device=1,
        inode=2,
        weights=True,
    )
    assert Canary.from_json(good.to_json(), "e") == good
    with pytest.raises(ValueError, match="absolute"):
        Canary.from_json({**good.to_json(), "path": "c/model.safetensors"}, "e")
    with pytest.raises(TypeError, match="weights"):
        Canary.from_json({**good.to_json(), "weights": 1}, "e")
    with pytest.raises(TypeError, match="size"):
        Canary.from_json({**good.to_json(), "size": True}, "e")
