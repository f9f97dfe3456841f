"""Compare two benchmark result files: ratio of medians per suite and metric, and whether the
difference exceeds run-to-run noise (bootstrap interval of the ratio excludes 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from velollm_core.bench.engine import METRICS, summary_key
from velollm_core.bench.stats import bootstrap_ratio_interval, summarize
from velollm_core.errors import UserInputError
from velollm_core.models import BenchmarkResult

# For these, smaller is better; for every other metric, larger is better.
LOWER_IS_BETTER = {"ttft_ms", "total_ms"}
# Token counts describe the workload, not its speed: shown only when they differ.
WORKLOAD_METRICS = {"prompt_tokens", "completion_tokens"}


def load_result(path: Path) -> BenchmarkResult:
    """Read a result file, with a readable error when it is missing or not a VeloLLM result."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"result file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path} is not valid JSON: {exc}") from None
    try:
        return BenchmarkResult.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise UserInputError(f"{path} is not a VeloLLM benchmark result: {str(exc).splitlines()[0]}") from None


def _values(result: BenchmarkResult, key: str, metric: str) -> list[float]:
    return [
        getattr(run, metric)
        for run in result.runs
        if summary_key(run.benchmark, run.concurrency) == key and getattr(run, metric) is not None
    ]


def compare_results(a: BenchmarkResult, b: BenchmarkResult) -> list[dict[str, Any]]:
    """One row per (suite, metric) present in both: medians, ratio b/a, interval, verdict."""
    rows = []
    keys = [k for k in a.summary if k in b.summary]
    for key in keys:
        for metric in METRICS:
            va, vb = _values(a, key, metric), _values(b, key, metric)
            sa, sb = summarize(va), summarize(vb)
            if sa is None or sb is None or not sa.median:
                continue
            if metric in WORKLOAD_METRICS and sa.median == sb.median:
                continue
            ratio = sb.median / sa.median
            interval = bootstrap_ratio_interval(va, vb)
            if interval is None:
                verdict = "too few runs"
            elif interval[0] <= 1.0 <= interval[1]:
                verdict = "within noise"
            else:
                better = (ratio < 1) if metric in LOWER_IS_BETTER else (ratio > 1)
                verdict = "better" if better else "worse"
            if metric in WORKLOAD_METRICS and verdict in ("better", "worse"):
                verdict = "differs"
            rows.append(
                {
                    "benchmark": key,
                    "metric": metric,
                    "a_median": sa.median,
                    "b_median": sb.median,
                    "ratio": ratio,
                    "interval_95": list(interval) if interval else None,
                    "n_a": sa.n,
                    "n_b": sb.n,
                    "verdict": verdict,
                }
            )
    return rows
