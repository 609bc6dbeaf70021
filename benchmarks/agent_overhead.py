"""What the host agent costs the readers it watches, what it misses, and what it holds.

Cases (one run, on data this script makes in a fresh world-readable folder under --dir):

  1. Read throughput of one 2 GiB checkpoint file, page-cache warm (MB = 10^6 bytes).
     Each run is a child interpreter (``python -I -S``) timed inside itself from open()
     to close(): (a) read() into a reused 1 MiB buffer (``--chunk-mib``); (b) mmap,
     touching one byte of every page, as safetensors loading does. Blocks of --repeat
     runs of each alternate without and with the agent (``--rounds 2``: without, with,
     without, with, without), with a fresh agent start for every "with" block; the
     ratio is the median of all "with" runs over the median of all "without" runs
     (target >= 0.97). The CPU the agent used during each "with" block is printed too.
  2. --cats short-lived ``cat`` readers of a 4 KiB file in the weight root, as uid and
     gid 65534 with no supplementary groups, --parallel at a time (each child's pid is
     recorded). After the last one exits, the spool is read (read-only, beside the
     agent) until every pid's Open event (OCSF activity 14) for that file is there or
     nothing new came for --drain-timeout seconds; the time until the spool held the
     last one is the drain time (to within a 0.2 s poll). lost = spawned - pids seen
     (target 0); attributed = share of spawned pids whose first Open names uid 65534 and an exe
     ending in ``/cat`` (target >= 99 %); duplicated = pids with more than one Open.
  3. Resident memory (VmRSS, and the peak VmHWM) of the daemon and of its exec-watcher
     child after start, after the reads and after the cats (target: daemon <= 80 MiB;
     the sum is printed too); idle CPU (utime + stime from /proc/PID/stat) of both over
     --idle seconds without activity of ours, once after start and once after the cats
     (target <= 1 % of one core).

The agent runs as an operator would start it, ``weightwarden agent run --watch ROOT
--state-dir STATE``, every other setting at its default (so its copy watch includes
/tmp, /dev/shm, /home, /media and /mnt). Its fanotify marks are filesystem marks: it
sees every open on the filesystems holding ROOT and those folders, including other
users' activity on a shared machine, which counts against idle CPU as it would in
production. ``--isolate`` is for diagnosis: the weights go on a private tmpfs this
script mounts, and the agent gets a config with ``copy_watch = []``, so its marks see
only this script's files.

Usage (as root: fanotify and running readers as another uid need it):

    .venv/bin/python benchmarks/agent_overhead.py [--scale 1.0] [--cats N] [--repeat N]
        [--rounds N] [--dir DIR] [--idle S] [--parallel N] [--isolate] [--keep]

``--scale 0.05`` shrinks the file and the number of readers twentyfold for a smoke run.
Exit status: 0 measured (whether or not targets were met), 1 the agent failed, 2 not root
or a bad argument. The agent and the data are removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from agent.spool import DB_NAME, SpoolReader
from weightwarden.errors import WeightwardenError
from weightwarden.events import (
    DetectionFinding,
    FileActivity,
    FileActivityType,
    from_json_line,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from types import FrameType

    from agent.spool import SpooledEvent
    from weightwarden.events import Event

MIB: Final = 1 << 20
GIB: Final = 1 << 30
MB: Final = 1e6
WEIGHTWARDEN: Final = str(Path(sys.executable).with_name("weightwarden"))
NOBODY: Final = 65534
CHECKPOINT: Final = "model-00001-of-00001.safetensors"
CAT_TARGET: Final = "config.bin"
CAT_TARGET_SIZE: Final = 4096
RSS_TARGET: Final = 80 * MIB
CPU_TARGET_PCT: Final = 1.0
THROUGHPUT_TARGET: Final = 0.97
LOST_TARGET: Final = 0
ATTRIBUTED_TARGET: Final = 0.99
WATCHER_COMM: Final = "ww-exec-watcher"
_START_TIMEOUT_S: Final = 60.0
_STOP_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.2
_EXAMPLES: Final = 5

# Timed inside the child from open() to close(); prints "<bytes> <seconds>".
_READ_CODE: Final = """
import sys, time
path, chunk = sys.argv[1], int(sys.argv[2])
buf = bytearray(chunk)
total = 0
start = time.perf_counter()
with open(path, "rb", buffering=0) as f:
    while n := f.readinto(buf):
        total += n
print(total, time.perf_counter() - start)
"""
_MMAP_CODE: Final = """
import mmap, os, sys, time
path = sys.argv[1]
start = time.perf_counter()
fd = os.open(path, os.O_RDONLY)
try:
    size = os.fstat(fd).st_size
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
        with memoryview(m) as view, view[:: mmap.PAGESIZE] as pages:
            touched = len(pages.tobytes())
finally:
    os.close(fd)
pages = -(-size // mmap.PAGESIZE)
print(size if touched == pages else touched * mmap.PAGESIZE, time.perf_counter() - start)
"""


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadBlock:
    """The runs of one block: seconds per run, for each way of reading, and bytes read."""

    agent: bool
    size: int
    read_s: tuple[float, ...]
    mmap_s: tuple[float, ...]
    agent_cpu_s: float | None = None
    """CPU the agent (daemon and exec watcher) used during the block, children included."""
    wall_s: float = 0.0

    def runs(self, method: str) -> tuple[float, ...]:
        """Seconds of each run of ``method`` ("read" or "mmap")."""
        return self.read_s if method == "read" else self.mmap_s

    def mb_s(self, method: str) -> float:
        """Median throughput of ``method`` in this block, MB/s."""
        return self.size / statistics.median(self.runs(method)) / MB


@dataclass(frozen=True, slots=True, kw_only=True)
class CatTally:
    """What the spool says about the ``cat`` readers we ran.

    Attributes:
        spawned: Readers started (each a distinct pid, see ``pid_reuse``).
        seen: Of those pids, how many have at least one Open event for the file.
        attributed: Pids whose first Open names uid 65534 and an exe ending in ``/cat``.
        duplicated: Pids with more than one Open event for the file.
        foreign: Open events for the file from pids that are not ours.
        quality: Open events of ours per attribution quality (``full``, ``from_cache`` ...).
        wrong: Misattributed first Opens by kind (quality, uid and exe name), counted.
        examples: A few misattributed Opens, described for a person.
        pid_reuse: Pids that were handed out twice during the run (they count once).
    """

    spawned: int
    seen: int
    attributed: int
    duplicated: int
    foreign: int
    quality: Mapping[str, int] = field(default_factory=dict)
    wrong: Mapping[str, int] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    pid_reuse: int = 0

    @property
    def lost(self) -> int:
        """Readers without any Open event for the file in the spool."""
        return self.spawned - self.seen


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """Resident and peak memory of one process, bytes; zero when it could not be read."""

    rss: int
    hwm: int


# ---------------------------------------------------------------------------- pure core


def tally_cat_opens(
    events: Iterable[Event],
    *,
    pids: Sequence[int],
    path: str,
    uid: int = NOBODY,
    exe_suffix: str = "/cat",
) -> CatTally:
    """Count the Open events of ``path`` by ``pids``: seen, attributed and duplicated.

    Only :class:`FileActivity` events with activity OPEN on exactly ``path`` count; an
    Open from a pid outside ``pids`` is counted as foreign. A pid's *first* Open decides
    whether it is attributed: its process (or, failing that, its actor) user is ``uid``
    and its exe ends in ``exe_suffix``.
    """
    ours = set(pids)
    first: dict[int, FileActivity] = {}
    opens: Counter[int] = Counter()
    quality: Counter[str] = Counter()
    foreign = 0
    for event in events:
        if not isinstance(event, FileActivity):
            continue
        if event.activity is not FileActivityType.OPEN or event.file.path != path:
            continue
        process = event.actor.process
        if process is None or process.pid not in ours:
            foreign += 1
            continue
        opens[process.pid] += 1
        quality[process.attribution.value] += 1
        first.setdefault(process.pid, event)
    attributed = 0
    wrong: Counter[str] = Counter()
    examples: list[str] = []
    for pid, event in first.items():
        process = event.actor.process
        user = (process.user if process else None) or event.actor.user
        exe = process.exe if process else None
        if user is not None and user.uid == uid and exe is not None and exe.endswith(exe_suffix):
            attributed += 1
            continue
        quality_name = process.attribution.value if process else "no process"
        kind = f"{quality_name}, uid {user.uid if user else None}, exe {exe}"
        wrong[kind] += 1
        if len(examples) < _EXAMPLES:
            cmd = process.cmd_line if process else None
            examples.append(f"pid {pid}: {kind}, cmd_line {cmd!r}")
    return CatTally(
        spawned=len(ours),
        seen=len(first),
        attributed=attributed,
        duplicated=sum(1 for n in opens.values() if n > 1),
        foreign=foreign,
        quality=dict(quality),
        wrong=dict(wrong),
        examples=tuple(examples),
        pid_reuse=len(pids) - len(ours),
    )


def parse_cpu_ticks(stat_line: str) -> int:
    """User plus system clock ticks from one ``/proc/PID/stat`` line.

    The command name (field 2) may hold spaces and parentheses, so fields are counted
    after its last ``)``: utime and stime are fields 14 and 15.
    """
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def parse_memory(status_text: str) -> Memory:
    """VmRSS and VmHWM from ``/proc/PID/status`` text, in bytes (0 where absent)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in status_text.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0]) * 1024
    return Memory(rss=values["VmRSS"], hwm=values["VmHWM"])


def verdict(ok: bool) -> str:  # noqa: FBT001 -- reads naturally at the call sites
    """The word printed beside a figure and its target."""
    return "PASS" if ok else "MISS"


# ---------------------------------------------------------------------------- /proc


def cpu_ticks(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """Clock ticks ``pid`` has run (user + system), or None if it is gone."""
    try:
        return parse_cpu_ticks((proc_root / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def memory(pid: int, proc_root: Path = Path("/proc")) -> Memory:
    """Resident and peak memory of ``pid``; zeros if it is gone."""
    try:
        return parse_memory((proc_root / str(pid) / "status").read_text())
    except OSError:
        return Memory(rss=0, hwm=0)


def children(pid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """Pids of the children of every thread of ``pid``."""
    out: list[int] = []
    for task in (proc_root / str(pid) / "task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in (task / "children").read_text().split()]
    return out


def comm(pid: int, proc_root: Path = Path("/proc")) -> str:
    """The process's command name, or "" if it is gone."""
    try:
        return (proc_root / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def filesystem_of(path: Path) -> str:
    """'TYPE on MOUNTPOINT' for the mount holding ``path`` (longest prefix in /proc/mounts)."""
    best = ("?", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount, fstype = parts[1], parts[2]
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(
            mount
        ) >= len(best[1]):
            best = (fstype, mount)
    return f"{best[0]} on {best[1]}"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------------------- data


def write_random(path: Path, size: int) -> None:
    """Write ``size`` bytes of random data, every 8 MiB chunk distinct, and sync it."""
    chunk = os.urandom(8 * MIB)
    with path.open("wb") as out:
        left, counter = size, 0
        while left > 0:
            n = min(left, len(chunk))
            out.write(counter.to_bytes(8, "little") + chunk[8:n])
            counter += 1
            left -= n
        out.flush()
        os.fsync(out.fileno())
    path.chmod(0o644)


def warm(path: Path) -> None:
    """Read ``path`` once so that it is in the page cache."""
    with path.open("rb", buffering=0) as f:
        buf = bytearray(8 * MIB)
        while f.readinto(buf):
            pass


def timed_child(code: str, *args: str) -> tuple[int, float]:
    """Run ``code`` in a fresh isolated interpreter; return the bytes and seconds it prints."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    size, seconds = out.stdout.split()
    return int(size), float(seconds)


def read_block(
    path: Path, *, agent: bool, repeat: int, chunk: int, agent_pids: Sequence[int] = ()
) -> ReadBlock:
    """``repeat`` runs of read() and of mmap, interleaved; the file must be fully read.

    ``agent_pids`` (the daemon and its exec watcher) are charged the CPU they use meanwhile.
    """
    size = path.stat().st_size
    ticks_before = _ticks(agent_pids)
    began = time.monotonic()
    read_s: list[float] = []
    mmap_s: list[float] = []
    for _ in range(repeat):
        n, seconds = timed_child(_READ_CODE, str(path), str(chunk))
        if n != size:
            raise RuntimeError(f"the read() child read {n} of {size} bytes")
        read_s.append(seconds)
        n, seconds = timed_child(_MMAP_CODE, str(path))
        if n != size:
            raise RuntimeError(f"the mmap child touched {n} of {size} bytes")
        mmap_s.append(seconds)
    wall = time.monotonic() - began
    ticks_after = _ticks(agent_pids)
    cpu = (
        (ticks_after - ticks_before) / os.sysconf("SC_CLK_TCK")
        if agent_pids and ticks_before is not None and ticks_after is not None
        else None
    )
    block = ReadBlock(
        agent=agent,
        size=size,
        read_s=tuple(read_s),
        mmap_s=tuple(mmap_s),
        agent_cpu_s=cpu,
        wall_s=wall,
    )
    print(
        f"  {'with   ' if agent else 'without'} agent: read() {block.mb_s('read'):>9,.0f} MB/s"
        f"   mmap {block.mb_s('mmap'):>9,.0f} MB/s   (medians of {repeat}; load {loadavg()})"
    )
    if cpu is not None:
        print(
            f"                 the agent used {cpu * 1000 / repeat:,.0f} ms CPU per read()+mmap "
            f"pair ({cpu / wall:.1%} of one core over the block's {wall:.1f} s; one read() run "
            f"takes {statistics.median(read_s) * 1000:,.0f} ms)"
        )
    return block


def _ticks(pids: Sequence[int]) -> int | None:
    """Clock ticks the processes ran, summed; None if one of them is gone."""
    total = 0
    for pid in pids:
        ticks = cpu_ticks(pid)
        if ticks is None:
            return None
        total += ticks
    return total


# ---------------------------------------------------------------------------- the spool


class SpoolTail:
    """Reads the spool's new events in order, read-only, beside the running agent.

    Only events whose payload mentions ``path`` or is a finding are handed out; that keeps
    this reader's CPU (which competes with the agent's on a small machine) low.
    """

    def __init__(self, spool: Path, path: str) -> None:
        self._spool = spool
        self._reader: SpoolReader | None = None
        self._after = 0
        self._needle = json.dumps(path)[1:-1].encode()
        self.findings: list[DetectionFinding] = []
        self.scanned = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._reader is not None:
            self._reader.close()

    def _read_batch(self, reader: SpoolReader) -> list[SpooledEvent]:
        try:
            return reader.read_batch(self._after, limit=5000)
        except WeightwardenError:
            return []  # busy or being created; the next call goes on from the same place

    def new_events(self) -> Iterator[Event]:
        """Every such event appended since the last call, decoded."""
        for _read_at, payload in self.new_payloads():
            yield from_json_line(payload)

    def new_payloads(self) -> Iterator[tuple[float, bytes]]:
        """(when its batch was read, OCSF JSON) of every such event since the last call.

        Findings are also decoded and kept in ``findings``.
        """
        if self._reader is None:
            if not (self._spool / DB_NAME).is_file():
                return
            try:
                self._reader = SpoolReader(self._spool)
            except WeightwardenError:
                return  # the agent is creating it: try again at the next call
        while batch := self._read_batch(self._reader):
            read_at = time.monotonic()
            self._after = batch[-1].seq
            self.scanned += len(batch)
            for item in batch:
                if b"finding_info" in item.payload:
                    event = from_json_line(item.payload)
                    if isinstance(event, DetectionFinding):
                        self.findings.append(event)
                elif self._needle not in item.payload:
                    continue
                yield read_at, item.payload


# ---------------------------------------------------------------------------- the agent


class Agent:
    """One ``weightwarden agent run`` process, started and stopped by this script."""

    def __init__(self, *, root: Path, state: Path, log: Path, isolate: bool) -> None:
        self.root = root
        self.isolate = isolate
        self.state = state
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.watcher: int | None = None
        self.status = ""

    @property
    def pid(self) -> int:
        """The daemon's pid (it must be running)."""
        if self.proc is None:
            raise RuntimeError("the agent is not running")
        return self.proc.pid

    def start(self, tail: SpoolTail) -> float:
        """Start the agent; return the seconds until its start-up finding was spooled.

        Raises:
            RuntimeError: It exited, or did not report its start within a minute.
        """
        for _ in tail.new_events():
            pass  # skip what earlier runs left, so only this start's finding counts
        started_before = len(tail.findings)
        began = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [WEIGHTWARDEN, "--log-format", "json", "agent", "run", *self._where()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        while time.monotonic() - began < _START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {self.proc.returncode}; see {self.log}")
            for _ in tail.new_events():
                pass
            for finding in tail.findings[started_before:]:
                if finding.title.startswith("Agent started"):
                    elapsed = time.monotonic() - began
                    self.status = f"{finding.title} ({finding.description or ''})"
                    self.watcher = self._find_watcher()
                    return elapsed
            time.sleep(0.05)
        raise RuntimeError(f"the agent did not report its start within {_START_TIMEOUT_S:g} s")

    def _where(self) -> list[str]:
        """The operator's quick start, or a config file without copy watch (``isolate``)."""
        if not self.isolate:
            return ["--watch", str(self.root), "--state-dir", str(self.state)]
        config = self.log.with_name("agent.toml")
        config.write_text(
            f"[agent]\nweight_roots = [{json.dumps(str(self.root))}]\n"
            f"state_dir = {json.dumps(str(self.state))}\ncopy_watch = []\n"
        )
        return ["--config", str(config)]

    def _find_watcher(self) -> int | None:
        kids = children(self.pid)
        named = [k for k in kids if comm(k) == WATCHER_COMM]
        pick = named or kids
        return pick[0] if pick else None

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, wait for the drain (kill after a minute); return (exit code, seconds)."""
        proc, self.proc, self.watcher = self.proc, None, None
        if proc is None:
            return None, 0.0
        began = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode, time.monotonic() - began

    def memory_line(self, when: str) -> tuple[Memory, Memory]:
        """Print and return the memory of the daemon and of its exec watcher."""
        daemon = memory(self.pid)
        watcher = memory(self.watcher) if self.watcher else Memory(rss=0, hwm=0)
        print(
            f"  {when:<18} daemon {daemon.rss / MIB:6.1f} MiB (peak {daemon.hwm / MIB:6.1f})"
            f"   exec watcher {watcher.rss / MIB:6.1f} MiB (peak {watcher.hwm / MIB:6.1f})"
            f"   sum {(daemon.rss + watcher.rss) / MIB:6.1f} MiB"
        )
        return daemon, watcher

    def idle_cpu(self, seconds: float) -> tuple[float, float]:
        """Percent of one core used by the daemon and by its watcher over ``seconds``."""
        pids = [self.pid, self.watcher]
        before = [cpu_ticks(p) if p else None for p in pids]
        began = time.monotonic()
        time.sleep(seconds)
        after = [cpu_ticks(p) if p else None for p in pids]
        elapsed = time.monotonic() - began
        tick = os.sysconf("SC_CLK_TCK")
        pct = [
            0.0 if b is None or a is None else (a - b) / tick / elapsed * 100
            for b, a in zip(before, after, strict=True)
        ]
        return pct[0], pct[1]


def log_summary(log: Path) -> list[str]:
    """The agent log's warnings, errors and sensor statistics, one short line each."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                out.append(line[:200])
                continue
            level = entry.get("level")
            if level in ("warning", "error", "critical") or entry.get("event") == "sensor_stopped":
                keep = {k: v for k, v in entry.items() if k not in ("timestamp", "level")}
                out.append(f"{entry.get('level')}: {json.dumps(keep)[:300]}")
    return out


# ---------------------------------------------------------------------------- readers


def run_cats(cat: str, target: Path, count: int, parallel: int) -> tuple[list[int], int, float]:
    """Run ``count`` ``cat target`` as uid/gid 65534, ``parallel`` at a time.

    Returns:
        The pids in spawn order, how many exited non-zero, and the seconds it took.
    """
    pids: list[int] = []
    failed = 0
    running: deque[subprocess.Popen[bytes]] = deque()
    began = time.monotonic()
    try:
        for _ in range(count):
            if len(running) >= parallel and running.popleft().wait() != 0:
                failed += 1
            proc = subprocess.Popen(
                [cat, str(target)],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            pids.append(proc.pid)
            running.append(proc)
        while running:
            if running.popleft().wait() != 0:
                failed += 1
    finally:
        for proc in running:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
    return pids, failed, time.monotonic() - began


def collect_opens(
    tail: SpoolTail, *, pids: Sequence[int], path: str, quiet_s: float
) -> tuple[list[Event], float, bool]:
    """Read the spool until every pid has an Open of ``path`` or nothing new came for a while.

    While waiting, only the OCSF keys needed are looked at (``activity_id``, ``file.path``,
    ``actor.process.pid``), so the time measured is the agent's, not this reader's
    decoding; the events are decoded once the wait is over.

    Returns:
        The Open events of ``path``, the seconds from the call until the spool was read
        holding the last pid's Open (to within a poll interval), and whether every pid
        was seen.
    """
    ours = set(pids)
    seen: set[int] = set()
    payloads: list[bytes] = []
    began = last_new = time.monotonic()
    drained = 0.0
    complete = False
    while not complete and time.monotonic() - last_new <= quiet_s:
        for read_at, payload in tail.new_payloads():
            obj = json.loads(payload)
            if (
                obj.get("activity_id") != FileActivityType.OPEN
                or obj.get("file", {}).get("path") != path
            ):
                continue
            payloads.append(payload)
            pid = obj.get("actor", {}).get("process", {}).get("pid")
            if pid in ours and pid not in seen:
                seen.add(pid)
                last_new = read_at
                drained = read_at - began
        complete = seen >= ours
        if not complete:
            time.sleep(_POLL_S)
    return [from_json_line(p) for p in payloads], drained, complete


def nobody_can_read(cat: str, target: Path) -> bool:
    """Whether uid 65534 can read ``target`` (every folder above it must let it in)."""
    done = subprocess.run(
        [cat, str(target)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode == 0


# ---------------------------------------------------------------------------- the run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", type=float, default=1.0, help="shrink the file and the readers")
    p.add_argument("--cats", type=int, help="cat readers (default 10000 x scale)")
    p.add_argument("--repeat", type=int, default=7, help="runs per method per block")
    p.add_argument("--rounds", type=int, default=2, help="without/with block pairs (then without)")
    p.add_argument("--chunk-mib", type=int, default=1, help="read() buffer size, MiB")
    p.add_argument("--parallel", type=int, default=4, help="cat readers running at once")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of each idle CPU sample")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="give up after S quiet")
    p.add_argument("--dir", type=Path, help="parent of the work folder (default: system temp)")
    p.add_argument(
        "--isolate",
        action="store_true",
        help="diagnosis: weights on a private tmpfs and no copy watch, so the agent's marks "
        "see only this script's files (not the operator's default)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (the agent log)")
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1:
        p.error("--scale must be in (0, 1]")
    if args.cats is None:
        args.cats = max(1, round(10_000 * args.scale))
    for name in ("cats", "repeat", "rounds", "chunk_mib", "parallel"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case and print the figures; see the module docstring."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print(
            "agent_overhead: must run as root (the agent's fanotify sensor and running "
            "readers as uid 65534 need it)",
            file=sys.stderr,
        )
        return 2
    cat = shutil.which("cat")
    if cat is None:
        print("agent_overhead: no cat on PATH", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="ww-agent-bench-", dir=args.dir)).resolve()
    agent: Agent | None = None
    mounted: Path | None = None
    try:
        work.chmod(0o755)
        root = work / "weights"
        if args.isolate:
            mounted = work / "fs"
            mounted.mkdir()
            size = max(MIB, int(2 * GIB * args.scale)) + 64 * MIB
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "ww-bench", mounted],
                check=True,
            )
            root = mounted / "weights"
        agent = Agent(root=root, state=work / "state", log=work / "agent.log", isolate=args.isolate)
        return _run(args, agent, cat)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the agent and removing the data", file=sys.stderr)
        return 130
    finally:
        if agent is not None:
            agent.stop()
        if mounted is not None:
            subprocess.run(["umount", "--lazy", mounted], check=False)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


@dataclass(slots=True)
class _Measurements:
    """What the run gathers, case by case (filled in as it goes)."""

    blocks: list[ReadBlock] = field(default_factory=list)
    memory: dict[str, tuple[Memory, Memory]] = field(default_factory=dict)
    idle: dict[str, tuple[float, float]] = field(default_factory=dict)
    tally: CatTally | None = None
    cat_figures: str = ""
    findings: Counter[str] = field(default_factory=Counter)


def _make_data(args: argparse.Namespace, root: Path) -> tuple[Path, Path]:
    """The checkpoint file (2 GiB x scale) and the small file the cats read, made and warm."""
    checkpoint = root / "step-1000"
    for folder in (root, checkpoint):
        folder.mkdir()
        folder.chmod(0o755)
    big = checkpoint / CHECKPOINT
    small = checkpoint / CAT_TARGET
    size = max(MIB, int(2 * GIB * args.scale) // MIB * MIB)
    print(
        f"agent overhead benchmark: {os.uname().release}, {os.cpu_count()} cores, load {loadavg()}"
    )
    print(f"data in {root} ({filesystem_of(root)}); file {size / MIB:,.0f} MiB, {args.cats:,} cats")
    print(
        "agent: "
        + (
            "--isolate: config with copy_watch = [], weights on a private tmpfs"
            if args.isolate
            else "agent run --watch ROOT --state-dir STATE, everything else default"
        )
    )
    made = time.monotonic()
    write_random(big, size)
    write_random(small, CAT_TARGET_SIZE)
    warm(big)
    print(f"made and warmed the data in {time.monotonic() - made:.1f} s")
    return big, small


def _run(args: argparse.Namespace, agent: Agent, cat: str) -> int:
    big, small = _make_data(args, agent.root)
    if not nobody_can_read(cat, small):
        print(
            f"agent_overhead: uid {NOBODY} cannot read {small}; pass a --dir every user can enter",
            file=sys.stderr,
        )
        return 2
    found = _Measurements()
    with SpoolTail(agent.state / "spool", str(small)) as tail:
        try:
            _measure(args, agent, tail, (big, small, cat), found)
        except RuntimeError as exc:
            print(f"agent_overhead: {exc}", file=sys.stderr)
            for line in log_summary(agent.log):
                print(f"    {line}", file=sys.stderr)
            return 1
    _report(found)
    if found.findings:
        print("\nhealth findings the agent spooled:")
        for title, n in found.findings.most_common():
            print(f"  {n:>6} x {title}")
    lines = log_summary(agent.log)
    if lines:
        print("\nagent log (warnings, errors, sensor statistics):")
        for line in lines[-20:]:
            print(f"  {line}")
    print(f"\nload at the end: {loadavg()}")
    return 0


def _measure(
    args: argparse.Namespace,
    agent: Agent,
    tail: SpoolTail,
    files: tuple[Path, Path, str],
    found: _Measurements,
) -> None:
    """Alternate read blocks without and with the agent; idle, memory and cats in between."""
    big, small, cat = files
    chunk = args.chunk_mib * MIB
    print(f"\ncase 1: read throughput, {args.repeat} runs per method per block")
    for round_no in range(1, args.rounds + 1):
        found.blocks.append(read_block(big, agent=False, repeat=args.repeat, chunk=chunk))
        started = agent.start(tail)
        print(f"  agent {agent.pid} up in {started:.2f} s (exec watcher {agent.watcher})")
        if round_no == 1:
            print(f"  status: {agent.status}")
            time.sleep(3.0)  # let start-up work settle before the idle sample
            found.memory["after start"] = agent.memory_line("after start")
            found.idle["after start"] = agent.idle_cpu(args.idle)
        pids = [agent.pid] + ([agent.watcher] if agent.watcher else [])
        found.blocks.append(
            read_block(big, agent=True, repeat=args.repeat, chunk=chunk, agent_pids=pids)
        )
        found.memory[f"after reads {round_no}"] = agent.memory_line(f"after reads {round_no}")
        if round_no == args.rounds:
            found.tally, found.cat_figures = _cats_case(args, tail, cat, small)
            found.memory["after cats"] = agent.memory_line("after cats")
            found.idle["after cats"] = agent.idle_cpu(args.idle)
        code, seconds = agent.stop()
        print(f"  agent stopped: exit {code} in {seconds:.2f} s")
    found.blocks.append(read_block(big, agent=False, repeat=args.repeat, chunk=chunk))
    for _ in tail.new_events():
        pass
    found.findings = Counter(
        f.title for f in tail.findings if not f.title.startswith("Agent started")
    )


def _cats_case(
    args: argparse.Namespace, tail: SpoolTail, cat: str, target: Path
) -> tuple[CatTally, str]:
    print(f"\ncase 2: {args.cats:,} cat readers as uid {NOBODY}, {args.parallel} at a time")
    for _ in tail.new_events():
        pass  # start from the spool's present end
    scanned_before = tail.scanned
    pids, failed, seconds = run_cats(cat, target, args.cats, args.parallel)
    print(
        f"  ran {len(pids):,} in {seconds:.1f} s ({len(pids) / seconds:,.0f}/s), "
        f"{failed} exited non-zero"
    )
    events, drained, complete = collect_opens(
        tail, pids=pids, path=str(target), quiet_s=args.drain_timeout
    )
    tally = tally_cat_opens(events, pids=pids, path=str(target))
    how = "every pid seen" if complete else f"gave up after {args.drain_timeout:g} s with none new"
    figures = (
        f"  spool caught up {drained:.1f} s after the last reader exited ({how}); "
        f"{tail.scanned - scanned_before:,} events spooled meanwhile"
    )
    print(figures)
    return tally, figures


def _report(found: _Measurements) -> None:
    blocks, tally = found.blocks, found.tally
    print("\nresults against the targets (issue 3)")
    size = blocks[0].size
    for method, label in (("read", "read() 1 MiB chunks"), ("mmap", "mmap, every page")):
        off = [s for b in blocks if not b.agent for s in b.runs(method)]
        on = [s for b in blocks if b.agent for s in b.runs(method)]
        off_mb, on_mb = size / statistics.median(off) / MB, size / statistics.median(on) / MB
        ratio = on_mb / off_mb
        print(
            f"  {label:<20} without {off_mb:>9,.0f} MB/s  with {on_mb:>9,.0f} MB/s  "
            f"ratio {ratio:5.3f}  (target >= {THROUGHPUT_TARGET})  "
            f"{verdict(ratio >= THROUGHPUT_TARGET)}"
        )
    if tally is not None:
        share = tally.attributed / tally.spawned
        print(
            f"  cat readers          spawned {tally.spawned:,}  seen {tally.seen:,}  "
            f"lost {tally.lost:,} (target {LOST_TARGET}) {verdict(tally.lost <= LOST_TARGET)}"
        )
        print(
            f"                       attributed {tally.attributed:,} = {share:.2%} "
            f"(target >= {ATTRIBUTED_TARGET:.0%}) {verdict(share >= ATTRIBUTED_TARGET)}; "
            f"of those seen {tally.attributed / max(1, tally.seen):.2%}"
        )
        print(
            f"                       duplicated {tally.duplicated:,}  foreign opens "
            f"{tally.foreign:,}  pid reuse {tally.pid_reuse}  "
            f"quality {dict(sorted(tally.quality.items()))}"
        )
        print(found.cat_figures)
        for kind, n in sorted(tally.wrong.items(), key=lambda item: -item[1]):
            print(f"    misattributed {n:>5} x {kind}")
        for line in tally.examples:
            print(f"    e.g. {line}")
    for when, (daemon, watcher) in found.memory.items():
        print(
            f"  RSS {when:<16} daemon {daemon.rss / MIB:6.1f} MiB "
            f"{verdict(daemon.rss <= RSS_TARGET)} (target <= 80)   exec watcher "
            f"{watcher.rss / MIB:6.1f} MiB   sum {(daemon.rss + watcher.rss) / MIB:6.1f} MiB "
            f"{verdict(daemon.rss + watcher.rss <= RSS_TARGET)}"
        )
    for when, (daemon_pct, watcher_pct) in found.idle.items():
        total = daemon_pct + watcher_pct
        print(
            f"  idle CPU {when:<11} daemon {daemon_pct:5.2f} %   exec watcher "
            f"{watcher_pct:5.2f} %   sum {total:5.2f} % of one core "
            f"(target <= {CPU_TARGET_PCT:g} %) {verdict(total <= CPU_TARGET_PCT)}"
        )


if __name__ == "__main__":
    sys.exit(main())
