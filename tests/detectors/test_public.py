"""The detectors package's public surface is what its __init__ says, and all of it works."""

from __future__ import annotations

import subprocess
import sys

import detectors


def test_the_public_names_are_pinned_and_each_resolves():
    """Adding or removing a public name is a decision: this test makes it visible."""
    assert sorted(detectors.__all__) == sorted(
        [
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
    )
    for name in detectors.__all__:
        assert getattr(detectors, name) is not None


def test_detecting_over_nothing_finds_nothing():
    """An empty stream is no error: no findings, no entities."""
    result = detectors.detect([], detectors.Context())
    assert (result.findings, result.risks, result.entities, result.events) == ((), (), 0, 0)


def test_the_ingest_rules_load_without_numpy():
    """`collector serve` imports detectors.agent_signals on its hot path: no models with it."""
    code = "import sys, detectors.agent_signals; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
