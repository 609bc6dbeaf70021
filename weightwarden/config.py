"""Typed configuration, read once at the edge from a TOML file.

A schema is a frozen dataclass; tables are nested dataclasses. :func:`load_config` reads
the file, checks every value against the field's type and returns the dataclass, or raises
one :class:`~weightwarden.errors.ConfigError` whose message names the file, the line (best
effort, found by scanning the text for the key), the dotted key, what was expected and what
was found::

    agent.toml:7: agent.quiet_interval: expected a duration like "30s", got 12

Field types understood: ``str``, ``int``, ``float`` (an integer is accepted), ``bool``,
``pathlib.Path`` (a non-empty string, kept as written), ``datetime.timedelta`` (a duration
string such as ``"30s"``, ``"5m"``, ``"2h"``, ``"1h30m"``; see :func:`parse_duration`),
``datetime.datetime`` (a TOML offset date-time, or an RFC 3339 string such as
``"2025-01-31T18:00:00Z"``; either must carry its UTC offset), ``tuple[X, ...]`` (an
array), ``Literal[...]``, ``X | None`` and nested dataclasses.
Fields keep their dataclass defaults when the key is absent; a table whose fields all have
defaults may be left out. Unknown keys are errors: a misspelt key must not silently fall
back to a default. A dataclass may check its own invariants in ``__post_init__`` by
raising ``ValueError``; the message is reported against its table.

:func:`parse_toml` does the same for TOML text already read (a file's contents, given its
name for messages), and :func:`config_error` builds an error in the same form for a check
made after parsing (a name defined twice, a reference to nothing), pointing at the line of
the offending key.

Schema mistakes (an unsupported field type, annotations that do not resolve) are
programming errors and raise ``TypeError``. Schemas must be defined at module level so
their annotations resolve.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from difflib import get_close_matches
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    TypeGuard,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from weightwarden.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from _typeshed import DataclassInstance

__all__ = [
    "config_error",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_since",
    "parse_toml",
    "read_text",
]

T = TypeVar("T", bound="DataclassInstance")

_KeyPath = tuple[str | int, ...]

_DURATION: Final = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")
_DURATION_PART: Final = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_TOML_ERROR_AT: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TABLE_HEADER: Final = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?")
_KEY: Final = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY_VALUE: Final = re.compile(rf"^({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
_KEY_PART: Final = re.compile(r"""[A-Za-z0-9_-]+|"([^"]*)"|'([^']*)'""")
_SHOWN: Final = 40
"""Longest value a message repeats."""


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"250ms"``, ``"1h30m"``.

    Raises:
        ValueError: ``text`` is not a sequence of whole numbers with a unit each
            (``ms``, ``s``, ``m``, ``h``, ``d``), or is too long to represent.
    """
    if not _DURATION.fullmatch(text):
        raise ValueError(f'not a duration like "30s", "5m" or "2h": {text!r}')
    try:
        return sum(
            (int(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(text)),
            timedelta(),
        )
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"duration too long: {text!r}") from exc


def parse_since(text: str, now_ms: int) -> int:
    """A ``--since`` value as milliseconds since the epoch.

    Args:
        text: An ISO-8601 time (``2024-05-01T12:00:00Z``; without an offset it is UTC) or
            a duration back from ``now_ms`` (``10m``, ``2h``, ``1d``, ``1h30m``).
        now_ms: The present, milliseconds since the epoch.

    Raises:
        UsageError: ``text`` is neither, or it lies before 1970.
    """
    try:
        ago = now_ms - parse_duration(text) // _ONE_MS
    except ValueError:
        pass
    else:
        if ago < 0:
            raise UsageError(f"--since {text!r}: reaches back before 1970; give a shorter span")
        return ago
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected an ISO-8601 time like 2024-05-01T12:00:00Z "
            "or a duration like 10m, 2h or 1d"
        ) from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def load_config(path: Path, schema: type[T]) -> T:
    """Read the TOML file at ``path`` into an instance of the dataclass ``schema``.

    Raises:
        ConfigError: The file is missing, unreadable, not UTF-8, not valid TOML, or a value
            does not fit the schema. The message starts with the path (and line, when known).
        TypeError: ``schema`` is not a dataclass or uses a field type this loader lacks.
    """
    source = str(path)
    text = read_text(path, what="config file", missing="create it or pass another path")
    return parse_toml(text, schema, source)


def read_text(path: Path, *, what: str, missing: str) -> str:
    """The UTF-8 text of a configuration-like file, or one ConfigError line naming it.

    Args:
        path: The file.
        what: What it is, for messages (``"policy file"``).
        missing: What to do when it does not exist (``"create it or pass another path"``).

    Raises:
        ConfigError: Missing, a directory, unreadable, or not UTF-8.
    """
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: {what} not found; {missing}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{source}: cannot read the {what}: it is a directory") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the {what}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from exc


def parse_toml(text: str, schema: type[T], source: str = "<string>") -> T:
    """Parse the TOML ``text`` into an instance of the dataclass ``schema``.

    ``source`` names the origin (usually the file the text was read from) in messages,
    which give its line as :func:`load_config`'s do.

    Raises:
        ConfigError: ``text`` is not valid TOML, or a value does not fit the schema.
        TypeError: ``schema`` is not a dataclass or uses a field type this loader lacks.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_ERROR_AT.search(message)
        if where is None:
            raise ConfigError(f"{source}: invalid TOML: {message}") from exc
        line, column = where.groups()
        detail = message[: where.start()]
        raise ConfigError(f"{source}:{line}:{column}: invalid TOML: {detail}") from exc
    return _Reader(source, text).table(data, schema, ())


def config_error(
    source: str, text: str | None, key: Sequence[str | int], problem: str
) -> ConfigError:
    """An error about ``key`` of the TOML ``text``, in the form the readers use.

    ``key`` is the dotted key as parts (``("assets", 2, "owners")`` for the third
    ``[[assets]]`` table's ``owners``); the message is ``source:line: assets[2].owners:
    problem``, the line being that of the key, else of its nearest enclosing key or
    table, else left out.
    """
    return _Reader(source, text)._error(tuple(key), problem)  # noqa: SLF001 -- the module's own reader


def parse_config(data: Mapping[str, object], schema: type[T], source: str = "<string>") -> T:
    """Check already-parsed ``data`` against the dataclass ``schema`` and build it.

    ``source`` names the origin in messages. No line numbers are given: there is no text.

    Raises:
        ConfigError: A value does not fit the schema.
        TypeError: ``schema`` is not a dataclass or uses a field type this loader lacks.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table at the top level, got {_got(data)}")
    return _Reader(source, None).table(data, schema, ())


def _got(value: object) -> str:
    """Say what a TOML value is, in TOML's own spelling, briefly."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    text = _toml_literal(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


_SIMPLE_NAMES: Final[Mapping[object, tuple[str, str]]] = {
    str: ("a string", "strings"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    Path: ("a path", "paths"),
    timedelta: ('a duration like "30s"', 'durations like "30s"'),
    datetime: (
        'a date-time with its offset like "2025-01-31T18:00:00Z"',
        'date-times with their offsets like "2025-01-31T18:00:00Z"',
    ),
}


def _expected(hint: object, *, plural: bool = False) -> str:
    """Describe what a field type accepts, for messages."""
    if hint in _SIMPLE_NAMES:
        return _SIMPLE_NAMES[hint][1 if plural else 0]
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(_toml_literal(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(arg, plural=plural) for arg in args if arg is not type(None))
    if origin is tuple:
        return "an array of " + _expected(args[0], plural=True)
    return "tables" if plural else "a table"


class _Reader:
    """Checks values against a schema; knows the text, to point errors at lines."""

    def __init__(self, source: str, text: str | None) -> None:
        self._source = source
        self._lines = [] if text is None else text.splitlines()

    # -- errors -------------------------------------------------------------------------

    def _error(self, path: _KeyPath, problem: str) -> ConfigError:
        line = self._locate(path)
        where = self._source if line is None else f"{self._source}:{line}"
        dotted = _dotted(path)
        return ConfigError(f"{where}: {dotted}: {problem}" if dotted else f"{where}: {problem}")

    def _mismatch(self, path: _KeyPath, hint: object, value: object) -> ConfigError:
        return self._error(path, f"expected {_expected(hint)}, got {_got(value)}")

    def _locate(self, path: _KeyPath) -> int | None:
        """Find the line of ``path``'s key, or of the nearest enclosing key or table."""
        for end in range(len(path), 0, -1):
            line = self._find(path[:end])
            if line is not None:
                return line
        return None

    def _find(self, keys: _KeyPath) -> int | None:
        """The line of ``keys``; the n-th ``[[x]]`` table is ``("x", n)``."""
        table: _KeyPath = ()
        items: dict[_KeyPath, int] = {}
        for number, raw in enumerate(self._lines, start=1):
            line = raw.strip()
            header = _TABLE_HEADER.match(line)
            if header is not None:
                table = _indexed(_split_key(header.group(1)), items, new=line.startswith("[["))
                if table == keys:
                    return number
                continue
            assignment = _KEY_VALUE.match(line)
            if assignment is not None and table + _split_key(assignment.group(1)) == keys:
                return number
        return None

    # -- values ---------------------------------------------------------------------------

    def table(self, data: Mapping[str, object], schema: type[T], path: _KeyPath) -> T:
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            raise TypeError(f"config schema must be a dataclass type, got {schema!r}")
        try:
            hints = _type_hints(schema)
        except NameError as exc:
            raise TypeError(f"config schema {schema.__name__}: {exc}") from exc
        fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
        for key in data:
            if key not in fields:
                raise self._error((*path, key), _unknown_key(key, fields))
        values: dict[str, object] = {}
        for name, field in fields.items():
            hint = hints[name]
            if name in data:
                values[name] = self.value(data[name], hint, (*path, name))
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                if _is_dataclass_type(hint):
                    values[name] = self.table({}, hint, (*path, name))
                else:
                    raise self._error((*path, name), f"missing; expected {_expected(hint)}")
        try:
            return schema(**values)
        except ValueError as exc:
            raise self._error(path, str(exc)) from exc

    def value(self, value: object, hint: object, path: _KeyPath) -> object:
        origin = get_origin(hint)
        if origin in (Union, types.UnionType):
            return self._optional(value, hint, path)
        if origin is Literal:
            if any(type(value) is type(arg) and value == arg for arg in get_args(hint)):
                return value
            raise self._mismatch(path, hint, value)
        if origin is tuple:
            return self._array(value, hint, path)
        if _is_dataclass_type(hint):
            if not isinstance(value, Mapping):
                raise self._mismatch(path, hint, value)
            return self.table(value, hint, path)
        check = _SCALARS.get(hint)
        if check is None:
            raise TypeError(f"config schema: unsupported type {hint!r} for {_dotted(path)}")
        result = check(value)
        if result is _INVALID:
            raise self._mismatch(path, hint, value)
        return result

    def _optional(self, value: object, hint: object, path: _KeyPath) -> object:
        args = get_args(hint)
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1 or len(args) != 2:  # noqa: PLR2004 - X | None has two members
            raise TypeError(f"config schema: only X | None unions are supported, got {hint!r}")
        return None if value is None else self.value(value, inner[0], path)

    def _array(self, value: object, hint: object, path: _KeyPath) -> tuple[object, ...]:
        args = get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:  # noqa: PLR2004 - tuple[X, ...]
            raise TypeError(f"config schema: only tuple[X, ...] is supported, got {hint!r}")
        if not isinstance(value, list | tuple):
            raise self._mismatch(path, hint, value)
        return tuple(self.value(item, args[0], (*path, index)) for index, item in enumerate(value))


def _type_hints(schema: type) -> dict[str, Any]:
    return get_type_hints(schema)


def _is_dataclass_type(hint: object) -> TypeGuard[type[DataclassInstance]]:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


class _Invalid:
    """The value does not fit the type."""


_INVALID: Final = _Invalid()


def _as_bool(value: object) -> object:
    return value if isinstance(value, bool) else _INVALID


def _as_int(value: object) -> object:
    return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID


def _as_float(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _INVALID


def _as_str(value: object) -> object:
    return value if isinstance(value, str) else _INVALID


def _as_path(value: object) -> object:
    return Path(value) if isinstance(value, str) and value else _INVALID


def _as_duration(value: object) -> object:
    if not isinstance(value, str):
        return _INVALID
    try:
        return parse_duration(value)
    except ValueError:
        return _INVALID


def _as_datetime(value: object) -> object:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return _INVALID
    if not isinstance(value, datetime) or value.utcoffset() is None:
        return _INVALID
    return value


_SCALARS: Final[Mapping[object, Callable[[object], object]]] = {
    bool: _as_bool,
    int: _as_int,
    float: _as_float,
    str: _as_str,
    Path: _as_path,
    timedelta: _as_duration,
    datetime: _as_datetime,
}


def _unknown_key(key: str, fields: Mapping[str, object]) -> str:
    known = ", ".join(fields) if fields else "nothing (this table takes no keys)"
    guess = get_close_matches(key, list(fields), n=1)
    hint = f' (did you mean "{guess[0]}"?)' if guess else ""
    return f"unknown key; expected one of {known}{hint}"


def _dotted(path: _KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _indexed(keys: tuple[str, ...], items: dict[_KeyPath, int], *, new: bool) -> _KeyPath:
    """A table header's key path with the current index of each array of tables in it.

    ``items`` maps each array of tables seen so far to its last index; a ``[[x]]`` header
    (``new``) starts the next item of its array.
    """
    path: _KeyPath = ()
    for position, key in enumerate(keys):
        path = (*path, key)
        if new and position == len(keys) - 1:
            items[path] = items.get(path, -1) + 1
        if path in items:
            path = (*path, items[path])
    return path


def _split_key(text: str) -> tuple[str, ...]:
    """Split a TOML dotted key (``a."b.c".d``) into its parts, unquoted."""
    return tuple(
        match.group(1) if match.group(1) is not None else match.group(2) or match.group(0)
        for match in _KEY_PART.finditer(text)
    )
