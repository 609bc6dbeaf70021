"""The simulated organisation's policy, as the TOML file ``weightwarden policy check`` reads.

:func:`policy_toml` writes what the organisation would configure: one asset per project
(its checkpoints; critical ones need a grant), approved roots for converted, served and
migrated copies, a group per project and per engineering team, the infra admins' group,
service accounts with their hosts and programs, access rules, teams with their working
hours (07:00-21:00 in the office's time zone; infra and services work any time), the
egress allowlist (the internal network, the corporate domain, the model hub and package
index) and every project's canary. Keys mirror :class:`policies.Policy`.

Strings are written as JSON strings, which TOML reads the same way for the plain names
and paths used here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collector.simulation._org import Organisation

__all__ = ["ALLOW_CIDRS", "ALLOW_HOSTS", "policy_toml"]

ALLOW_CIDRS: Final = ("10.0.0.0/8",)
ALLOW_HOSTS: Final = (
    "*.corp.example",
    "huggingface.co",
    "*.huggingface.co",
    "pypi.org",
    "files.pythonhosted.org",
)


def _s(value: str) -> str:
    return json.dumps(value)


def _list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def policy_toml(org: Organisation) -> str:
    """The organisation's policy file text."""
    out = [
        "# The simulated organisation's policy (weightwarden simulate).",
        "version = 1",
        "canaries = " + _list([p.canary for p in org.projects.values()]),
        "",
    ]
    for project in org.projects.values():
        name = project.name
        out += [
            "[[assets]]",
            f"name = {_s(name)}",
            f"paths = {_list([f'{project.root}/**'])}",
            f"sensitivity = {_s(project.sensitivity)}",
            f"owners = {_list(project.owners)}",
            "approved_roots = "
            + _list(
                [
                    f"/data/converted/{name}/**",
                    f"/data/serving/{name}/**",
                    f"/data/migration/{name}/**",
                ]
            ),
            f"requires_grant = {'true' if project.requires_grant else 'false'}",
            "",
        ]
    for group, members in org.groups.items():
        out += ["[[groups]]", f"name = {_s(group)}", f"members = {_list(members)}", ""]
    for svc in org.services.values():
        out += [
            "[[service_accounts]]",
            f"name = {_s(svc.name)}",
            f"hosts = {_list([svc.host_glob])}",
            f"programs = {_list(svc.program_globs)}",
            "",
        ]
    out += _access_rules(org)
    for team in org.teams:
        out += [
            "[[teams]]",
            f"name = {_s(team.name)}",
            f"role = {_s(team.role)}",
            f"members = {_list(team.members)}",
        ]
        if team.offset is not None:
            out.append(
                'hours = { days = ["mon", "tue", "wed", "thu", "fri"], start = "07:00", '
                f'end = "21:00", utc_offset_minutes = {team.offset} }}'
            )
        out.append("")
    out += [
        "[egress]",
        f"allow_cidrs = {_list(ALLOW_CIDRS)}",
        f"allow_hosts = {_list(ALLOW_HOSTS)}",
        "",
        "[thresholds]",
        "bulk_read_fraction = 0.5",
        "bulk_read_window_minutes = 60",
        "egress_window_minutes = 60",
        'staging_paths = ["/dev/shm/*", "/media/*", "/run/media/*", "/mnt/usb*"]',
        "",
    ]
    return "\n".join(out)


def _access_rules(org: Organisation) -> list[str]:
    """Who may read each project's asset: its team, supporting engineers, its services, admins."""
    evals = [s.name for s in org.services.values() if s.kind == "eval"]
    supported: dict[str, list[str]] = {}
    for team, projects in org.engineering.items():
        for project_name in projects:
            supported.setdefault(project_name, []).append(team)
    out: list[str] = []
    for name in org.projects:
        rules = [
            [f"groups = {_list([f'proj-{name}'])}"],
            [
                f"service_accounts = {_list([f'svc-train-{name}'])}",
                f"hosts = {_list(['gpu-*'])}",
            ],
            [f"service_accounts = {_list(evals)}", f"hosts = {_list(['eval-*'])}"],
            [f"service_accounts = {_list(['svc-backup'])}", f"programs = {_list(['rsync'])}"],
            [f"groups = {_list(['infra-admins'])}"],
        ]
        if name in supported:
            rules.insert(1, [f"groups = {_list(supported[name])}"])
        for rule in rules:
            out += ["[[access]]", f"asset = {_s(name)}", *rule, ""]
    return out
