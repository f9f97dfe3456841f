"""Per-level metrics as ``vllm bench serve`` reports them, goodput under SLOs, and a sweep's knee.

A level is one load setting of one workload: sequential, ``c4`` (four streams), ``rate2``
(constant 2 req/s) or ``poisson2``. Its entry in ``result.levels`` holds completed and failed
requests (with reasons), request and token throughput over the measured window, TTFT, TPOT, ITL and
end-to-end latency (mean, median, p90, p95, p99), goodput, and the most streams actually open.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import RunRecord
from velollm_core.contract.stats import percentile

LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft_ms=500,tpot_ms=50' -> {'ttft_ms': 500.0, 'tpot_ms': 50.0}; unknown keys are refused."""
    slo: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or key not in SLO_KEYS or not number > 0:
            raise UserInputError(f"--slo {part.strip()!r}: expected KEY=MILLISECONDS with KEY one of "
                                 f"{', '.join(SLO_KEYS)}, e.g. --slo ttft_ms=500,tpot_ms=50")
        slo[key] = number
    return slo


def distribution(values: Iterable[float | None]) -> dict[str, float | int | None]:
    data = [float(v) for v in values if v is not None]
    if not data:
        return {"mean": None, "median": None, "p90": None, "p95": None, "p99": None, "n": 0}
    return {"mean": statistics.fmean(data), "median": percentile(data, 50), "p90": percentile(data, 90),
            "p95": percentile(data, 95), "p99": percentile(data, 99), "n": len(data)}


def tpot_ms(run: RunRecord) -> float | None:
    """Time per output token after the first, per request (vLLM's TPOT)."""
    if run.extra.get("tpot_ms") is not None:
        return run.extra["tpot_ms"]
    if run.ttft_ms is None or run.total_ms is None or not run.completion_tokens or run.completion_tokens < 2:
        return None
    return (run.total_ms - run.ttft_ms) / (run.completion_tokens - 1)


def _meets(run: RunRecord, slo: dict[str, float]) -> bool:
    values = {"ttft_ms": run.ttft_ms, "tpot_ms": tpot_ms(run), "e2el_ms": run.total_ms}
    return all(values[key] is not None and values[key] <= limit for key, limit in slo.items())


def level_entry(*, key: str, profile: str, workload: str, runs: list[RunRecord], window_s: float | None,
                tokens_in_window: int | None = None, concurrency: int | None = None, rate: float | None = None,
                peak_concurrency: int | None = None, slo: dict[str, float] | None = None,
                prompt_requested: int | None = None, queued: int = 0) -> dict[str, Any]:
    """The ``result.levels`` entry of one level from its measured runs (failed ones included);
    ``peak_concurrency``, the most requests in flight at once, is the file's ``max_concurrency``."""
    done = [r for r in runs if r.failed is None]
    failures = Counter(r.failed for r in runs if r.failed is not None)
    if window_s is None:  # sequential: requests back to back
        window_s = sum((r.total_ms or 0) for r in done) / 1000 or None
    output = sum(r.completion_tokens or 0 for r in done)
    prompt = sum(r.prompt_tokens or 0 for r in done)
    per_s = (lambda n: n / window_s) if window_s else (lambda n: None)
    entry: dict[str, Any] = {
        "key": key, "profile": profile, "workload": workload, "concurrency": concurrency, "rate": rate,
        "duration_s": window_s, "completed": len(done), "failed": sum(failures.values()),
        "failures": dict(failures), "short_outputs": sum(r.short_output for r in done),
        "max_concurrency": peak_concurrency, "queued_arrivals": queued,
        "request_throughput": per_s(len(done)),
        "output_throughput": per_s(tokens_in_window if tokens_in_window is not None else output),
        "total_token_throughput": per_s(prompt + output),
        "ttft_ms": distribution(r.ttft_ms for r in done),
        "tpot_ms": distribution(tpot_ms(r) for r in done),
        "itl_ms": distribution(gap for r in done for gap in (r.extra.get("itl_ms") or [])),
        "e2el_ms": distribution(r.total_ms for r in done),
        "goodput": None,
    }
    if slo:
        good = sum(_meets(r, slo) for r in done)
        entry["goodput"] = {"slo": slo, "requests_per_s": per_s(good),
                            "share": good / len(runs) if runs else None}
    if prompt_requested is not None:
        from velollm_core.bench.workloads import prompt_check

        entry["prompt_tokens"] = prompt_check(prompt_requested, [r.prompt_tokens for r in done
                                                                 if r.prompt_tokens is not None])
    return entry


def find_knee(levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The knee of one workload's load curve: the level with the highest "power" (Kleinrock's
    throughput / latency), past which more load buys latency faster than throughput."""
    points = [lv for lv in levels if lv.get("output_throughput") and (lv.get("e2el_ms") or {}).get("median")]
    if len(points) < 3:
        return None
    best = max(points, key=lambda lv: lv["output_throughput"] / lv["e2el_ms"]["median"])
    return {"knee": best["key"], "workload": best["workload"],
            "why": "highest output tok/s per ms of median end-to-end latency (Kleinrock's power): "
                   f"{best['output_throughput']:.1f} tok/s at {best['e2el_ms']['median']:.0f} ms"}
