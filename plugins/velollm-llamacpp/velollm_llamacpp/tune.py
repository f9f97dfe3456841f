"""llama-server settings for this machine and model, each flag with its reason (``propose_config``),
and their verification by measurement (``verify_config``).

The rules, in the order they are decided:

- ``-c`` / ``-np``: a context per slot (8192, or the model's own if smaller) times the slots, instead of
  the model's full training context, which llama-server would otherwise reserve in KV cache.
- ``-ngl``: all layers (and the output head) when the memory estimate fits the GPUs' free memory minus
  a margin; else a q8_0 KV cache when that makes everything fit; else as many layers as fit.
- ``-sm``/``-ts``/``-mg`` over several GPUs: one GPU when the model fits it, else a layer split in
  proportion to each GPU's usable memory; the split candidates to measure in a note (``tune_split.py``).
- ``-b``/``-ub`` stay at llama.cpp's 2048/512: 2048-token micro-batches measured no faster on an
  H200 (8B Q4_0, 1.9k-token prompts: 0.99x, within noise) and cost compute-buffer memory.
- ``-t``: the physical cores this process may use (affinity, cgroup quota): SMT siblings share one
  core's vector units, and more threads than usable cores stall llama.cpp's barrier-synchronised pool.
- ``-fa on``: flash attention (what ``auto`` picks where the backend supports it; required by a
  quantized V cache).
- ``--mlock``, else ``--no-mmap``: when the weights on the CPU take more than half the available RAM,
  so the kernel cannot evict them between tokens.

The facts the rules read are in ``tune_facts.py``, the rules (one function each) in ``tune_rules.py``.

Heavy imports happen inside the functions: this module is imported whenever the plugin loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_llamacpp.tune_facts import (
    GPU_MARGIN_BYTES,
    GPU_MASK_VARS,
    RAM_MARGIN_BYTES,
    ServerFlags,
    build_devices,
    cgroup_cpu_limit,
    gpu_budgets,
    local_cpu_limit,
    local_memlock_limit,
)
from velollm_llamacpp.tune_rules import RULES, TunePlan, size_model, usable_budgets

if TYPE_CHECKING:
    from velollm_gguf import GgufSummary

    from velollm_core.api import ConfigProposal, HardwareReport

# Imported from here by the tests and the benchmark scripts.
__all__ = ["GPU_MARGIN_BYTES", "GPU_MASK_VARS", "build_devices", "cgroup_cpu_limit", "gpu_budgets",
           "local_cpu_limit", "propose_config", "propose_llamacpp", "verify_config"]

BACKEND = "llamacpp"
_Flags = ServerFlags  # the name the tests know it by


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
    from velollm_gguf import read_summary

    from velollm_core.api import ConfigProposal

    budgets, notes = usable_budgets(hardware, gpu_devices)
    plan = TunePlan(hardware, ServerFlags(binary), budgets, cpu_limit=cpu_limit, memlock_limit=memlock_limit,
                    load_average=load_average, notes=notes)
    command = [str(binary) if binary else "llama-server"]
    if model_path is not None:
        plan.sizing = size_model(summary or read_summary(model_path), parallel, ctx_per_slot, budgets)
        command += ["-m", str(model_path)]
    for rule in RULES:
        rule(plan)
    for change in plan.changes:
        command += change.args or []
    return ConfigProposal(runtime=BACKEND, changes=plan.changes, notes=plan.notes, command=command)


def _same_machine(hardware: HardwareReport) -> bool:
    """Whether the report describes the machine this process runs on (not one loaded from a file)."""
    return hardware.cpu.logical_cores in (None, os.cpu_count())


def propose_config(hardware, model, backend, concurrency=None):
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
        parallel=concurrency or 1,
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
    from velollm_gguf import estimate_memory

    values = {c.key: c.proposed for c in proposal.changes}
    cache_type = (values.get("-ctk/-ctv") or "f16").split()[0]
    ctx = int(values["-c"]) if values.get("-c") else None
    return estimate_memory(summary, ctx=ctx, parallel=int(values.get("-np") or 1), cache_type_k=cache_type).total_bytes


def servers_fit_together(proposal: ConfigProposal, model_path: Path, hardware: HardwareReport, count: int) -> bool:
    """Whether one server with the defaults and ``count - 1`` with the proposal fit in memory at once."""
    from velollm_gguf import estimate_memory, read_summary

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
