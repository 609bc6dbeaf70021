"""`weightwarden collector init`: the directory, its modes, and refusals, in real processes."""

from __future__ import annotations

import stat
import tomllib

from collector.config import load_settings
from collector.store import SqliteStore


def test_init_writes_config_key_and_database(tmp_path, ww):
    """It creates DIR 0700 with collector.toml, a 0600 key, its public half and the DB."""
    directory = tmp_path / "collector"
    run = ww("collector", "init", "--dir", directory, "--listen", "127.0.0.1:9999")
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "collector.key").stat().st_mode) == 0o600
    assert (directory / "collector.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert not (directory / "tls.crt").exists()
    config = tomllib.loads((directory / "collector.toml").read_text())
    assert config["collector"]["listen"] == "127.0.0.1:9999"
    settings = load_settings(directory)
    assert settings.db == str(directory / "collector.sqlite")
    assert settings.tls_cert is None
    store = SqliteStore(settings.db)
    try:
        assert store.agents() == []
    finally:
        store.close()
    assert "weightwarden collector enroll" in run.stdout


def test_init_with_tls_writes_a_certificate_and_configures_https(tmp_path, ww):
    """--tls adds tls.crt for the collector key and points the config at both."""
    directory = tmp_path / "collector"
    assert ww("collector", "init", "--dir", directory, "--tls", "--tls-name", "c.example").code == 0
    assert (directory / "tls.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    settings = load_settings(directory)
    assert settings.tls_cert == directory / "tls.crt"
    assert settings.tls_key == directory / "collector.key"


def test_init_uses_the_environment_directory(tmp_path, ww):
    """Without --dir, $WEIGHTWARDEN_COLLECTOR_DIR names the directory."""
    directory = tmp_path / "from-env"
    run = ww("collector", "init", env={"WEIGHTWARDEN_COLLECTOR_DIR": str(directory)})
    assert run.code == 0, run.stderr
    assert (directory / "collector.toml").is_file()


def test_init_refuses_an_initialised_directory(tmp_path, ww):
    """A second init of the same directory is a one-line error (exit 2); nothing changes."""
    directory = tmp_path / "collector"
    ww("collector", "init", "--dir", directory)
    key = (directory / "collector.key").read_bytes()
    line = ww("collector", "init", "--dir", directory).one_line_error()
    assert "already" in line
    assert (directory / "collector.key").read_bytes() == key


def test_a_bad_listen_address_is_a_usage_error(tmp_path, ww):
    """--listen must be HOST:PORT."""
    line = ww("collector", "init", "--dir", tmp_path / "c", "--listen", "nowhere").one_line_error()
    assert "HOST:PORT" in line


def test_commands_on_a_missing_or_broken_config_exit_78(tmp_path, ww):
    """No collector.toml, or an invalid one, is a configuration error (exit 78)."""
    line = ww("alerts", "list", "--dir", tmp_path / "none").one_line_error(78)
    assert "collector init" in line
    directory = tmp_path / "collector"
    ww("collector", "init", "--dir", directory)
    config = directory / "collector.toml"
    config.write_text(config.read_text().replace('token_ttl = "24h"', "token_ttl = 5"))
    line = ww("collector", "agents", "--dir", directory).one_line_error(78)
    assert "collector.toml" in line
    assert "token_ttl" in line
