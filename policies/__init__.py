"""Policy files parsed into typed, validated Policy objects; no OS, network or cloud I/O.

:func:`parse_policy` takes a policy file's text (the caller reads the file) and returns a
:class:`Policy`, or raises one :class:`~weightwarden.errors.ConfigError` naming the file,
line and key. The format is documented in :mod:`policies._load` and described by the JSON
Schema shipped as ``policies/policy.schema.json`` (:data:`SCHEMA_RESOURCE`).
"""

from policies._load import SUPPORTED_VERSION, parse_policy
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

SCHEMA_RESOURCE = "policy.schema.json"
"""The JSON Schema's name among this package's resources (``importlib.resources``)."""

__all__ = [
    "SCHEMA_RESOURCE",
    "SUPPORTED_VERSION",
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
    "parse_policy",
]
