"""The agent's configuration: a full TOML file, the shipped example, overrides and mistakes."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import AgentConfig, CollectorSettings, SealSettings, load_agent_config
from weightwarden.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "agent.toml.example"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """Two existing weight roots."""
    first, second = tmp_path / "ckpt", tmp_path / "models"
    first.mkdir()
    second.mkdir()
    return first, second


def test_a_full_file_sets_every_key(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """Every table and key of the schema is read from the file, typed."""
    first, second = roots
    config_file = _write(
        tmp_path / "agent.toml",
        f"""
[agent]
weight_roots = ["{first}", "{second}"]
state_dir = "{tmp_path / "state"}"
spool_dir = "{tmp_path / "spool"}"
hostname = "gpu-07"
agent_id = "gpu-07.prod"
sensor = "inotify"
copy_watch = ["/media", "{tmp_path}"]
canary_registry = "{tmp_path / "canaries.json"}"
progress_interval = "1h30m"
egress_grace = "90s"
egress_poll = "500ms"
gpu_poll = "1m"
queue_size = 5000

[agent.seal]
private_key = "{tmp_path / "seal.key"}"
passphrase_file = "{tmp_path / "seal.pass"}"
quiet_interval = "5m"
reverify_delay = "3s"

[agent.spool]
max_events = 1000
max_bytes = 1048576
full_policy = "block"
synchronous = "normal"

[agent.collector]
url = "https://collector.example:8443"
ca_file = "{tmp_path / "ca.pem"}"
pinned_sha256 = "ab"
""",
    )
    config = load_agent_config(config_file)
    assert config.weight_roots == (first, second)
    assert config.state_dir == tmp_path / "state"
    assert config.resolved_spool_dir == tmp_path / "spool"
    assert config.hostname == "gpu-07"
    assert config.resolved_agent_id == "gpu-07.prod"
    assert config.sensor == "inotify"
    assert config.copy_watch == (Path("/media"), tmp_path)
    assert config.resolved_canary_registry == tmp_path / "canaries.json"
    assert config.progress_interval == timedelta(hours=1, minutes=30)
    assert config.egress_grace == timedelta(seconds=90)
    assert config.egress_poll == timedelta(milliseconds=500)
    assert config.gpu_poll == timedelta(minutes=1)
    assert config.queue_size == 5000
    assert config.seal == SealSettings(
        private_key=tmp_path / "seal.key",
        passphrase_file=tmp_path / "seal.pass",
        quiet_interval=timedelta(minutes=5),
        reverify_delay=timedelta(seconds=3),
    )
    assert config.spool.max_events == 1000
    assert config.spool.max_bytes == 1 << 20
    assert config.spool.full_policy == "block"
    assert config.spool.synchronous == "normal"
    assert config.collector == CollectorSettings(
        url="https://collector.example:8443", ca_file=tmp_path / "ca.pem", pinned_sha256="ab"
    )


def test_a_file_with_only_weight_roots_takes_the_defaults(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    """Everything but the roots has a safe default; derived paths follow the state folder."""
    config_file = _write(tmp_path / "agent.toml", f'[agent]\nweight_roots = ["{roots[0]}"]\n')
    config = load_agent_config(config_file)
    assert config == AgentConfig(weight_roots=(roots[0],), hostname=config.hostname)
    assert config.hostname == socket.gethostname()
    assert config.resolved_agent_id == config.hostname
    assert config.resolved_spool_dir == config.state_dir / "spool"
    assert config.resolved_canary_registry == config.state_dir / "canaries.json"
    assert config.seal.private_key is None


def test_the_shipped_example_loads(roots: tuple[Path, Path]) -> None:
    """systemd/agent.toml.example is valid: every key it sets is known and well typed."""
    config = load_agent_config(EXAMPLE, watch=(roots[0],))
    assert config.weight_roots == (roots[0],)
    assert config.seal.private_key == Path("/etc/weightwarden/seal.key")
    assert config.seal.quiet_interval == timedelta(minutes=2)
    assert config.spool.full_policy == "drop_new"
    assert config.sensor == "auto"


def test_the_shipped_example_fails_only_for_its_placeholder_root() -> None:
    """Used as is, the example names /data/checkpoints, which must exist: the error says so."""
    if Path("/data/checkpoints").is_dir():
        pytest.skip("/data/checkpoints exists on this machine")
    with pytest.raises(ConfigError) as caught:
        load_agent_config(EXAMPLE)
    message = str(caught.value)
    assert str(EXAMPLE) in message
    assert "agent.weight_roots" in message
    assert "/data/checkpoints" in message


def test_watch_and_spool_flags_override_the_file(
    tmp_path: Path, roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--watch replaces the file's roots, --spool its spool; relative flags are made absolute."""
    first, second = roots
    config_file = _write(
        tmp_path / "agent.toml",
        f'[agent]\nweight_roots = ["{first}"]\nspool_dir = "{tmp_path / "old"}"\n',
    )
    monkeypatch.chdir(tmp_path)
    config = load_agent_config(config_file, watch=(Path("models"),), spool=Path("new-spool"))
    assert config.weight_roots == (second,)
    assert config.resolved_spool_dir == tmp_path / "new-spool"


def test_flags_alone_are_enough_without_a_file(roots: tuple[Path, Path]) -> None:
    """A quick start: `agent run --watch DIR` needs no config file."""
    config = load_agent_config(None, watch=roots)
    assert config.weight_roots == roots


def test_a_symlinked_root_is_resolved(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """Sensors report resolved paths, so a root given through a symlink is stored resolved."""
    link = tmp_path / "link-to-ckpt"
    link.symlink_to(roots[0])
    config_file = _write(tmp_path / "agent.toml", f'[agent]\nweight_roots = ["{link}"]\n')
    assert load_agent_config(config_file).weight_roots == (roots[0],)
    assert load_agent_config(None, watch=(link, roots[0])).weight_roots == (roots[0],)


def test_a_missing_weight_root_names_the_file_key_and_root(tmp_path: Path) -> None:
    """A root that does not exist stops the agent (exit 78) with what to fix."""
    missing = tmp_path / "nope"
    config_file = _write(tmp_path / "agent.toml", f'[agent]\nweight_roots = ["{missing}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_agent_config(config_file)
    message = str(caught.value)
    assert str(config_file) in message
    assert "agent.weight_roots" in message
    assert str(missing) in message
    assert caught.value.exit_code == 78


def test_a_missing_watch_flag_root_names_the_flag(tmp_path: Path) -> None:
    """The error points at --watch when the root came from the command line."""
    with pytest.raises(ConfigError, match="--watch") as caught:
        load_agent_config(None, watch=(tmp_path / "nope",))
    assert str(tmp_path / "nope") in str(caught.value)


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """Weight roots are folders: a checkpoint file given as a root is a configuration error."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        load_agent_config(None, watch=(weights,))


def test_a_relative_weight_root_in_the_file_is_refused(tmp_path: Path) -> None:
    """The daemon's working folder is /: a relative root in the file names the file and line."""
    config_file = _write(tmp_path / "agent.toml", '[agent]\nweight_roots = ["data/ckpt"]\n')
    with pytest.raises(ConfigError) as caught:
        load_agent_config(config_file)
    message = str(caught.value)
    assert message.startswith(f"{config_file}:")
    assert "data/ckpt" in message
    assert "absolute" in message


@pytest.mark.parametrize("text", ["", "[agent]\n", "[agent]\nweight_roots = []\n"])
def test_no_weight_root_at_all_is_refused(tmp_path: Path, text: str) -> None:
    """Nothing to watch is a configuration error naming agent.weight_roots."""
    config_file = _write(tmp_path / "agent.toml", text)
    with pytest.raises(ConfigError, match=r"agent\.weight_roots: no weight roots"):
        load_agent_config(config_file)


def test_no_file_and_no_flag_names_the_flag() -> None:
    """Without a file, the missing roots are asked for with --watch."""
    with pytest.raises(ConfigError, match="--watch: no weight roots"):
        load_agent_config(None)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[agent]\nweight_root = []\n", "agent.weight_root"),
        ("[agent]\nweight_roots = []\nquiet_interval = '1m'\n", "agent.quiet_interval"),
        ("[agent]\nweight_roots = []\n[agent.seal]\nkey = 'k'\n", "agent.seal.key"),
        ("[agnet]\n", "agnet"),
    ],
)
def test_an_unknown_key_names_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    """A misspelt key is an error, never silently a default."""
    config_file = _write(tmp_path / "agent.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_agent_config(config_file)
    message = str(caught.value)
    assert message.startswith(f"{config_file}:")
    assert f"{key}: unknown key" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("progress_interval = 600", "agent.progress_interval"),
        ("sensor = 'ebpf'", "agent.sensor"),
        ("queue_size = 0", "agent"),
        ("copy_watch = '/tmp'", "agent.copy_watch"),
        ("progress_interval = '0s'", "agent"),
        ("gpu_poll = '0ms'", "agent"),
    ],
)
def test_a_badly_typed_value_names_the_key(
    tmp_path: Path, roots: tuple[Path, Path], line: str, key: str
) -> None:
    """A wrong type or an impossible value is a ConfigError naming the key."""
    config_file = _write(
        tmp_path / "agent.toml", f'[agent]\nweight_roots = ["{roots[0]}"]\n{line}\n'
    )
    with pytest.raises(ConfigError, match=rf"{config_file}:\d+: {key}: "):
        load_agent_config(config_file)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """--config naming no file fails with exit 78 and the path."""
    with pytest.raises(ConfigError, match="not found") as caught:
        load_agent_config(tmp_path / "absent.toml")
    assert str(tmp_path / "absent.toml") in str(caught.value)
