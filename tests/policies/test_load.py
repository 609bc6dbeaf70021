"""parse_policy: the policy file format, its checks, and fail-closed behaviour."""

from __future__ import annotations

from importlib.resources import files

import pytest

import policies
from policies import Policy, Suppression, WorkingHours, parse_policy
from weightwarden.errors import ConfigError

MINIMAL = """\
version = 1

[[assets]]
name = "model"
paths = ["/data/ckpt/**"]

[[access]]
asset = "model"
users = ["alice"]
"""


def example(name: str) -> str:
    """The text of a shipped example policy."""
    return (files("policies") / "examples" / name).read_text(encoding="utf-8")


def error(text: str) -> str:
    """The one-line message parse_policy raises for ``text`` (source ``p.toml``)."""
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, "p.toml")
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == 78
    return message


def test_minimal_policy_parses_with_the_model_defaults() -> None:
    """The smallest policy: one asset and one rule; everything else keeps its default."""
    policy = parse_policy(MINIMAL, "p.toml")
    assert policy.version == 1
    [asset] = policy.assets
    assert (asset.name, asset.paths, asset.sensitivity, asset.requires_grant) == (
        "model",
        ("/data/ckpt/**",),
        "high",
        False,
    )
    assert policy.allows(asset="model", user="alice", program="python3", host="gpu-1")
    assert not policy.allows(asset="model", user="mallory", program="python3", host="gpu-1")
    assert policy.thresholds == Policy().thresholds
    assert policy.egress == Policy().egress


def test_frontier_lab_example_answers_the_detectors_questions() -> None:
    """The shipped example is realistic: groups, service accounts, teams, grants, canaries."""
    policy = parse_policy(example("frontier-lab.toml"), "frontier-lab.toml")
    asset = policy.asset_for("/data/ckpt/frontier/step-1000/model-00001.safetensors")
    assert asset is not None
    assert (asset.name, asset.sensitivity, asset.requires_grant) == (
        "frontier-pretrain",
        "critical",
        True,
    )
    assert "dana.kim" in asset.owners
    assert policy.allows(
        asset="frontier-pretrain", user="alice.chen", program="python3.11", host="gpu-train-007"
    )
    assert not policy.allows(
        asset="frontier-pretrain", user="alice.chen", program="rsync", host="gpu-train-007"
    )
    assert not policy.allows(
        asset="frontier-pretrain", user="gita.shah", program="python3", host="gpu-eval-01"
    )
    assert policy.allows(
        asset="frontier-pretrain", user="svc-backup", program="restic", host="backup-01"
    )
    account = policy.service_account("svc-train")
    assert account is not None
    assert account.hosts == ("gpu-train-*",)
    oncall = policy.team_of("mia.jones")
    assert oncall is not None
    assert (oncall.role, oncall.hours) == ("infra_admin", None)
    research = policy.team_of("alice.chen")
    assert research is not None
    assert research.hours == WorkingHours(
        days=("mon", "tue", "wed", "thu", "fri"),
        start="07:00",
        end="22:00",
        utc_offset_minutes=-480,
    )
    assert policy.groups_of("lee.okafor") == ("rl-team",)
    assert len(policy.canaries) == 2
    assert "10.0.0.0/8" in policy.egress.allow_cidrs
    [suppression] = policy.suppressions
    assert suppression.until == 1_896_048_000_000  # 2030-01-31T00:00:00Z
    assert suppression.applies(
        rule="weightwarden.rule.first_seen",
        user="svc-train",
        host="gpu-train-201",
        program="python3",
        path="/data/ckpt/frontier/x",
        time=1_800_000_000_000,
    )


def test_minimal_example_is_the_documented_minimum() -> None:
    """The shipped minimal example parses to one asset and one rule."""
    policy = parse_policy(example("minimal.toml"), "minimal.toml")
    assert (len(policy.assets), len(policy.access)) == (1, 1)


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        ("2030-01-31T00:00:00Z", 1_896_048_000_000),
        ('"2030-01-31T00:00:00Z"', 1_896_048_000_000),
        ('"2030-01-31T01:00:00+01:00"', 1_896_048_000_000),
        ("2030-01-31T00:00:00.250Z", 1_896_048_000_250),
    ],
)
def test_suppression_until_is_a_date_time_in_the_file_and_ms_in_the_model(
    until: str, expected: int
) -> None:
    """A TOML date-time or an RFC 3339 string, with its offset, becomes milliseconds UTC."""
    text = MINIMAL + f'\n[[suppressions]]\nrule = "r"\nreason = "why"\nuntil = {until}\n'
    assert parse_policy(text, "p.toml").suppressions == (
        Suppression(rule="r", reason="why", until=expected),
    )


# -- fail closed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("version = 1\n", "names no assets"),
        ('version = 1\n[[access]]\nasset = "m"\nusers = ["a"]\n', "names no assets"),
        ('version = 1\n[[assets]]\nname = "m"\npaths = ["/m/*"]\n', "no [[access]] rules"),
        ("version = 1\nassets = []\naccess = []\n", "names no assets"),
    ],
)
def test_an_empty_policy_fails_closed(text: str, missing: str) -> None:
    """No assets or no access rules: refused, saying an empty policy denies everything."""
    message = error(text)
    assert message.startswith("p.toml: ")
    assert missing in message
    assert "an empty policy denies everything" in message
    assert "add " in message


def test_an_empty_file_fails_closed_asking_for_a_version() -> None:
    """An empty file is refused: it does not even say which format it is."""
    assert error("") == "p.toml: version: missing; start the file with version = 1"


@pytest.mark.parametrize(
    ("line", "shown"),
    [("version = 2", "2"), ('version = "1"', "'1'"), ("version = true", "True")],
)
def test_an_unsupported_version_is_refused_before_its_keys_are_judged(
    line: str, shown: str
) -> None:
    """Version 2 (or a version that is not the integer 1) is refused first, on its line."""
    text = f"# header\n{line}\n[[future_table]]\nkey = 1\n"
    assert error(text) == (
        f"p.toml:2: version: unsupported policy version {shown}; this weightwarden reads "
        "version = 1 (upgrade weightwarden, or write the file for version 1)"
    )


# -- what the file may say -----------------------------------------------------------------


def _with(extra: str, base: str = MINIMAL) -> str:
    return base + "\n" + extra


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _with('[[assets]]\nname = "model"\npaths = ["/other/*"]\n'),
            (
                "p.toml:12: assets[1].name: asset name 'model' is already used by assets[0]; "
                "names must be unique"
            ),
        ),
        (
            _with(
                '[[groups]]\nname = "g"\nmembers = ["a"]\n[[groups]]\nname = "g"\nmembers = ["b"]\n'
            ),
            (
                "p.toml:15: groups[1].name: group name 'g' is already used by groups[0]; "
                "names must be unique"
            ),
        ),
        (
            _with('[[service_accounts]]\nname = "svc"\n[[service_accounts]]\nname = "svc"\n'),
            (
                "p.toml:14: service_accounts[1].name: service account name 'svc' is already used "
                "by service_accounts[0]; names must be unique"
            ),
        ),
        (
            _with('[[teams]]\nname = "t"\n[[teams]]\nname = "t"\n'),
            (
                "p.toml:14: teams[1].name: team name 't' is already used by teams[0]; "
                "names must be unique"
            ),
        ),
        (
            _with('[[assets]]\nname = " "\npaths = ["/x"]\n'),
            "p.toml:12: assets[1].name: every asset needs a name that is not blank",
        ),
        (
            _with('[[access]]\nasset = "modle"\nusers = ["bob"]\n'),
            (
                "p.toml:12: access[1].asset: unknown asset 'modle'; define it in [[assets]] or "
                "name one of 'model'"
            ),
        ),
        (
            _with('[[access]]\nasset = "model"\ngroups = ["ghosts"]\n'),
            "p.toml:13: access[1].groups[0]: unknown group 'ghosts'; define it in [[groups]]",
        ),
        (
            _with(
                '[[service_accounts]]\nname = "svc-train"\n'
                '[[access]]\nasset = "model"\nservice_accounts = ["svc-trian"]\n'
            ),
            (
                "p.toml:15: access[1].service_accounts[0]: unknown service account 'svc-trian'; "
                "define it in [[service_accounts]] or name one of 'svc-train'"
            ),
        ),
        (
            _with('[[access]]\nasset = "model"\nprograms = ["python3"]\n'),
            "p.toml:11: access[1]: the rule names nobody; add users, groups or service_accounts",
        ),
        (
            _with('[[access]]\nasset = "model"\nusers = [""]\n'),
            "p.toml:13: access[1].users[0]: must not be blank",
        ),
        (
            MINIMAL.replace('"/data/ckpt/**"', '"data/ckpt/**"'),
            (
                "p.toml:5: assets[0].paths[0]: 'data/ckpt/**' is not absolute; path globs start "
                "with / (like /data/ckpt/**)"
            ),
        ),
        (
            MINIMAL.replace('["/data/ckpt/**"]', "[]"),
            "p.toml:5: assets[0].paths: an asset needs at least one path glob",
        ),
        (
            MINIMAL.replace(
                'paths = ["/data/ckpt/**"]', 'paths = ["/d/*"]\napproved_roots = ["scratch"]'
            ),
            (
                "p.toml:6: assets[0].approved_roots[0]: 'scratch' is not absolute; path globs "
                "start with / (like /data/ckpt/**)"
            ),
        ),
        (
            MINIMAL.replace('paths = ["/data/ckpt/**"]', 'paths = ["/d/*"]\nrequires_grant = true'),
            (
                "p.toml:3: assets[0].owners: asset 'model' requires grants but has no owners to "
                "approve them; list its owners"
            ),
        ),
        (
            _with('[[groups]]\nname = "g"\nmembers = []\n'),
            "p.toml:13: groups[0].members: a group needs at least one member",
        ),
        (
            _with(
                '[[teams]]\nname = "a"\nmembers = ["x"]\n'
                '[[teams]]\nname = "b"\nmembers = ["y", "x"]\n'
            ),
            (
                "p.toml:16: teams[1].members[1]: 'x' is already a member of team 'a'; a user "
                "belongs to one team (its role is the user's peer group)"
            ),
        ),
        (
            _with('[[teams]]\nname = "t"\nhours = { start = "7:00" }\n'),
            "p.toml:13: teams[0].hours.start: '7:00' is not a time like \"07:00\" (HH:MM)",
        ),
        (
            _with('[[teams]]\nname = "t"\n[teams.hours]\nend = "24:00"\n'),
            "p.toml:14: teams[0].hours.end: '24:00' is not a time like \"07:00\" (HH:MM)",
        ),
        (
            _with('[[teams]]\nname = "t"\nhours = { start = "09:00", end = "09:00" }\n'),
            (
                "p.toml:13: teams[0].hours.end: start and end are equal; leave hours out for a "
                "team that works any time"
            ),
        ),
        (
            _with('[[teams]]\nname = "t"\nhours = { days = [] }\n'),
            (
                "p.toml:13: teams[0].hours.days: a team with hours works on at least one day; "
                "leave hours out for a team that works any time"
            ),
        ),
        (
            _with('[[teams]]\nname = "t"\nhours = { days = ["mon", "mon"] }\n'),
            "p.toml:13: teams[0].hours.days: a day is listed twice",
        ),
        (
            _with('[[teams]]\nname = "t"\nhours = { utc_offset_minutes = 900 }\n'),
            (
                "p.toml:13: teams[0].hours.utc_offset_minutes: 900 is outside -840..840 "
                "(UTC-14:00 to UTC+14:00)"
            ),
        ),
        (
            _with('[egress]\nallow_cidrs = ["10.0.0.0/8", "10.1.2.3/8"]\n'),
            (
                "p.toml:12: egress.allow_cidrs[1]: '10.1.2.3/8' is not a network like 10.0.0.0/8 "
                "(10.1.2.3/8 has host bits set)"
            ),
        ),
        (
            _with('[egress]\nallow_cidrs = ["corp"]\n'),
            (
                "p.toml:12: egress.allow_cidrs[0]: 'corp' is not a network like 10.0.0.0/8 "
                "('corp' does not appear to be an IPv4 or IPv6 network)"
            ),
        ),
        (
            'version = 1\ncanaries = ["decoy/*"]\n' + MINIMAL.removeprefix("version = 1\n"),
            (
                "p.toml:2: canaries[0]: 'decoy/*' is not absolute; path globs start with / "
                "(like /data/ckpt/**)"
            ),
        ),
        (
            _with("[thresholds]\nbulk_read_fraction = 0\n"),
            "p.toml:12: thresholds.bulk_read_fraction: 0.0 is not a share above 0 and at most 1",
        ),
        (
            _with("[thresholds]\nbulk_read_fraction = 1.5\n"),
            "p.toml:12: thresholds.bulk_read_fraction: 1.5 is not a share above 0 and at most 1",
        ),
        (
            _with("[thresholds]\negress_window_minutes = 0\n"),
            "p.toml:12: thresholds.egress_window_minutes: 0 is outside 1..10080 minutes (a week)",
        ),
        (
            _with("[thresholds]\nbulk_read_window_minutes = 20000\n"),
            (
                "p.toml:12: thresholds.bulk_read_window_minutes: 20000 is outside 1..10080 minutes "
                "(a week)"
            ),
        ),
        (
            _with('[thresholds]\nstaging_paths = ["shm"]\n'),
            (
                "p.toml:12: thresholds.staging_paths[0]: 'shm' is not absolute; path globs start "
                "with / (like /data/ckpt/**)"
            ),
        ),
        (
            _with('[[suppressions]]\nrule = "r"\nreason = "  "\n'),
            "p.toml:13: suppressions[0].reason: say why (the audit trail needs a reason)",
        ),
        (
            _with('[[suppressions]]\nrule = ""\nreason = "x"\n'),
            'p.toml:12: suppressions[0].rule: name a rule\'s uid, or "*" for every rule',
        ),
        (
            _with('[[suppressions]]\nrule = "*"\nreason = "quiet"\n'),
            (
                'p.toml:12: suppressions[0].rule: rule "*" with no user, host, program or path '
                "would silence every alert; narrow it"
            ),
        ),
        (
            _with('[[suppressions]]\nrule = "r"\nreason = "x"\nuser = ""\n'),
            "p.toml:14: suppressions[0].user: must not be blank; leave it out to match anything",
        ),
    ],
)
def test_whole_policy_checks_name_the_file_line_and_key(text: str, expected: str) -> None:
    """Each check of the whole policy is one line: file, line of the key, key, what to do."""
    assert error(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace('name = "model"', 'name = "model"\nsensitivty = "low"'),
            (
                "p.toml:5: assets[0].sensitivty: unknown key; expected one of name, paths, "
                'sensitivity, owners, approved_roots, requires_grant (did you mean "sensitivity"?)'
            ),
        ),
        (
            MINIMAL.replace('name = "model"', 'name = "model"\nsensitivity = "secret"'),
            (
                'p.toml:5: assets[0].sensitivity: expected one of "low", "medium", "high", '
                '"critical", got "secret"'
            ),
        ),
        (
            MINIMAL.replace('users = ["alice"]', 'users = "alice"'),
            'p.toml:9: access[0].users: expected an array of strings, got "alice"',
        ),
        (
            MINIMAL.replace('name = "model"\n', ""),
            "p.toml:3: assets[0].name: missing; expected a string",
        ),
        (
            _with('[[teams]]\nname = "t"\nrole = "wizard"\n'),
            (
                'p.toml:13: teams[0].role: expected one of "researcher", "engineer", '
                '"infra_admin", "service", "contractor", "other", got "wizard"'
            ),
        ),
        (
            _with('[[suppressions]]\nrule = "r"\nreason = "x"\nuntil = 2030-01-31T00:00:00\n'),
            (
                "p.toml:14: suppressions[0].until: expected a date-time with its offset like "
                '"2025-01-31T18:00:00Z", got a date-time'
            ),
        ),
        (
            _with('[[suppressions]]\nrule = "r"\nreason = "x"\nuntil = "next week"\n'),
            (
                "p.toml:14: suppressions[0].until: expected a date-time with its offset like "
                '"2025-01-31T18:00:00Z", got "next week"'
            ),
        ),
        (
            _with("grants = []\n", base="version = 1\n") + MINIMAL.removeprefix("version = 1\n"),
            (
                "p.toml:3: grants: unknown key; expected one of version, assets, groups, "
                "service_accounts, access, teams, egress, canaries, thresholds, suppressions"
            ),
        ),
        (
            "version = 1\n[[assets]\n",
            "p.toml:2:9: invalid TOML: Expected ']]' at the end of an array declaration",
        ),
    ],
)
def test_type_errors_and_unknown_keys_come_from_the_typed_reader(text: str, expected: str) -> None:
    """Wrong types, unknown keys and bad TOML are reported with file, line and key."""
    assert error(text) == expected


def test_the_error_names_the_right_table_among_many() -> None:
    """The line is that of the n-th [[access]] table, not the first."""
    text = MINIMAL + "".join(f'\n[[access]]\nasset = "model"\nusers = ["u{i}"]\n' for i in range(3))
    text += '\n[[access]]\nasset = "nope"\nusers = ["z"]\n'
    lines = text.splitlines()
    line = lines.index('asset = "nope"') + 1
    assert error(text).startswith(f"p.toml:{line}: access[4].asset: unknown asset 'nope'")


def test_public_api_is_pinned() -> None:
    """The policies package exports exactly its documented names, and each one resolves."""
    assert sorted(policies.__all__) == sorted(
        [
            "SCHEMA_RESOURCE",
            "SUPPORTED_VERSION",
            "AccessRule",
            "Asset",
            "Egress",
            "Grant",
            "Group",
            "Policy",
            "Sensitivity",
            "ServiceAccount",
            "Suppression",
            "Team",
            "Thresholds",
            "WorkingHours",
            "matches",
            "parse_policy",
        ]
    )
    for name in policies.__all__:
        assert getattr(policies, name) is not None
