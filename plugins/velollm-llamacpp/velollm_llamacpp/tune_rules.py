"""The llama-server proposal's rules, one function of a ``TunePlan`` each, run in ``RULES`` order
(what each decides and why is in ``tune.py``'s docstring).

Heavy imports happen inside the functions: this module is imported whenever the plugin loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from velollm_llamacpp.tune_facts import GPU_MASK_VARS, RAM_MARGIN_BYTES, gpu_budgets
from velollm_llamacpp.tune_split import rule_split

if TYPE_CHECKING:
    from velollm_gguf import GgufSummary, MemoryEstimate

    from velollm_core.api import ConfigChange, HardwareReport
    from velollm_llamacpp.tune_facts import GpuBudget, ServerFlags

DEFAULT_CTX_PER_SLOT = 8192
LLAMA_DEFAULT_UBATCH = 512
MEMORY_PRESSURE_SHARE = 0.5


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


@dataclass
class Offload:
    n_gpu_layers: int
    cache_type: str
    estimate: MemoryEstimate


def _fits(estimate: MemoryEstimate, budgets: list[GpuBudget]) -> bool:
    usable = {b.name: b.usable_bytes for b in budgets}
    return all(d.bytes <= usable[d.name] for d in estimate.devices if d.name in usable)


def plan_offload(summary: GgufSummary, ctx: int, parallel: int, budgets: list[GpuBudget]) -> Offload:
    """How much of the model goes to the GPUs: everything if it fits (with an f16, else a q8_0 KV
    cache), else the most layers that fit with an f16 cache."""
    from velollm_gguf import estimate_memory, model_shape

    n_full = model_shape(summary).n_layer + 1
    names = tuple(b.name for b in budgets)
    split = tuple(float(max(b.usable_bytes, 1)) for b in budgets)

    def estimate(n_gpu_layers: int, cache_type: str) -> MemoryEstimate:
        return estimate_memory(summary, ctx=ctx, cache_type_k=cache_type, parallel=parallel,
                               n_ubatch=LLAMA_DEFAULT_UBATCH, n_gpu_layers=n_gpu_layers, gpu_names=names,
                               gpu_split=split)

    for cache_type in ("f16", "q8_0"):
        full = estimate(n_full, cache_type)
        if _fits(full, budgets):
            return Offload(n_full, cache_type, full)
    for n_gpu_layers in range(n_full - 1, 0, -1):
        partial = estimate(n_gpu_layers, "f16")
        if _fits(partial, budgets):
            return Offload(n_gpu_layers, "f16", partial)
    return Offload(0, "f16", estimate(0, "f16"))


def usable_budgets(hardware: HardwareReport, gpu_devices: tuple[str, ...] | None) -> tuple[list[GpuBudget], list[str]]:
    """The GPU budgets this build can use, and a note when it cannot use the GPUs detected (or may not)."""
    budgets = gpu_budgets(hardware)
    notes: list[str] = []
    if budgets and gpu_devices is not None and not gpu_devices:
        hidden = [f"{var}={os.environ[var]!r}" for var in GPU_MASK_VARS if var in os.environ]
        if hidden:
            notes.append(f"{', '.join(hidden)} hides the GPUs from llama.cpp: the proposal is for the CPU alone")
        else:
            notes.append("this llama-server build has no GPU backend, so the GPU goes unused: install a GPU build "
                         "(`velollm llamacpp install --cuda`) and ask again")
        budgets = []
    elif budgets and gpu_devices is None:
        notes.append("llama-server not found: assuming a build with GPU support for the GPUs detected")
    return budgets, notes


@dataclass
class Sizing:
    """The target model placed on this machine: the context per slot, the slots, the offload."""

    summary: GgufSummary
    n_layer: int
    n_ctx_train: int
    per_slot: int
    parallel: int
    offload: Offload

    @property
    def ctx(self) -> int:
        return self.per_slot * self.parallel


def size_model(summary: GgufSummary, parallel: int, ctx_per_slot: int | None, budgets: list[GpuBudget]) -> Sizing:
    """The model's context (a slot's default, or its own if smaller, times the slots) and its offload."""
    from velollm_gguf import estimate_memory, model_shape

    shape = model_shape(summary)
    per_slot = min(ctx_per_slot or DEFAULT_CTX_PER_SLOT, shape.n_ctx_train)
    ctx = per_slot * parallel
    offload = (plan_offload(summary, ctx, parallel, budgets) if budgets
               else Offload(0, "f16", estimate_memory(summary, ctx=ctx, parallel=parallel, n_gpu_layers=0)))
    return Sizing(summary, shape.n_layer, shape.n_ctx_train, per_slot, parallel, offload)


@dataclass
class TunePlan:
    """The proposal being built: the facts the rules read, and the changes and notes they add, in order."""

    hardware: HardwareReport
    flags: ServerFlags
    budgets: list[GpuBudget]
    sizing: Sizing | None = None
    cpu_limit: int | None = None
    memlock_limit: int | None = None
    load_average: float | None = None
    changes: list[ConfigChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def all_on_gpu(self) -> bool:
        sizing = self.sizing
        return sizing is not None and bool(self.budgets) and sizing.offload.n_gpu_layers == sizing.n_layer + 1

    def cpu_bytes(self, default: int) -> int:
        """Bytes the estimate puts in system RAM (``default`` when it names no CPU device)."""
        estimate = self.sizing.offload.estimate
        return next((d.bytes for d in estimate.devices if d.name == "CPU"), default)


def _change(key: str, args: list[str], current: str, reason: str, purpose: str, group: str | None = None):
    from velollm_core.api import ConfigChange

    proposed = " ".join(args[1:]) if len(args) > 1 else "on"
    return ConfigChange(key=key, current=current, proposed=proposed, reason=reason, kind="flag", args=args,
                        group=group, purpose=purpose)


# --- the rules, in RULES order --------------------------------------------------------------------


def note_no_model(plan: TunePlan) -> None:
    """Without a model, say which flags are left to it."""
    if plan.sizing is None:
        plan.notes.append("no --model given: -ngl, -c and the KV cache are sized per model; pass --model for them")


def rule_context(plan: TunePlan) -> None:
    """-c: the context per slot times the slots, not the full trained context llama-server would reserve."""
    sizing = plan.sizing
    if sizing is None:
        return
    from velollm_gguf import estimate_memory

    default_kv = estimate_memory(sizing.summary, parallel=4, unified=True).kv_cache_bytes
    plan.changes.append(_change(
        "-c", ["-c", str(sizing.ctx)], f"0 = the model's {sizing.n_ctx_train}",
        f"{sizing.per_slot} tokens per slot x {sizing.parallel} slot(s): "
        f"{_mib(sizing.offload.estimate.kv_cache_bytes)} of KV cache "
        f"instead of {_mib(default_kv)} for the full trained context (raise it for longer prompts)",
        "capacity"))


def rule_slots(plan: TunePlan) -> None:
    """-np: the concurrent requests asked for, each with its own slot of the context."""
    sizing = plan.sizing
    if sizing is None:
        return
    plan.changes.append(_change(
        "-np", ["-np", str(sizing.parallel)], "auto = 4 slots sharing one KV cache",
        f"{sizing.parallel} concurrent request(s) (a single local user unless you say more); each slot gets "
        f"{sizing.per_slot} tokens of context", "capacity"))


def rule_gpu_layers(plan: TunePlan) -> None:
    """-ngl: every layer and the output head when they fit the GPUs' budget, else as many as fit."""
    sizing = plan.sizing
    if sizing is None or not plan.budgets:
        return
    offload = sizing.offload
    n_full = sizing.n_layer + 1
    gpu_bytes = sum(d.bytes for d in offload.estimate.devices if d.name != "CPU")
    usable = sum(b.usable_bytes for b in plan.budgets)
    if plan.all_on_gpu:
        reason = (f"all {sizing.n_layer} layers and the output head fit: {_mib(gpu_bytes)} needed, "
                  f"{_mib(usable)} usable after the margin; nothing is read from system RAM per token")
        # llama.cpp's own --fit reaches the same when the context is set: written out, not measured.
        purpose = "explicit"
    elif offload.n_gpu_layers:
        reason = (f"{offload.n_gpu_layers} of {n_full} layers fit in {_mib(usable)} usable VRAM "
                  f"({_mib(gpu_bytes)} with them); the rest run on the CPU at RAM speed")
        purpose = "speed"
    else:
        reason = "not even one layer fits in the free VRAM: everything runs on the CPU"
        purpose = "speed"
    plan.changes.append(_change("-ngl", ["-ngl", str(offload.n_gpu_layers)], "auto (fit to free memory)",
                                reason, purpose))


def rule_kv_cache_type(plan: TunePlan) -> None:
    """-ctk/-ctv: a q8_0 KV cache when that, and only that, lets every layer fit on the GPU."""
    if plan.sizing is None or plan.sizing.offload.cache_type == "f16":
        return
    offload = plan.sizing.offload
    plan.changes.append(_change(
        "-ctk/-ctv", ["-ctk", offload.cache_type, "-ctv", offload.cache_type], "f16",
        f"a {offload.cache_type} KV cache ({_mib(offload.estimate.kv_cache_bytes)}) is what lets every "
        "layer fit on the GPU; a partial offload would cost far more speed than the cache's dequantization",
        "capacity", "kv-type"))


def rule_memory_lock(plan: TunePlan) -> None:
    """--mlock (else --no-mmap) when the weights held in RAM would crowd the available memory."""
    if plan.sizing is None:
        return
    memory = plan.hardware.memory
    available = memory.available_bytes or memory.total_bytes
    cpu_bytes = plan.cpu_bytes(plan.sizing.offload.estimate.total_bytes)
    if plan.all_on_gpu or not available or cpu_bytes <= MEMORY_PRESSURE_SHARE * available:
        return
    share = f"{_mib(cpu_bytes)} of weights and cache in RAM is {100 * cpu_bytes / available:.0f}% of the " \
            f"{_mib(available)} available"
    memlock_limit = plan.memlock_limit
    if memlock_limit is None or memlock_limit >= cpu_bytes:
        args = plan.flags.mlock()
        plan.changes.append(_change(
            args[0], args, "off", f"{share}: locking keeps the kernel from evicting weights that every "
            "token reads again (an evicted page is a disk read mid-token)", "capacity", "load"))
        return
    args = plan.flags.no_mmap()
    plan.changes.append(_change(
        args[0], args, "mmap", f"{share}, and RLIMIT_MEMLOCK ({_mib(memlock_limit)}) forbids --mlock: "
        "loaded (not mapped) weights are never dropped and re-read from disk", "capacity", "load"))


def note_ram_shortage(plan: TunePlan) -> None:
    """Warn when the model's share in RAM exceeds the RAM available (less a margin)."""
    if plan.sizing is None:
        return
    cpu_share = plan.cpu_bytes(0)
    available = plan.hardware.memory.available_bytes
    if available and cpu_share > available - RAM_MARGIN_BYTES:
        plan.notes.append(f"the CPU share ({_mib(cpu_share)}) exceeds the available RAM ({_mib(available)}): "
                          "expect swapping; use a smaller quantization or a shorter context")


def note_estimate(plan: TunePlan) -> None:
    """Pass on what the memory estimate itself says about its figures."""
    if plan.sizing is not None:
        plan.notes.extend(plan.sizing.offload.estimate.notes)


def rule_flash_attention(plan: TunePlan) -> None:
    """-fa on: what 'auto' picks where supported, needed for capacity when the V cache is quantized."""
    fa_reason = ("flash attention: no KQ matrix per layer in the compute buffer, and required by a quantized V "
                 "cache; 'auto' already picks it where the backend supports it")
    fa_purpose = "capacity" if any(c.group == "kv-type" for c in plan.changes) else "explicit"
    plan.changes.append(_change("-fa", ["-fa", "on"], "auto", fa_reason, fa_purpose))


def rule_threads(plan: TunePlan) -> None:
    """-t: the physical cores, or fewer when affinity or the cgroup quota allow fewer CPUs."""
    cpu = plan.hardware.cpu
    cpu_limit = plan.cpu_limit
    physical = cpu.physical_cores or cpu.logical_cores or os.cpu_count() or 1
    threads = min(physical, cpu_limit) if cpu_limit else physical
    smt = (f"{cpu.logical_cores} logical CPUs are {physical} cores: SMT siblings share a core's vector "
           "units, so more threads add contention, not speed"
           if cpu.logical_cores and cpu.logical_cores > physical else f"{physical} physical cores")
    if threads < physical:
        reason = (f"this process may use only {threads} CPU(s) (affinity / cgroup quota) but llama.cpp counts "
                  f"all {physical} cores: more threads than CPUs stall its barrier-synchronised thread pool")
        purpose = "speed"
    else:
        reason = f"{smt}; llama.cpp's auto-detection picks the same here, written out so the command is portable"
        purpose = "explicit"
    if plan.all_on_gpu:
        reason += " (with every layer on the GPU, threads only feed it)"
    plan.changes.append(_change("-t", ["-t", str(threads)], f"auto = {physical}", reason, purpose))


def note_busy_machine(plan: TunePlan) -> None:
    """Warn when other work competes for the cores the threads run on (not when the GPU does the work)."""
    load_average = plan.load_average
    n_threads = int(next(c for c in plan.changes if c.key == "-t").args[1])
    # Other work first fills the CPUs our threads leave free; only the rest competes with them.
    n_cpus = plan.hardware.cpu.logical_cores or os.cpu_count() or n_threads
    excess = None if load_average is None else load_average - max(n_cpus - n_threads, 0)
    if excess is not None and excess >= 1.0 and not plan.all_on_gpu:
        busy = min(int(excess), n_threads - 1)
        # Measured on a shared 2-core VM: -t 2 fell from 48 to under 2 tok/s while another process
        # kept one core busy (-t 1 held 28): every token passes hundreds of thread-pool barriers.
        plan.notes.append(f"this machine is busy now (load {load_average:.1f}): llama.cpp's threads wait for each "
                          "other at every step, so one descheduled thread stalls them all; if other work keeps "
                          f"running here, -t {n_threads - busy} is faster than -t {n_threads}"
                          if busy > 0 else f"this machine is busy now (load {load_average:.1f})")


RULES = (
    note_no_model,
    rule_context,
    rule_slots,
    rule_gpu_layers,
    rule_kv_cache_type,
    rule_split,
    rule_memory_lock,
    note_ram_shortage,
    note_estimate,
    rule_flash_attention,
    rule_threads,
    note_busy_machine,
)
