"""A simulated ML organisation as OCSF events, with labelled insider incidents and twins.

``weightwarden simulate`` (see :mod:`collector.cli._simulate`) is the benchmark for
detection: researchers, engineers, infra admins on call, contractors, training, eval,
backup and data-pipeline service accounts, doing their ordinary work for weeks, with
insider scenarios (:data:`SCENARIOS`) injected, each beside a benign twin that looks alike.

- :func:`simulate` runs one simulation and hands each event's OCSF JSON line to a
  callable, in time order; it is deterministic in its :class:`SimulationSpec`;
- :func:`write_simulation` writes the events, the labels file and the organisation's
  policy (TOML).
"""

from collector.simulation._org import GrantRecord
from collector.simulation._output import (
    LABELS_FORMAT,
    default_policy_path,
    labels_document,
    write_simulation,
)
from collector.simulation._scenarios import SCENARIOS, Incident
from collector.simulation._simulator import (
    DEFAULT_START,
    MIN_USERS,
    Simulated,
    SimulationSpec,
    simulate,
)

__all__ = [
    "DEFAULT_START",
    "LABELS_FORMAT",
    "MIN_USERS",
    "SCENARIOS",
    "GrantRecord",
    "Incident",
    "Simulated",
    "SimulationSpec",
    "default_policy_path",
    "labels_document",
    "simulate",
    "write_simulation",
]
