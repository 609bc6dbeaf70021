"""`weightwarden policy check FILE [--json]` in real processes."""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

import pytest

EXAMPLES = Path(str(files("policies") / "examples"))


def test_a_valid_policy_exits_0_with_a_one_paragraph_summary(ww):
    """The shipped example is valid; the summary counts what it holds."""
    run = ww("policy", "check", EXAMPLES / "frontier-lab.toml")
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    [paragraph] = run.stdout.splitlines()
    assert paragraph.startswith(f"{EXAMPLES / 'frontier-lab.toml'}: valid policy (version 1): ")
    for part in (
        "4 assets (1 critical, 2 high, 1 medium; 1 requiring grants)",
        "8 access rules",
        "3 service accounts",
        "5 teams (2 working any time)",
        "2 canary globs",
        "1 suppression.",
    ):
        assert part in paragraph


def test_json_gives_the_same_counts_as_one_object(ww):
    """--json prints one object with valid: true and the counts."""
    run = ww("policy", "check", EXAMPLES / "minimal.toml", "--json")
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["valid"] is True
    assert (result["assets"], result["access_rules"], result["teams"]) == (1, 1, 0)


def test_an_invalid_policy_exits_78_with_the_file_line_and_key(ww, tmp_path):
    """The first problem is one line on stderr naming file, line and key; exit 78."""
    path = tmp_path / "p.toml"
    path.write_text(
        'version = 1\n[[assets]]\nname = "m"\npaths = ["/m/**"]\n'
        '[[access]]\nasset = "m"\nusers = ["a"]\n[[access]]\nasset = "x"\nusers = ["b"]\n'
    )
    run = ww("policy", "check", path)
    line = run.one_line_error(78)
    assert line == (
        f"weightwarden: error: {path}:9: access[1].asset: unknown asset 'x'; define it in "
        "[[assets]] or name one of 'm'"
    )
    assert run.stdout == ""
    as_json = ww("policy", "check", path, "--json")
    as_json.one_line_error(78)
    result = json.loads(as_json.stdout)
    assert result["valid"] is False
    assert result["error"].startswith(f"{path}:9: access[1].asset")


def test_an_empty_policy_fails_closed(ww, tmp_path):
    """A policy without assets or rules is refused: it would deny everything."""
    path = tmp_path / "empty.toml"
    path.write_text("version = 1\n")
    assert "an empty policy denies everything" in ww("policy", "check", path).one_line_error(78)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "absent.toml", "policy file not found"),
        (lambda d: d, "cannot read the policy file: it is a directory"),
        (lambda d: _write(d / "latin1.toml", b"version = 1 # caf\xe9\n"), "not UTF-8 text"),
        (lambda d: _write(d / "bad.toml", b"version = = 1\n"), "invalid TOML"),
    ],
)
def test_a_missing_or_unreadable_file_exits_78(ww, tmp_path, make, expected):
    """A missing, unreadable or undecodable file is a config error naming the file."""
    path = make(tmp_path)
    line = ww("policy", "check", path).one_line_error(78)
    assert line.startswith(f"weightwarden: error: {path}")
    assert expected in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_exits_78(ww, tmp_path):
    """Permission denied is reported, not a traceback."""
    path = _write(tmp_path / "p.toml", b"version = 1\n")
    path.chmod(0)
    assert "Permission denied" in ww("policy", "check", path).one_line_error(78)


def test_usage_mistakes_exit_2(ww):
    """No file, or an unknown option, is a usage error."""
    assert "FILE" in ww("policy", "check").one_line_error(2)
    assert "--yaml" in ww("policy", "check", "x.toml", "--yaml").one_line_error(2)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
