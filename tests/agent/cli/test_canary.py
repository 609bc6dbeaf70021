import json
from pathlib import Path

from agent.canary import CanaryRegistry
from weightwarden.safetensors import read_header


def test_canary_plant_writes_decoys_and_records_them_outside_the_folder(cli, tmp_path):
    """`agent canary plant` prints each decoy folder and records every file in the registry."""
    weights = tmp_path / "weights"
    weights.mkdir()
    registry = tmp_path / "state" / "canaries.json"
    result = cli(
        "agent", "canary", "plant", weights, "--count", "2", "--size", "1MiB",
        "--registry", registry,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    decoys = [Path(line) for line in result.stdout.splitlines()[:2]]
    assert sorted(decoys) == sorted(p for p in weights.resolve().iterdir())
    assert "registry" in result.stdout.splitlines()[-1]
    loaded = CanaryRegistry.load(registry)
    assert {c.decoy for c in loaded} == {str(d) for d in decoys}
    for canary in loaded:
        if canary.weights:
            read_header(Path(canary.path))


def test_canary_list_prints_one_json_object_per_canary(cli, tmp_path):
    """`agent canary list --json` lists what plant recorded, one object per line."""
    weights = tmp_path / "weights"
    weights.mkdir()
    registry = tmp_path / "canaries.json"
    assert (
        cli("agent", "canary", "plant", weights, "--size", "1MiB", "--registry", registry).code == 0
    )
    result = cli("agent", "canary", "list", "--json", "--registry", registry)
    assert result.code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [c.path for c in CanaryRegistry.load(registry)]


def test_canary_plant_into_a_missing_folder_is_a_usage_error(cli, tmp_path):
    """A folder that does not exist fails with exit 2 and one line, and records nothing."""
    registry = tmp_path / "canaries.json"
    result = cli("agent", "canary", "plant", tmp_path / "nope", "--registry", registry)
    assert "not a folder" in result.usage_error()
    assert not registry.exists()


def test_canary_plant_rejects_a_tiny_size(cli, tmp_path):
    """--size below 1MiB is refused before anything is written."""
    result = cli(
        "agent", "canary", "plant", tmp_path, "--size", "4KiB", "--registry", tmp_path / "r"
    )
    assert "--size" in result.usage_error()
    assert not [p for p in tmp_path.iterdir() if p.name != "xdg-cache"]
