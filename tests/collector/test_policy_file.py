"""load_policy reads a policy file; collector.toml's [detection] policy names one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.config import init_directory, load_settings
from collector.policy_file import load_policy
from weightwarden.errors import ConfigError

POLICY = 'version = 1\n[[assets]]\nname = "m"\npaths = ["/m/**"]\n[[access]]\nasset = "m"\n'


def test_load_policy_parses_the_file_naming_it_in_errors(tmp_path):
    """A valid file gives a Policy; an invalid one an error starting with its path and line."""
    path = tmp_path / "policy.toml"
    path.write_text(POLICY + 'users = ["alice"]\n')
    assert load_policy(path).assets[0].name == "m"
    path.write_text(POLICY)
    with pytest.raises(ConfigError, match=rf"^{path}:5: access\[0\]: the rule names nobody"):
        load_policy(path)


def test_detection_policy_resolves_against_the_collector_directory(tmp_path):
    """A relative [detection] policy is relative to DIR; left out, there is none."""
    layout = init_directory(tmp_path / "c", tls=False, now=datetime.now(UTC))
    assert load_settings(layout.directory).policy is None
    config = layout.config
    config.write_text(config.read_text().replace("# policy = ", "policy = "))
    assert load_settings(layout.directory).policy == Path("/etc/weightwarden/policy.toml")
    config.write_text(config.read_text().replace('"/etc/weightwarden/policy.toml"', '"p.toml"'))
    assert load_settings(layout.directory).policy == layout.directory / "p.toml"
    config.write_text(config.read_text().replace('policy = "p.toml"', "policy = 3"))
    with pytest.raises(ConfigError, match=r"detection\.policy: expected a path, got 3"):
        load_settings(layout.directory)


def test_a_suppression_of_a_rule_no_detector_raises_is_refused(tmp_path):
    """A misspelt rule would silence nothing: the policy is refused, naming the rule."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n[[assets]]\nname = "m"\npaths = ["/data/m/**"]\n'
        '[[access]]\nasset = "m"\nusers = ["alice"]\n'
        '[[suppressions]]\nrule = "weightwarden.rule.nosuch"\nuser = "alice"\nreason = "typo"\n'
    )
    with pytest.raises(ConfigError, match=r"suppressions\[0\]\.rule: 'weightwarden\.rule\.nosuch'"):
        load_policy(policy)
