"""``weightwarden policy check FILE [--json]``: is this policy file valid, and what does it say.

Valid: exit 0 and a one-paragraph summary (counts of assets by sensitivity, access rules,
groups, service accounts, teams, canaries, egress allowances, suppressions); ``--json``
prints the same counts as one JSON object with ``"valid": true``. Invalid, missing or
unreadable: exit 78 with the one-line ``file:line: key: problem`` error on stderr (and,
with ``--json``, ``{"valid": false, "error": ...}`` on stdout).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from collector.policy_file import load_policy
from weightwarden.errors import ConfigError

if TYPE_CHECKING:
    import argparse

    from policies import Policy, Sensitivity

__all__ = ["register", "summary"]

_SENSITIVITIES: Final[tuple[Sensitivity, ...]] = ("critical", "high", "medium", "low")


def register(sub: Any) -> None:  # noqa: ANN401 -- argparse's subparsers action is private
    """Add ``policy`` with ``check``."""
    policy = sub.add_parser(
        "policy",
        help="check a policy file",
        description="Policy files: the weights to protect, who may read them, working "
        "hours, egress allowlist, canaries and suppressions.",
    )
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate a policy file and summarise it",
        description="Validate FILE: exit 0 with a summary if it is a valid policy, 78 with "
        "the file, line and key of the first problem if not.",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="the policy file (TOML)")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.set_defaults(func=_run_check)


def summary(policy: Policy) -> dict[str, int]:
    """What a policy holds, counted."""
    by_sensitivity = Counter(asset.sensitivity for asset in policy.assets)
    return {
        "version": policy.version,
        "assets": len(policy.assets),
        **{f"assets_{level}": by_sensitivity[level] for level in _SENSITIVITIES},
        "assets_requiring_grants": sum(asset.requires_grant for asset in policy.assets),
        "access_rules": len(policy.access),
        "groups": len(policy.groups),
        "service_accounts": len(policy.service_accounts),
        "teams": len(policy.teams),
        "teams_any_time": sum(team.hours is None for team in policy.teams),
        "canaries": len(policy.canaries),
        "egress_cidrs": len(policy.egress.allow_cidrs),
        "egress_hosts": len(policy.egress.allow_hosts),
        "staging_paths": len(policy.thresholds.staging_paths),
        "suppressions": len(policy.suppressions),
    }


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _paragraph(source: str, counts: dict[str, int]) -> str:
    levels = ", ".join(
        f"{counts[f'assets_{level}']} {level}"
        for level in _SENSITIVITIES
        if counts[f"assets_{level}"]
    )
    return (
        f"{source}: valid policy (version {counts['version']}): "
        f"{_plural(counts['assets'], 'asset')} ({levels}; "
        f"{counts['assets_requiring_grants']} requiring grants), "
        f"{_plural(counts['access_rules'], 'access rule')}, "
        f"{_plural(counts['groups'], 'group')}, "
        f"{_plural(counts['service_accounts'], 'service account')}, "
        f"{_plural(counts['teams'], 'team')} ({counts['teams_any_time']} working any time), "
        f"{_plural(counts['canaries'], 'canary glob')}, "
        f"egress allowed to {_plural(counts['egress_cidrs'], 'network')} and "
        f"{_plural(counts['egress_hosts'], 'host glob')}, "
        f"{_plural(counts['staging_paths'], 'staging path')}, "
        f"{_plural(counts['suppressions'], 'suppression')}."
    )


def _run_check(args: argparse.Namespace) -> int:
    source = str(args.file)
    try:
        policy = load_policy(args.file)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"valid": False, "policy": source, "error": str(exc)}))
        raise
    counts = summary(policy)
    if args.json:
        print(json.dumps({"valid": True, "policy": source, **counts}, sort_keys=True))
    else:
        sys.stdout.write(_paragraph(source, counts) + "\n")
    return 0
