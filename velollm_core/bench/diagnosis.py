"""What limited each load level, from what the run sampled: one verdict per level, with its reasons.

The signals are those already in the result: the server's own gauges and counters per level
(requests running and deferred, KV cache usage, prompt and generation seconds: telemetry), the
GPU's utilisation (telemetry, where a sensor reads it), the level's latencies, the server efficiency
against the engine alone (``velollm_core.bench.ceiling``, when measured) and the client's own load
(its CPU, and the load generator's lateness flag where it sets one). The checks run in order and the
first that holds is the verdict; every check's outcome is kept in ``reasons``:

1. ``client_bound``: the load generator was the limit (its own lateness flag, ``level.client.limited``,
   or one client process kept a whole core busy).
2. ``kv_cache_full``: the server kept requests deferred (a queue that lasts) or its KV cache was
   (nearly) full.
3. ``server_loop_bound``: every slot busy while the GPU idled, or the server far below the engine.
4. ``prefill_interference``: other requests' prompts stalled the streams (ITL p99 far above its median).
5. ``engine_bound``: the GPU (or, without one, the engine) was busy: more load needs a faster engine.

Otherwise ``unknown``, saying which signal was missing. Thresholds are module constants.
"""

from __future__ import annotations

from typing import Any

from velollm_core.contract.schemas import BenchmarkResult

VERDICT_KEY = "diagnosis"
LABELS = {
    "client_bound": "client-bound",
    "kv_cache_full": "KV cache full",
    "server_loop_bound": "server-loop-bound",
    "prefill_interference": "prefill interference",
    "engine_bound": "engine-bound",
    "unknown": "unknown",
}
CLIENT_CPU_SHARE = 0.9  # the load generator's CPU seconds per second of the level: a core saturated
KV_FULL = 0.95  # KV cache usage ratio at its peak
# Requests deferred, on average over the level's samples: a request may wait a moment for a slot
# another has just finished with (seen at 8 streams on 8 slots), a queue that lasts is the limit.
WAITING_MEAN = 0.5
GPU_BUSY_PCT = 80.0  # mean utilisation of the busiest GPU over the level
GPU_IDLE_PCT = 60.0  # below this with every slot busy, the server loop starves the GPU
SLOTS_BUSY = 0.8  # requests running at peak / streams: the server held (nearly) every stream
ENGINE_EFFICIENCY = 0.7  # server output tok/s / engine ceiling: the engine's own limit
LOOP_EFFICIENCY = 0.5  # below this the server, not the engine, sets the pace
ITL_SPIKE = 3.0  # ITL p99 / median
PROMPT_SHARE = 0.1  # the server's prompt seconds / (prompt + generation seconds)
# A server faster than its engine alone by this much: the machine's load changed between the two
# measurements (shared cores), so the efficiency says nothing about the server.
IMPLAUSIBLE_EFFICIENCY = 1.2


def _stat(block: Any, name: str, part: str) -> float | None:
    value = (block or {}).get(name) if isinstance(block, dict) else None
    value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _telemetry_level(result: BenchmarkResult, level: dict[str, Any]) -> dict[str, Any]:
    for entry in (result.telemetry or {}).get("levels") or []:
        if entry.get("key") == level.get("key") and entry.get("workload") == level.get("workload"):
            return entry
    return {}


def _gpu_utilization(result: BenchmarkResult, telemetry_level: dict[str, Any]) -> float | None:
    """The mean utilisation over the level of the busiest GPU, or None where no GPU reads one."""
    kinds = {device.get("id"): device.get("kind") for device in (result.telemetry or {}).get("devices") or []}
    means = [_stat(part, "utilization_pct", "mean") for device, part in (telemetry_level.get("hardware") or {}).items()
             if kinds.get(device) == "gpu"]
    known = [mean for mean in means if mean is not None]
    return max(known) if known else None


def _client(level: dict[str, Any]) -> dict[str, Any]:
    """The load generator's own account of the level (its lateness check), or {}."""
    return level.get("client") if isinstance(level.get("client"), dict) else {}


def _client_share(level: dict[str, Any]) -> float | None:
    """CPU seconds per second of the level of one client process (the busiest share a worker had)."""
    client = _client(level)
    busy, workers = client.get("cores_busy"), client.get("workers") or 1
    if isinstance(busy, (int, float)):
        return busy / workers
    cpu, duration = level.get("client_cpu_s"), level.get("duration_s")
    return cpu / duration if isinstance(cpu, (int, float)) and isinstance(duration, (int, float)) and duration else None


def signals(result: BenchmarkResult, level: dict[str, Any]) -> dict[str, Any]:
    """The figures the verdict of ``level`` is drawn from (None: not sampled)."""
    tele = _telemetry_level(result, level)
    server = tele.get("server") if isinstance(tele.get("server"), dict) else {}
    prompt_s, generation_s = server.get("prompt_seconds"), server.get("generation_seconds")
    prompt_share = (prompt_s / (prompt_s + generation_s) if isinstance(prompt_s, (int, float))
                    and isinstance(generation_s, (int, float)) and prompt_s + generation_s > 0 else None)
    itl = level.get("itl_ms") or {}
    return {
        "streams": level.get("concurrency") or level.get("max_concurrency"),
        "client_limited": _client(level).get("limited"),
        "client_cpu_share": _client_share(level),
        "requests_running_peak": _stat(server, "requests_running", "peak"),
        "requests_waiting_peak": _stat(server, "requests_waiting", "peak"),
        "requests_waiting_mean": _stat(server, "requests_waiting", "mean"),
        "kv_cache_usage_peak": _stat(server, "kv_cache_usage", "peak"),
        "gpu_utilization_pct": _gpu_utilization(result, tele),
        "server_efficiency": level.get("server_efficiency"),
        "server_efficiency_with_prompts": level.get("server_efficiency_with_prompts"),
        "itl_p50_ms": itl.get("median"),
        "itl_p99_ms": itl.get("p99"),
        "prompt_share": prompt_share,
        "gpu": any(device.get("kind") == "gpu" for device in (result.telemetry or {}).get("devices") or []),
    }


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def _engine_share(s: dict[str, Any]) -> float | None:
    """The efficiency the checks judge: against the engine doing the same work (its prompts too) where
    measured, since the server must prefill as well; else against its generation rate."""
    with_prompts = s["server_efficiency_with_prompts"]
    return with_prompts if with_prompts is not None else s["server_efficiency"]


def _checks(s: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(verdict, holds, why) for each check, in order; each why short enough for one table line."""
    streams = s["streams"] or 1
    share, running = s["client_cpu_share"], s["requests_running_peak"]
    waiting, queue, kv = s["requests_waiting_peak"], s["requests_waiting_mean"], s["kv_cache_usage_peak"]
    gpu, p50, p99 = s["gpu_utilization_pct"], s["itl_p50_ms"], s["itl_p99_ms"]
    eff = _engine_share(s)
    if eff is not None and eff > IMPLAUSIBLE_EFFICIENCY:
        eff = None
    all_busy = running is not None and running >= SLOTS_BUSY * streams
    engine_share = f"server at {_pct(eff)} of the engine alone"

    client = bool(s["client_limited"]) or (share is not None and share >= CLIENT_CPU_SHARE)
    client_why = ("the load generator was late (p99 over its limit)" if s["client_limited"]
                  else f"the load generator used {_pct(share)} of a core")

    kv_full = (queue is not None and queue >= WAITING_MEAN) or (kv is not None and kv >= KV_FULL)
    kv_why = (f"{'?' if queue is None else f'{queue:.1f}'} deferred on average ({'?' if waiting is None else f'{waiting:.0f}'}"
              f" at peak), KV cache {_pct(kv)} full" if kv is not None else
              f"{'?' if queue is None else f'{queue:.1f}'} deferred on average, no free slot or KV room")

    if gpu is not None:
        loop = gpu < GPU_IDLE_PCT and all_busy
        loop_why = f"GPU {gpu:.0f}% busy, {'?' if running is None else f'{running:.0f}'} of {streams} running"
    else:
        loop, loop_why = eff is not None and eff < LOOP_EFFICIENCY, engine_share

    spikes = bool(streams > 1 and p50 and p99 is not None and p99 >= ITL_SPIKE * p50
                  and (s["prompt_share"] is None or s["prompt_share"] >= PROMPT_SHARE))
    spikes_why = (f"ITL p99 {p99 or 0:.0f} ms vs p50 {p50 or 0:.0f} ms, "
                  f"prompts {_pct(s['prompt_share'])} of server time")

    engine = (gpu >= GPU_BUSY_PCT) if gpu is not None else (eff is not None and eff >= ENGINE_EFFICIENCY)
    engine_why = f"GPU {gpu:.0f}% busy" if gpu is not None else engine_share
    return [("client_bound", client, client_why), ("kv_cache_full", kv_full, kv_why),
            ("server_loop_bound", loop, loop_why), ("prefill_interference", spikes, spikes_why),
            ("engine_bound", engine, engine_why)]


def diagnose(result: BenchmarkResult, level: dict[str, Any]) -> dict[str, Any]:
    """The verdict of one level: ``limit`` (a key of LABELS), ``label``, ``line`` (for the table),
    ``reasons`` (every check: verdict, held, why) and ``signals``."""
    s = signals(result, level)
    checks = _checks(s)
    held = [(verdict, why) for verdict, holds, why in checks if holds]
    if held:
        limit, why = held[0]
    else:
        limit = "unknown"
        gpu, efficiency = s["gpu_utilization_pct"], _engine_share(s)
        if gpu is not None:
            why = f"GPU {gpu:.0f}% busy: between idle and busy"
        elif efficiency is None:
            why = "no GPU sensor and no engine ceiling (try --engine-ceiling)"
        elif efficiency > IMPLAUSIBLE_EFFICIENCY:
            why = f"server at {_pct(efficiency)} of the engine alone: the load changed"
        else:
            why = f"server at {_pct(efficiency)} of the engine alone: between the limits"
    label = LABELS[limit]
    if limit == "engine_bound" and s["gpu"]:
        label = "GPU-bound"
    return {"limit": limit, "label": label, "line": f"{label}: {why}",
            "reasons": [{"limit": verdict, "holds": bool(holds), "why": text} for verdict, holds, text in checks],
            "signals": s}


def annotate_result(result: BenchmarkResult) -> None:
    """Every level's ``diagnosis``."""
    for level in result.levels:
        level[VERDICT_KEY] = diagnose(result, level)
