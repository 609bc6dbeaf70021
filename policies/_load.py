"""Policy files: the TOML format, and :func:`parse_policy`, which reads and validates one.

A policy file is TOML whose keys mirror :class:`~policies.Policy`. It is read whole, each
value checked against its type, then the policy as a whole is checked (names unique,
every reference resolves, paths absolute, times, networks and thresholds valid). The
first problem found is one :class:`~weightwarden.errors.ConfigError` (exit 78), one line
naming the file, the line and the key, and saying what to do::

    policy.toml:14: access[1].asset: unknown asset "frontier-7b"; define it in [[assets]] ...

Nothing is ever guessed or defaulted around a mistake, and a policy that protects
nothing is refused: with no ``[[assets]]`` or no ``[[access]]`` rules it would deny
everything (or watch nothing), so it fails closed with an error that says what to add.
The JSON Schema ``policies/policy.schema.json`` describes the same format (the TOML
decoded to JSON); the checks that need the whole document (uniqueness, references,
CIDR host bits) are only made here.

The format, table by table (every key not marked required has the default shown)::

    version = 1                        # required; the only version there is

    [[assets]]                         # required, at least one: weights worth protecting
    name = "frontier-70b"              # required, unique; access rules name it
    paths = ["/data/ckpt/frontier-70b/**"]  # required: absolute globs of its files
    sensitivity = "critical"           # "low" | "medium" | "high" (default) | "critical"
    owners = ["dana", "lee"]           # who may approve grants; required if requires_grant
    approved_roots = ["/scratch/eval/**"]   # absolute globs where copies may be written
    requires_grant = true              # reading also needs a grant (default false)

    [[groups]]                         # named sets of users
    name = "pretraining"               # required, unique
    members = ["alice", "bob"]         # required

    [[service_accounts]]               # training, eval and backup jobs
    name = "svc-train"                 # required, unique: the account's user name
    hosts = ["gpu-*"]                  # globs of hosts it runs on ([] = any)
    programs = ["python3*", "torchrun"]  # globs of program names ([] = any)

    [[access]]                         # required, at least one: who may read an asset
    asset = "frontier-70b"             # required: an asset's name
    users = ["carol"]                  # at least one of users, groups, service_accounts
    groups = ["pretraining"]           # names of [[groups]]
    service_accounts = ["svc-train"]   # names of [[service_accounts]]
    programs = ["python3*"]            # globs of program names ([] = any)
    hosts = ["gpu-*"]                  # globs of host names ([] = any)

    [[teams]]                          # peer groups and working hours
    name = "research"                  # required, unique
    role = "researcher"                # researcher | engineer | infra_admin | service |
                                       # contractor | other (default)
    members = ["alice", "bob"]         # a user is a member of at most one team
    hours = { days = ["mon", "tue", "wed", "thu", "fri"], start = "07:00", end = "21:00",
              utc_offset_minutes = 0 } # leave hours out: the team works any time
                                       # (on-call rotations, services)

    [egress]                           # where processes that read weights may connect
    allow_cidrs = ["10.0.0.0/8"]       # networks, no host bits set
    allow_hosts = ["*.s3.corp.example"]  # globs of destination host names

    canaries = ["/data/ckpt/decoy-*/**"]  # absolute globs of decoy files

    [thresholds]
    bulk_read_fraction = 0.5           # share of an asset read in the window: (0, 1]
    bulk_read_window_minutes = 60      # 1 .. 10080 (a week)
    egress_window_minutes = 60         # 1 .. 10080
    staging_paths = ["/dev/shm/*", "/media/*", "/run/media/*", "/mnt/usb*"]

    [[suppressions]]                   # keep one rule quiet for a scope
    rule = "weightwarden.rule.off_hours"  # required: a rule's uid, or "*" with a scope
    reason = "on-call rotation"        # required, not blank: the audit trail
    user = "oncall-*"                  # globs; a missing one matches anything
    host = "gpu-*"
    program = "rsync"
    path = "/data/ckpt/**"
    until = 2025-03-31T00:00:00Z       # TOML date-time or RFC 3339 string, with an offset

Globs use :func:`fnmatch.fnmatchcase`: ``*`` matches any characters, ``/`` included.
Times ``start`` and ``end`` are ``HH:MM`` (00:00 to 23:59); ``end`` before ``start``
spans midnight; they may not be equal. ``utc_offset_minutes`` is -840 to 840.

Grants are not in the file: the collector keeps them (``weightwarden access grant``).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from policies._model import (
    AccessRule,
    Asset,
    Egress,
    Group,
    Policy,
    ServiceAccount,
    Suppression,
    Team,
    Thresholds,
    WorkingHours,
)
from weightwarden.config import config_error, parse_toml

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["SUPPORTED_VERSION", "parse_policy"]

SUPPORTED_VERSION: Final = 1
"""The one policy file version this weightwarden reads."""

_HH_MM: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_MAX_OFFSET_MINUTES: Final = 14 * 60
_MAX_WINDOW_MINUTES: Final = 7 * 24 * 60
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_Key = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class _SuppressionEntry:
    """``[[suppressions]]`` as written: ``until`` is a date-time, not milliseconds."""

    rule: str
    reason: str
    user: str | None = None
    host: str | None = None
    program: str | None = None
    path: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _PolicyFile:
    """A whole policy file as written (the tables are the model's own values)."""

    version: int
    assets: tuple[Asset, ...] = ()
    groups: tuple[Group, ...] = ()
    service_accounts: tuple[ServiceAccount, ...] = ()
    access: tuple[AccessRule, ...] = ()
    teams: tuple[Team, ...] = ()
    egress: Egress = field(default_factory=Egress)
    canaries: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    suppressions: tuple[_SuppressionEntry, ...] = ()


class _Problem(Exception):  # noqa: N818 -- internal: carries a key and a message to the edge
    """A check failed at ``key``."""

    def __init__(self, key: _Key, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def parse_policy(text: str, source: str) -> Policy:
    """Parse and validate the policy file ``text``; ``source`` names it in messages.

    Raises:
        ConfigError: The text is not valid TOML, a value has the wrong type or an unknown
            key, the version is not 1, the policy is empty (no assets or no access rules:
            it fails closed), or a check of the whole policy fails. One line naming the
            source, the line (when known) and the key.
    """
    _check_version(text, source)
    document = parse_toml(text, _PolicyFile, source)
    try:
        _check(document)
    except _Problem as problem:
        raise config_error(source, text, problem.key, problem.message) from None
    return Policy(
        version=document.version,
        assets=document.assets,
        groups=document.groups,
        service_accounts=document.service_accounts,
        access=document.access,
        teams=document.teams,
        egress=document.egress,
        canaries=document.canaries,
        thresholds=document.thresholds,
        suppressions=tuple(_suppression(entry) for entry in document.suppressions),
    )


def _check_version(text: str, source: str) -> None:
    """Refuse a missing or unsupported version before judging keys another version may have."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # parse_toml reports it, with its line and column
    if "version" not in data:
        raise config_error(
            source,
            text,
            ("version",),
            f"missing; start the file with version = {SUPPORTED_VERSION}",
        )
    version = data["version"]
    if type(version) is not int or version != SUPPORTED_VERSION:
        shown = repr(version) if isinstance(version, int | float | str) else "of that kind"
        raise config_error(
            source,
            text,
            ("version",),
            f"unsupported policy version {shown}; this weightwarden reads version = "
            f"{SUPPORTED_VERSION} (upgrade weightwarden, or write the file for version "
            f"{SUPPORTED_VERSION})",
        )


def _suppression(entry: _SuppressionEntry) -> Suppression:
    return Suppression(
        rule=entry.rule,
        reason=entry.reason,
        user=entry.user,
        host=entry.host,
        program=entry.program,
        path=entry.path,
        until=None if entry.until is None else (entry.until - _EPOCH) // _ONE_MS,
    )


# -- checks of the whole policy ----------------------------------------------------------


def _check(document: _PolicyFile) -> None:
    """Raise :class:`_Problem` for the first thing wrong with ``document``."""
    if not document.assets:
        raise _Problem(
            (),
            "the policy names no assets, and an empty policy denies everything: add "
            "[[assets]] tables naming the weights to protect (name, paths) and [[access]] "
            "rules saying who may read them",
        )
    if not document.access:
        raise _Problem(
            (),
            "the policy has no [[access]] rules, and an empty policy denies everything: "
            "add [[access]] rules naming an asset and the users, groups or service "
            "accounts that may read it",
        )
    assets = _unique("assets", "asset", (asset.name for asset in document.assets))
    groups = _unique("groups", "group", (group.name for group in document.groups))
    accounts = _unique(
        "service_accounts", "service account", (sa.name for sa in document.service_accounts)
    )
    _unique("teams", "team", (team.name for team in document.teams))
    for index, asset in enumerate(document.assets):
        _check_asset(("assets", index), asset)
    for index, group in enumerate(document.groups):
        _names(("groups", index, "members"), group.members)
        if not group.members:
            raise _Problem(("groups", index, "members"), "a group needs at least one member")
    for index, account in enumerate(document.service_accounts):
        _names(("service_accounts", index, "hosts"), account.hosts)
        _names(("service_accounts", index, "programs"), account.programs)
    for index, rule in enumerate(document.access):
        _check_rule(("access", index), rule, assets, groups, accounts)
    _check_teams(document.teams)
    _check_egress(document.egress)
    _absolute(("canaries",), document.canaries)
    _check_thresholds(document.thresholds)
    for index, entry in enumerate(document.suppressions):
        _check_suppression(("suppressions", index), entry)


def _unique(table: str, kind: str, names: Iterable[str]) -> dict[str, int]:
    """Map each name to its index; a blank or repeated name is a problem."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        key = (table, index, "name")
        if not name.strip():
            raise _Problem(key, f"every {kind} needs a name that is not blank")
        if name in seen:
            raise _Problem(
                key,
                f"{kind} name {name!r} is already used by {table}[{seen[name]}]; "
                "names must be unique",
            )
        seen[name] = index
    return seen


def _names(key: _Key, values: Sequence[str]) -> None:
    for index, value in enumerate(values):
        if not value.strip():
            raise _Problem((*key, index), "must not be blank")


def _absolute(key: _Key, globs: Sequence[str]) -> None:
    for index, glob in enumerate(globs):
        if not glob.startswith("/"):
            raise _Problem(
                (*key, index),
                f"{glob!r} is not absolute; path globs start with / (like /data/ckpt/**)",
            )


def _check_asset(key: _Key, asset: Asset) -> None:
    if not asset.paths:
        raise _Problem((*key, "paths"), "an asset needs at least one path glob")
    _absolute((*key, "paths"), asset.paths)
    _absolute((*key, "approved_roots"), asset.approved_roots)
    _names((*key, "owners"), asset.owners)
    if asset.requires_grant and not asset.owners:
        raise _Problem(
            (*key, "owners"),
            f"asset {asset.name!r} requires grants but has no owners to approve them; "
            "list its owners",
        )


def _check_rule(
    key: _Key,
    rule: AccessRule,
    assets: dict[str, int],
    groups: dict[str, int],
    accounts: dict[str, int],
) -> None:
    if rule.asset not in assets:
        raise _Problem(
            (*key, "asset"),
            f"unknown asset {rule.asset!r}; define it in [[assets]] or name one of "
            f"{_listing(assets)}",
        )
    if not (rule.users or rule.groups or rule.service_accounts):
        raise _Problem(key, "the rule names nobody; add users, groups or service_accounts")
    _names((*key, "users"), rule.users)
    for field_name, values, known, kind, table in (
        ("groups", rule.groups, groups, "group", "[[groups]]"),
        (
            "service_accounts",
            rule.service_accounts,
            accounts,
            "service account",
            "[[service_accounts]]",
        ),
    ):
        for index, value in enumerate(values):
            if value not in known:
                raise _Problem(
                    (*key, field_name, index),
                    f"unknown {kind} {value!r}; define it in {table}"
                    + (f" or name one of {_listing(known)}" if known else ""),
                )
    _names((*key, "programs"), rule.programs)
    _names((*key, "hosts"), rule.hosts)


def _listing(names: dict[str, int]) -> str:
    shown = sorted(names)[:5]
    more = ", ..." if len(names) > len(shown) else ""
    return ", ".join(repr(name) for name in shown) + more


def _check_teams(teams: Sequence[Team]) -> None:
    member_of: dict[str, int] = {}
    for index, team in enumerate(teams):
        key: _Key = ("teams", index)
        for position, member in enumerate(team.members):
            if not member.strip():
                raise _Problem((*key, "members", position), "must not be blank")
            if member in member_of:
                other = teams[member_of[member]].name
                raise _Problem(
                    (*key, "members", position),
                    f"{member!r} is already a member of team {other!r}; a user belongs "
                    "to one team (its role is the user's peer group)",
                )
            member_of[member] = index
        if team.hours is not None:
            _check_hours((*key, "hours"), team.hours)


def _check_hours(key: _Key, hours: WorkingHours) -> None:
    if not hours.days:
        raise _Problem(
            (*key, "days"),
            "a team with hours works on at least one day; leave hours out for a team "
            "that works any time",
        )
    if len(set(hours.days)) != len(hours.days):
        raise _Problem((*key, "days"), "a day is listed twice")
    for name in ("start", "end"):
        value = getattr(hours, name)
        if not _HH_MM.fullmatch(value):
            raise _Problem((*key, name), f'{value!r} is not a time like "07:00" (HH:MM)')
    if hours.start == hours.end:
        raise _Problem(
            (*key, "end"),
            "start and end are equal; leave hours out for a team that works any time",
        )
    if abs(hours.utc_offset_minutes) > _MAX_OFFSET_MINUTES:
        raise _Problem(
            (*key, "utc_offset_minutes"),
            f"{hours.utc_offset_minutes} is outside -840..840 (UTC-14:00 to UTC+14:00)",
        )


def _check_egress(egress: Egress) -> None:
    for index, cidr in enumerate(egress.allow_cidrs):
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise _Problem(
                ("egress", "allow_cidrs", index),
                f"{cidr!r} is not a network like 10.0.0.0/8 ({exc})",
            ) from None
    _names(("egress", "allow_hosts"), egress.allow_hosts)


def _check_thresholds(thresholds: Thresholds) -> None:
    key = ("thresholds",)
    if not 0 < thresholds.bulk_read_fraction <= 1:
        raise _Problem(
            (*key, "bulk_read_fraction"),
            f"{thresholds.bulk_read_fraction} is not a share above 0 and at most 1",
        )
    for name in ("bulk_read_window_minutes", "egress_window_minutes"):
        value = getattr(thresholds, name)
        if not 1 <= value <= _MAX_WINDOW_MINUTES:
            raise _Problem(
                (*key, name), f"{value} is outside 1..{_MAX_WINDOW_MINUTES} minutes (a week)"
            )
    _absolute((*key, "staging_paths"), thresholds.staging_paths)


def _check_suppression(key: _Key, entry: _SuppressionEntry) -> None:
    if not entry.rule.strip():
        raise _Problem((*key, "rule"), 'name a rule\'s uid, or "*" for every rule')
    if not entry.reason.strip():
        raise _Problem((*key, "reason"), "say why (the audit trail needs a reason)")
    scope = (entry.user, entry.host, entry.program, entry.path)
    for name, value in zip(("user", "host", "program", "path"), scope, strict=True):
        if value is not None and not value.strip():
            raise _Problem((*key, name), "must not be blank; leave it out to match anything")
    if entry.rule == "*" and all(value is None for value in scope):
        raise _Problem(
            (*key, "rule"),
            'rule "*" with no user, host, program or path would silence every alert; narrow it',
        )
