"""``weightwarden collector import FILE`` and ``weightwarden collector export``: OCSF lines.

Import reads OCSF 1.x JSON lines (``weightwarden agent events`` output, or any OCSF source
of the classes weightwarden reads), checks every line first (a bad line, or an event that
reuses the id of a different event already recorded or earlier in the file, is an error
naming the file and line, and nothing is imported), then stores the events as
``import:<source>`` (not part of any agent's chain; an event whose uid was imported before
is skipped) with the alerts the rules raise on them (the same events give the same alert
ids, so importing a file twice raises nothing twice).

Export writes the stored events, oldest first, one OCSF JSON object per line (sorted
keys, no whitespace). An agent's event carries its place in the agent's hash chain under
``unmapped.weightwarden.chain`` (``{agent_id, seq, prev_hash, payload_hash, link_hash}``),
as ``weightwarden agent events`` writes it: remove that key (and ``unmapped`` if it is
then empty) and re-serialise canonically to check ``payload_hash``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from collector.alerts import alerts_for_events
from collector.cli._common import add_store_options, now_ms, open_from_args, parse_since
from collector.store import StoredEvent
from weightwarden.errors import EventFormatError, UsageError
from weightwarden.events import (
    EXTENSION_KEY,
    ComplianceFinding,
    DetectionFinding,
    FileActivity,
    NetworkActivity,
    ProcessActivity,
    canonical_bytes,
    from_json_line,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator

    from collector.store import Store
    from weightwarden.events import Event

__all__ = ["check_conflicts", "export_line", "import_events", "import_file", "register"]

_CHUNK: Final = 5000
_MAX_LINE: Final = 1 << 20
_CLASS_UIDS: Final[dict[type, int]] = {
    FileActivity: 1001,
    ProcessActivity: 1007,
    NetworkActivity: 4001,
    ComplianceFinding: 2003,
    DetectionFinding: 2004,
}


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``collector import`` and ``collector export``."""
    imp = sub.add_parser(
        "import",
        help="store OCSF JSON lines from FILE (or - for stdin)",
        description=(
            "Store the events of an OCSF JSON-lines file as source import:SOURCE. Every "
            "line is checked first; a bad line stops the import before anything is stored "
            "(exit 2, naming the line). Events already imported (same uid) are skipped."
        ),
    )
    imp.add_argument("file", metavar="FILE", help="OCSF JSON lines, or - for stdin")
    imp.add_argument("--format", choices=("ocsf",), required=True, help="the file's format")
    imp.add_argument("--source", metavar="NAME", help="source name (default: the file name)")
    add_store_options(imp)
    imp.set_defaults(func=_run_import)

    exp = sub.add_parser(
        "export",
        help="write stored events as OCSF JSON lines",
        description="Write the stored events, oldest first, one OCSF JSON object per line.",
    )
    exp.add_argument("--format", choices=("ocsf",), required=True, help="the output format")
    exp.add_argument(
        "--since",
        metavar="TIME",
        help="only events at or after TIME: ISO-8601 (UTC if no offset) or a duration ago",
    )
    exp.add_argument("--agent", metavar="AGENT", help="only this agent's (or source's) events")
    exp.add_argument("--output", type=Path, metavar="FILE", help="write here instead of stdout")
    add_store_options(exp)
    exp.set_defaults(func=_run_export)


# -- import ------------------------------------------------------------------------------


def _lines(name: str) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines of FILE (or stdin).

    Raises:
        UsageError: The file cannot be read or is not UTF-8.
    """
    try:
        stream: TextIO = (
            sys.stdin if name == "-" else Path(name).open(encoding="utf-8")  # noqa: SIM115
        )
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc
    try:
        for number, line in enumerate(stream, start=1):
            if len(line) > _MAX_LINE:
                raise UsageError(f"{name}:{number}: line longer than {_MAX_LINE} characters")
            if line.strip():
                yield number, line
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc
    finally:
        if stream is not sys.stdin:
            stream.close()


def _numbered(name: str) -> Iterator[tuple[int, Event]]:
    for number, line in _lines(name):
        try:
            yield number, from_json_line(line)
        except EventFormatError as exc:
            raise UsageError(f"{name}:{number}: {exc}") from None


def _decode(name: str) -> Iterator[Event]:
    return (event for _, event in _numbered(name))


def check_conflicts(store: Store, name: str, numbered: Iterable[tuple[int, Event]]) -> None:
    """Refuse an event that reuses the id of a different one, stored or earlier in the file.

    Importing skips an event whose id is stored; if its content differs, skipping it would
    silently drop a conflicting record. Nothing is stored when one is found.

    Raises:
        UsageError: The first such event, naming its line and id.
    """
    digests: dict[str, bytes] = {}
    stream = iter(numbered)
    while chunk := list(islice(stream, _CHUNK)):
        stored = store.imported_payloads([event.uid for _, event in chunk])
        for number, event in chunk:
            canonical = canonical_bytes(event)
            digest = hashlib.blake2b(canonical, digest_size=16).digest()
            earlier = digests.setdefault(event.uid, digest)
            kept = stored.get(event.uid)
            if earlier != digest or (kept is not None and kept.encode("utf-8") != canonical):
                raise UsageError(
                    f"{name}:{number}: event {event.uid} differs from the event already "
                    "recorded under that id; the record keeps the first and nothing was "
                    "imported: give the event a new id, or leave it out"
                )


def _stored(event: Event, source: str, received_at: int) -> StoredEvent:
    return StoredEvent(
        agent_id=source,
        seq=0,
        payload=canonical_bytes(event).decode("utf-8"),
        prev_hash="",
        payload_hash="",
        link_hash="",
        uid=event.uid,
        time=event.time,
        class_uid=_CLASS_UIDS[type(event)],
        activity_id=int(event.activity),
        severity_id=int(event.severity),
        received_at=received_at,
    )


def import_events(store: Store, events: Iterable[Event], source: str) -> tuple[int, int, int]:
    """Store ``events`` as ``source`` (``import:NAME``) with the alerts the rules raise.

    Returns:
        How many events were read, how many were new, and how many new alerts were raised
        (an alert stored before, by an earlier import of the same events, is not counted).
    """
    seen = new = alerts = 0
    stream = iter(events)
    while chunk := list(islice(stream, _CHUNK)):
        now = now_ms()
        found = alerts_for_events(chunk, agent_id=source, now=now)
        alerts += sum(1 for alert in found if store.alert(alert.id) is None)
        new += store.import_events([_stored(e, source, now) for e in chunk], found)
        seen += len(chunk)
    return seen, new, alerts


def import_file(store: Store, name: str, source: str) -> tuple[int, int, int]:
    """Check every line of FILE (``-``: stdin) first, then import its events as ``source``.

    Returns:
        As :func:`import_events`.

    Raises:
        UsageError: A line is not an event, or reuses the id of a different recorded event
            (see :func:`check_conflicts`); nothing is stored then.
    """
    if name == "-":  # stdin is read once, checked whole
        numbered = list(_numbered(name))
        check_conflicts(store, name, numbered)
        events: Iterator[Event] = (event for _, event in numbered)
    else:  # the first pass: every line must decode, and conflict with nothing, first
        check_conflicts(store, name, _numbered(name))
        events = _decode(name)
    return import_events(store, events, source)


def _run_import(args: argparse.Namespace) -> int:
    name = args.file
    if name == "-" and not args.source:
        raise UsageError("importing from stdin (-) needs --source NAME")
    source = "import:" + (args.source or Path(name).name)
    store = open_from_args(args)
    try:
        seen, new, alerts = import_file(store, name, source)
    finally:
        store.close()
    print(
        f"imported {new} new events ({seen - new} already stored) from {name} as {source}; "
        f"{alerts} alert(s) raised"
    )
    return 0


# -- export ------------------------------------------------------------------------------


def export_line(event: StoredEvent) -> str | None:
    """One stored event as an OCSF line, with its chain link; None if it is not JSON."""
    try:
        obj = json.loads(event.payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if event.link_hash:
        unmapped = obj.get("unmapped")
        unmapped = unmapped if isinstance(unmapped, dict) else {}
        extension = unmapped.get(EXTENSION_KEY)
        extension = extension if isinstance(extension, dict) else {}
        chain = {
            "agent_id": event.agent_id,
            "seq": event.seq,
            "prev_hash": event.prev_hash,
            "payload_hash": event.payload_hash,
            "link_hash": event.link_hash,
        }
        obj["unmapped"] = {**unmapped, EXTENSION_KEY: {**extension, "chain": chain}}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _export(store: Store, out: TextIO, *, since: int | None, agent: str | None) -> tuple[int, int]:
    written = skipped = 0
    for event in store.events(agent_id=agent, since=since):
        line = export_line(event)
        if line is None:
            skipped += 1
            continue
        out.write(line + "\n")
        written += 1
    return written, skipped


def _run_export(args: argparse.Namespace) -> int:
    since = None if args.since is None else parse_since(args.since, now_ms())
    store = open_from_args(args)
    try:
        if args.output is None:
            try:
                written, skipped = _export(store, sys.stdout, since=since, agent=args.agent)
                sys.stdout.flush()
            except BrokenPipeError:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
                return 0
        else:
            try:
                with args.output.open("w", encoding="utf-8") as out:
                    written, skipped = _export(store, out, since=since, agent=args.agent)
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    finally:
        store.close()
    if skipped:
        print(
            f"weightwarden: {skipped} stored event(s) are not JSON objects and were not "
            "exported (see collector verify-log and the unreadable-event alerts)",
            file=sys.stderr,
        )
    if args.output is not None:
        print(f"exported {written} events to {args.output}", file=sys.stderr)
    return 0
