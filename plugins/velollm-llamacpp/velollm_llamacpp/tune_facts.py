"""Facts about this machine and this llama-server build that the proposal reads: the CPUs and mlock
this process may use, the GPUs the build can drive and their free memory, the flags it accepts.

Heavy imports happen inside the functions: this module is imported whenever the plugin loads.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from velollm_core.api import HardwareReport

GIB = 2**30
# llama.cpp's --fit leaves 1 GiB free per GPU; the server's own CUDA/ROCm context takes ~0.5 GiB more.
GPU_MARGIN_BYTES = GIB + GIB // 2
GPU_MARGIN_SHARE = 0.05
RAM_MARGIN_BYTES = GIB
# Variables with which users hide GPUs from llama.cpp (a proposal then sizes for the CPU).
GPU_MASK_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 ``cpu.max``, else v1 ``cfs_quota_us``), None if unlimited."""
    try:
        parts = (root / "cpu.max").read_text().split()
        if not parts or parts[0] == "max":
            return None
        return int(parts[0]) / int(parts[1] if len(parts) > 1 else 100000)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def local_cpu_limit() -> int | None:
    """CPUs this process may really use here: its affinity mask and cgroup quota (None: no limit)."""
    import math

    from velollm_core.api import usable_cpus

    limits = []
    cpus = usable_cpus()
    if cpus is not None:
        limits.append(len(cpus))
    quota = cgroup_cpu_limit()
    if quota:
        limits.append(max(1, math.floor(quota)))
    return min(limits) if limits else None


def local_memlock_limit() -> int | None:
    """RLIMIT_MEMLOCK in bytes (None: unlimited or unknown)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


@functools.lru_cache(maxsize=4)
def build_devices(binary: str) -> tuple[str, ...] | None:
    """The GPU devices this llama-server build can use (``--list-devices``); None when it cannot say."""
    try:
        proc = subprocess.run([binary, "--list-devices"], capture_output=True, text=True, timeout=60,
                              errors="replace", check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout + proc.stderr).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("Available devices"))
    except StopIteration:
        return None
    devices = []
    for line in lines[start + 1:]:
        text = line.strip()
        if not text or not line.startswith((" ", "\t")):
            break
        if text != "(none)":
            devices.append(text)
    return tuple(devices)


@dataclass(frozen=True)
class GpuBudget:
    name: str
    usable_bytes: int
    total_bytes: int
    index: int = 0  # the GPU's place in the hardware report (its -mg number where CUDA numbers by bus)


def gpu_budgets(hardware: HardwareReport) -> list[GpuBudget]:
    """Per GPU: free memory (total when unknown) minus max(1.5 GiB, 5%)."""
    budgets = []
    for index, gpu in enumerate(hardware.gpus):
        if not gpu.memory_total_bytes:
            continue
        free = gpu.memory_free_bytes if gpu.memory_free_bytes is not None else gpu.memory_total_bytes
        margin = max(GPU_MARGIN_BYTES, int(GPU_MARGIN_SHARE * gpu.memory_total_bytes))
        budgets.append(GpuBudget(f"GPU{index} ({gpu.name})", max(0, free - margin), gpu.memory_total_bytes, index))
    return budgets


class ServerFlags:
    """Flag spellings this llama-server build accepts (the canonical ones when no build is found)."""

    def __init__(self, binary: Path | None) -> None:
        self.known: frozenset[str] | None = None
        if binary is not None:
            from velollm_core.api import VeloError
            from velollm_llamacpp.server import server_flags

            try:
                self.known = server_flags(binary)
            except VeloError:
                self.known = None

    def mlock(self) -> list[str]:
        if self.known is not None and "--mlock" not in self.known and "--load-mode" in self.known:
            return ["--load-mode", "mmap+mlock"]  # releases that folded --mlock/--no-mmap into one option
        return ["--mlock"]

    def no_mmap(self) -> list[str]:
        if self.known is not None and "--no-mmap" not in self.known and "--load-mode" in self.known:
            return ["--load-mode", "none"]
        return ["--no-mmap"]
