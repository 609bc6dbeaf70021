import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agent.gpu import (
    DeviceHolder,
    GpuContext,
    GpuDevice,
    GpuMonitor,
    GpuProcess,
    GpuSnapshot,
    gpu_holdings,
    parse_status_uid,
    scan_device_holders,
)

STATUS = (
    "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
)


def _nvml_reason() -> str | None:
    """None when NVML answers on this machine, else why not."""
    monitor = GpuMonitor()
    try:
        snapshot = monitor.snapshot()
    finally:
        monitor.close()
    return None if snapshot.gpu_available else snapshot.reason


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _wait_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line, "child exited before it was ready"
    return line


def test_without_a_gpu_the_snapshot_says_why_and_nothing_raises():
    """No NVML here: gpu_available is False with the reason, and the fd scan still runs."""
    if _nvml_reason() is None:
        pytest.skip("this machine has a GPU: the no-GPU path cannot be exercised")
    monitor = GpuMonitor()
    first = monitor.snapshot()
    second = monitor.snapshot()  # retried, still no GPU, still no exception
    monitor.close()
    for snapshot in (first, second):
        assert snapshot.gpu_available is False
        assert snapshot.reason
        assert "NVML" in snapshot.reason or "pynvml" in snapshot.reason
        assert snapshot.devices == snapshot.processes == ()
        assert snapshot.errors == ()


def test_fd_scan_of_a_fake_proc_tree_finds_nvidia_device_holders(tmp_path):
    """Nodes under /dev/nvidia* held open are found once each, with minor, fds and owner."""
    proc = tmp_path / "proc"
    fd = proc / "4242" / "fd"
    fd.mkdir(parents=True)
    (fd / "3").symlink_to("/dev/nvidia0")
    (fd / "4").symlink_to("/dev/nvidiactl")
    (fd / "10").symlink_to("/dev/nvidia0")
    (fd / "5").symlink_to("/data/ckpt/model.safetensors")
    (fd / "6").symlink_to("socket:[1234]")
    (proc / "4242" / "status").write_text(STATUS)
    (proc / "77" / "fd").mkdir(parents=True)
    (proc / "77" / "fd" / "9").symlink_to("/dev/nvidia-uvm")  # no status: owner unknown
    (proc / "self").symlink_to("4242")
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")
    holders = scan_device_holders(proc)
    assert holders == (
        DeviceHolder(pid=77, path="/dev/nvidia-uvm", fds=(9,)),
        DeviceHolder(pid=4242, path="/dev/nvidia0", fds=(3, 10), minor=0, uid=0, user="root"),
        DeviceHolder(pid=4242, path="/dev/nvidiactl", fds=(4,), uid=0, user="root"),
    )


def test_fd_scan_finds_a_real_process_holding_a_device_named_file(tmp_path, child):
    """A live process with a file named like /dev/nvidia0 open is found in the real /proc."""
    node = tmp_path / "dev" / "nvidia0"
    node.parent.mkdir()
    node.write_bytes(b"")
    code = (
        f"f = open({str(node)!r}, 'rb'); print('ready', flush=True); import sys; sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    child.append(proc)
    _wait_line(proc)
    holders = list(scan_device_holders(prefix=str(tmp_path / "dev" / "nvidia")))
    assert [(h.pid, h.path, h.minor, h.uid) for h in holders] == [
        (proc.pid, str(node), 0, os.geteuid())
    ]
    assert GpuSnapshot(gpu_available=False, holders=tuple(holders)).pids() == {proc.pid}


def test_snapshot_links_pids_to_gpus_through_nvml_and_device_minors():
    """gpus_of combines NVML contexts with open /dev/nvidiaN nodes (minor -> NVML index)."""
    snapshot = GpuSnapshot(
        gpu_available=True,
        devices=(
            GpuDevice(index=0, uuid="GPU-a", minor=1),
            GpuDevice(index=1, uuid="GPU-b", minor=0),
        ),
        processes=(GpuProcess(pid=10, gpu_index=0, gpu_uuid="GPU-a", context=GpuContext.COMPUTE),),
        holders=(
            DeviceHolder(pid=10, path="/dev/nvidia0", fds=(5,), minor=0),
            DeviceHolder(pid=11, path="/dev/nvidiactl", fds=(3,)),
        ),
    )
    assert snapshot.gpus_of(10) == (0, 1)
    assert snapshot.gpus_of(11) == ()
    assert snapshot.pids() == {10, 11}


def test_parse_status_uid_reads_the_effective_uid():
    """The second number of the Uid: line is the effective uid."""
    assert parse_status_uid(STATUS) == 0
    assert parse_status_uid("Name:\tx\n") is None
    assert parse_status_uid("Uid:\tgarbage\n") is None


ALLOCATE = """
import sys, torch
x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_process_allocating_gpu_memory_is_listed_with_its_user_and_memory(child):
    """On a GPU host, a torch child holding 256 MiB is listed by NVML and by its device nodes."""
    reason = _nvml_reason()
    if reason is not None:
        pytest.skip(f"no GPU: {reason}")
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: nothing to allocate GPU memory with")
    proc = subprocess.Popen(
        [sys.executable, "-c", ALLOCATE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    child.append(proc)
    _wait_line(proc)
    monitor = GpuMonitor()
    try:
        deadline = time.monotonic() + 30
        while True:
            snapshot = monitor.snapshot()
            mine = [p for p in snapshot.processes if p.pid == proc.pid]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        monitor.close()
    assert mine, snapshot
    assert mine[0].context is GpuContext.COMPUTE
    assert mine[0].uid == os.geteuid()
    assert mine[0].used_memory is None or mine[0].used_memory >= 256 << 20
    assert mine[0].gpu_uuid.startswith("GPU-")
    assert any(h.pid == proc.pid for h in snapshot.holders)
    assert mine[0].gpu_index in snapshot.gpus_of(proc.pid)


def test_gpu_holdings_prefers_nvml_and_keeps_device_only_holders():
    """One holding per (pid, GPU): NVML's, with memory; a device-node holder adds the rest."""
    snapshot = GpuSnapshot(
        gpu_available=True,
        processes=(
            GpuProcess(
                pid=10, gpu_index=0, gpu_uuid="GPU-a", context=GpuContext.COMPUTE, used_memory=512
            ),
        ),
        holders=(
            DeviceHolder(pid=10, path="/dev/nvidia0", fds=(5,), minor=0),
            DeviceHolder(pid=11, path="/dev/nvidia1", fds=(7,), minor=1),
            DeviceHolder(pid=12, path="/dev/nvidiactl", fds=(3,)),
        ),
    )
    holdings = gpu_holdings(snapshot)
    assert set(holdings) == {(10, 0), (11, 1)}
    assert holdings[(10, 0)].source == "nvml"
    assert holdings[(10, 0)].gpu.used_memory == 512
    assert holdings[(11, 1)].source == "device-scan"
    assert holdings[(11, 1)].path == "/dev/nvidia1"
