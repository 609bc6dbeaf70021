"""``weightwarden agent events``: print what the agent's spool holds.

Reads the spool read-only (it never creates a file, and runs beside the daemon) and prints
the held events in sequence order, oldest first:

``--format ocsf`` (default)
    One OCSF 1.3 JSON object per line, as :func:`weightwarden.events.to_json_line`
    writes it, plus the event's place in the agent's hash chain under
    ``unmapped.weightwarden.chain``: ``{agent_id, seq, prev_hash, payload_hash,
    link_hash}``. The link covers the event's canonical bytes *without* that ``chain``
    key (remove it, and ``unmapped`` if it is then empty, and re-serialise canonically to
    check ``payload_hash``). :func:`weightwarden.events.decode` ignores the key, so the
    lines import as they are.
``--format table``
    One line per event for people: time (UTC), seq, activity, user, process (exe[pid]),
    bytes read (read calls plus mapped) with the fraction of the file, and path. Control
    characters in names are shown escaped, so a hostile file name cannot drive the
    terminal.

``--since`` takes an ISO-8601 time (a time without an offset is UTC) or a duration back
from now (``10m``, ``2h``, ``1d``, ``1h30m``) and filters on the event's own time.
``--limit N`` stops after N events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, TextIO

from weightwarden.config import parse_since
from weightwarden.events import (
    EXTENSION_KEY,
    ComplianceFinding,
    DetectionFinding,
    FileActivity,
    NetworkActivity,
    ProcessActivity,
    encode,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from agent.spool import SpooledEvent
    from weightwarden.events import Actor, Event, Process, User

__all__ = ["parse_since", "register"]

_BATCH: Final = 1000
_COLUMNS: Final = (
    ("TIME", 24),
    ("SEQ", -8),
    ("ACTIVITY", 18),
    ("USER", 12),
    ("PROCESS", 24),
    ("READ", 18),
    ("PATH", 0),
)
"""Header and width of each table column; a negative width aligns right, 0 is unbounded."""


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``agent events``."""
    parser = sub.add_parser(
        "events",
        help="print the events held in the agent's spool",
        description=(
            "Print the events held in the agent's spool (appended and not yet confirmed "
            "by the collector), oldest first. Reads the spool read-only, beside the "
            "running agent. Exit 2 if DIR is not a spool or an argument is wrong."
        ),
    )
    parser.add_argument("--spool", type=Path, required=True, metavar="DIR", help="spool folder")
    parser.add_argument(
        "--format",
        choices=("ocsf", "table"),
        default="ocsf",
        help="ocsf: one OCSF JSON object per line (default); table: one line per event",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="only events at or after TIME: ISO-8601 (UTC if no offset) or a duration ago (10m)",
    )
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="print at most N events")
    parser.set_defaults(func=_run_events)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _run_events(args: argparse.Namespace) -> int:
    from agent.spool import SpoolReader  # noqa: PLC0415 -- sqlite3 only when this command runs

    since = None if args.since is None else parse_since(args.since, time.time_ns() // 1_000_000)
    out = sys.stdout
    try:
        with SpoolReader(args.spool) as reader:
            if args.format == "table":
                out.write(_table_line(header[0] for header in _COLUMNS))
            after, left = 0, args.limit
            while left is None or left > 0:
                batch = reader.read_batch(
                    after, _BATCH if left is None else min(_BATCH, left), since_ms=since
                )
                if not batch:
                    break
                _write(out, batch, args.format)
                after = batch[-1].seq
                left = None if left is None else left - len(batch)
        out.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's shutdown
        # flush from failing again on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def _write(out: TextIO, batch: list[SpooledEvent], fmt: str) -> None:
    if fmt == "ocsf":
        out.writelines(ocsf_line(spooled) + "\n" for spooled in batch)
    else:
        out.writelines(_table_line(table_row(spooled)) for spooled in batch)


def ocsf_line(spooled: SpooledEvent) -> str:
    """The event as one OCSF JSON line, with its chain link in ``unmapped.weightwarden``."""
    obj = encode(spooled.event)
    link = spooled.link
    chain = {
        "agent_id": link.agent_id,
        "seq": link.seq,
        "prev_hash": link.prev_hash,
        "payload_hash": link.payload_hash,
        "link_hash": link.link_hash,
    }
    unmapped = obj.get("unmapped")
    unmapped = unmapped if isinstance(unmapped, dict) else {}
    extension = unmapped.get(EXTENSION_KEY)
    extension = extension if isinstance(extension, dict) else {}
    obj["unmapped"] = {**unmapped, EXTENSION_KEY: {**extension, "chain": chain}}
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def table_row(spooled: SpooledEvent) -> tuple[str, ...]:
    """The table cells of one event, in :data:`_COLUMNS` order."""
    event = spooled.event
    process, user = _who(event)
    return (
        _time(event.time),
        str(spooled.seq),
        _activity(event),
        _user(user),
        _process(process),
        _amount_read(event),
        _what(event),
    )


def _table_line(cells: Iterable[str]) -> str:
    parts = []
    for (_, width), cell in zip(_COLUMNS, cells, strict=True):
        text = _printable(cell)
        if width > 0:
            parts.append(_clip(text, width).ljust(width))
        elif width < 0:
            parts.append(_clip(text, -width).rjust(-width))
        else:
            parts.append(text)
    return " ".join(parts).rstrip() + "\n"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _printable(text: str) -> str:
    """Escape control and other non-printing characters (names come from the watched host)."""
    if text.isprintable():
        return text
    return "".join(
        char
        if char.isprintable() and unicodedata.category(char) != "Cf"
        else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _time(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _activity(event: Event) -> str:
    if isinstance(event, FileActivity):
        text = f"file {event.activity.name.lower()}"
        return f"{text} canary" if event.canary else text
    if isinstance(event, ProcessActivity):
        return f"process {event.activity.name.lower()}"
    if isinstance(event, NetworkActivity):
        return f"network {event.activity.name.lower()}"
    if isinstance(event, DetectionFinding):
        return f"alert {event.severity.name.lower()}"
    return f"audit {event.status.name.lower()}"


def _who(event: Event) -> tuple[Process | None, User | None]:
    actor: Actor | None = None
    if isinstance(event, FileActivity | ProcessActivity | NetworkActivity):
        actor = event.actor
    if actor is None:
        return None, None
    user = actor.user
    if user is None and actor.process is not None:
        user = actor.process.user
    return actor.process, user


def _user(user: User | None) -> str:
    if user is None:
        return "-"
    return user.name or str(user.uid)


def _process(process: Process | None) -> str:
    if process is None:
        return "-"
    if process.exe is None:
        return f"[{process.pid}]"
    return f"{PurePosixPath(process.exe).name}[{process.pid}]"


def _amount_read(event: Event) -> str:
    if not isinstance(event, FileActivity):
        return "-"
    if event.bytes_read is None and event.mmap_bytes is None:
        return "-"
    text = _bytes((event.bytes_read or 0) + (event.mmap_bytes or 0))
    if event.fraction_read is not None:
        text += f" ({event.fraction_read:.0%})"
    return text


def _bytes(count: int) -> str:
    if count < _KIB:
        return f"{count} B"
    size = count / _KIB
    for unit in ("KiB", "MiB"):
        if size < _KIB:
            return f"{size:.1f} {unit}"
        size /= _KIB
    return f"{size:.1f} GiB"


def _what(event: Event) -> str:
    if isinstance(event, FileActivity):
        if event.file_result is not None:
            return f"{event.file.path} -> {event.file_result.path}"
        return event.file.path
    if isinstance(event, ProcessActivity):
        return event.process.exe or event.process.cmd_line or "-"
    if isinstance(event, NetworkActivity):
        dst = event.dst_endpoint
        return dst.ip if dst.port is None else f"{dst.ip}:{dst.port}"
    if isinstance(event, DetectionFinding | ComplianceFinding):
        return event.title
    return "-"  # pragma: no cover - the union is closed


_KIB: Final = 1024
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
