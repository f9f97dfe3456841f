"""Result files of the tools that benchmark OpenAI-compatible servers, imported into VeloLLM's history:
GuideLLM's benchmark JSON (``guidellm run --output kind=json``, layout of GuideLLM 0.8) and
``vllm bench serve --save-result --save-detailed`` JSON.

Each request becomes a run with what the tool measured of it: time to first token, token counts,
latency, and the client's decode rate (tokens after the first over the time between the first and
the last). Neither tool reads the server's own prefill time, so ``prompt_tokens_per_s`` stays None
(unknown, never estimated from the TTFT); a figure absent from the file stays None, never 0.
A workload of fixed synthetic lengths is named as VeloLLM names it (``pp512/tg128``), so the
result sits beside VeloLLM's and llama-bench's in one ``velollm compare``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from velollm_core.api import UserInputError, dig, json_number

GUIDELLM = "guidellm"
VLLM_BENCH = "vllm-bench-serve"
# The keys a ``vllm bench serve`` result always has (its result_json's setup and metrics).
_VLLM_KEYS = (b'"backend"', b'"model_id"', b'"num_prompts"', b'"request_throughput"', b'"completed"')


def _read(path: Path, tool: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserInputError(f"{path} is not {tool} JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path} is not {tool} JSON: it holds no object")
    return data


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _decode_rate(completion_tokens: int | None, decode_seconds: float | None) -> float | None:
    """Tokens after the first over the time from the first to the last: the client's decode rate."""
    if completion_tokens is None or completion_tokens < 2 or not decode_seconds or decode_seconds <= 0:
        return None
    return (completion_tokens - 1) / decode_seconds


def _iso(seconds: Any) -> str | None:
    value = json_number(seconds)
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.timezone.utc).isoformat(timespec="seconds")


def _workload(prompt_tokens: Any, output_tokens: Any) -> str | None:
    """VeloLLM's name of a fixed-length synthetic workload, or None when the lengths vary."""
    if _count(prompt_tokens) and _count(output_tokens):
        return f"pp{prompt_tokens}/tg{output_tokens}"
    return None


# -- GuideLLM ---------------------------------------------------------------------------------------

def sniff_guidellm(path: Path, head: bytes) -> bool:
    """GuideLLM's benchmarks report: its metadata names guidellm_version, or benchmarks hold requests."""
    text = head.lstrip()
    return text.startswith(b"{") and b'"benchmarks"' in head and (
        b'"guidellm_version"' in head or b'"generative_request_stats"' in head)


def _guidellm_suite(data: dict[str, Any], benchmark: dict[str, Any]) -> str:
    spec = dig(data, "config", "spec") or {}
    datasets = spec.get("data") if isinstance(spec.get("data"), list) else []
    first = datasets[0] if datasets and isinstance(datasets[0], dict) else {}
    if first.get("kind") == "synthetic_text" and not any(first.get(f"{side}_tokens_{spread}") for side in
                                                          ("prompt", "output") for spread in ("stdev", "min", "max")):
        name = _workload(first.get("prompt_tokens"), first.get("output_tokens"))
        if name:
            return name
    return f"guidellm:{first.get('kind') or 'data'}"


def _guidellm_load(benchmark: dict[str, Any]) -> dict[str, Any]:
    """concurrency and level of a GuideLLM strategy, as VeloLLM's runs record theirs."""
    strategy = dig(benchmark, "config", "strategy") or {}
    kind = strategy.get("type_")
    if kind == "synchronous":
        return {"concurrency": 1}
    if kind == "concurrent" and _count(strategy.get("streams")):
        return {"concurrency": strategy["streams"]}
    rate = json_number(strategy.get("rate"))
    label = {"constant": "rate", "poisson": "poisson"}.get(str(kind), str(kind or "load"))
    return {"concurrency": _count(strategy.get("max_concurrency")) or 1,
            "level": f"{label}{rate:g}" if rate is not None else label}


def _guidellm_runs(benchmark: dict[str, Any], suite: str) -> list[dict[str, Any]]:
    requests = dig(benchmark, "requests") or {}
    load = _guidellm_load(benchmark)
    runs = []
    for status in ("successful", "errored", "incomplete"):
        for request in requests.get(status) or []:
            if not isinstance(request, dict):
                continue
            run: dict[str, Any] = {"benchmark": suite, "iteration": len(runs), **load}
            if status != "successful":
                info = request.get("info") if isinstance(request.get("info"), dict) else {}
                run["failed"] = str(info.get("error") or f"GuideLLM counted the request as {status}")
                runs.append(run)
                continue
            completion = _count(request.get("output_tokens"))
            ttft, latency = json_number(request.get("time_to_first_token_ms")), json_number(request.get("request_latency"))
            # GuideLLM's inter-token latency is (last token - first token) / (tokens - 1), from its own
            # token timestamps: the decode time per token, exactly what VeloLLM's client rate inverts.
            itl = json_number(request.get("inter_token_latency_ms"))
            decode = 1000 / itl if itl and itl > 0 and completion and completion > 1 else None
            run.update(ttft_ms=ttft, prompt_tokens=_count(request.get("prompt_tokens")), completion_tokens=completion,
                       total_ms=latency * 1000 if latency is not None else None,
                       decode_tokens_per_s=decode, client_decode_tokens_per_s=decode)
            if _count(request.get("cached_tokens")):
                run["cached_prompt_tokens"] = request["cached_tokens"]
            runs.append(run)
    return runs


def load_guidellm(path: Path) -> list[dict[str, Any]]:
    """Each benchmark of a GuideLLM report (one per strategy) as a VeloLLM benchmark document."""
    data = _read(path, "GuideLLM")
    version = dig(data, "metadata", "guidellm_version")
    benchmarks = data.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise UserInputError(f"{path} holds no GuideLLM benchmark")
    if any(not isinstance(dig(b, "requests", "successful"), list) for b in benchmarks):
        raise UserInputError(f"{path}: its benchmarks keep no requests (GuideLLM {version or 'of unknown version'}"
                             "); VeloLLM reads GuideLLM 0.8's layout, requests included")
    spec = dig(data, "config", "spec") or {}
    backend = spec.get("backend") if isinstance(spec.get("backend"), dict) else {}
    documents = []
    for benchmark in benchmarks:
        suite = _guidellm_suite(data, benchmark)
        documents.append({
            "status": "complete",
            "started_at": _iso(benchmark.get("start_time")) or "",
            "finished_at": _iso(benchmark.get("end_time")),
            "settings": {"backend": GUIDELLM, "model": backend.get("model"), "host": backend.get("target"),
                         "profile": dig(benchmark, "config", "strategy", "type_"), "workloads": [suite],
                         GUIDELLM: {"profile": spec.get("profile"), "data": spec.get("data"),
                                    "constraints": spec.get("constraints"),
                                    "request_format": backend.get("request_format")}},
            "environment": {"backend": {"name": str(backend.get("kind") or GUIDELLM), "host": backend.get("target"),
                                        "model": {"name": str(backend.get("model") or "unknown")}}},
            "runs": _guidellm_runs(benchmark, suite),
            "imported": {"tool": GUIDELLM, "tool_version": version, "format": "json", "source": Path(path).name},
        })
    return documents


# -- vllm bench serve -------------------------------------------------------------------------------

def sniff_vllm_bench(path: Path, head: bytes) -> bool:
    """``vllm bench serve``'s result JSON: its setup keys and its throughput, at the top level."""
    return head.lstrip().startswith(b"{") and all(key in head for key in _VLLM_KEYS)


def _vllm_runs(data: dict[str, Any], suite: str, load: dict[str, Any]) -> list[dict[str, Any]]:
    ttfts, itls = data.get("ttfts"), data.get("itls")
    inputs, outputs = data.get("input_lens") or [], data.get("output_lens") or []
    latencies, errors = data.get("latencies") or [], data.get("errors") or []

    def at(values: list, i: int) -> Any:
        return values[i] if isinstance(values, list) and i < len(values) else None

    runs = []
    for i in range(len(ttfts)):
        run: dict[str, Any] = {"benchmark": suite, "iteration": i, **load}
        if at(errors, i):
            run["failed"] = str(errors[i])
            runs.append(run)
            continue
        ttft = json_number(ttfts[i])
        gaps = [gap for gap in at(itls, i) or [] if json_number(gap) is not None]
        completion = _count(at(outputs, i))
        latency = json_number(at(latencies, i))
        if latency is None and ttft is not None:
            latency = ttft + sum(gaps)
        decode = _decode_rate(completion, sum(gaps) if gaps else None)
        run.update(ttft_ms=ttft * 1000 if ttft is not None else None, prompt_tokens=_count(at(inputs, i)),
                   completion_tokens=completion, total_ms=latency * 1000 if latency is not None else None,
                   decode_tokens_per_s=decode, client_decode_tokens_per_s=decode,
                   extra={"itl_ms": [gap * 1000 for gap in gaps]} if gaps else {})
        runs.append(run)
    return runs


def load_vllm_bench(path: Path) -> list[dict[str, Any]]:
    """A ``vllm bench serve`` result saved with --save-detailed (per-request timings) as one VeloLLM document."""
    data = _read(path, "vllm bench serve")
    if not isinstance(data.get("ttfts"), list):
        raise UserInputError(f"{path} was saved without --save-detailed: it holds only aggregates, and VeloLLM "
                             "compares request by request; rerun vllm bench serve with --save-result --save-detailed")
    inputs, outputs = data.get("input_lens") or [], data.get("output_lens") or []
    fixed = len(set(inputs)) == 1 and len(set(outputs)) == 1 and inputs and outputs
    suite = (_workload(inputs[0], outputs[0]) if fixed else None) or f"vllm-bench:{data.get('dataset_name') or 'data'}"
    concurrency, rate = _count(data.get("max_concurrency")), data.get("request_rate")
    load: dict[str, Any] = {"concurrency": concurrency or 1}
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        load["level"] = f"poisson{rate:g}" if data.get("burstiness") in (None, 1, 1.0) else f"rate{rate:g}"
    elif concurrency and concurrency > 1:
        load["level"] = f"c{concurrency}"
    started = None
    if isinstance(data.get("date"), str):
        try:
            started = dt.datetime.strptime(data["date"], "%Y%m%d-%H%M%S").isoformat()
        except ValueError:
            started = None
    return [{
        "status": "complete",
        "started_at": started or "",
        "settings": {"backend": VLLM_BENCH, "model": data.get("model_id"), "workloads": [suite],
                     "requests": _count(data.get("num_prompts")),
                     VLLM_BENCH: {key: data.get(key) for key in ("endpoint_type", "backend", "label", "tokenizer_id",
                                                                 "request_rate", "burstiness", "max_concurrency")}},
        "environment": {"backend": {"name": str(data.get("backend") or "unknown"),
                                    "model": {"name": str(data.get("model_id") or "unknown")}}},
        "runs": _vllm_runs(data, suite, load),
        "imported": {"tool": VLLM_BENCH, "tool_version": None, "format": "json", "source": Path(path).name},
    }]
