"""Attribution: which user, program, job and container is behind a pid in a sensor event.

- `read_process` snapshots a process from ``/proc`` (uids, login uid, exe, argv, start
  time, cgroup → container/unit/Slurm job/pod, ssh origin, parent chain); it never raises
  for a process that exits mid-read, and says what it could not read.
- `ProcConnector` listens to the kernel's exec/fork/uid/exit notifications (netlink proc
  connector, needs ``CAP_NET_ADMIN``) and keeps an `ExecCache` of snapshots that outlive
  their processes for a grace period; `probe_proc_connector` says whether it can run.
- `ExecWatcher` runs that listener in a child process of its own, so the daemon's busy
  Python threads cannot hold the GIL while a short-lived process execs and exits, and
  applies what the child sends (one JSON line per cache change) to the daemon's cache.
- `Attributor.attribute` combines the live process with the cache and says how it knows:
  FULL, FROM_CACHE, PARTIAL or UNKNOWN, never a guess.
- `read_io`, `read_position`, `mapped_rss`, `open_files` and `holders` measure how much of
  a file a process read (read calls, file offset, mmap residency) and who holds it.

Typical wiring in the daemon::

    cache = ExecCache(grace_s=60)
    probe = probe_proc_connector()
    if probe.available:
        watcher = ExecWatcher(cache)  # from the main thread: see _watcher's caveats
        watcher.start()
        attributor = Attributor(cache=cache)
    else:
        attributor = Attributor(cache=None, no_cache_reason=probe.reason)
    ...
    # on a sensor event for a pid already gone from /proc:
    watcher.wait_for_exit(pid, timeout_s=0.5)
    attribution = attributor.attribute(pid, event_time)
    ...
    # in the health loop: a dead watcher takes the daemon down (systemd restarts it)
    if watcher.failure is not None:
        raise SystemExit(70)

`ProcConnector` itself (the listener on a thread of the calling process) suits a process
whose other threads mostly wait in system calls.
"""

from agent.attribution._attribution import Attribution, AttributionQuality, Attributor
from agent.attribution._cgroup import parse_cgroup
from agent.attribution._exec_cache import CachedProcess, ExecCache, ExecCacheStats, SnapshotSource
from agent.attribution._proc_connector import (
    ConnectorProbe,
    ConnectorStats,
    ListenerPriority,
    ProcConnector,
    ProcEvent,
    ProcEventKind,
    parse_proc_events,
    probe_proc_connector,
)
from agent.attribution._process_info import (
    Ancestor,
    CgroupIdentity,
    ProcessInfo,
    ReadQuality,
    SshOrigin,
)
from agent.attribution._procfs import (
    parse_cmdline,
    parse_environ,
    parse_loginuid,
    parse_ssh_origin,
    parse_stat,
    parse_status,
    read_parents,
    read_process,
)
from agent.attribution._usage import (
    IoCounters,
    holders,
    mapped_rss,
    open_files,
    read_io,
    read_position,
)
from agent.attribution._watcher import ExecWatcher, RelayStats, WatcherStats

__all__ = [
    "Ancestor",
    "Attribution",
    "AttributionQuality",
    "Attributor",
    "CachedProcess",
    "CgroupIdentity",
    "ConnectorProbe",
    "ConnectorStats",
    "ExecCache",
    "ExecCacheStats",
    "ExecWatcher",
    "IoCounters",
    "ListenerPriority",
    "ProcConnector",
    "ProcEvent",
    "ProcEventKind",
    "ProcessInfo",
    "ReadQuality",
    "RelayStats",
    "SnapshotSource",
    "SshOrigin",
    "WatcherStats",
    "holders",
    "mapped_rss",
    "open_files",
    "parse_cgroup",
    "parse_cmdline",
    "parse_environ",
    "parse_loginuid",
    "parse_proc_events",
    "parse_ssh_origin",
    "parse_stat",
    "parse_status",
    "probe_proc_connector",
    "read_io",
    "read_parents",
    "read_position",
    "read_process",
]
