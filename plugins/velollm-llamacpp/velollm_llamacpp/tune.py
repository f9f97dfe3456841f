"""llama-server settings for this machine and model, each flag with its reason (``propose_config``),
and their verification by measurement (``verify_config``).

The rules, in the order they are decided:

- ``-c`` / ``-np``: a context per slot (8192, or the model's own if smaller) times the slots, instead of
  the model's full training context, which llama-server would otherwise reserve in KV cache.
- ``-ngl``: all layers (and the output head) when the memory estimate fits the GPUs' free memory minus
  a margin; else a q8_0 KV cache when that makes everything fit; else as many layers as fit.
- ``-b``/``-ub`` stay at llama.cpp's 2048/512: 2048-token micro-batches measured no faster on an
  H200 (8B Q4_0, 1.9k-token prompts: 0.99x, within noise) and cost compute-buffer memory.
- ``-t``: the physical cores this process may use (affinity, cgroup quota): SMT siblings share one
  core's vector units, and more threads than usable cores stall llama.cpp's barrier-synchronised pool.
- ``-fa on``: flash attention (what ``auto`` picks where the backend supports it; required by a
  quantized V cache).
- ``--mlock``, else ``--no-mmap``: when the weights on the CPU take more than half the available RAM,
  so the kernel cannot evict them between tokens.

Heavy imports happen inside the functions: this module is imported whenever the plugin loads.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_core.api import hookimpl

if TYPE_CHECKING:
    from velollm_core.api import ConfigChange, ConfigProposal, GgufSummary, HardwareReport, MemoryEstimate

BACKEND = "llamacpp"
GIB = 2**30
DEFAULT_CTX_PER_SLOT = 8192
# llama.cpp's --fit leaves 1 GiB free per GPU; the server's own CUDA/ROCm context takes ~0.5 GiB more.
GPU_MARGIN_BYTES = GIB + GIB // 2
GPU_MARGIN_SHARE = 0.05
RAM_MARGIN_BYTES = GIB
LLAMA_DEFAULT_UBATCH = 512
MEMORY_PRESSURE_SHARE = 0.5
# Variables with which users hide GPUs from llama.cpp (a proposal then sizes for the CPU).
GPU_MASK_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


# --- facts about this machine and this build -------------------------------------------------------


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


def gpu_budgets(hardware: HardwareReport) -> list[GpuBudget]:
    """Per GPU: free memory (total when unknown) minus max(1.5 GiB, 5%)."""
    budgets = []
    for index, gpu in enumerate(hardware.gpus):
        if not gpu.memory_total_bytes:
            continue
        free = gpu.memory_free_bytes if gpu.memory_free_bytes is not None else gpu.memory_total_bytes
        margin = max(GPU_MARGIN_BYTES, int(GPU_MARGIN_SHARE * gpu.memory_total_bytes))
        budgets.append(GpuBudget(f"GPU{index} ({gpu.name})", max(0, free - margin), gpu.memory_total_bytes))
    return budgets


# --- the proposal ---------------------------------------------------------------------------------


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
    from velollm_core.api import estimate_memory, model_shape

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


class _Flags:
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


def _change(key: str, args: list[str], current: str, reason: str, purpose: str, group: str | None = None):
    from velollm_core.api import ConfigChange

    proposed = " ".join(args[1:]) if len(args) > 1 else "on"
    return ConfigChange(key=key, current=current, proposed=proposed, reason=reason, kind="flag", args=args,
                        group=group, purpose=purpose)


def _thread_change(hardware: HardwareReport, cpu_limit: int | None, all_on_gpu: bool) -> ConfigChange:
    cpu = hardware.cpu
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
    if all_on_gpu:
        reason += " (with every layer on the GPU, threads only feed it)"
    return _change("-t", ["-t", str(threads)], f"auto = {physical}", reason, purpose)


def _memory_changes(offload: Offload, hardware: HardwareReport, flags: _Flags, memlock_limit: int | None,
                    all_on_gpu: bool) -> list[ConfigChange]:
    """--mlock (else --no-mmap) when the weights held in RAM would crowd the available memory."""
    available = hardware.memory.available_bytes or hardware.memory.total_bytes
    cpu_bytes = next((d.bytes for d in offload.estimate.devices if d.name == "CPU"), offload.estimate.total_bytes)
    if all_on_gpu or not available or cpu_bytes <= MEMORY_PRESSURE_SHARE * available:
        return []
    share = f"{_mib(cpu_bytes)} of weights and cache in RAM is {100 * cpu_bytes / available:.0f}% of the " \
            f"{_mib(available)} available"
    if memlock_limit is None or memlock_limit >= cpu_bytes:
        args = flags.mlock()
        return [_change(args[0], args, "off", f"{share}: locking keeps the kernel from evicting weights that every "
                        "token reads again (an evicted page is a disk read mid-token)", "capacity", "load")]
    args = flags.no_mmap()
    return [_change(args[0], args, "mmap", f"{share}, and RLIMIT_MEMLOCK ({_mib(memlock_limit)}) forbids --mlock: "
                    "loaded (not mapped) weights are never dropped and re-read from disk", "capacity", "load")]


def propose_llamacpp(
    hardware: HardwareReport,
    model_path: Path | None,
    *,
    parallel: int = 1,
    ctx_per_slot: int | None = None,
    binary: Path | None = None,
    gpu_devices: tuple[str, ...] | None = None,
    cpu_limit: int | None = None,
    memlock_limit: int | None = None,
    summary: GgufSummary | None = None,
    load_average: float | None = None,
) -> ConfigProposal:
    """The llama-server command for ``model_path`` on ``hardware``, each flag with its reason.

    ``gpu_devices``: what the build can use (``--list-devices``; None = unknown, assume it matches the
    hardware). ``cpu_limit`` / ``memlock_limit``: this process's CPU and mlock limits (None = none).
    ``summary``: the model's GGUF summary when already read (else read from ``model_path``).
    ``load_average``: this machine's 1-minute load now, to warn when other work competes for the cores.
    """
    from velollm_core.api import ConfigProposal

    flags = _Flags(binary)
    notes: list[str] = []
    changes: list[ConfigChange] = []
    budgets = gpu_budgets(hardware)
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
    command = [str(binary) if binary else "llama-server"]
    all_on_gpu = False
    if model_path is None:
        notes.append("no --model given: -ngl, -c and the KV cache are sized per model; pass --model for them")
    else:
        from velollm_core.api import estimate_memory, model_shape, read_summary

        summary = summary or read_summary(model_path)
        shape = model_shape(summary)
        per_slot = min(ctx_per_slot or DEFAULT_CTX_PER_SLOT, shape.n_ctx_train)
        ctx = per_slot * parallel
        command += ["-m", str(model_path)]
        offload = (plan_offload(summary, ctx, parallel, budgets) if budgets
                   else Offload(0, "f16", estimate_memory(summary, ctx=ctx, parallel=parallel, n_gpu_layers=0)))
        default_kv = estimate_memory(summary, parallel=4, unified=True).kv_cache_bytes
        changes.append(_change(
            "-c", ["-c", str(ctx)], f"0 = the model's {shape.n_ctx_train}",
            f"{per_slot} tokens per slot x {parallel} slot(s): {_mib(offload.estimate.kv_cache_bytes)} of KV cache "
            f"instead of {_mib(default_kv)} for the full trained context (raise it for longer prompts)",
            "capacity"))
        changes.append(_change(
            "-np", ["-np", str(parallel)], "auto = 4 slots sharing one KV cache",
            f"{parallel} concurrent request(s) (a single local user unless you say more); each slot gets "
            f"{per_slot} tokens of context", "capacity"))
        n_full = shape.n_layer + 1
        all_on_gpu = bool(budgets) and offload.n_gpu_layers == n_full
        if budgets:
            gpu_bytes = sum(d.bytes for d in offload.estimate.devices if d.name != "CPU")
            usable = sum(b.usable_bytes for b in budgets)
            if all_on_gpu:
                reason = (f"all {shape.n_layer} layers and the output head fit: {_mib(gpu_bytes)} needed, "
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
            changes.append(_change("-ngl", ["-ngl", str(offload.n_gpu_layers)], "auto (fit to free memory)",
                                   reason, purpose))
        if offload.cache_type != "f16":
            changes.append(_change(
                "-ctk/-ctv", ["-ctk", offload.cache_type, "-ctv", offload.cache_type], "f16",
                f"a {offload.cache_type} KV cache ({_mib(offload.estimate.kv_cache_bytes)}) is what lets every "
                "layer fit on the GPU; a partial offload would cost far more speed than the cache's dequantization",
                "capacity", "kv-type"))
        changes.extend(_memory_changes(offload, hardware, flags, memlock_limit, all_on_gpu))
        cpu_share = next((d.bytes for d in offload.estimate.devices if d.name == "CPU"), 0)
        available = hardware.memory.available_bytes
        if available and cpu_share > available - RAM_MARGIN_BYTES:
            notes.append(f"the CPU share ({_mib(cpu_share)}) exceeds the available RAM ({_mib(available)}): expect "
                         "swapping; use a smaller quantization or a shorter context")
        notes.extend(offload.estimate.notes)
    fa_reason = ("flash attention: no KQ matrix per layer in the compute buffer, and required by a quantized V "
                 "cache; 'auto' already picks it where the backend supports it")
    fa_purpose = "capacity" if any(c.group == "kv-type" for c in changes) else "explicit"
    changes.append(_change("-fa", ["-fa", "on"], "auto", fa_reason, fa_purpose))
    threads = _thread_change(hardware, cpu_limit, all_on_gpu)
    changes.append(threads)
    # Other work first fills the CPUs our threads leave free; only the rest competes with them.
    n_threads = int(threads.args[1])
    n_cpus = hardware.cpu.logical_cores or os.cpu_count() or n_threads
    excess = None if load_average is None else load_average - max(n_cpus - n_threads, 0)
    if excess is not None and excess >= 1.0 and not all_on_gpu:
        busy = min(int(excess), n_threads - 1)
        # Measured on a shared 2-core VM: -t 2 fell from 48 to under 2 tok/s while another process
        # kept one core busy (-t 1 held 28): every token passes hundreds of thread-pool barriers.
        notes.append(f"this machine is busy now (load {load_average:.1f}): llama.cpp's threads wait for each "
                     "other at every step, so one descheduled thread stalls them all; if other work keeps "
                     f"running here, -t {n_threads - busy} is faster than -t {n_threads}"
                     if busy > 0 else f"this machine is busy now (load {load_average:.1f})")
    for change in changes:
        command += change.args or []
    return ConfigProposal(runtime=BACKEND, changes=changes, notes=notes, command=command)


def _same_machine(hardware: HardwareReport) -> bool:
    """Whether the report describes the machine this process runs on (not one loaded from a file)."""
    return hardware.cpu.logical_cores in (None, os.cpu_count())


@hookimpl
def propose_config(hardware, model, backend):
    if backend not in (None, BACKEND):
        return []
    from velollm_core.api import UserInputError, resolve_model_path
    from velollm_llamacpp.install import find_programs

    notes: list[str] = []
    path = None
    if model:
        try:
            path = resolve_model_path(model)
        except UserInputError as exc:
            if backend == BACKEND:
                raise
            notes.append(f"model not sized for llama.cpp: {exc}")
    binary = find_programs().get("llama-server")
    local = _same_machine(hardware)
    proposal = propose_llamacpp(
        hardware,
        path,
        binary=binary,
        gpu_devices=build_devices(str(binary)) if binary else None,
        cpu_limit=local_cpu_limit() if local else None,
        memlock_limit=local_memlock_limit() if local else None,
        load_average=os.getloadavg()[0] if local and hasattr(os, "getloadavg") else None,
    )
    proposal.notes[:0] = notes
    return [proposal]


def benchmark_options(args: list[str]) -> dict[str, Any]:
    """Benchmark options that start llama-server with exactly ``args`` (and its defaults otherwise)."""
    import shlex

    # ctx_size=None: no --ctx-size of the benchmark's own, so "defaults" are llama-server's defaults.
    return {"ctx_size": None, "server_args": shlex.join(args)} if args else {"ctx_size": None}


def _proposal_memory(proposal: ConfigProposal, summary: GgufSummary) -> int:
    """Total bytes of a llama-server started with the proposal's -c, -np and KV cache type."""
    from velollm_core.api import estimate_memory

    values = {c.key: c.proposed for c in proposal.changes}
    cache_type = (values.get("-ctk/-ctv") or "f16").split()[0]
    ctx = int(values["-c"]) if values.get("-c") else None
    return estimate_memory(summary, ctx=ctx, parallel=int(values.get("-np") or 1), cache_type_k=cache_type).total_bytes


def servers_fit_together(proposal: ConfigProposal, model_path: Path, hardware: HardwareReport, count: int) -> bool:
    """Whether one server with the defaults and ``count - 1`` with the proposal fit in memory at once."""
    from velollm_core.api import estimate_memory, read_summary

    summary = read_summary(model_path)
    default = estimate_memory(summary, parallel=4, unified=True).total_bytes
    tuned = _proposal_memory(proposal, summary)
    budgets = gpu_budgets(hardware)
    if budgets and any(c.key == "-ngl" and c.proposed != "0" for c in proposal.changes):
        return default + (count - 1) * tuned <= sum(b.usable_bytes for b in budgets)
    # On the CPU the servers share the mapped weights through the page cache: only the rest adds up.
    weights = summary.weights_bytes
    available = hardware.memory.available_bytes or hardware.memory.total_bytes
    return weights + (default - weights) + (count - 1) * (tuned - weights) <= available - RAM_MARGIN_BYTES


def verify_config(proposal, model, hardware, progress):
    if proposal.runtime != BACKEND:
        return None
    from velollm_core.api import UserInputError, resolve_model_path, verify_proposal

    if not model:
        raise UserInputError("--verify benchmarks a model: pass --model")
    path = resolve_model_path(model)
    speed_groups = {c.group or c.key for c in proposal.changes if c.purpose == "speed"}
    keep_alive = servers_fit_together(proposal, path, hardware, 2 + len(speed_groups))
    return verify_proposal(proposal, str(path), hardware, benchmark_options, keep_alive=keep_alive,
                           progress=progress)
