"""Analyst feedback: a false-positive or benign disposition turned into a scoped suppression.

``weightwarden alerts resolve ID --disposition false_positive --suppress user,program``
keeps the alert's rule quiet for the same user running the same program, taken from the
alert's first evidence event, for ``--suppress-for`` (30 days unless told). Each scope
value is matched literally: glob characters in it (a file named ``*``) are escaped, so a
hostile name cannot widen the suppression. Integrity alerts (gaps, forks, a tampered
record: rules under ``weightwarden.integrity.``) are never suppressed: they say the
monitor itself is under attack.

Pure: the caller reads the alert and its evidence and passes the clock in.
"""

from __future__ import annotations

import glob
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from policies import Suppression
from weightwarden.config import parse_duration
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from collector.store import Alert
    from detectors.access import Access

__all__ = [
    "DEFAULT_SUPPRESS_FOR",
    "MAX_SUPPRESS_FOR",
    "SCOPE_FIELDS",
    "parse_scope",
    "parse_suppress_for",
    "suppression_for",
]

SCOPE_FIELDS: Final = ("user", "host", "program", "path")
"""What a suppression may be scoped by, as named on the command line."""
DEFAULT_SUPPRESS_FOR: Final = "30d"
MAX_SUPPRESS_FOR: Final = timedelta(days=365)
_UNSUPPRESSIBLE: Final = "weightwarden.integrity."
_ONE_MS: Final = timedelta(milliseconds=1)
_MAX_NOTE: Final = 200


def parse_scope(text: str) -> tuple[str, ...]:
    """``--suppress``: a comma list of user, host, program, path (at least one, no repeats).

    Raises:
        UsageError: An empty list, an unknown field or a field named twice.
    """
    fields = tuple(part.strip() for part in text.split(","))
    unknown = [field for field in fields if field not in SCOPE_FIELDS]
    if not text.strip() or unknown:
        shown = ", ".join(repr(field) for field in unknown) or "nothing"
        raise UsageError(
            f"--suppress {text!r}: {shown} is not a scope; give a comma list of "
            f"{', '.join(SCOPE_FIELDS)} (like user,program)"
        )
    if len(set(fields)) != len(fields):
        raise UsageError(f"--suppress {text!r}: a field is named twice")
    return fields


def parse_suppress_for(text: str) -> int:
    """``--suppress-for``: a positive duration of at most 365 days, in milliseconds.

    Raises:
        UsageError: Not such a duration.
    """
    try:
        duration = parse_duration(text)
    except ValueError:
        duration = timedelta(0)
    if not timedelta(0) < duration <= MAX_SUPPRESS_FOR:
        raise UsageError(
            f"--suppress-for {text!r}: expected a duration like 30d, 12h or 90d, "
            f"positive and at most {MAX_SUPPRESS_FOR.days}d"
        )
    return duration // _ONE_MS


def suppression_for(
    alert: Alert,
    evidence: Access,
    scope: Sequence[str],
    *,
    disposition: str,
    note: str | None,
    now: int,
    duration_ms: int,
) -> Suppression:
    """A suppression of ``alert``'s rule, scoped to ``evidence``'s values of ``scope``.

    Args:
        alert: The alert being triaged.
        evidence: Its first evidence event, as the detectors read it.
        scope: Fields from :data:`SCOPE_FIELDS` whose values must match.
        disposition: The analyst's disposition, recorded in the reason.
        note: The analyst's note, if any, recorded (shortened) in the reason.
        now: The present, milliseconds since the epoch.
        duration_ms: How long the suppression lasts.

    Raises:
        UsageError: The alert is an integrity alert, or the evidence lacks a scoped value.
    """
    if alert.rule.startswith(_UNSUPPRESSIBLE):
        raise UsageError(
            f"alert {alert.id} is an integrity alert ({alert.rule}): the record itself was "
            "attacked or damaged, and such alerts are never suppressed; resolve it without "
            "--suppress"
        )
    values: dict[str, str] = {}
    for field in scope:
        value = getattr(evidence, field)
        if not value:
            raise UsageError(
                f"the alert's first evidence event has no {field}; leave {field} out of --suppress"
            )
        values[field] = glob.escape(value)
    reason = f"{disposition} on alert {alert.id}"
    if note:
        reason += f": {note[:_MAX_NOTE]}"
    return Suppression(
        rule=alert.rule,
        reason=reason,
        user=values.get("user"),
        host=values.get("host"),
        program=values.get("program"),
        path=values.get("path"),
        until=now + duration_ms,
    )
