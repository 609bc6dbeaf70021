"""collector.feedback: a triaged alert and its evidence turned into a scoped suppression."""

from __future__ import annotations

import pytest

from collector.feedback import parse_scope, parse_suppress_for, suppression_for
from collector.store import Alert
from detectors.access import Access, AccessKind
from weightwarden.errors import UsageError

NOW = 1_800_000_000_000
DAY = 86_400_000


def alert(rule: str = "weightwarden.rule.off_hours") -> Alert:
    return Alert(
        id="a" * 32,
        created_at=NOW - 1000,
        updated_at=NOW - 1000,
        severity_id=3,
        title="Off-hours read",
        rule=rule,
        status="new",
        disposition=None,
        note=None,
        agent_id="gpu-01",
        evidence=("e1",),
        finding="{}",
    )


def access(**fields: object) -> Access:
    values: dict[str, object] = {
        "uid": "e1",
        "time": NOW - 5000,
        "host": "gpu-01",
        "kind": AccessKind.READ,
        "user": "alice",
        "account": "alice",
        "program": "python3.11",
        "path": "/data/ckpt/run-7/model-00001.safetensors",
    }
    values.update(fields)
    return Access(**values)  # type: ignore[arg-type]


def suppress(scope, evidence=None, rule="weightwarden.rule.off_hours", note=None):
    return suppression_for(
        alert(rule),
        evidence or access(),
        scope,
        disposition="false_positive",
        note=note,
        now=NOW,
        duration_ms=30 * DAY,
    )


def test_the_suppression_is_the_alerts_rule_scoped_to_the_evidence_values() -> None:
    """Only the scoped fields are set; the rest match anything; it expires after the duration."""
    made = suppress(("user", "program"), note="on-call drill")
    assert (made.rule, made.user, made.program, made.host, made.path) == (
        "weightwarden.rule.off_hours",
        "alice",
        "python3.11",
        None,
        None,
    )
    assert made.until == NOW + 30 * DAY
    assert made.reason == f"false_positive on alert {'a' * 32}: on-call drill"
    same = {"rule": made.rule, "user": "alice", "program": "python3.11", "path": "/x"}
    assert made.applies(**same, host="gpu-99", time=NOW)
    assert not made.applies(**{**same, "user": "bob"}, host="gpu-01", time=NOW)
    assert not made.applies(**{**same, "rule": "weightwarden.rule.bulk_read"}, host="h", time=NOW)
    assert not made.applies(**same, host="gpu-01", time=NOW + 30 * DAY)


def test_glob_characters_in_evidence_values_match_only_themselves() -> None:
    """A file named with * or [ cannot widen the suppression to other files."""
    made = suppress(("path",), access(path="/data/ckpt/*"))
    kwargs = {"rule": made.rule, "user": "u", "host": "h", "program": "p", "time": NOW}
    assert made.applies(path="/data/ckpt/*", **kwargs)
    assert not made.applies(path="/data/ckpt/model.safetensors", **kwargs)
    bracket = suppress(("program",), access(program="py[3]"))
    assert bracket.applies(**{**kwargs, "program": "py[3]"}, path="/x")
    assert not bracket.applies(**{**kwargs, "program": "py3"}, path="/x")


@pytest.mark.parametrize(
    ("evidence", "field"),
    [(access(program=None), "program"), (access(path=""), "path")],
)
def test_a_scope_the_evidence_lacks_is_refused(evidence: Access, field: str) -> None:
    """Scoping by a value the evidence does not have would match everything: refused."""
    with pytest.raises(UsageError, match=f"has no {field}; leave {field} out"):
        suppress(("user", field), evidence)


def test_integrity_alerts_are_never_suppressed() -> None:
    """A chain gap or fork says the record itself was attacked: no suppression."""
    with pytest.raises(UsageError, match="never suppressed"):
        suppress(("user",), rule="weightwarden.integrity.gap")


def test_a_long_note_is_shortened_in_the_reason() -> None:
    """The reason keeps the first 200 characters of the note."""
    made = suppress(("user",), note="x" * 500)
    assert made.reason.endswith(": " + "x" * 200)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user", ("user",)),
        ("user,program", ("user", "program")),
        (" host , path ", ("host", "path")),
        ("user,host,program,path", ("user", "host", "program", "path")),
    ],
)
def test_parse_scope_reads_a_comma_list(text: str, expected: tuple[str, ...]) -> None:
    """Fields come back in the order given."""
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a scope"),
        ("user,", "'' is not a scope"),
        ("rule", "'rule' is not a scope"),
        ("user,user", "named twice"),
    ],
)
def test_parse_scope_refuses_other_text(text: str, message: str) -> None:
    """Unknown, empty or repeated fields are usage errors."""
    with pytest.raises(UsageError, match=message):
        parse_scope(text)


def test_parse_suppress_for_takes_positive_durations_up_to_a_year() -> None:
    """30d is 30 days in ms; 0s, 366d and prose are refused."""
    assert parse_suppress_for("30d") == 30 * DAY
    assert parse_suppress_for("365d") == 365 * DAY
    for text in ("0s", "366d", "a month", ""):
        with pytest.raises(UsageError, match="--suppress-for"):
            parse_suppress_for(text)
