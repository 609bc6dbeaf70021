"""SIGTERM and SIGINT only set an event: nothing that can block runs in the handler."""

from __future__ import annotations

import os
import signal

from weightwarden.stop_signals import StopSignals


def test_signals_set_the_event_name_the_first_and_handlers_are_restored_on_exit():
    """Two signals in a row: the event is set once, the first is named, nothing raises."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with StopSignals() as signals:
        assert not signals.event.is_set()
        assert signals.received is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.event.wait(5)
        assert signals.received == "SIGTERM"
    assert {sig: signal.getsignal(sig) for sig in before} == before
