"""What a policy says, as frozen values, and the questions detectors ask of it.

A policy names the weights worth protecting (assets: path globs, sensitivity, owners), who
may read them and through which programs and hosts (access rules over users, groups and
service accounts), when each team works, where data may go (egress allowlist), which
files are decoys (canaries), where weights must never be staged, and which alerts to keep
quiet (suppressions). Access grants are not part of the file: the collector keeps them
(``weightwarden access grant``) and detectors receive them as :class:`Grant` values.

Globs are :mod:`fnmatch` patterns, case-sensitive (``*`` also matches ``/``), on absolute paths for
files and on names for users, programs and hosts. Everything here is pure: no clock, no
file, no network; times are milliseconds since the epoch, UTC.

Fail closed: a path no asset covers is not an asset (detectors treat reads of unknown
weights through their own rules), but an asset that no access rule names may be read by
nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from typing import Literal

__all__ = [
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
]

Sensitivity = Literal["low", "medium", "high", "critical"]
Role = Literal["researcher", "engineer", "infra_admin", "service", "contractor", "other"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def matches(value: str | None, globs: tuple[str, ...]) -> bool:
    """Whether ``value`` matches any of ``globs`` (None matches nothing)."""
    return value is not None and bool(globs) and _pattern(globs).match(value) is not None


@lru_cache(maxsize=4096)
def _pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled expression for a set of globs (as :func:`fnmatch.fnmatchcase` reads them)."""
    return re.compile("|".join(f"(?:{translate(glob)})" for glob in globs))


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    """A set of model weights worth protecting.

    Attributes:
        name: Unique name (``frontier-70b``), used by access rules and grants.
        paths: Globs of the files that make up the asset (``/data/ckpt/frontier-70b/**``).
        sensitivity: How bad its theft would be; ``critical`` assets need a grant on top of
            an access rule when ``requires_grant`` is set.
        owners: Users who may approve grants for it (the second person of the two-person rule).
        approved_roots: Globs of places its copies may be written (a staging scratch,
            another checkpoint folder); a copy anywhere else is an alert.
        requires_grant: Reading it needs a valid, approved grant even for allowed users.
    """

    name: str
    paths: tuple[str, ...]
    sensitivity: Sensitivity = "high"
    owners: tuple[str, ...] = ()
    approved_roots: tuple[str, ...] = ()
    requires_grant: bool = False

    def covers(self, path: str) -> bool:
        """Whether ``path`` is one of this asset's files."""
        return matches(path, self.paths)


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """A named set of users."""

    name: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceAccount:
    """A non-human account (training and eval jobs) and where it is expected to run.

    Attributes:
        name: The account's user name.
        hosts: Globs of hosts it runs on; empty means any host.
        programs: Globs of program names (exe basenames) it runs; empty means any.
    """

    name: str
    hosts: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRule:
    """Who may read an asset, through which programs and from which hosts.

    A principal is allowed when it is named in ``users``, is a member of one of ``groups``,
    or is one of ``service_accounts``; and its program matches ``programs`` and its host
    ``hosts`` (empty means any).
    """

    asset: str
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkingHours:
    """When a team works: days and a daily window in a fixed UTC offset.

    ``start`` and ``end`` are ``HH:MM``; ``end`` before ``start`` spans midnight.
    """

    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: str = "07:00"
    end: str = "21:00"
    utc_offset_minutes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    """A team: its members, their role (the peer group ML compares them with) and hours.

    Attributes:
        name: Unique name.
        role: The peer group.
        members: Users and service accounts in the team.
        hours: When they work; ``None`` means any time (on-call rotations, services).
    """

    name: str
    role: Role = "other"
    members: tuple[str, ...] = ()
    hours: WorkingHours | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Egress:
    """Where processes that read weights may connect to.

    Attributes:
        allow_cidrs: Networks (``10.0.0.0/8``) that are inside the organisation.
        allow_hosts: Globs of destination host names (``*.s3.corp.example``).
    """

    allow_cidrs: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Tunables of the rules.

    Attributes:
        bulk_read_fraction: Share of an asset's files, by bytes, read by one principal
            within ``bulk_read_window_minutes`` that counts as a bulk read.
        bulk_read_window_minutes: The window for bulk reads.
        egress_window_minutes: How long after reading weights an outbound connection is
            linked to the read.
        staging_paths: Globs where weights must never be written (RAM disks, removable media).
    """

    bulk_read_fraction: float = 0.5
    bulk_read_window_minutes: int = 60
    egress_window_minutes: int = 60
    staging_paths: tuple[str, ...] = ("/dev/shm/*", "/media/*", "/run/media/*", "/mnt/usb*")  # noqa: S108 -- places weights must never be staged, not a temp file


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppression:
    """Keep one rule quiet for a scope: every set field must match; None matches anything.

    Attributes:
        rule: The analytic uid to suppress (``weightwarden.rule.off_hours``), or ``*``.
        user: Glob of the user.
        host: Glob of the host.
        program: Glob of the program name.
        path: Glob of the file path.
        until: Expiry, ms since the epoch; None never expires.
        reason: Why, for the audit trail.
    """

    rule: str
    reason: str
    user: str | None = None
    host: str | None = None
    program: str | None = None
    path: str | None = None
    until: int | None = None

    def applies(
        self,
        *,
        rule: str,
        user: str | None,
        host: str | None,
        program: str | None,
        path: str | None,
        time: int,
    ) -> bool:
        """Whether this suppression silences ``rule`` for that user, host, program and path."""
        if self.until is not None and time >= self.until:
            return False
        if self.rule not in ("*", rule):
            return False
        for glob, value in (
            (self.user, user),
            (self.host, host),
            (self.program, program),
            (self.path, path),
        ):
            if glob is not None and not matches(value, (glob,)):
                return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """Time-limited permission for one user to read one asset, approved by a second person.

    Grants are kept by the collector, not in the policy file.
    """

    id: str
    user: str
    asset: str
    approver: str
    reason: str
    created_at: int
    until: int
    revoked_at: int | None = None

    def valid_at(self, time: int) -> bool:
        """Whether the grant is in force at ``time`` (created, not expired, not revoked)."""
        if self.revoked_at is not None and time >= self.revoked_at:
            return False
        return self.created_at <= time < self.until


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A whole policy file."""

    version: int = 1
    assets: tuple[Asset, ...] = ()
    groups: tuple[Group, ...] = ()
    service_accounts: tuple[ServiceAccount, ...] = ()
    access: tuple[AccessRule, ...] = ()
    teams: tuple[Team, ...] = ()
    egress: Egress = Egress()
    canaries: tuple[str, ...] = ()
    """Globs of decoy files: any access is CRITICAL."""
    thresholds: Thresholds = Thresholds()
    suppressions: tuple[Suppression, ...] = ()

    def asset_for(self, path: str) -> Asset | None:
        """The first asset that covers ``path``, or None."""
        for asset in self.assets:
            if asset.covers(path):
                return asset
        return None

    def groups_of(self, user: str) -> tuple[str, ...]:
        """Names of the groups ``user`` belongs to."""
        return tuple(group.name for group in self.groups if user in group.members)

    def team_of(self, user: str) -> Team | None:
        """The first team that lists ``user``, or None."""
        for team in self.teams:
            if user in team.members:
                return team
        return None

    def service_account(self, name: str) -> ServiceAccount | None:
        """The service account called ``name``, or None."""
        for account in self.service_accounts:
            if account.name == name:
                return account
        return None

    def allows(self, *, asset: str, user: str, program: str | None, host: str | None) -> bool:
        """Whether an access rule lets ``user`` read ``asset`` with that program on that host."""
        groups = set(self.groups_of(user))
        for rule in self.access:
            if rule.asset != asset:
                continue
            named = (
                user in rule.users
                or user in rule.service_accounts
                or not groups.isdisjoint(rule.groups)
            )
            if not named:
                continue
            if rule.programs and not matches(program, rule.programs):
                continue
            if rule.hosts and not matches(host, rule.hosts):
                continue
            return True
        return False
