"""``weightwarden access grant|revoke|list``: time-limited access grants, kept by the collector.

``grant`` records that ``--user`` may read ``--asset`` until ``--until``, approved by
``--approver``, for ``--reason``. The two-person rule holds: the approver is not the user
and is one of the asset's owners in the policy (``--policy FILE``, else ``[detection]
policy`` in ``DIR/collector.toml``); the asset must be in the policy. ``--until`` is an
RFC 3339 time with its offset (``2025-02-01T18:00:00Z``) or a duration from now (``7d``,
``36h``), in the future and at most 90 days away. It prints the new grant's id.

``revoke ID`` ends a grant now. ``list`` shows the grants in force (``--all``: expired and
revoked ones too), as a table or (``--format json``) one JSON array.

Bad arguments exit 2; a missing or invalid policy exits 78. Each is one line on stderr.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from collector.cli._common import (
    add_policy_option,
    add_store_options,
    now_ms,
    open_from_args,
    policy_from_args,
    table,
    utc,
)
from weightwarden.config import parse_duration
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    import argparse

    from policies import Grant, Policy

__all__ = ["MAX_GRANT", "parse_until", "register"]

MAX_GRANT: Final = timedelta(days=90)
"""The longest a grant may last."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_MAX_REASON: Final = 1000
_MAX_NAME: Final = 256
_WIDTHS: Final = (32, 16, 20, 16, 24, 7, 0)


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``access`` with grant, revoke and list."""
    access = sub.add_parser(
        "access",
        help="time-limited access grants (two-person rule), kept by the collector",
        description="Access grants: a user may read an asset until a time, approved by one "
        "of the asset's owners.",
    )
    actions = access.add_subparsers(dest="access_command", required=True, metavar="ACTION")

    grant = actions.add_parser(
        "grant",
        help="let a user read an asset until a time, approved by an owner",
        description="Record a grant and print its id. The approver must be one of the "
        "asset's owners in the policy, and not the user.",
    )
    grant.add_argument("--user", required=True, metavar="USER", help="who may read")
    grant.add_argument("--asset", required=True, metavar="ASSET", help="an asset of the policy")
    grant.add_argument(
        "--approver", required=True, metavar="OWNER", help="an owner of the asset, not USER"
    )
    grant.add_argument(
        "--until",
        required=True,
        metavar="TIME",
        help="RFC 3339 time with offset, or a duration from now like 7d (at most 90 days)",
    )
    grant.add_argument("--reason", required=True, metavar="TEXT", help="why (kept for audit)")
    add_policy_option(grant)
    add_store_options(grant)
    grant.set_defaults(func=_run_grant)

    revoke = actions.add_parser("revoke", help="end a grant now")
    revoke.add_argument("id", metavar="ID", help="the grant's id (see access list)")
    add_store_options(revoke)
    revoke.set_defaults(func=_run_revoke)

    ls = actions.add_parser("list", help="grants in force, oldest first")
    ls.add_argument("--all", action="store_true", help="expired and revoked grants too")
    ls.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table (default) or one JSON array",
    )
    add_store_options(ls)
    ls.set_defaults(func=_run_list)


def parse_until(text: str, now: int) -> int:
    """``--until`` as milliseconds since the epoch: in the future, at most 90 days away.

    Args:
        text: An RFC 3339 time with its offset, or a duration from ``now`` (``7d``).
        now: The present, milliseconds since the epoch.

    Raises:
        UsageError: Neither form, not in the future, or more than 90 days away.
    """
    try:
        until = now + parse_duration(text) // _ONE_MS
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is None or moment.utcoffset() is None:
            raise UsageError(
                f"--until {text!r}: expected an RFC 3339 time with its offset like "
                "2025-02-01T18:00:00Z, or a duration from now like 7d or 36h"
            ) from None
        until = (moment - _EPOCH) // _ONE_MS
    if until <= now:
        raise UsageError(f"--until {text!r} is not in the future ({utc(until)})")
    if until - now > MAX_GRANT // _ONE_MS:
        raise UsageError(
            f"--until {text!r} is more than {MAX_GRANT.days} days away ({utc(until)}); "
            "grant less, and renew it when it runs out"
        )
    return until


def _name(option: str, value: str) -> str:
    if not value.strip() or len(value) > _MAX_NAME or not value.isprintable():
        raise UsageError(
            f"{option} {value!r}: expected a name of 1 to {_MAX_NAME} printable characters"
        )
    return value


def _check_approval(policy: Policy, *, asset: str, approver: str) -> None:
    """The asset is in the policy and the approver is one of its owners."""
    found = next((a for a in policy.assets if a.name == asset), None)
    if found is None:
        names = ", ".join(sorted(a.name for a in policy.assets)[:8])
        raise UsageError(f"--asset {asset!r} is not an asset of the policy (assets: {names})")
    if not found.owners:
        raise UsageError(
            f"asset {asset!r} has no owners in the policy, so nobody may approve grants for "
            "it: list its owners in the policy first"
        )
    if approver not in found.owners:
        raise UsageError(
            f"two-person rule: --approver {approver!r} is not an owner of asset {asset!r} "
            f"(owners: {', '.join(found.owners)})"
        )


def _run_grant(args: argparse.Namespace) -> int:
    user = _name("--user", args.user)
    asset = _name("--asset", args.asset)
    approver = _name("--approver", args.approver)
    reason = args.reason
    if not reason.strip():
        raise UsageError("--reason is blank: say why the grant is needed (it is kept for audit)")
    if len(reason) > _MAX_REASON or "\x00" in reason:
        raise UsageError(f"--reason: at most {_MAX_REASON} characters, and no NUL")
    if approver == user:
        raise UsageError(
            f"two-person rule: {user!r} cannot approve their own grant; ask another owner "
            "of the asset"
        )
    now = now_ms()
    until = parse_until(args.until, now)
    _check_approval(policy_from_args(args), asset=asset, approver=approver)
    from policies import Grant  # noqa: PLC0415 -- only grant builds one

    grant = Grant(
        id=uuid.uuid4().hex,
        user=user,
        asset=asset,
        approver=approver,
        reason=reason,
        created_at=now,
        until=until,
    )
    store = open_from_args(args)
    try:
        store.add_grant(grant)
    finally:
        store.close()
    print(grant.id)
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    store = open_from_args(args)
    try:
        revoked = store.revoke_grant(args.id, now=now_ms())
    finally:
        store.close()
    if not revoked:
        raise UsageError(
            f"no grant {args.id!r} to revoke (unknown, or revoked already): see "
            "weightwarden access list --all"
        )
    print(f"{args.id}: revoked")
    return 0


def _state(grant: Grant, now: int) -> str:
    if grant.revoked_at is not None and grant.revoked_at <= now:
        return "revoked"
    if grant.until <= now:
        return "expired"
    return "active" if grant.valid_at(now) else "pending"


def _run_list(args: argparse.Namespace) -> int:
    now = now_ms()
    store = open_from_args(args)
    try:
        grants = store.grants(now=None if args.all else now)
    finally:
        store.close()
    out = sys.stdout
    if args.format == "json":
        rows = [
            {
                "id": g.id,
                "user": g.user,
                "asset": g.asset,
                "approver": g.approver,
                "reason": g.reason,
                "created_at": g.created_at,
                "until": g.until,
                "revoked_at": g.revoked_at,
                "state": _state(g, now),
            }
            for g in grants
        ]
        out.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return 0
    out.writelines(
        table([("ID", "USER", "ASSET", "APPROVER", "UNTIL", "STATE", "REASON")], _WIDTHS)
    )
    out.writelines(
        table(
            (
                (g.id, g.user, g.asset, g.approver, utc(g.until), _state(g, now), g.reason)
                for g in grants
            ),
            _WIDTHS,
        )
    )
    return 0
