"""Ollama configuration rules: hardware + target model + current settings -> a proposal with reasons.

Every rule is a function of a ``Plan`` (listed in this plugin's README.md and unit-tested one by
one). Only variables that Ollama's envconfig really reads are ever proposed.

Memory model (bytes), per the llama.cpp runner that Ollama drives:

* weights: the GGUF blob(s) (model + vision projector);
* KV cache and compute buffers: the core's estimator (``velollm_core.tune.estimate``, the one behind
  ``velollm estimate``) for context x parallel cells of the chosen cache type, with llama.cpp's
  padding and sliding-window layers, and the attention score matrix when flash attention is off;
* Ollama keeps 457 MiB per GPU (512 MiB on Metal) free, plus ``OLLAMA_GPU_OVERHEAD``;
* 10 % of what is left stays as a safety margin (allocator rounding, estimate error).
"""

from __future__ import annotations

import math
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from velollm_core.api import (
    BackendError,
    ConfigChange,
    ConfigProposal,
    GpuInfo,
    HardwareReport,
    UserInputError,
    VeloError,
)
from velollm_ollama.client import OllamaClient, default_base_url, is_loopback_url
from velollm_ollama.config import (
    SERVICE_UNIT,
    OllamaConfig,
    clean,
    parse_bool,
    parse_keep_alive,
    parse_uint,
    read_ollama_config,
)
from velollm_ollama.modelfacts import GIB, MIB, ModelArchitecture
from velollm_ollama.store import ModelName, ModelStore

RUNTIME = "ollama"
CUDA_MIN_MEMORY = 457 * MIB
METAL_MIN_MEMORY = 512 * MIB
SAFETY_FRACTION = 0.9
CONTEXT_LADDER = [2048 * 2**i for i in range(8)]  # 2k .. 256k
MAX_GPU_CONTEXT = 32768
# On CPU, prompt processing runs at tens to hundreds of tokens/s: a longer default is rarely usable.
MAX_CPU_CONTEXT = 8192
MIN_USEFUL_CONTEXT = 8192
MAX_SEARCH_CONTEXT = 1 << 20
SHARED_GPU_THRESHOLD = 1 * GIB
PROPOSED_GPU_OVERHEAD = 512 * MIB
GPU_KEEP_ALIVE = ("30m", 1800.0)
DEFAULT_KEEP_ALIVE_S = 300.0
CPU_HEADROOM = 1 * GIB
KV_TYPES = ("f16", "q8_0", "q4_0")


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


@dataclass
class OptimizerInputs:
    """Everything the rules read; gathered by ``collect_inputs`` or built by tests."""

    hardware: HardwareReport
    current: OllamaConfig
    model: ModelArchitecture | None = None
    loaded_vram_bytes: int = 0
    loaded_ram_bytes: int = 0
    version: str | None = None
    platform: str = sys.platform
    notes: list[str] = field(default_factory=list)


class Plan:
    """The proposal being built: rules read decided values of earlier rules through it."""

    def __init__(self, inputs: OptimizerInputs) -> None:
        self.inputs = inputs
        self.model = inputs.model
        self.budget = memory_budget(inputs.hardware, inputs.loaded_vram_bytes, inputs.loaded_ram_bytes)
        self.changes: list[ConfigChange] = []
        self.notes: list[str] = []
        self.decided: dict[str, str | None] = {}

    def current(self, key: str) -> str | None:
        return self.inputs.current.value(key)

    def value(self, key: str) -> str | None:
        """The value after the rules so far: proposed if a rule changed it, else current."""
        return self.decided[key] if key in self.decided else self.current(key)

    def propose(self, key: str, proposed: str | None, reason: str) -> ConfigChange | None:
        """Record a change unless the current value already is ``proposed``."""
        self.decided[key] = proposed
        if self.current(key) == proposed:
            return None
        setting = self.inputs.current.settings.get(key)
        change = ConfigChange(key=key, current=setting.value if setting else None, proposed=proposed,
                              reason=reason)
        self.changes.append(change)
        return change

    # decided values, as Ollama will read them

    @property
    def overhead(self) -> int:
        return parse_uint(self.value("OLLAMA_GPU_OVERHEAD")) or 0

    @property
    def flash_attention(self) -> bool:
        return parse_bool(self.value("OLLAMA_FLASH_ATTENTION")) is True

    @property
    def model_flash_attention(self) -> bool:
        """Whether flash attention is really used for the target model."""
        return self.flash_attention and (self.model is None or self.model.supports_flash_attention())

    @property
    def kv_type(self) -> str:
        """The KV cache type the target model gets: quantized types only work with flash attention."""
        wanted = (self.value("OLLAMA_KV_CACHE_TYPE") or "f16").lower()
        return wanted if wanted in KV_TYPES and self.model_flash_attention else "f16"

    @property
    def parallel(self) -> int:
        return max(1, parse_uint(self.value("OLLAMA_NUM_PARALLEL")) or 1)

    @property
    def context(self) -> int | None:
        return parse_uint(self.value("OLLAMA_CONTEXT_LENGTH"))

    def capacity(self, parallel: int | None = None, single_device: bool = False,
                 kv_type: str | None = None) -> int | None:
        if self.model is None:
            return None
        return context_capacity(
            self.budget, self.model, kv_type=kv_type or self.kv_type,
            flash_attention=self.model_flash_attention, parallel=parallel or self.parallel,
            overhead=self.overhead, single_device=single_device,
        )

    @property
    def context_cap(self) -> int:
        return MAX_CPU_CONTEXT if self.budget.kind == "cpu" else MAX_GPU_CONTEXT

    def footprint(self, context: int | None) -> int | None:
        """Weights + KV cache + compute buffers of the target model at ``context``, in bytes."""
        if self.model is None:
            return None
        return self.model.footprint_bytes(context or 4096, cache_type=self.kv_type,
                                          flash_attention=self.model_flash_attention, parallel=self.parallel)

    @property
    def memory_word(self) -> str:
        return {"gpu": "VRAM", "apple": "unified memory", "cpu": "RAM"}[self.budget.kind]


# --- rules ----------------------------------------------------------------------------------------


def rule_gpu_overhead(plan: Plan) -> None:
    """Discrete GPUs that other programs already use get 512 MiB kept free (OLLAMA_GPU_OVERHEAD)."""
    if plan.budget.kind != "gpu":
        return
    loaded = plan.inputs.loaded_vram_bytes
    busiest, busiest_name = 0, ""
    for gpu in plan.budget.gpus:
        if gpu.memory_free_bytes is None or not gpu.memory_total_bytes:
            continue
        used = gpu.memory_total_bytes - gpu.memory_free_bytes
        others = used - min(loaded, used)
        loaded -= min(loaded, used)
        if others > busiest:
            busiest, busiest_name = others, gpu.name
    if busiest < SHARED_GPU_THRESHOLD:
        return
    if (parse_uint(plan.current("OLLAMA_GPU_OVERHEAD")) or 0) >= PROPOSED_GPU_OVERHEAD:
        return
    plan.propose(
        "OLLAMA_GPU_OVERHEAD",
        str(PROPOSED_GPU_OVERHEAD),
        f"other programs already use {gib(busiest)} of {busiest_name} (a desktop or another app); when "
        "they grow after Ollama has placed a model, its runner runs out of memory: keep 512 MiB free",
    )


def rule_flash_attention(plan: Plan) -> None:
    """On whenever every GPU (or the CPU) supports it; off where a GPU has no kernels for it."""
    current = parse_bool(plan.current("OLLAMA_FLASH_ATTENTION"))
    blocker = plan.budget.flash_attention_blocker
    if blocker:
        if current:
            plan.propose("OLLAMA_FLASH_ATTENTION", None, f"{blocker}: forcing it on fails or falls back")
        plan.notes.append(f"flash attention stays off: {blocker}")
        return
    if plan.budget.kind == "cpu":
        reason = ("on CPU too it avoids the per-batch attention score matrix, and it is what lets the KV "
                  "cache be quantized, which halves the RAM the context takes")
    else:
        reason = ("computes attention without the full score matrix: less memory at long contexts, often "
                  "faster, and it is what lets the KV cache be quantized (Ollama enables it on its own "
                  "only for some model families)")
    if current is not True:
        plan.propose("OLLAMA_FLASH_ATTENTION", "1", reason)
    if plan.model is not None and not plan.model.supports_flash_attention():
        plan.notes.append(f"{plan.model.name} does not support flash attention: Ollama keeps it off for "
                          "this model, and its KV cache stays f16")


def rule_kv_cache_type(plan: Plan) -> ConfigChange | None:
    """q8_0 with flash attention (q4_0 kept if chosen); a quantized type without it is removed."""
    raw = plan.current("OLLAMA_KV_CACHE_TYPE")
    current = raw.lower() if raw else None
    if plan.flash_attention:
        if current == "q4_0":
            plan.notes.append("OLLAMA_KV_CACHE_TYPE=q4_0 kept: it quarters the KV cache but costs some "
                              "quality; q8_0 halves it with negligible loss")
            return None
        reason = ("a q8_0 KV cache takes about half the memory of f16 with negligible quality loss; it needs "
                  "flash attention, which is on")
        if current not in (None, *KV_TYPES):
            reason = f"Ollama does not know the cache type {raw!r} and uses f16; " + reason
        return plan.propose("OLLAMA_KV_CACHE_TYPE", "q8_0", reason)
    if current in ("q8_0", "q4_0"):
        return plan.propose("OLLAMA_KV_CACHE_TYPE", None,
                            "Ollama quantizes the KV cache only with flash attention, which stays off here: "
                            "this setting has no effect")
    if current is not None and current not in KV_TYPES:
        return plan.propose("OLLAMA_KV_CACHE_TYPE", None, f"Ollama does not know the cache type {raw!r}")
    return None


def explain_kv_saving(plan: Plan, change: ConfigChange | None) -> None:
    """Add what q8_0 saves for the target model at the decided context to the KV change's reason."""
    model = plan.model
    if change is None or change.proposed != "q8_0" or model is None or not plan.model_flash_attention:
        return
    context = plan.context or 4096
    f16 = model.kv_cache_bytes(context, "f16", plan.parallel)
    q8 = model.kv_cache_bytes(context, "q8_0", plan.parallel)
    if f16 is None or q8 is None:
        return
    slots = f" x {plan.parallel} slots" if plan.parallel > 1 else ""
    change.reason += (f": for {model.name} at {context:,} tokens{slots}, {gib(f16)} -> {gib(q8)} "
                      f"(saves {gib(f16 - q8)})")


def rule_num_parallel(plan: Plan) -> None:
    """One slot on CPU, or when parallel slots leave each request too little context."""
    parallel = plan.parallel
    if parallel <= 1:
        return
    if plan.budget.kind == "cpu":
        plan.propose("OLLAMA_NUM_PARALLEL", "1",
                     "on CPU, parallel requests share the same cores and memory bandwidth, so each one "
                     "gets slower, and every slot holds its own KV cache (memory scales with parallel x "
                     "context)")
        return
    shared = plan.capacity(parallel=parallel)
    single = plan.capacity(parallel=1)
    if shared is None or single is None or shared >= MIN_USEFUL_CONTEXT or single <= shared:
        return
    plan.propose("OLLAMA_NUM_PARALLEL", "1",
                 f"memory scales with parallel x context: {parallel} slots leave room for only {shared:,} "
                 f"tokens each beside {plan.model.name}; one slot gets {single:,}")


def rule_context_length(plan: Plan) -> None:
    """The largest context (ladder step, <= trained, <= 32k GPU / 8k CPU) that fits beside the model."""
    model = plan.model
    if model is None:
        plan.notes.append("no model to size for: pass --model NAME to set OLLAMA_CONTEXT_LENGTH")
        return
    capacity = plan.capacity()
    if capacity is None:
        plan.notes.append(f"the layer and head counts of {model.name} are unknown: context length not sized")
        return
    target = pick_context(capacity, model.context_length, plan.context_cap)
    if target is None:
        plan.notes.append(
            f"{model.name} ({gib(model.weights_bytes or 0)}) does not fit in the "
            f"{gib(plan.budget.room(plan.overhead))} of {plan.budget.label} with even "
            f"{CONTEXT_LADDER[0]:,} tokens of context: Ollama will run part of it on the CPU, much slower. "
            "A smaller quantization or model would fit."
        )
        return
    current = plan.context
    if current == target:
        return
    kv_bytes = model.kv_cache_bytes(target, plan.kv_type, plan.parallel) or 0
    why = [f"{target:,} tokens fit beside {model.name} ({gib(model.weights_bytes or 0)} of weights) in "
           f"{gib(plan.budget.room(plan.overhead))} of {plan.budget.label}; the KV cache takes "
           f"{gib(kv_bytes)} ({plan.kv_type}"
           + (f", {plan.parallel} parallel slots)" if plan.parallel > 1 else ")")]
    if current is None:
        why.insert(0, "unset, Ollama picks its own default (4,096 tokens; by VRAM size in recent versions)")
    elif current > capacity:
        need = model.kv_cache_bytes(current, plan.kv_type, plan.parallel) or 0
        why.insert(0, f"{current:,} tokens need {gib(need)} of KV cache, more than fits beside the model, "
                      "so Ollama moves layers to the CPU")
    if model.context_length and target == model.context_length:
        why.append(f"the model was trained for {model.context_length:,} tokens")
    elif target == plan.context_cap and capacity > target:
        if plan.budget.kind == "cpu":
            why.append("capped at 8,192 on CPU: prompt processing runs at tens to hundreds of tokens/s there")
        else:
            why.append("capped at 32,768: a longer default reserves memory that other models could use; "
                       "ask for more per request with num_ctx")
    plan.propose("OLLAMA_CONTEXT_LENGTH", str(target), "; ".join(why))


def rule_max_loaded_models(plan: Plan) -> None:
    """On CPU and Apple, one model at a time when two of the target's size do not fit the memory."""
    if plan.budget.kind == "gpu":
        return
    footprint = plan.footprint(plan.context)
    if footprint is None:
        return
    room = plan.budget.room(plan.overhead)
    if 2 * footprint <= room or parse_uint(plan.current("OLLAMA_MAX_LOADED_MODELS")) == 1:
        return
    plan.propose("OLLAMA_MAX_LOADED_MODELS", "1",
                 f"two models the size of {plan.model.name} ({gib(footprint)} with its KV cache) do not fit "
                 f"in {gib(room)} of {plan.memory_word}: with one at a time, a second model replaces the "
                 "first instead of pushing the system into swap")


def rule_keep_alive(plan: Plan) -> None:
    """GPU: keep models 30m (reloads cost seconds); CPU/Apple: never 0, and not forever for big models."""
    raw = plan.current("OLLAMA_KEEP_ALIVE")
    seconds = parse_keep_alive(raw)
    unparsed = raw is not None and seconds is None
    effective = DEFAULT_KEEP_ALIVE_S if seconds is None else seconds
    prefix = f"Ollama cannot parse {raw!r} and uses 5m; " if unparsed else ""
    if plan.budget.kind == "gpu":
        value, target = GPU_KEEP_ALIVE
        if effective < target:
            plan.propose("OLLAMA_KEEP_ALIVE", value,
                         prefix + f"after {_duration(effective)} idle Ollama unloads the model and the next "
                         "request waits for a reload from disk; 30m keeps it in VRAM across pauses and still "
                         "frees the GPU after 30 idle minutes")
        return
    if effective == 0:
        plan.propose("OLLAMA_KEEP_ALIVE", "5m", prefix + "0 unloads the model after every request, so "
                     "each one pays the full load time")
        return
    footprint = plan.footprint(plan.context)
    if effective == math.inf and footprint and footprint > plan.budget.ram_bytes / 4:
        plan.propose("OLLAMA_KEEP_ALIVE", "30m",
                     f"an idle model keeps {gib(footprint)} of {plan.memory_word} from every other app "
                     "forever; 30m unloads it after 30 idle minutes")
    elif unparsed:
        plan.propose("OLLAMA_KEEP_ALIVE", "5m", prefix + "write the default explicitly")


def rule_sched_spread(plan: Plan) -> None:
    """Several GPUs: no forced spreading of a model that fits one GPU (Ollama spreads big ones itself)."""
    if plan.budget.kind != "gpu" or len(plan.budget.devices) < 2:
        return
    spread = parse_bool(plan.current("OLLAMA_SCHED_SPREAD")) is True
    model = plan.model
    single = plan.capacity(single_device=True)
    if model is None or single is None:
        if spread:
            plan.notes.append("OLLAMA_SCHED_SPREAD=1 spreads every model over all GPUs, even those that fit "
                              "on one; pass --model to check")
        return
    context = plan.context or 4096
    if single >= context:
        if spread:
            plan.propose("OLLAMA_SCHED_SPREAD", None,
                         f"{model.name} with {context:,} tokens of context fits on one GPU: spreading it "
                         f"over {len(plan.budget.devices)} GPUs adds a transfer between GPUs for every token "
                         "and occupies all of them; Ollama still spreads models that do not fit one GPU")
    else:
        plan.notes.append(f"{model.name} with {context:,} tokens does not fit on one GPU: Ollama spreads it "
                          "over the GPUs on its own; OLLAMA_SCHED_SPREAD is not needed for that")


def _duration(seconds: float) -> str:
    if seconds == math.inf:
        return "forever"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in (version or "").split("-")[0].split(".")[:3])
    except ValueError:
        return None


def _context_notes(plan: Plan) -> None:
    inputs = plan.inputs
    config = inputs.current
    if config.scope == "systemd":
        plan.notes.append("current values are those of the ollama systemd service (unit file and drop-ins)")
        for key, setting in sorted(config.shadowed.items()):
            plan.notes.append(f"your shell sets {key}={clean(setting.value)}, which the service does not see")
    elif config.scope == "launchctl":
        plan.notes.append("current values are from launchctl (the Ollama app) and this shell")
    version = _version_tuple(inputs.version)
    if version and version < (0, 5, 13) and any(c.key == "OLLAMA_CONTEXT_LENGTH" for c in plan.changes):
        plan.notes.append(f"OLLAMA_CONTEXT_LENGTH needs Ollama 0.5.13 or newer; this server is {inputs.version}")
    if plan.budget.kind == "apple":
        plan.notes.append(
            f"macOS lets the GPU use {gib(plan.budget.devices[0])} of {gib(plan.budget.ram_bytes)} RAM; "
            "`sudo sysctl iogpu.wired_limit_mb=N` raises that limit until the next reboot"
        )
    if plan.budget.kind == "cpu":
        others = [g.name for g in inputs.hardware.gpus]
        plan.notes.append("no NVIDIA, AMD or Apple GPU with known memory: sized for RAM"
                          + (f" (found: {', '.join(others)})" if others else ""))


RULES = (
    rule_gpu_overhead,
    rule_flash_attention,
    rule_kv_cache_type,
    rule_num_parallel,
    rule_context_length,
    rule_max_loaded_models,
    rule_keep_alive,
    rule_sched_spread,
)


def propose_ollama_config(inputs: OptimizerInputs) -> ConfigProposal:
    """Run every rule in order and return the proposal (changes with reasons, and notes)."""
    plan = Plan(inputs)
    kv_change = None
    for rule in RULES:
        result = rule(plan)
        if rule is rule_kv_cache_type:
            kv_change = result
    explain_kv_saving(plan, kv_change)
    _context_notes(plan)
    return ConfigProposal(
        runtime=RUNTIME,
        changes=plan.changes,
        notes=[*inputs.notes, *plan.notes],
        systemd_unit=SERVICE_UNIT if inputs.platform.startswith("linux") else None,
    )


# --- gathering the inputs (server, store, configuration) ------------------------------------------


def same_model(a: str, b: str) -> bool:
    """Whether two Ollama names denote one model (``llama3.2`` is ``llama3.2:latest``)."""
    try:
        return ModelName.parse(a).short().casefold() == ModelName.parse(b).short().casefold()
    except UserInputError:
        return a == b


def _tags_size(client: OllamaClient, name: str) -> int | None:
    try:
        for entry in client.tags():
            if same_model(str(entry.get("name") or entry.get("model") or ""), name):
                return int(entry.get("size") or 0) or None
    except VeloError:
        return None
    return None


def load_architecture(name: str, client: OllamaClient | None = None,
                      store: ModelStore | None = None) -> ModelArchitecture:
    """A model's facts from a GGUF path, the server's ``/api/show``, or the store's GGUF file."""
    path = Path(name).expanduser()
    if path.is_file():
        return ModelArchitecture.from_gguf(name, path)
    local = store.find(name) if store is not None else None
    extra = sum(p.stat().st_size for p in local.projector_paths) if local else 0
    if client is not None:
        shown = None
        try:
            shown = client.show(name)
        except UserInputError:
            if local is None:
                raise
        except BackendError:
            shown = None
        if shown and isinstance(shown.get("model_info"), dict):
            weights = local.model_bytes + extra if local and local.model_bytes else _tags_size(client, name)
            return ModelArchitecture.from_metadata(name, shown["model_info"], weights_bytes=weights)
    if local is not None and local.gguf_path is not None:
        return ModelArchitecture.from_gguf(local.name, local.gguf_path, extra)
    if local is not None:
        raise UserInputError(f"Ollama's {local.name} has no GGUF weights on disk (a cloud or safetensors "
                             "model, or an interrupted pull): cannot size settings for it")
    dirs = ", ".join(str(d) for d in (store.models_dirs if store else []))
    raise UserInputError(f"model {name!r} is not installed in Ollama (searched {dirs or 'no store'}); "
                         f"get it with: ollama pull {shlex.quote(name)}")


def _installed_sizes(store: ModelStore, client: OllamaClient | None) -> dict[str, int]:
    sizes = {m.name: m.model_bytes or m.size_bytes for m in store.list() if m.gguf_path}
    if not sizes and client is not None:
        try:
            sizes = {str(e.get("name")): int(e.get("size") or 0) for e in client.tags() if e.get("name")}
        except VeloError:
            sizes = {}
    return sizes


def choose_default_model(hardware: HardwareReport, store: ModelStore, client: OllamaClient | None,
                         loaded: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(name, why) of the model to size for when none is given: the loaded one, else the largest that fits."""
    if loaded and loaded[0].get("name"):
        return str(loaded[0]["name"]), "the model Ollama has loaded now"
    sizes = _installed_sizes(store, client)
    if not sizes:
        return None
    room = memory_budget(hardware).room() * SAFETY_FRACTION
    fitting = {name: size for name, size in sizes.items() if size < room}
    if fitting:
        name = max(fitting, key=lambda n: (fitting[n], n))
        return name, "the largest installed model that fits in memory"
    name = min(sizes, key=lambda n: (sizes[n], n))
    return name, "the smallest installed model (none fits in memory entirely)"


def collect_inputs(hardware: HardwareReport, model: str | None, *, required: bool) -> OptimizerInputs | None:
    """Read this machine's Ollama: settings, running server (if any), model store, and the target model.

    Returns None when nothing says Ollama is here and the user did not ask for it (``required``).
    """
    config = read_ollama_config()
    store = ModelStore.default()
    url = default_base_url()
    notes: list[str] = []
    client: OllamaClient | None = None
    version, loaded = None, []
    if is_loopback_url(url):
        client = OllamaClient(url, connect_timeout=1.0, read_timeout=30.0)
        try:
            version = client.version()
            loaded = client.ps()
        except VeloError:
            client.close()
            client = None
            notes.append(f"no Ollama server answered at {url}: model facts come from the model files")
    else:
        notes.append(f"OLLAMA_HOST points at {url}, not this machine: only local files were read")
    present = client is not None or store.existing_dirs() or shutil.which("ollama") or config.scope == "systemd"
    if not required and not present:
        if client is not None:
            client.close()
        return None
    inputs = OptimizerInputs(
        hardware=hardware,
        current=config,
        loaded_vram_bytes=sum(int(m.get("size_vram") or 0) for m in loaded),
        loaded_ram_bytes=sum(max(0, int(m.get("size") or 0) - int(m.get("size_vram") or 0)) for m in loaded),
        version=version,
        notes=notes,
    )
    try:
        if model:
            inputs.model = load_architecture(model, client, store)
        else:
            chosen = choose_default_model(hardware, store, client, loaded)
            if chosen is not None:
                inputs.model = load_architecture(chosen[0], client, store)
                notes.append(f"sized for {chosen[0]}, {chosen[1]}; pass --model to size for another")
    except UserInputError as exc:
        if required:
            raise
        notes.append(str(exc))
    finally:
        if client is not None:
            client.close()
    notes.extend(store.warnings)
    return inputs
