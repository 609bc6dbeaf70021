"""The collector directory and collector.toml: defaults, paths, and errors that name the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.config import init_directory, load_settings, parse_listen, resolve_db
from weightwarden.errors import ConfigError, UsageError


def test_listen_addresses_parse_host_and_port():
    """HOST:PORT, [v6]:PORT; anything else is a ValueError that shows the form."""
    assert parse_listen("127.0.0.1:8470") == ("127.0.0.1", 8470)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8470", ":80", "host:", "host:99999", "host:²"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


def test_db_values_resolve_against_the_directory(tmp_path):
    """Relative paths join DIR; absolute paths and URLs stay as written."""
    assert resolve_db("c.sqlite", tmp_path) == str(tmp_path / "c.sqlite")
    assert resolve_db("/x/c.sqlite", tmp_path) == "/x/c.sqlite"
    assert resolve_db("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"


def test_an_initialised_directory_loads_with_its_defaults(tmp_path):
    """What init writes loads back: defaults, resolved paths, the public key."""
    layout = init_directory(tmp_path / "c", tls=True, now=datetime.now(UTC))
    settings = load_settings(layout.directory)
    assert settings.config.collector.token_ttl == timedelta(hours=24)
    assert settings.config.limits.max_events_per_batch == 10_000
    assert settings.tls_cert == layout.certificate
    assert settings.public_key == layout.public_key
    with pytest.raises(UsageError, match="already"):
        init_directory(layout.directory, tls=False, now=datetime.now(UTC))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[collector]\nlisten = "nowhere"\n', ["collector.toml:1: collector: listen", "HOST:PORT"]),
        ('[collector]\ntls_cert = "a.crt"\n', ["tls_cert and tls_key"]),
        ("[limits]\nmax_connections = 0\n", ["max_connections"]),
        ("[limits]\nburst = 5\n", ["limits.burst"]),
        ('[collector]\ntoken_ttl = "0s"\n', ["token_ttl"]),
        ("[collector\n", ["invalid TOML"]),
    ],
)
def test_bad_values_are_config_errors_naming_file_and_key(tmp_path, text, words):
    """A wrong value is a ConfigError whose message names the file and the key."""
    (tmp_path / "collector.toml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_a_missing_config_says_to_run_init(tmp_path):
    """No collector.toml: a ConfigError that says what to run."""
    with pytest.raises(ConfigError, match="collector init"):
        load_settings(tmp_path)
