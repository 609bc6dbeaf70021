"""structlog set-up, done once per entry point.

JSON lines under systemd (``JOURNAL_STREAM`` set) or when stderr is not a terminal, a
readable console renderer on a terminal. Values whose key names a secret are replaced by
``"[redacted]"`` before rendering, so a passphrase or token can never reach a log line.
Security events travel as events through the spool, never as log lines.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import structlog
    from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["configure_logging", "get_logger", "redact_secrets"]

_SECRET_MARKERS = ("password", "passphrase", "secret", "token", "private_key", "authorization")
REDACTED = "[redacted]"


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every key that names a secret (a structlog processor)."""
    for key in event_dict:
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(fmt: str = "auto", level: int = logging.INFO) -> None:
    """Configure structlog for this process, writing to stderr."""
    import structlog  # noqa: PLC0415 -- 100 ms of imports (rich) that sealing never needs

    if fmt == "auto":
        under_systemd = "JOURNAL_STREAM" in os.environ
        fmt = "console" if sys.stderr.isatty() and not under_systemd else "json"
    renderer: Processor = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (PrintLogger's print() makes two: the line, then its newline).
        # Unbuffered (PYTHONUNBUFFERED=1) each is a syscall of its own, and the collector's
        # worker processes, which share stderr, split each other's lines between the two.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """Return a logger bound to a component name."""
    import structlog  # noqa: PLC0415 -- see configure_logging

    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
