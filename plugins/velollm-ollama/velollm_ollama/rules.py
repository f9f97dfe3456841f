"""The optimizer's rules, one function of a ``Plan`` each (listed in this plugin's README.md and
unit-tested one by one). Only variables that Ollama's envconfig really reads are ever proposed."""

from __future__ import annotations

import math

from velollm_core.api import ConfigChange
from velollm_ollama.budget import CONTEXT_LADDER, gib, pick_context
from velollm_ollama.config import parse_bool, parse_keep_alive, parse_uint
from velollm_ollama.modelfacts import GIB, MIB
from velollm_ollama.plan import KV_TYPES, Plan

MIN_USEFUL_CONTEXT = 8192
SHARED_GPU_THRESHOLD = 1 * GIB
PROPOSED_GPU_OVERHEAD = 512 * MIB
GPU_KEEP_ALIVE = ("30m", 1800.0)
DEFAULT_KEEP_ALIVE_S = 300.0


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
