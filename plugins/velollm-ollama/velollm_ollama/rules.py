"""The optimizer's rules, one function of a ``Plan`` each (listed in this plugin's README.md and
unit-tested one by one). Only variables that Ollama's envconfig really reads are ever proposed."""

from __future__ import annotations

import math
from pathlib import Path

from velollm_core.api import ConfigChange
from velollm_ollama.budget import CONTEXT_LADDER, gib, pick_context
from velollm_ollama.config import parse_bool, parse_keep_alive, parse_uint
from velollm_ollama.modelfacts import GIB, MIB
from velollm_ollama.plan import DEFAULT_FIT_TARGET_MIB, UNQUANTIZED_KV_TYPES, Plan
from velollm_ollama.versions import has, since

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
    """Ollama >= 0.30: unset is llama.cpp's auto, so only a forced off is undone; before: on wherever
    every GPU (or the CPU) supports it. Off where a GPU has no kernels for it, in every version."""
    current = parse_bool(plan.current("OLLAMA_FLASH_ATTENTION"))
    blocker = plan.budget.flash_attention_blocker
    if blocker:
        if current:
            plan.propose("OLLAMA_FLASH_ATTENTION", None, f"{blocker}: forcing it on fails or falls back")
        plan.notes.append(f"flash attention stays off: {blocker}")
        return
    if plan.llama_server:
        if current is False:
            plan.propose("OLLAMA_FLASH_ATTENTION", None,
                         f"unset, Ollama {since('flash_attention_auto')}+ passes --flash-attn auto and llama.cpp "
                         "turns it on wherever the model and devices run it: less memory at long contexts, "
                         "often faster, and a quantized V cache needs it; 0 forces it off everywhere")
        elif current is None:
            plan.notes.append("flash attention: unset is llama.cpp's auto in this Ollama (on where the model "
                              "and devices support it); memory is sized with it on")
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
    """q8_0 with flash attention (q4_0 kept if chosen). Without it: before 0.30 Ollama ignores a quantized
    type (removed as useless); from 0.30 it goes to llama-server, which then refuses to load (removed)."""
    raw = plan.current("OLLAMA_KV_CACHE_TYPE")
    current = raw.lower() if raw else None
    known = plan.kv_types
    if plan.flash_attention:
        if current == "q4_0":
            plan.notes.append("OLLAMA_KV_CACHE_TYPE=q4_0 kept: it quarters the KV cache but costs some "
                              "quality; q8_0 halves it with negligible loss")
            return None
        if plan.llama_server and current in known and current not in ("f16", "q8_0"):
            plan.notes.append(f"OLLAMA_KV_CACHE_TYPE={current} kept: llama-server gets it as "
                              "--cache-type-k/--cache-type-v")
            return None
        reason = ("a q8_0 KV cache takes about half the memory of f16 with negligible quality loss; it needs "
                  "flash attention, which is on")
        if current not in (None, *known):
            reason = (f"llama-server does not know the cache type {raw!r} and refuses to start; "
                      if plan.llama_server else f"Ollama does not know the cache type {raw!r} and uses f16; ") + reason
        return plan.propose("OLLAMA_KV_CACHE_TYPE", "q8_0", reason)
    if current is not None and current not in known:
        return plan.propose("OLLAMA_KV_CACHE_TYPE", None,
                            f"llama-server does not know the cache type {raw!r} and refuses to start"
                            if plan.llama_server else f"Ollama does not know the cache type {raw!r}")
    if current is not None and current not in UNQUANTIZED_KV_TYPES:
        if plan.llama_server:
            why = (f"Ollama {since('kv_type_passthrough')}+ passes it to llama-server as --cache-type-k/v "
                   "whatever flash attention is, and llama.cpp refuses a quantized V cache without flash "
                   "attention, which is off here: the model would fail to load")
        else:
            why = ("Ollama quantizes the KV cache only with flash attention, which stays off here: "
                   "this setting has no effect")
        return plan.propose("OLLAMA_KV_CACHE_TYPE", None, why)
    return None


def explain_kv_saving(plan: Plan, change: ConfigChange | None) -> None:
    """Add what q8_0 saves for the target model at the decided context to the KV change's reason."""
    model = plan.model
    if change is None or change.proposed != "q8_0" or model is None or not plan.model_flash_attention:
        return
    context = plan.effective_context
    f16 = model.kv_cache_bytes(context, "f16", plan.parallel)
    q8 = model.kv_cache_bytes(context, "q8_0", plan.parallel)
    if f16 is None or q8 is None:
        return
    slots = f" x {plan.parallel} slots" if plan.parallel > 1 else ""
    change.reason += (f": for {model.name} at {context:,} tokens{slots}, {gib(f16)} -> {gib(q8)} "
                      f"(saves {gib(f16 - q8)})")


def rule_num_parallel(plan: Plan) -> None:
    """One slot on CPU, or when parallel slots leave each request too little context; nothing for the
    architectures Ollama loads with one slot anyway (a proposal would change nothing)."""
    if plan.parallel_forced_to_one:
        requested = parse_uint(plan.current("OLLAMA_NUM_PARALLEL"))
        plan.notes.append(
            f"{plan.model.name} ({plan.model.architecture}): Ollama loads this architecture with one slot "
            "whatever OLLAMA_NUM_PARALLEL says (server/sched.go: not safe with parallel requests), so VeloLLM "
            "proposes no OLLAMA_NUM_PARALLEL and sizes for one slot"
            + (f"; the {requested} set now is ignored for it" if requested and requested > 1 else ""))
        return
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
    default = plan.effective_context
    if current is None and default == target:
        plan.notes.append(f"context length: Ollama's default here, {default:,} tokens, is what fits beside "
                          f"{model.name}; OLLAMA_CONTEXT_LENGTH can stay unset")
        return
    kv_bytes = model.kv_cache_bytes(target, plan.kv_type, plan.parallel) or 0
    why = [f"{target:,} tokens fit beside {model.name} ({gib(model.weights_bytes or 0)} of weights) in "
           f"{gib(plan.budget.room(plan.overhead))} of {plan.budget.label}; the KV cache takes "
           f"{gib(kv_bytes)} ({plan.kv_type}"
           + (f", {plan.parallel} parallel slots)" if plan.parallel > 1 else ")")]
    if current is None:
        why.insert(0, f"unset, Ollama uses {plan.default_context:,} tokens"
                      + (f" (by total VRAM, Ollama {since('vram_default_context')}+)"
                         if has(plan.version, "vram_default_context") and plan.budget.kind != "cpu" else "")
                      + (f", {default:,} within the model's training" if default != plan.default_context else "")
                      + (": more than fits" if default > capacity else ""))
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
    context = plan.effective_context
    if single >= context:
        if spread:
            plan.propose("OLLAMA_SCHED_SPREAD", None,
                         f"{model.name} with {context:,} tokens of context fits on one GPU: spreading it "
                         f"over {len(plan.budget.devices)} GPUs adds a transfer between GPUs for every token "
                         "and occupies all of them; Ollama still spreads models that do not fit one GPU")
        else:
            # The scheduler sorts the GPUs by free memory, most first, and tries one GPU, then two, ...
            # (pickBestFullFitByLibrary, unless OLLAMA_SCHED_SPREAD).
            plan.notes.append(f"{model.name} with {context:,} tokens fits on one GPU: Ollama's scheduler loads it "
                              "whole on the GPU with the most free memory, leaving the other GPU(s) to other "
                              "models; one GPU also skips a transfer between GPUs per token")
    else:
        plan.notes.append(f"{model.name} with {context:,} tokens does not fit on one GPU: Ollama spreads it "
                          "over the GPUs on its own; OLLAMA_SCHED_SPREAD is not needed for that (it packs the "
                          "layers into as few GPUs as hold them, the GPUs with the most free memory first)")


def rule_llama_fit(plan: Plan) -> None:
    """Ollama >= 0.30: llama.cpp's fit places what Ollama leaves unset; LLAMA_ARG_FIT=off is undone."""
    if not plan.llama_server:
        for key in ("LLAMA_ARG_FIT", "LLAMA_ARG_FIT_TARGET"):
            if plan.current(key) is not None:
                plan.notes.append(f"{key} is read by llama-server, which Ollama runs from "
                                  f"{since('llama_arg_fit')}; this Ollama ({plan.version}) ignores it")
        return
    if not plan.fit_enabled and plan.budget.kind != "cpu":
        plan.propose("LLAMA_ARG_FIT", None,
                     "Ollama passes -ngl only when num_gpu is set and leaves GPU placement to llama.cpp's fit; "
                     "with fit off, llama-server does not check free memory, so a model that does not fit "
                     "fails to load instead of keeping some layers on the CPU")
    target = parse_uint(plan.current("LLAMA_ARG_FIT_TARGET"))
    if plan.budget.kind != "cpu":
        plan.notes.append(f"llama.cpp's fit keeps {target or DEFAULT_FIT_TARGET_MIB:,} MiB free on each GPU"
                          + (" (LLAMA_ARG_FIT_TARGET)" if target else " (its default; LLAMA_ARG_FIT_TARGET "
                             "changes it)") + ": sized with that margin"
                          + (f"; Ollama {since('fit_target_projector')}+ adds a vision projector's size to it"
                             if has(plan.version, "fit_target_projector") else ""))


def rule_draft_modelfile(plan: Plan) -> None:
    """A Modelfile with the draft (FROM + DRAFT + PARAMETER draft_num_predict) when `velollm ollama
    draft-bench` measured that it pays; never when it measured no gain or a loss."""
    import shlex

    from velollm_ollama.drafts import PAYS_AT, create_command, load_measurement

    model = plan.model
    if model is None or not has(plan.version, "draft"):
        return
    measured = load_measurement(model.name)
    if measured is None:
        if model.has_mtp:
            plan.notes.append(f"{model.name} has an MTP head ({model.nextn_predict_layers} layer(s)): Ollama drafts "
                              "with it once draft_num_predict is set; measure whether it pays with: velollm ollama "
                              f"draft-bench --model {shlex.quote(model.name)} --mtp")
        return
    speedup = measured.get("speedup")
    when = measured.get("started_at", "")
    if not measured.get("pays") or not speedup or speedup < PAYS_AT:
        plan.notes.append(f"speculative decoding with {measured.get('draft')} measured "
                          + (f"{speedup:.2f}x decode" if speedup else "no decode rate")
                          + f" on {when}: no gain, so no Modelfile with a draft is proposed")
        return
    draft_path = measured.get("draft_path")
    if draft_path and not Path(draft_path).is_file():
        plan.notes.append(f"the draft measured for {model.name} ({draft_path}) is no longer on disk: measure again")
        return
    modelfile, text = measured.get("modelfile_path"), measured.get("modelfile")
    if not modelfile or not text:
        return
    command = create_command(measured["proposed_model"], Path(modelfile))
    identical = "identical text" if measured.get("outputs_identical") else "text not identical in every run"
    plan.notes.append(f"speculative decoding pays for {model.name}: {measured.get('draft')} measured {speedup:.2f}x "
                      f"decode ({identical}, {when}); the Modelfile {modelfile} holds: "
                      + " | ".join(text.splitlines()))
    plan.notes.append("create the model with the draft: " + shlex.join(command))
    plan.extra.update(modelfile=text, modelfile_path=modelfile, modelfile_command=command,
                      draft_speedup=speedup)


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
    rule_llama_fit,
    rule_flash_attention,
    rule_kv_cache_type,
    rule_num_parallel,
    rule_context_length,
    rule_max_loaded_models,
    rule_keep_alive,
    rule_sched_spread,
    rule_draft_modelfile,
)
