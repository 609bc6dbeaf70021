"""`weightwarden agent run` as a real process: configuration errors stop it with exit 78."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Cli, CliResult


def _config_error(result: CliResult) -> str:
    """Assert a configuration error: exit 78 (systemd does not restart), one stderr line."""
    assert result.code == 78, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("weightwarden: error: "), lines[0]
    return lines[0]


def test_a_config_naming_a_missing_root_exits_78_with_one_line(cli: Cli, tmp_path: Path) -> None:
    """The line names the config file, the key and the missing folder."""
    missing = tmp_path / "no-such-root"
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nweight_roots = ["{missing}"]\nstate_dir = "{tmp_path / "s"}"\n')
    line = _config_error(cli("agent", "run", "--config", config))
    assert str(config) in line
    assert "agent.weight_roots" in line
    assert str(missing) in line
    assert not (tmp_path / "s").exists()


def test_no_root_at_all_exits_78(cli: Cli, tmp_path: Path) -> None:
    """Neither --watch nor a config: nothing to watch, said on one line."""
    line = _config_error(cli("agent", "run", "--state-dir", tmp_path / "s"))
    assert "--watch" in line
    assert "no weight roots" in line


def test_a_config_with_an_unknown_key_exits_78(cli: Cli, tmp_path: Path) -> None:
    """A misspelt key stops the agent before it starts anything."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nweight_roots = ["{tmp_path}"]\nquiet = "1s"\n')
    line = _config_error(cli("agent", "run", "--config", config))
    assert f"{config}:3: agent.quiet: unknown key" in line


def test_a_missing_config_file_exits_78(cli: Cli, tmp_path: Path) -> None:
    """--config naming no file is a configuration error too."""
    line = _config_error(cli("agent", "run", "--config", tmp_path / "absent.toml"))
    assert "not found" in line


def test_help_describes_the_flags_and_exit_codes(cli: Cli) -> None:
    """`agent run --help` exits 0 and documents every flag and the exit codes."""
    result = cli("agent", "run", "--help")
    assert result.code == 0, result.stderr
    for flag in ("--config", "--watch", "--spool", "--state-dir"):
        assert flag in result.stdout
    assert "78" in result.stdout
    assert "70" in result.stdout
    assert result.stderr == ""


def test_an_unknown_flag_is_a_usage_error(cli: Cli) -> None:
    """A flag the command does not take exits 2 with one line."""
    assert "--bogus" in cli("agent", "run", "--bogus").usage_error()
