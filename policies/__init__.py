"""Policy files parsed into typed, validated Policy objects; no OS, network or cloud I/O."""

from policies._model import (
    AccessRule,
    Asset,
    Egress,
    Grant,
    Group,
    Policy,
    Sensitivity,
    ServiceAccount,
    Suppression,
    Team,
    Thresholds,
    WorkingHours,
    matches,
)

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
