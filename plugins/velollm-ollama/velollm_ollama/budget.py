"""What memory an Ollama model can use on this machine, and the context that fits beside it.

Memory model (bytes), per the llama.cpp runner that Ollama drives:

* weights: the GGUF blob(s) (model + vision projector);
* KV cache and compute buffers: velollm-gguf's estimator (``velollm_gguf.estimate``, the one behind
  ``velollm estimate``) for context x parallel cells of the chosen cache type, with llama.cpp's
  padding and sliding-window layers, and the attention score matrix when flash attention is off;
* Ollama keeps 457 MiB per GPU (512 MiB on Metal) free, plus ``OLLAMA_GPU_OVERHEAD``;
* 10 % of what is left stays as a safety margin (allocator rounding, estimate error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from velollm_core.api import GpuInfo, HardwareReport
from velollm_ollama.modelfacts import GIB, MIB, ModelArchitecture

CUDA_MIN_MEMORY = 457 * MIB
METAL_MIN_MEMORY = 512 * MIB
SAFETY_FRACTION = 0.9
CONTEXT_LADDER = [2048 * 2**i for i in range(8)]  # 2k .. 256k
MAX_SEARCH_CONTEXT = 1 << 20
CPU_HEADROOM = 1 * GIB


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def apple_gpu_bytes(ram_bytes: int) -> int:
    """macOS lets the GPU wire about 2/3 of RAM up to 36 GiB, 3/4 above (recommendedMaxWorkingSetSize)."""
    return int(ram_bytes * (2 / 3 if ram_bytes <= 36 * GIB else 3 / 4))


def _compute_capability(gpu: GpuInfo) -> tuple[int, int] | None:
    try:
        major, _, minor = (gpu.compute_capability or "").partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return None


@dataclass
class MemoryBudget:
    """The memory a model can use: GPUs of one vendor, Apple's unified memory, or RAM."""

    kind: Literal["gpu", "apple", "cpu"]
    devices: list[int]
    names: list[str]
    reserve_per_device: int = 0
    gpus: list[GpuInfo] = field(default_factory=list)
    flash_attention_blocker: str | None = None
    ram_bytes: int = 0

    @property
    def label(self) -> str:
        if self.kind == "cpu":
            return "RAM"
        if self.kind == "apple":
            return f"{self.names[0]} GPU memory (unified)"
        if len(set(self.names)) == 1 and len(self.names) > 1:
            return f"{len(self.names)}x {self.names[0]}"
        return " + ".join(self.names)

    def room(self, overhead: int = 0, single_device: bool = False) -> int:
        """Bytes left for weights, KV cache and scratch, after Ollama's per-device reserve."""
        devices = [max(self.devices)] if single_device and self.devices else self.devices
        per_device = self.reserve_per_device + (overhead if self.kind != "cpu" else 0)
        return sum(max(0, d - per_device) for d in devices)


def memory_budget(hardware: HardwareReport, loaded_vram: int = 0, loaded_ram: int = 0) -> MemoryBudget:
    """What Ollama can place a model in; memory Ollama's own loaded models hold counts as free."""
    ram = hardware.memory.total_bytes
    apple = [g for g in hardware.gpus if g.vendor == "apple"]
    if apple:
        gpu = apple[0]
        usable = gpu.memory_total_bytes
        if not usable or usable >= ram:  # a total-RAM figure is not what the GPU may wire
            usable = apple_gpu_bytes(ram)
        return MemoryBudget("apple", [usable], [gpu.name], METAL_MIN_MEMORY, [gpu], ram_bytes=ram)
    discrete = [g for g in hardware.gpus
                if g.vendor in ("nvidia", "amd") and g.memory_total_bytes and not g.unified_memory]
    if discrete:
        # Ollama cannot split one model across CUDA and ROCm: size for the vendor with more memory.
        by_vendor: dict[str, list[GpuInfo]] = {}
        for gpu in discrete:
            by_vendor.setdefault(gpu.vendor, []).append(gpu)
        group = max(by_vendor.values(), key=lambda gs: sum(g.memory_total_bytes or 0 for g in gs))
        devices, reclaim = [], loaded_vram
        for gpu in group:
            total = gpu.memory_total_bytes or 0
            free = gpu.memory_free_bytes if gpu.memory_free_bytes is not None else total
            back = min(reclaim, total - free)
            reclaim -= back
            devices.append(free + back)
        blocker = None
        for gpu in group:
            cc = _compute_capability(gpu)
            if gpu.vendor == "nvidia" and cc is not None and (cc[0] < 6 or cc == (7, 2)):
                blocker = (f"{gpu.name} (compute capability {cc[0]}.{cc[1]}) has no flash-attention "
                           "kernels in Ollama")
        return MemoryBudget("gpu", devices, [g.name for g in group], CUDA_MIN_MEMORY, group, blocker,
                            ram_bytes=ram)
    usable = max(0, hardware.memory.available_bytes + loaded_ram - CPU_HEADROOM)
    return MemoryBudget("cpu", [usable], ["RAM"], ram_bytes=ram)


def context_capacity(
    budget: MemoryBudget,
    model: ModelArchitecture,
    *,
    kv_type: str,
    flash_attention: bool,
    parallel: int = 1,
    overhead: int = 0,
    single_device: bool = False,
) -> int | None:
    """Largest context (tokens per slot) that fits beside the model; 0 when the model alone does not fit.

    None when the model's layer/head counts or size are unknown. The footprint grows with the
    context but not linearly (padding, sliding-window layers), so the answer is a bisection.
    """
    if model.shape is None or model.weights_bytes is None:
        return None
    room = budget.room(overhead, single_device) * SAFETY_FRACTION

    def fits(context: int) -> bool:
        need = model.footprint_bytes(context, cache_type=kv_type, flash_attention=flash_attention,
                                     parallel=max(1, parallel))
        return need is not None and need <= room

    if not fits(1):
        return 0
    low, high = 1, MAX_SEARCH_CONTEXT
    if fits(high):
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def pick_context(capacity: int, trained: int | None, cap: int) -> int | None:
    """The largest ladder step (2k, 4k, ... 256k) within capacity, the trained context and ``cap``."""
    limit = min(capacity, cap, trained or math.inf)
    steps = [step for step in CONTEXT_LADDER if step <= limit]
    if steps:
        return steps[-1]
    if trained and trained < CONTEXT_LADDER[0] and capacity >= trained:
        return trained
    return None
