import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from weightwarden.config import (
    config_error,
    load_config,
    parse_config,
    parse_duration,
    parse_since,
    parse_toml,
)
from weightwarden.errors import ConfigError, UsageError

# Schemas live at module level so their annotations resolve.


@dataclass(frozen=True, slots=True, kw_only=True)
class Spool:
    """The spool table."""

    path: Path
    max_bytes: int = 1 << 30
    flush_every: timedelta = timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Watch:
    """One watched tree."""

    root: Path
    patterns: tuple[str, ...] = ("*.safetensors",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """The agent table."""

    hostname: str
    quiet_interval: timedelta = timedelta(seconds=30)
    sample_rate: float = 1.0
    sensor: Literal["fanotify", "inotify"] = "fanotify"
    canaries: bool = False
    collector_url: str | None = None
    spool: Spool
    watches: tuple[Watch, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Logging:
    """The logging table."""

    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFile:
    """A whole agent config file."""

    agent: Agent
    logging: Logging = field(default_factory=Logging)


@dataclass(frozen=True, slots=True, kw_only=True)
class Defaults:
    """A table whose keys all have defaults."""

    retries: int = 3
    label: str = "x"


@dataclass(frozen=True, slots=True, kw_only=True)
class WithDefaultTable:
    """A file whose only table may be left out."""

    defaults: Defaults
    name: str = "n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """A table that checks itself."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")


@dataclass(frozen=True, slots=True, kw_only=True)
class WithWindow:
    """A file holding a self-checking table."""

    window: Window


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsupported:
    """A schema using a type the loader lacks."""

    mapping: dict[str, int]


FULL = """\
# weightwarden agent
[agent]
hostname = "gpu-01"
quiet_interval = "1h30m"
sample_rate = 2
sensor = "inotify"
canaries = true
collector_url = "https://collector.internal:8443"

[agent.spool]
path = "/var/lib/weightwarden/spool"
flush_every = "250ms"

[[agent.watches]]
root = "/ckpt"

[[agent.watches]]
root = "/models"
patterns = ["*.bin", "*.pt"]

[logging]
format = "json"
"""


def _write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str, schema: type = AgentFile) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, schema)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message[len(str(path)) :]


def test_full_nested_file_loads_into_typed_values(tmp_path: Path) -> None:
    """A complete file becomes nested frozen dataclasses with parsed values and defaults."""
    config = load_config(_write(tmp_path, FULL), AgentFile)
    assert config == AgentFile(
        agent=Agent(
            hostname="gpu-01",
            quiet_interval=timedelta(hours=1, minutes=30),
            sample_rate=2.0,
            sensor="inotify",
            canaries=True,
            collector_url="https://collector.internal:8443",
            spool=Spool(
                path=Path("/var/lib/weightwarden/spool"),
                flush_every=timedelta(milliseconds=250),
            ),
            watches=(
                Watch(root=Path("/ckpt")),
                Watch(root=Path("/models"), patterns=("*.bin", "*.pt")),
            ),
        ),
        logging=Logging(format="json"),
    )
    assert isinstance(config.agent.sample_rate, float)
    assert config.agent.spool.max_bytes == 1 << 30


def test_defaults_fill_absent_keys_and_tables(tmp_path: Path) -> None:
    """Absent keys take the dataclass defaults; a table with all defaults may be omitted."""
    text = '[agent]\nhostname = "h"\n[agent.spool]\npath = "/s"\n'
    config = load_config(_write(tmp_path, text), AgentFile)
    assert config.logging == Logging()
    assert config.agent.quiet_interval == timedelta(seconds=30)
    assert config.agent.collector_url is None
    assert load_config(_write(tmp_path, ""), WithDefaultTable) == WithDefaultTable(
        defaults=Defaults()
    )


def test_wrong_duration_names_file_line_key_and_values(tmp_path: Path) -> None:
    """A number where a duration belongs gives file:line, the dotted key, expected and got."""
    text = """\
# comment

[agent]
hostname = "gpu-01"

# how long a session may idle
quiet_interval = 12
[agent.spool]
path = "/s"
"""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, AgentFile)
    assert str(caught.value) == (
        f'{path}:7: agent.quiet_interval: expected a duration like "30s", got 12'
    )
    assert caught.value.exit_code == 78


DURATION = 'expected a duration like "30s"'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sample_rate = true", "agent.sample_rate: expected a number, got true"),
        ('sample_rate = "fast"', 'agent.sample_rate: expected a number, got "fast"'),
        ("canaries = 1", "agent.canaries: expected true or false, got 1"),
        ("collector_url = 8443", "agent.collector_url: expected a string, got 8443"),
        ('sensor = "ebpf"', 'agent.sensor: expected one of "fanotify", "inotify", got "ebpf"'),
        ('quiet_interval = "30 seconds"', f'agent.quiet_interval: {DURATION}, got "30 seconds"'),
        ('quiet_interval = "-5s"', f'agent.quiet_interval: {DURATION}, got "-5s"'),
        ("quiet_interval = 1.5", f"agent.quiet_interval: {DURATION}, got 1.5"),
        ("watches = 3", "agent.watches: expected an array of tables, got 3"),
        ("watches = [3]", "agent.watches[0]: expected a table, got 3"),
        ("watches = [{ root = 3 }]", "agent.watches[0].root: expected a path, got 3"),
    ],
)
def test_wrong_types_are_reported_with_their_line(tmp_path: Path, line: str, expected: str) -> None:
    """Each supported type rejects a value of the wrong kind, naming the key and its line."""
    text = f'[agent]\nhostname = "h"\n{line}\n[agent.spool]\npath = "/s"\n'
    assert _error(tmp_path, text) == f":3: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[agent]\nhostname = 5\n", ":2: agent.hostname: expected a string, got 5"),
        (
            "[agent]\nhostname = 1979-05-27T07:32:00Z\n",
            ":2: agent.hostname: expected a string, got a date-time",
        ),
        ('[agent]\nhostname = "h"\nspool = 3\n', ":3: agent.spool: expected a table, got 3"),
        ("agent = 1\n", ":1: agent: expected a table, got 1"),
    ],
)
def test_wrong_types_of_keys_and_tables(tmp_path: Path, text: str, expected: str) -> None:
    """A wrong value for a string key or for a whole table is reported at its line."""
    assert _error(tmp_path, text) == expected


def test_wrong_type_inside_an_array_names_the_index(tmp_path: Path) -> None:
    """A bad item in an array is named by its index."""
    text = (
        '[agent]\nhostname = "h"\n[agent.spool]\npath = "/s"\n'
        '[[agent.watches]]\nroot = "/c"\npatterns = ["*.bin", 7]\n'
    )
    assert _error(tmp_path, text) == (":7: agent.watches[0].patterns[1]: expected a string, got 7")


def test_empty_path_is_rejected(tmp_path: Path) -> None:
    """An empty string is not a path."""
    text = '[agent]\nhostname = "h"\n[agent.spool]\npath = ""\n'
    assert _error(tmp_path, text) == ':4: agent.spool.path: expected a path, got ""'


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt key is refused, listing the keys the table takes and the likely one."""
    text = '[agent]\nhostname = "h"\nquiet_intervl = "5m"\n[agent.spool]\npath = "/s"\n'
    assert _error(tmp_path, text) == (
        ":3: agent.quiet_intervl: unknown key; expected one of hostname, quiet_interval, "
        "sample_rate, sensor, canaries, collector_url, spool, watches "
        '(did you mean "quiet_interval"?)'
    )


def test_unknown_table_is_an_error(tmp_path: Path) -> None:
    """A table the schema lacks is refused at its header line."""
    text = '[agent]\nhostname = "h"\n[agent.spool]\npath = "/s"\n\n[colector]\nurl = "x"\n'
    message = _error(tmp_path, text)
    assert message.startswith(":6: colector: unknown key; expected one of agent, logging")


def test_missing_required_key_points_at_its_table(tmp_path: Path) -> None:
    """A required key that is absent is named, at the line of its table."""
    text = '# agent\n[agent]\nquiet_interval = "5m"\n[agent.spool]\npath = "/s"\n'
    assert _error(tmp_path, text) == ":2: agent.hostname: missing; expected a string"


def test_missing_required_table_is_named(tmp_path: Path) -> None:
    """A required table that is absent reports its first missing key."""
    assert _error(tmp_path, "[logging]\n") == ": agent.hostname: missing; expected a string"


def test_dotted_keys_and_inline_tables_are_located(tmp_path: Path) -> None:
    """Keys written as dotted keys or inside inline tables still get a line number."""
    dotted = 'agent.hostname = "h"\nagent.spool.path = "/s"\nagent.sample_rate = "x"\n'
    assert _error(tmp_path, dotted) == ':3: agent.sample_rate: expected a number, got "x"'
    inline = '[agent]\nhostname = "h"\n\nspool = { path = "/s", max_bytes = "big" }\n'
    assert _error(tmp_path, inline) == (':4: agent.spool.max_bytes: expected an integer, got "big"')


def test_post_init_validation_becomes_a_config_error(tmp_path: Path) -> None:
    """A ValueError from a dataclass's own check is reported against its table."""
    text = "[window]\nlow = 5\nhigh = 1\n"
    assert _error(tmp_path, text, WithWindow) == (":1: window: low (5) must not exceed high (1)")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist says so."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="config file not found") as caught:
        load_config(path, AgentFile)
    assert str(caught.value).startswith(f"{path}: ")


def test_directory_is_an_unreadable_config_error(tmp_path: Path) -> None:
    """A directory where the file should be is unreadable, not a crash."""
    with pytest.raises(ConfigError, match=r"cannot read the config file: it is a directory"):
        load_config(tmp_path, AgentFile)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A file without read permission gives a ConfigError naming it."""
    path = _write(tmp_path, FULL)
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read the config file: Permission denied"):
        load_config(path, AgentFile)


def test_invalid_toml_reports_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error gives the file, line and column from the parser."""
    message = _error(tmp_path, '[agent]\nhostname = "h"\nsample_rate = = 2\n')
    assert message.startswith(":3:15: invalid TOML: ")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported, not decoded wrongly."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b'[agent]\nhostname = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path, AgentFile)


def test_parse_config_reads_mappings_and_names_the_source() -> None:
    """parse_config checks an in-memory mapping, naming the given source in messages."""
    data = {"agent": {"hostname": "h", "spool": {"path": "/s"}}}
    assert parse_config(data, AgentFile).agent.spool.path == Path("/s")
    with pytest.raises(ConfigError) as caught:
        parse_config({"agent": {"hostname": 1}}, AgentFile)
    assert str(caught.value) == "<string>: agent.hostname: expected a string, got 1"
    with pytest.raises(ConfigError, match=r"^env: agent: expected a table, got an array$"):
        parse_config({"agent": []}, AgentFile, source="env")


def test_unsupported_schema_types_are_programming_errors() -> None:
    """A schema with a field type the loader lacks raises TypeError, not ConfigError."""
    with pytest.raises(TypeError, match="unsupported type"):
        parse_config({"mapping": {"a": 1}}, Unsupported)
    with pytest.raises(TypeError, match="must be a dataclass"):
        parse_config({}, dict)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("0s", timedelta()),
    ],
)
def test_parse_duration_reads_units(text: str, expected: timedelta) -> None:
    """Durations are whole numbers with ms, s, m, h or d, optionally combined."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "s", "1.5h", "5 m", "-5s", "5y", "9" * 30 + "d"])
def test_parse_duration_rejects_other_text(text: str) -> None:
    """Anything else is a ValueError naming the text."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_path_through_a_file_is_an_unreadable_config_error(tmp_path: Path) -> None:
    """A path whose parent is a file cannot be read; the OS reason is given."""
    parent = _write(tmp_path, FULL)
    with pytest.raises(ConfigError, match="cannot read the config file: Not a directory"):
        load_config(parent / "agent.toml", AgentFile)


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One item of an array of tables."""

    name: str
    expires: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Items:
    """A file of ``[[items]]``."""

    items: tuple[Item, ...] = ()


ITEMS = '[[items]]\nname = "a"\n\n[[items]]\nname = "b"\n\n[[items]]\nname = 3\n'


def test_parse_toml_points_at_the_nth_array_table() -> None:
    """parse_toml reads text, and an error in the third [[items]] names that table's line."""
    with pytest.raises(ConfigError) as caught:
        parse_toml(ITEMS, Items, "items.toml")
    assert str(caught.value) == "items.toml:8: items[2].name: expected a string, got 3"
    assert parse_toml('[[items]]\nname = "a"\n', Items).items == (Item(name="a"),)
    with pytest.raises(ConfigError, match=r"^x.toml:1:9: invalid TOML: "):
        parse_toml("items = = 1", Items, "x.toml")


def test_config_error_locates_keys_of_array_tables_and_their_parents() -> None:
    """A check made after parsing points at the key, else its table, else only the source."""
    text = ITEMS.replace("name = 3", 'name = "c"')
    assert str(config_error("f", text, ("items", 1, "name"), "taken")) == (
        "f:5: items[1].name: taken"
    )
    assert str(config_error("f", text, ("items", 2, "expires"), "bad")) == (
        "f:7: items[2].expires: bad"
    )
    assert str(config_error("f", None, ("items", 0), "no text")) == "f: items[0]: no text"
    assert str(config_error("f", text, (), "empty")) == "f: empty"


@pytest.mark.parametrize(
    "value",
    ["2025-01-31T18:00:00Z", '"2025-01-31T18:00:00Z"', '"2025-01-31T19:00:00+01:00"'],
)
def test_date_times_with_an_offset_are_read_from_toml_or_strings(value: str) -> None:
    """A TOML offset date-time or an RFC 3339 string becomes an aware datetime."""
    [item] = parse_toml(f'[[items]]\nname = "a"\nexpires = {value}\n', Items).items
    assert item.expires == datetime(2025, 1, 31, 18, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("2025-01-31T18:00:00", "a date-time"),
        ('"2025-01-31T18:00:00"', '"2025-01-31T18:00:00"'),
        ('"tomorrow"', '"tomorrow"'),
        ("2025-01-31", "a date"),
        ("7", "7"),
    ],
)
def test_date_times_without_an_offset_or_of_other_kinds_are_refused(value: str, got: str) -> None:
    """A local date-time is ambiguous and is refused, as is anything that is not one."""
    with pytest.raises(ConfigError) as caught:
        parse_toml(f'[[items]]\nname = "a"\nexpires = {value}\n', Items, "f")
    assert str(caught.value) == (
        "f:3: items[0].expires: expected a date-time with its offset like "
        f'"2025-01-31T18:00:00Z", got {got}'
    )


def test_a_since_reaching_back_before_1970_is_a_usage_error():
    """A span longer than the epoch is a mistake, not a negative time."""
    with pytest.raises(UsageError, match="before 1970"):
        parse_since("1000000d", 1_767_571_200_000)
