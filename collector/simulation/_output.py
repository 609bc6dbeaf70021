"""The files a simulation writes: OCSF events, the labels, the organisation's policy.

The labels file (``weightwarden.labels/1``) is one JSON object that ``weightwarden eval``
reads::

    {"format": "weightwarden.labels/1", "seed": 7, "users": 1000, "weeks": 4,
     "start": <ms>, "end": <ms>, "entities": 1043,
     "policy": "labels.policy.toml",      # relative to the labels file
     "incidents": [{"id", "scenario", "malicious", "entity", "host", "start", "end",
                    "events", "twin_of", "description"}, ...],
     "grants": [{"id", "user", "asset", "approver", "reason", "created_at", "until"}, ...]}

Each file is written to a temporary name beside it and renamed into place, so a run that
fails leaves no half-written file behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Final

from collector.simulation._simulator import simulate
from weightwarden.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from collector.simulation._simulator import Simulated, SimulationSpec

__all__ = ["LABELS_FORMAT", "default_policy_path", "labels_document", "write_simulation"]

LABELS_FORMAT: Final = "weightwarden.labels/1"
_BUFFER: Final = 1 << 20


def default_policy_path(labels: Path) -> Path:
    """``<labels stem>.policy.toml`` beside the labels file."""
    return labels.with_name(f"{labels.stem}.policy.toml")


def labels_document(spec: SimulationSpec, result: Simulated, *, policy: str) -> dict[str, object]:
    """The labels file's object; ``policy`` is the policy path relative to the labels file."""
    return {
        "format": LABELS_FORMAT,
        "seed": spec.seed,
        "users": spec.users,
        "weeks": spec.weeks,
        "start": spec.start_ms,
        "end": spec.end_ms,
        "entities": result.entities,
        "policy": policy,
        "incidents": [
            {**asdict(incident), "events": list(incident.events)} for incident in result.incidents
        ],
        "grants": [asdict(grant) for grant in result.grants],
    }


def _check_folder(path: Path, what: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        msg = f"{what} {path}: folder {folder} does not exist; create it first"
        raise UsageError(msg)
    if path.is_dir() or path.name in ("", ".", ".."):
        msg = f"{what} {path}: is a folder; name the file to write"
        raise UsageError(msg)


def write_simulation(
    spec: SimulationSpec, *, events: Path, labels: Path, policy: Path | None = None
) -> Simulated:
    """Simulate and write the events, labels and policy files.

    Raises:
        UsageError: A folder to write into does not exist, the paths collide, or the
            specification is out of range.
    """
    spec.check()
    policy = policy or default_policy_path(labels)
    for path, what in ((events, "--out"), (labels, "--labels"), (policy, "--policy")):
        _check_folder(path, what)
    resolved = {events.resolve(), labels.resolve(), policy.resolve()}
    if len(resolved) < 3:  # noqa: PLR2004 -- three distinct files
        msg = "--out, --labels and the policy file must be three different files"
        raise UsageError(msg)
    staged = [p.with_name(f".{p.name}.tmp") for p in (events, labels, policy)]
    try:
        with staged[0].open("w", encoding="utf-8", buffering=_BUFFER) as out:

            def write(line: str) -> None:
                out.write(line + "\n")

            result = simulate(spec, write)
        reference = os.path.relpath(policy.resolve(), labels.resolve().parent)
        document = labels_document(spec, result, policy=reference)
        staged[1].write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        staged[2].write_text(result.policy, encoding="utf-8")
        for tmp, final in zip(staged, (events, labels, policy), strict=True):
            tmp.replace(final)
    except OSError as exc:
        msg = f"cannot write the simulation: {exc.strerror or exc} ({exc.filename})"
        raise UsageError(msg) from exc
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    return result
