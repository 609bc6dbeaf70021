"""Check on a real GPU host that ``agent.gpu`` attributes GPU use to the right process.

Starts a child Python process that allocates ``--mib`` MiB of GPU memory with PyTorch (when
torch is installed; otherwise no child is started and only the NVML listing is shown),
takes a snapshot with :class:`agent.gpu.GpuMonitor`, prints it, and says whether the child
was found with its pid, uid, GPU and memory. Exit status: 0 when the child was attributed
(or, without torch, when NVML answered), 1 when it was not, 2 when NVML is unavailable.

    PYTHONPATH=. python3 benchmarks/gpu_probe.py [--mib 512]

It needs only the standard library, ``nvidia-ml-py`` and (for the child) ``torch``, so it
runs with a GPU image's own interpreter, without the project's virtual environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

from agent.gpu import GpuMonitor, GpuSnapshot

CHILD = """
import sys, torch
x = torch.empty({n} << 20, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.read()
"""


def _show(snapshot: GpuSnapshot, took_s: float) -> None:
    print(f"snapshot in {took_s * 1000:.1f} ms; gpu_available={snapshot.gpu_available}")
    if snapshot.reason:
        print(f"  reason: {snapshot.reason}")
    print(f"  driver: {snapshot.driver_version}")
    for device in snapshot.devices:
        print(f"  device: {json.dumps(asdict(device))}")
    for process in snapshot.processes:
        print(f"  process: {json.dumps(asdict(process), default=str)}")
    for holder in snapshot.holders:
        print(f"  holder: {json.dumps(asdict(holder))}")
    for error in snapshot.errors:
        print(f"  error: {error}")


def _await(monitor: GpuMonitor, pid: int, timeout_s: float) -> tuple[GpuSnapshot, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        started = time.perf_counter()
        snapshot = monitor.snapshot()
        took = time.perf_counter() - started
        if any(p.pid == pid for p in snapshot.processes) or time.monotonic() > deadline:
            return snapshot, took
        time.sleep(0.5)


def main() -> int:
    """Run the probe; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="GPU memory the child allocates")
    args = parser.parse_args()
    monitor = GpuMonitor()
    try:
        if importlib.util.find_spec("torch") is None:
            started = time.perf_counter()
            snapshot = monitor.snapshot()
            _show(snapshot, time.perf_counter() - started)
            print("torch is not installed: NVML listing only, no child to attribute")
            return 0 if snapshot.gpu_available else 2
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(n=args.mib)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            ready = child.stdout.readline() if child.stdout is not None else b""
            if ready.strip() != b"ready":
                print("the child could not allocate GPU memory (see its error above)")
                return 1
            snapshot, took = _await(monitor, child.pid, timeout_s=30)
            _show(snapshot, took)
        finally:
            child.kill()
            child.communicate(timeout=30)
    finally:
        monitor.close()
    if not snapshot.gpu_available:
        return 2
    mine = [p for p in snapshot.processes if p.pid == child.pid]
    holders = sorted({h.path for h in snapshot.holders if h.pid == child.pid})
    if not mine:
        print(f"FAIL: child pid {child.pid} is not in NVML's process list")
        return 1
    p = mine[0]
    memory = "unknown" if p.used_memory is None else f"{p.used_memory / (1 << 20):.0f} MiB"
    ok = p.uid == os.geteuid() and (p.used_memory is None or p.used_memory >= args.mib << 20)
    print(
        f"{'PASS' if ok else 'FAIL'}: child pid {child.pid} (uid {p.uid}, user {p.user}, "
        f"exe {p.exe}) on GPU {p.gpu_index} {p.gpu_uuid}, {p.context}, {memory}; "
        f"gpus_of={snapshot.gpus_of(child.pid)}; device nodes open: {holders}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
