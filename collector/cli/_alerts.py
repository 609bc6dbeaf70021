"""``weightwarden alerts list|show|ack|resolve``: triage from the command line.

``list --format table`` (default) prints one line per alert, newest first: id, created
(UTC), severity, status, agent, title. ``list --format ocsf`` prints each alert as an OCSF
Detection Finding (2004), one JSON object per line, with its triage state: ``status_id``
(1 new, 2 in progress = acknowledged, 4 resolved), the note as ``comment``, and
``unmapped.weightwarden.triage`` {``status``, ``disposition``, ``note``, ``updated_at``}.

``show ID`` prints the alert, why it fired, and its evidence events read back from the
store (``--format ocsf``: the finding, then each evidence event, one JSON line each).
``ack`` and ``resolve`` record a disposition (true_positive, false_positive, benign) and
an optional note. An ID may be abbreviated to a unique prefix of at least 6 characters.
With a false_positive or benign disposition, ``--suppress user,program`` (any of user,
host, program, path) also keeps the alert's rule quiet for those values of its first
evidence event, for ``--suppress-for`` (default 30d); see :mod:`collector.feedback`.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

from collector.alerts import decode_finding
from collector.cli._common import (
    add_store_options,
    now_ms,
    open_from_args,
    parse_since,
    safe,
    severity_name,
    table,
    utc,
)
from collector.cli._transfer import export_line
from collector.feedback import (
    DEFAULT_SUPPRESS_FOR,
    parse_scope,
    parse_suppress_for,
    suppression_for,
)
from detectors.access import access_from_json
from weightwarden.errors import EventFormatError, UsageError
from weightwarden.events import (
    EXTENSION_KEY,
    DetectionFinding,
    FileActivity,
    FindingStatus,
    NetworkActivity,
    ProcessActivity,
    from_json_line,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from collector.store import Alert, AlertStatus, Disposition, Store, StoredEvent
    from detectors.access import Access
    from weightwarden.events import Event

__all__ = ["finding_line", "register"]

_STATUSES: Final = ("new", "acknowledged", "resolved")
_DISPOSITIONS: Final = ("true_positive", "false_positive", "benign")
_SUPPRESSIBLE: Final = ("false_positive", "benign")
_FINDING_STATUS: Final = {
    "new": FindingStatus.NEW,
    "acknowledged": FindingStatus.IN_PROGRESS,
    "resolved": FindingStatus.RESOLVED,
}
_WIDTHS: Final = (12, 24, 9, 13, 16, 0)
_SHORT_ID: Final = 12
"""Characters of an alert id the table shows: a prefix ``show``, ``ack`` and ``resolve`` take."""
_MAX_NOTE: Final = 4000


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``alerts`` with list, show, ack and resolve."""
    alerts = sub.add_parser(
        "alerts",
        help="list, inspect and triage the collector's alerts",
        description="The collector's alerts: list them, see why one fired and its "
        "evidence, and record a disposition.",
    )
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="alerts, newest first")
    ls.add_argument(
        "--format",
        choices=("table", "ocsf"),
        default="table",
        help="table (default) or OCSF Detection Findings, one JSON object per line",
    )
    ls.add_argument(
        "--since",
        metavar="TIME",
        help="only alerts raised at or after TIME: ISO-8601 (UTC if no offset) or a duration ago",
    )
    ls.add_argument("--status", choices=_STATUSES, help="only alerts in this triage state")
    add_store_options(ls)
    ls.set_defaults(func=_run_list)

    show = actions.add_parser("show", help="one alert: why it fired, and its evidence events")
    show.add_argument("id", metavar="ID", help="alert id, or a unique prefix (6+ characters)")
    show.add_argument(
        "--format",
        choices=("text", "ocsf"),
        default="text",
        help="text (default) or OCSF lines: the finding, then each evidence event",
    )
    add_store_options(show)
    show.set_defaults(func=_run_show)

    for verb, status, text in (
        ("ack", "acknowledged", "acknowledge an alert (someone is on it)"),
        ("resolve", "resolved", "close an alert with its disposition"),
    ):
        parser = actions.add_parser(verb, help=text)
        parser.add_argument("id", metavar="ID", help="alert id, or a unique prefix")
        parser.add_argument("--disposition", choices=_DISPOSITIONS, required=True)
        parser.add_argument("--note", metavar="TEXT", help="why (kept with the alert)")
        parser.add_argument(
            "--suppress",
            metavar="SCOPE",
            help="with false_positive or benign: silence this rule for the first evidence "
            "event's values of SCOPE, a comma list of user,host,program,path",
        )
        parser.add_argument(
            "--suppress-for",
            metavar="DURATION",
            help=f"how long --suppress lasts (default {DEFAULT_SUPPRESS_FOR}, at most 365d)",
        )
        add_store_options(parser)
        parser.set_defaults(func=_run_update, status=status)


# -- OCSF --------------------------------------------------------------------------------


def finding_line(alert: Alert) -> str:
    """The alert as one OCSF Detection Finding line, carrying its triage state."""
    try:
        obj = json.loads(alert.finding)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        obj = {}
    status = _FINDING_STATUS[alert.status]
    obj["status_id"] = int(status)
    obj["status"] = status.name.replace("_", " ").title()
    if alert.note:
        obj["comment"] = alert.note
    unmapped = obj.get("unmapped")
    unmapped = unmapped if isinstance(unmapped, dict) else {}
    extension = unmapped.get(EXTENSION_KEY)
    extension = extension if isinstance(extension, dict) else {}
    extension["triage"] = {
        "status": alert.status,
        "disposition": alert.disposition,
        "note": alert.note,
        "updated_at": alert.updated_at,
    }
    obj["unmapped"] = {**unmapped, EXTENSION_KEY: extension}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- commands ----------------------------------------------------------------------------


def _run_list(args: argparse.Namespace) -> int:
    since = None if args.since is None else parse_since(args.since, now_ms())
    store = open_from_args(args)
    try:
        found = store.alerts(status=cast("AlertStatus | None", args.status), since=since)
    finally:
        store.close()
    out = sys.stdout
    if args.format == "ocsf":
        out.writelines(finding_line(alert) + "\n" for alert in found)
        return 0
    out.writelines(table([("ID", "CREATED", "SEVERITY", "STATUS", "AGENT", "TITLE")], _WIDTHS))
    out.writelines(
        table(
            (
                (
                    a.id[:_SHORT_ID],
                    utc(a.created_at),
                    severity_name(a.severity_id),
                    a.status,
                    a.agent_id or "-",
                    a.title,
                )
                for a in found
            ),
            _WIDTHS,
        )
    )
    return 0


def _find(store: Store, alert_id: str) -> Alert:
    alert = store.alert(alert_id)
    if alert is None:
        raise UsageError(
            f"no alert {alert_id!r} (or the prefix is not unique; give 6+ characters): "
            "see weightwarden alerts list"
        )
    return alert


def evidence_events(store: Store, alert: Alert) -> list[StoredEvent]:
    """The stored events an alert names as evidence, in the alert's order.

    Reads the alert's agent's events (all events when it names none) until every uid is
    found; evidence that was never stored (a quarantined batch) is simply absent.
    """
    wanted = set(alert.evidence)
    found: dict[str, StoredEvent] = {}
    if wanted:
        for event in store.events(agent_id=alert.agent_id):
            if event.uid in wanted and event.uid not in found:
                found[event.uid] = event
                if len(found) == len(wanted):
                    break
    return [found[uid] for uid in alert.evidence if uid in found]


def _run_show(args: argparse.Namespace) -> int:
    store = open_from_args(args)
    try:
        alert = _find(store, args.id)
        events = evidence_events(store, alert)
    finally:
        store.close()
    out = sys.stdout
    if args.format == "ocsf":
        out.write(finding_line(alert) + "\n")
        for event in events:
            line = export_line(event)
            if line is not None:
                out.write(line + "\n")
        return 0
    _show_text(out, alert, events)
    return 0


def _show_text(out: TextIO, alert: Alert, events: Sequence[StoredEvent]) -> None:
    finding = decode_finding(alert)
    out.write(f"Alert {alert.id}\n")
    out.write(f"  Title:       {safe(alert.title)}\n")
    out.write(f"  Severity:    {severity_name(alert.severity_id)}\n")
    out.write(f"  Status:      {alert.status}")
    if alert.disposition:
        out.write(f" ({alert.disposition})")
    out.write("\n")
    if alert.note:
        out.write(f"  Note:        {safe(alert.note)}\n")
    out.write(f"  Agent:       {safe(alert.agent_id)}\n")
    out.write(f"  Created:     {utc(alert.created_at)}   updated {utc(alert.updated_at)}\n")
    analytic = finding.analytic.name if finding is not None else "-"
    out.write(f"  Rule:        {safe(alert.rule)} ({safe(analytic)})\n")
    if finding is not None and finding.explanation is not None:
        if finding.explanation.rule:
            out.write(f"  Why:         {safe(finding.explanation.rule)}\n")
        out.writelines(
            f"               {safe(item.feature)}: {item.actual:g} (typical {item.typical:g})\n"
            for item in finding.explanation.contributions
        )
    if finding is not None and finding.description:
        first, *rest = finding.description.splitlines() or [""]
        out.write(f"  What:        {safe(first)}\n")
        out.writelines(f"               {safe(line)}\n" for line in rest)
    out.write(f"  Evidence:    {len(alert.evidence)} event(s), {len(events)} in the store\n")
    out.writelines(f"    {_event_summary(event)}\n" for event in events)
    missing = len(alert.evidence) - len(events)
    if missing:
        out.write(
            f"    ({missing} not in the store: quarantined, or not yet stored; "
            "see the description)\n"
        )


def _event_summary(stored: StoredEvent) -> str:
    where = f"{safe(stored.agent_id)}#{stored.seq}"
    head = f"{utc(stored.time)}  {where}"
    try:
        event: Event | None = from_json_line(stored.payload)
    except EventFormatError:
        event = None
    if event is None:
        return f"{head}  (unreadable payload) uid {safe(stored.uid)}"
    kind = f"{type(event).__name__}:{getattr(event, 'activity', '')!s}"
    what = ""
    if isinstance(event, FileActivity):
        who = _actor(event)
        what = f"{event.activity.name.lower()} {safe(event.file.path)} by {who}"
        if event.copy_source:
            what += f" (copy of {safe(event.copy_source)})"
        if event.seal is not None:
            what += f" [seal {event.seal.status.value}]"
        if event.canary:
            what += " [canary]"
    elif isinstance(event, NetworkActivity):
        where = event.dst_endpoint.hostname or event.dst_endpoint.ip
        port = "" if event.dst_endpoint.port is None else f":{event.dst_endpoint.port}"
        sent = "" if event.bytes_out is None else f", {event.bytes_out} bytes out"
        what = f"{event.activity.name.lower()} to {safe(where)}{port} by {_actor(event)}{sent}"
    elif isinstance(event, ProcessActivity):
        what = f"{event.activity.name.lower()} by {_actor(event)}"
    elif isinstance(event, DetectionFinding):
        what = safe(event.title)
    else:
        what = kind
    return f"{head}  {severity_name(int(event.severity))}  {what}  (uid {safe(event.uid)})"


def _actor(event: FileActivity | ProcessActivity | NetworkActivity) -> str:
    actor = event.actor
    user = actor.user or (actor.process.user if actor.process else None)
    name = "-" if user is None else safe(user.name or f"uid {user.uid}")
    if actor.process is None:
        return name
    exe = (actor.process.exe or "?").rstrip("/").rpartition("/")[2]
    return f"{name} ({safe(exe)}[{actor.process.pid}])"


def _suppress_options(args: argparse.Namespace) -> tuple[tuple[str, ...], int]:
    """``--suppress`` and ``--suppress-for``: the scope and duration (ms), or ``((), 0)``.

    Raises:
        UsageError: They do not go with the disposition, or are malformed.
    """
    if args.suppress is None:
        if args.suppress_for is not None:
            raise UsageError("--suppress-for goes with --suppress SCOPE")
        return (), 0
    if args.disposition not in _SUPPRESSIBLE:
        raise UsageError(
            f"--suppress goes with --disposition false_positive or benign, not "
            f"{args.disposition}: a true positive must keep alerting"
        )
    return (
        parse_scope(args.suppress),
        parse_suppress_for(args.suppress_for or DEFAULT_SUPPRESS_FOR),
    )


def _run_update(args: argparse.Namespace) -> int:
    note = args.note
    if note is not None and len(note) > _MAX_NOTE:
        raise UsageError(f"--note is {len(note)} characters; at most {_MAX_NOTE}")
    scope, duration = _suppress_options(args)
    store = open_from_args(args)
    try:
        now = now_ms()
        suppression = None
        if scope:
            alert = _find(store, args.id)
            suppression = suppression_for(
                alert,
                _first_evidence(store, alert),
                scope,
                disposition=args.disposition,
                note=note,
                now=now,
                duration_ms=duration,
            )
        updated = store.update_alert(
            args.id,
            status=cast("AlertStatus", args.status),
            disposition=cast("Disposition", args.disposition),
            note=note,
            now=now,
        )
        if updated is not None and suppression is not None:
            store.add_suppression(
                suppression, suppression_id=uuid.uuid4().hex, created_at=now, alert_id=updated.id
            )
        lifted = 0
        if updated is not None and args.disposition == "true_positive":
            # A true positive must keep alerting: end what an earlier verdict silenced.
            lifted = store.lift_suppressions(updated.id, now=now)
    finally:
        store.close()
    if updated is None:
        raise UsageError(
            f"no alert {args.id!r} (or the prefix is not unique; give 6+ characters): "
            "see weightwarden alerts list"
        )
    print(f"{updated.id}: {updated.status} ({updated.disposition})")
    if lifted:
        print(f"lifted {lifted} suppression(s) an earlier verdict on this alert created")
    if suppression is not None:
        scoped = ", ".join(
            f"{field}={safe(getattr(suppression, field))}"
            for field in ("user", "host", "program", "path")
            if getattr(suppression, field) is not None
        )
        print(f"suppressed {safe(suppression.rule)} for {scoped} until {utc(suppression.until)}")
    return 0


def _first_evidence(store: Store, alert: Alert) -> Access:
    """The alert's first evidence event, as the detectors read it.

    Raises:
        UsageError: The alert names no evidence, the first is not in the store, or it is
            not an access (a finding).
    """
    if not alert.evidence:
        raise UsageError(f"alert {alert.id} names no evidence event to scope a suppression by")
    events = evidence_events(store, alert)
    if not events or events[0].uid != alert.evidence[0]:
        raise UsageError(
            f"alert {alert.id}: its first evidence event is not in the store, so there is "
            "nothing to scope a suppression by; resolve it without --suppress"
        )
    access = access_from_json(events[0].payload)  # None, never an error, for anything else
    if access is None:
        raise UsageError(
            f"alert {alert.id}: its first evidence event is not a file or network access, "
            "so it has no user, host, program or path to scope by"
        )
    return access
