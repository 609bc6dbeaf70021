"""policies/policy.schema.json and parse_policy agree: examples pass both, bad files fail both."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from importlib.resources import files

import jsonschema
import pytest

from policies import SCHEMA_RESOURCE, parse_policy
from weightwarden.errors import ConfigError

EXAMPLES = sorted(
    entry.name
    for entry in (files("policies") / "examples").iterdir()
    if entry.name.endswith(".toml")
)

BASE = """\
version = 1
{top}
[[assets]]
name = "model"
paths = ["/data/ckpt/**"]
{asset}
[[access]]
asset = "model"
users = ["alice"]
{tables}
"""


def document(top: str = "", asset: str = "", tables: str = "") -> str:
    """A small valid policy with lines added at the top level, to the asset, or as tables."""
    return BASE.format(top=top, asset=asset, tables=tables)


def as_json(text: str) -> object:
    """The TOML document as JSON sees it: date-times become RFC 3339 strings."""

    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return json.loads(json.dumps(plain(tomllib.loads(text))))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """A validator for the shipped schema, itself checked against the 2020-12 meta-schema."""
    schema = json.loads((files("policies") / SCHEMA_RESOURCE).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_and_the_examples_ship_with_the_package() -> None:
    """Both examples are package data beside the schema."""
    assert EXAMPLES == ["frontier-lab.toml", "minimal.toml"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_shipped_example_validates_and_parses(
    name: str, validator: jsonschema.Draft202012Validator
) -> None:
    """Each example is valid under the JSON Schema and parses into a Policy."""
    text = (files("policies") / "examples" / name).read_text(encoding="utf-8")
    validator.validate(as_json(text))
    assert parse_policy(text, name).assets


@pytest.mark.parametrize(
    "text",
    [
        document(),
        document(asset='sensitivity = "critical"\nowners = ["dana"]\nrequires_grant = true'),
        document(tables='[[teams]]\nname = "oncall"\nrole = "infra_admin"\nmembers = ["root"]'),
        document(tables='[[suppressions]]\nrule = "*"\nreason = "lab"\nhost = "lab-*"'),
        document(
            tables='[[suppressions]]\nrule = "r"\nreason = "x"\nuntil = "2030-01-01T00:00:00Z"'
        ),
        document(tables='[egress]\nallow_cidrs = ["10.0.0.0/8", "fd00::/8"]'),
    ],
)
def test_valid_variations_pass_both(text: str, validator: jsonschema.Draft202012Validator) -> None:
    """Documents that use the optional parts pass the schema and the parser alike."""
    validator.validate(as_json(text))
    parse_policy(text, "p.toml")


BAD = {
    "no version": document().replace("version = 1\n", ""),
    "version 2": document().replace("version = 1", "version = 2"),
    "version as a string": document().replace("version = 1", 'version = "1"'),
    "unknown top-level key": document(top="grants = []"),
    "unknown asset key": document(asset='sensitivty = "low"'),
    "no assets": 'version = 1\n[[access]]\nasset = "m"\nusers = ["a"]\n',
    "no access rules": 'version = 1\n[[assets]]\nname = "m"\npaths = ["/m"]\n',
    "empty document": "version = 1\n",
    "relative asset path": document().replace('"/data/ckpt/**"', '"data/ckpt/**"'),
    "asset without paths": document().replace('paths = ["/data/ckpt/**"]', "paths = []"),
    "unknown sensitivity": document(asset='sensitivity = "secret"'),
    "grant without owners": document(asset="requires_grant = true"),
    "blank asset name": document().replace('name = "model"', 'name = ""'),
    "rule naming nobody": document().replace('users = ["alice"]', 'programs = ["python3"]'),
    "users not an array": document().replace('users = ["alice"]', 'users = "alice"'),
    "group without members": document(tables='[[groups]]\nname = "g"\nmembers = []'),
    "bad start time": document(tables='[[teams]]\nname = "t"\nhours = { start = "7am" }'),
    "hour 24": document(tables='[[teams]]\nname = "t"\nhours = { end = "24:00" }'),
    "unknown weekday": document(tables='[[teams]]\nname = "t"\nhours = { days = ["monday"] }'),
    "no days": document(tables='[[teams]]\nname = "t"\nhours = { days = [] }'),
    "offset out of range": document(
        tables='[[teams]]\nname = "t"\nhours = { utc_offset_minutes = 900 }'
    ),
    "unknown role": document(tables='[[teams]]\nname = "t"\nrole = "wizard"'),
    "cidr without a prefix": document(tables='[egress]\nallow_cidrs = ["corp.example"]'),
    "relative canary": document(top='canaries = ["decoy"]'),
    "fraction above one": document(tables="[thresholds]\nbulk_read_fraction = 2"),
    "fraction zero": document(tables="[thresholds]\nbulk_read_fraction = 0"),
    "window zero": document(tables="[thresholds]\nbulk_read_window_minutes = 0"),
    "relative staging path": document(tables='[thresholds]\nstaging_paths = ["shm"]'),
    "suppression without reason": document(tables='[[suppressions]]\nrule = "r"'),
    "suppression with a blank reason": document(tables='[[suppressions]]\nrule = "r"\nreason = ""'),
    "suppression of everything": document(tables='[[suppressions]]\nrule = "*"\nreason = "x"'),
    "local until": document(
        tables='[[suppressions]]\nrule = "r"\nreason = "x"\nuntil = "2030-01-01T00:00:00"'
    ),
    "until not a time": document(
        tables='[[suppressions]]\nrule = "r"\nreason = "x"\nuntil = "soon"'
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_documents_are_rejected_by_both(
    name: str, validator: jsonschema.Draft202012Validator
) -> None:
    """The schema and the parser refuse the same mistakes."""
    text = BAD[name]
    assert list(validator.iter_errors(as_json(text))), f"the schema accepts: {name}"
    with pytest.raises(ConfigError):
        parse_policy(text, "p.toml")


@pytest.mark.parametrize(
    "text",
    [
        document(tables='[[assets]]\nname = "model"\npaths = ["/x"]'),
        document().replace('asset = "model"', 'asset = "other"'),
        document(tables='[[access]]\nasset = "model"\ngroups = ["ghosts"]'),
        document(tables='[egress]\nallow_cidrs = ["10.1.2.3/8"]'),
        document(tables='[[teams]]\nname = "t"\nhours = { start = "09:00", end = "09:00" }'),
    ],
)
def test_checks_of_the_whole_document_are_the_parsers_alone(
    text: str, validator: jsonschema.Draft202012Validator
) -> None:
    """Uniqueness, references and host bits pass the schema; the parser refuses them."""
    validator.validate(as_json(text))
    with pytest.raises(ConfigError):
        parse_policy(text, "p.toml")
