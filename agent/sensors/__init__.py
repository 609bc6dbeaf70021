"""File sensors of the host agent: who opens, writes, creates, deletes and renames weights.

`FanotifySensor` is the primary sensor (needs CAP_SYS_ADMIN; events carry the actor's
pid); `InotifySensor` is the fallback without pids. `probe_fanotify` says which one can
run here. Both hand `SensorRecord` values to a `RecordSink` (a callback, or a bounded
`RecordQueue`) on their own reader thread, count what they filter, lose or cannot
resolve (`SensorStats`), report kernel queue overflow as an OVERFLOW record, and keep
the error that stopped them (``failure``) so the daemon can exit non-zero. The module
docstrings of `agent.sensors.fanotify` and `agent.sensors.inotify` list the kernel
features each needs and what the fallback loses.
"""

from agent.sensors._loop import SensorStats
from agent.sensors._record import (
    RecordQueue,
    RecordSink,
    SensorEventKind,
    SensorRecord,
    SensorSource,
)
from agent.sensors.fanotify import FanotifySensor, FanotifySupport, probe_fanotify
from agent.sensors.inotify import InotifySensor

__all__ = [
    "FanotifySensor",
    "FanotifySupport",
    "InotifySensor",
    "RecordQueue",
    "RecordSink",
    "SensorEventKind",
    "SensorRecord",
    "SensorSource",
    "SensorStats",
    "probe_fanotify",
]
