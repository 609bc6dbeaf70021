"""A progress bar for long hashing runs: on a terminal only, quiet in pipes."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["TerminalProgress", "wants_progress"]

_MIN_BYTES = 256 << 20  # smaller models finish before a bar is worth drawing
_WIDTH = 30


def wants_progress(stream: TextIO, *, json_output: bool) -> bool:
    """A bar only on an interactive terminal and never alongside JSON output."""
    return stream.isatty() and not json_output


class TerminalProgress:
    """Draws ``[=====     ]  42%  1.2 GB/s`` on stderr at most ten times a second."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self._label = label
        self._stream = stream
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._started = time.monotonic()
        self._last_draw = 0.0

    def begin(self, total_bytes: int) -> None:
        """Start a bar for ``total_bytes``."""
        with self._lock:
            self._total = total_bytes
            self._done = 0
            self._started = time.monotonic()

    def advance(self, n_bytes: int) -> None:
        """Count ``n_bytes`` and redraw if a tenth of a second has passed."""
        with self._lock:
            self._done += n_bytes
            now = time.monotonic()
            if self._total < _MIN_BYTES or now - self._last_draw < 0.1:  # noqa: PLR2004
                return
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self._done / self._total) if self._total else 1.0
        filled = int(frac * _WIDTH)
        rate = self._done / max(now - self._started, 1e-9) / 1e9
        bar = "=" * filled + " " * (_WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {frac:4.0%} {rate:5.2f} GB/s")
        self._stream.flush()

    def finish(self) -> None:
        """Clear the bar's line."""
        with self._lock:
            if self._last_draw:
                self._stream.write("\r" + " " * (len(self._label) + _WIDTH + 20) + "\r")
                self._stream.flush()
