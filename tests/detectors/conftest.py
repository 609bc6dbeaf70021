"""A small policy for detector tests, written out in full."""

from __future__ import annotations

import pytest

from policies import (
    AccessRule,
    Asset,
    Egress,
    Group,
    Policy,
    ServiceAccount,
    Team,
    WorkingHours,
)


@pytest.fixture
def policy() -> Policy:
    return Policy(
        assets=(
            Asset(
                name="frontier-7b",
                paths=("/data/ckpt/frontier-7b/*",),
                sensitivity="critical",
                owners=("carol",),
                approved_roots=("/data/converted/*",),
            ),
            Asset(
                name="secret-70b",
                paths=("/data/ckpt/secret-70b/*",),
                sensitivity="critical",
                owners=("carol",),
                requires_grant=True,
            ),
        ),
        groups=(Group(name="research", members=("alice", "bob")),),
        service_accounts=(
            ServiceAccount(name="svc-train", hosts=("gpu-*",), programs=("torchrun",)),
        ),
        access=(
            AccessRule(
                asset="frontier-7b",
                groups=("research",),
                service_accounts=("svc-train",),
                programs=("python3", "torchrun"),
                hosts=("gpu-*",),
            ),
            AccessRule(asset="secret-70b", users=("alice",), service_accounts=("svc-train",)),
        ),
        teams=(
            Team(
                name="research",
                role="researcher",
                members=("alice", "bob"),
                hours=WorkingHours(start="08:00", end="20:00"),
            ),
            Team(name="infra", role="infra_admin", members=("dave",), hours=None),
        ),
        egress=Egress(allow_cidrs=("10.0.0.0/8",), allow_hosts=("*.corp.example",)),
        canaries=("/data/ckpt/old/*",),
    )
