"""Pure detectors: events and explicit state in, findings out; no OS, network or cloud I/O.

:func:`detect` runs every rule and model over a time-ordered stream of :class:`Access`
records (read from OCSF JSON by :func:`access_from_ocsf`) under a :class:`Context`
(policy, grants, suppressions) and returns a :class:`Detection`: the findings and their
daily roll-up (:class:`DailyRisk`), which :func:`within_budget` cuts to what analysts read.
:mod:`detectors.agent_signals` holds the rules the collector runs on each batch at ingest.

The names below load on first use, so that importing :mod:`detectors.agent_signals` on the
collector's ingest path does not import numpy and every model with it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detectors.access import Access, AccessKind, access_from_json, access_from_ocsf
    from detectors.catalogue import RULE_UIDS
    from detectors.context import Context
    from detectors.engine import Detection, detect
    from detectors.finding import Finding
    from detectors.risk import DailyRisk, per_day, roll_up, within_budget

__all__ = [
    "RULE_UIDS",
    "Access",
    "AccessKind",
    "Context",
    "DailyRisk",
    "Detection",
    "Finding",
    "access_from_json",
    "access_from_ocsf",
    "detect",
    "per_day",
    "roll_up",
    "within_budget",
]

_HOMES = {
    "Access": "access",
    "AccessKind": "access",
    "access_from_json": "access",
    "access_from_ocsf": "access",
    "RULE_UIDS": "catalogue",
    "Context": "context",
    "Detection": "engine",
    "detect": "engine",
    "Finding": "finding",
    "DailyRisk": "risk",
    "per_day": "risk",
    "roll_up": "risk",
    "within_budget": "risk",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    return getattr(import_module(f"detectors.{home}"), name)
