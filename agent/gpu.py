"""GPUs: which processes hold which GPU, from NVML and from open ``/dev/nvidia*`` descriptors.

:class:`GpuMonitor` takes a :class:`GpuSnapshot` on demand (the daemon polls it, every
``agent.gpu_poll``). A snapshot has two independent views:

- **NVML** (PyPI ``nvidia-ml-py``, module ``pynvml``): every GPU (index, UUID, name, memory,
  minor number) and the processes with a context on it — compute, graphics and MPS — with
  the GPU memory each uses. This is what the driver itself says.
- **Device nodes**: every process that has a ``/dev/nvidia*`` file open (``nvidia0``,
  ``nvidiactl``, ``nvidia-uvm`` ...), from a scan of ``/proc/*/fd``. It also sees processes
  NVML does not list (a process that opened the device but has no context yet, or one in a
  container whose driver view differs) and works without NVML.

Both carry the process's uid and user name (``/proc/PID/status``) and its executable.
Without a GPU — ``pynvml`` not installed, the NVML library missing
(``NVMLError_LibraryNotFound``), no driver, any ``NVMLError`` at init — the snapshot says
``gpu_available=False`` with the reason, and the device-node scan still runs; nothing
raises. An NVML call that fails for one GPU is recorded in ``errors`` and the rest of the
snapshot is kept.

Limits: NVML reports pids in the host's pid namespace, so run the agent there; used memory
is unknown (None) where the driver does not report it (some MIG and container set-ups);
MIG instances are reported only as ids on the parent GPU's processes; a process that
exits between the NVML query and the ``/proc`` read keeps its pid and memory but loses its
user and executable. The scan of ``/proc/*/fd`` reads every descriptor of every process
(tens of milliseconds on a busy host): poll it every few seconds, not per event.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightwarden.events import GpuUse

__all__ = [
    "DeviceHolder",
    "GpuContext",
    "GpuDevice",
    "GpuHolding",
    "GpuMonitor",
    "GpuProcess",
    "GpuSnapshot",
    "gpu_holdings",
    "parse_status_uid",
    "scan_device_holders",
]

PROC = Path("/proc")
DEVICE_PREFIX = "/dev/nvidia"
_NOT_AVAILABLE = 0xFFFFFFFF
_DEVICE_MINOR = re.compile(r"/dev/nvidia(\d+)$")


class GpuContext(enum.StrEnum):
    """The kind of context a process holds on a GPU, as NVML lists them."""

    COMPUTE = "compute"
    GRAPHICS = "graphics"
    MPS = "mps"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuDevice:
    """One GPU as NVML sees it.

    Attributes:
        index: NVML index (PCI bus order, the order of ``nvidia-smi``).
        uuid: The GPU's UUID (``GPU-...``), stable across reboots.
        name: Product name.
        memory_total: Bytes of GPU memory, if read.
        minor: Minor number of its device node (``/dev/nvidiaMINOR``), if read.
    """

    index: int
    uuid: str
    name: str | None = None
    memory_total: int | None = None
    minor: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuProcess:
    """A process with a context on a GPU.

    Attributes:
        pid: Process id (host pid namespace).
        gpu_index: NVML index of the GPU.
        gpu_uuid: UUID of the GPU.
        context: Compute, graphics or MPS.
        used_memory: Bytes of GPU memory it uses; None where the driver does not say.
        uid: Effective uid, from ``/proc/PID/status``; None if it exited or is unreadable.
        user: Name of that uid, if it has one.
        exe: Executable, from ``/proc/PID/exe`` (else NVML's process name).
        gpu_instance: MIG GPU instance id, when MIG is enabled.
        compute_instance: MIG compute instance id, when MIG is enabled.
    """

    pid: int
    gpu_index: int
    gpu_uuid: str
    context: GpuContext
    used_memory: int | None = None
    uid: int | None = None
    user: str | None = None
    exe: str | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceHolder:
    """A process holding a GPU device node open (once per node, however many descriptors).

    Attributes:
        pid: Process id.
        path: The device node (``/dev/nvidia0``, ``/dev/nvidiactl``, ``/dev/nvidia-uvm``).
        fds: The descriptor numbers open on it in that process, sorted (CUDA opens several).
        minor: For ``/dev/nvidiaN``, N (match it with :attr:`GpuDevice.minor`); else None.
        uid: Effective uid, if readable.
        user: Name of that uid, if it has one.
    """

    pid: int
    path: str
    fds: tuple[int, ...]
    minor: int | None = None
    uid: int | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuSnapshot:
    """Who held which GPU at one moment.

    Attributes:
        gpu_available: NVML started; False means "no GPU" (or no way to ask), see reason.
        reason: Why NVML is not available; None when it is.
        driver_version: The NVIDIA driver version, when NVML answered.
        devices: Every GPU NVML lists.
        processes: Every process with a context on a GPU.
        holders: Every ``/dev/nvidia*`` node held open, by process and node.
        errors: NVML or ``/proc`` reads that failed, one line each; the rest is kept.
    """

    gpu_available: bool
    reason: str | None = None
    driver_version: str | None = None
    devices: tuple[GpuDevice, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    holders: tuple[DeviceHolder, ...] = ()
    errors: tuple[str, ...] = ()

    def pids(self) -> frozenset[int]:
        """Every pid that uses a GPU, by NVML or by an open device node."""
        return frozenset(p.pid for p in self.processes) | frozenset(h.pid for h in self.holders)

    def gpus_of(self, pid: int) -> tuple[int, ...]:
        """NVML indexes of the GPUs ``pid`` uses (a context, or ``/dev/nvidiaN`` open), sorted."""
        by_minor = {d.minor: d.index for d in self.devices if d.minor is not None}
        found = {p.gpu_index for p in self.processes if p.pid == pid}
        found |= {by_minor[h.minor] for h in self.holders if h.pid == pid and h.minor in by_minor}
        return tuple(sorted(found))


def parse_status_uid(text: str) -> int | None:
    """Return the effective uid from ``/proc/PID/status`` text, or None if absent."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():  # noqa: PLR2004 -- "Uid:" real effective
                return int(fields[2])
            return None
    return None


@functools.lru_cache(maxsize=1024)
def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _owner(pid: int, proc_root: Path) -> tuple[int | None, str | None]:
    try:
        uid = parse_status_uid((proc_root / str(pid) / "status").read_text())
    except OSError:
        return None, None
    return uid, (_user_name(uid) if uid is not None else None)


def _exe(pid: int, proc_root: Path) -> str | None:
    try:
        return os.readlink(proc_root / str(pid) / "exe")  # noqa: PTH115 -- keep the kernel's text
    except OSError:
        return None


def scan_device_holders(
    proc_root: Path = PROC, *, prefix: str = DEVICE_PREFIX
) -> tuple[DeviceHolder, ...]:
    """Every node starting with ``prefix`` held open by a process under ``proc_root``.

    One holder per (pid, node), sorted by pid and path. Processes that exit or cannot be
    read during the scan are skipped.
    """
    found: list[DeviceHolder] = []
    try:
        with os.scandir(proc_root) as entries:
            pids = sorted(int(e.name) for e in entries if e.name.isdigit())
    except OSError:
        return ()
    for pid in pids:
        try:
            with os.scandir(proc_root / str(pid) / "fd") as entries:
                links = []
                for entry in entries:
                    try:
                        links.append((int(entry.name), os.readlink(entry.path)))  # noqa: PTH115
                    except (OSError, ValueError):
                        continue
        except OSError:
            continue
        held: dict[str, list[int]] = {}
        for fd, target in links:
            if target.startswith(prefix):
                held.setdefault(target, []).append(fd)
        if not held:
            continue
        uid, user = _owner(pid, proc_root)
        for target, numbers in sorted(held.items()):
            minor = _DEVICE_MINOR.search(target)
            found.append(
                DeviceHolder(
                    pid=pid,
                    path=target,
                    fds=tuple(sorted(numbers)),
                    minor=int(minor.group(1)) if minor else None,
                    uid=uid,
                    user=user,
                )
            )
    return tuple(found)


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _instance(value: object) -> int | None:
    return value if isinstance(value, int) and value != _NOT_AVAILABLE else None


class GpuMonitor:
    """Takes GPU snapshots through NVML (initialised once, retried while it fails).

    Not thread-safe: call from one thread (the daemon's GPU poller).
    """

    def __init__(self, *, proc_root: Path = PROC, device_prefix: str = DEVICE_PREFIX) -> None:
        self._proc_root = proc_root
        self._prefix = device_prefix
        self._nvml: Any = None
        self.reason: str | None = None

    def _start(self) -> Any:  # noqa: ANN401 -- pynvml ships no type information
        """The initialised pynvml module, or None with ``self.reason`` set."""
        if self._nvml is not None:
            return self._nvml
        try:
            import pynvml  # type: ignore[import-untyped]  # noqa: PLC0415 -- optional, untyped
        except ImportError:
            self.reason = "nvidia-ml-py (module pynvml) is not installed"
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.reason = f"NVML did not start ({type(exc).__name__}): {exc}"
            return None
        except OSError as exc:  # pynvml surfaces some dlopen failures this way
            self.reason = f"NVML did not start: {exc}"
            return None
        self._nvml = pynvml
        self.reason = None
        return pynvml

    def close(self) -> None:
        """Shut NVML down if it was started; a later snapshot starts it again."""
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            with contextlib.suppress(nvml.NVMLError):  # shutting down: nobody to tell
                nvml.nvmlShutdown()

    def snapshot(self) -> GpuSnapshot:
        """Who holds which GPU now. Never raises: failures are the reason or in ``errors``."""
        holders = scan_device_holders(self._proc_root, prefix=self._prefix)
        nvml = self._start()
        if nvml is None:
            return GpuSnapshot(gpu_available=False, reason=self.reason, holders=holders)
        errors: list[str] = []
        driver = self._call(nvml, errors, "driver version", nvml.nvmlSystemGetDriverVersion)
        count = self._call(nvml, errors, "device count", nvml.nvmlDeviceGetCount) or 0
        devices: list[GpuDevice] = []
        processes: list[GpuProcess] = []
        for index in range(count):
            handle = self._call(
                nvml, errors, f"GPU {index}", nvml.nvmlDeviceGetHandleByIndex, index
            )
            if handle is None:
                continue
            device = self._device(nvml, errors, index, handle)
            devices.append(device)
            processes.extend(self._processes(nvml, errors, device, handle))
        return GpuSnapshot(
            gpu_available=True,
            driver_version=_text(driver) if driver is not None else None,
            devices=tuple(devices),
            processes=tuple(processes),
            holders=holders,
            errors=tuple(errors),
        )

    @staticmethod
    def _call(nvml: Any, errors: list[str], what: str, fn: Any, *args: Any) -> Any:  # noqa: ANN401
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    def _device(self, nvml: Any, errors: list[str], index: int, handle: Any) -> GpuDevice:  # noqa: ANN401
        where = f"GPU {index}"
        uuid = self._call(nvml, errors, f"{where} uuid", nvml.nvmlDeviceGetUUID, handle)
        name = self._call(nvml, errors, f"{where} name", nvml.nvmlDeviceGetName, handle)
        memory = self._call(nvml, errors, f"{where} memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        minor = self._call(nvml, errors, f"{where} minor", nvml.nvmlDeviceGetMinorNumber, handle)
        return GpuDevice(
            index=index,
            uuid=_text(uuid) if uuid is not None else f"index-{index}",
            name=_text(name) if name is not None else None,
            memory_total=getattr(memory, "total", None),
            minor=minor if isinstance(minor, int) else None,
        )

    def _processes(
        self,
        nvml: Any,  # noqa: ANN401
        errors: list[str],
        device: GpuDevice,
        handle: Any,  # noqa: ANN401
    ) -> list[GpuProcess]:
        lists = (
            (GpuContext.COMPUTE, "nvmlDeviceGetComputeRunningProcesses"),
            (GpuContext.GRAPHICS, "nvmlDeviceGetGraphicsRunningProcesses"),
            (GpuContext.MPS, "nvmlDeviceGetMPSComputeRunningProcesses"),
        )
        out: list[GpuProcess] = []
        for context, function in lists:
            fn = getattr(nvml, function, None)
            if fn is None:
                continue
            infos = self._call(nvml, errors, f"GPU {device.index} {context} processes", fn, handle)
            for info in infos or ():
                pid = int(info.pid)
                uid, user = _owner(pid, self._proc_root)
                exe = _exe(pid, self._proc_root)
                if exe is None:
                    name = self._call(nvml, [], "", nvml.nvmlSystemGetProcessName, pid)
                    exe = _text(name) if name else None
                memory = getattr(info, "usedGpuMemory", None)
                out.append(
                    GpuProcess(
                        pid=pid,
                        gpu_index=device.index,
                        gpu_uuid=device.uuid,
                        context=context,
                        used_memory=int(memory) if isinstance(memory, int) else None,
                        uid=uid,
                        user=user,
                        exe=exe,
                        gpu_instance=_instance(getattr(info, "gpuInstanceId", None)),
                        compute_instance=_instance(getattr(info, "computeInstanceId", None)),
                    )
                )
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuHolding:
    """One process's hold on one GPU, from NVML or from an open ``/dev/nvidiaN``."""

    pid: int
    path: str
    gpu: GpuUse
    source: str
    """``nvml`` or ``device-scan``."""


def gpu_holdings(snapshot: GpuSnapshot) -> dict[tuple[int, int], GpuHolding]:
    """Every (pid, GPU index) in a snapshot; NVML's view wins over the device-node scan."""
    out: dict[tuple[int, int], GpuHolding] = {}
    for proc in snapshot.processes:
        out[(proc.pid, proc.gpu_index)] = GpuHolding(
            pid=proc.pid,
            path=f"/dev/nvidia{proc.gpu_index}",
            gpu=GpuUse(index=proc.gpu_index, uuid=proc.gpu_uuid, used_memory=proc.used_memory),
            source="nvml",
        )
    for holder in snapshot.holders:
        if holder.minor is not None:
            out.setdefault(
                (holder.pid, holder.minor),
                GpuHolding(
                    pid=holder.pid,
                    path=holder.path,
                    gpu=GpuUse(index=holder.minor),
                    source="device-scan",
                ),
            )
    return out
