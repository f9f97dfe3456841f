"""Compare two benchmark results (files or history ids): ratio of medians per suite and metric, and
whether the difference exceeds run-to-run noise (bootstrap interval of the ratio excludes 1); and a
baseline mode, a result against earlier ones of the same setup, that flags regressions."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import BenchmarkResult
from velollm_core.contract.stats import bootstrap_ratio_interval, summarize
from velollm_core.history.documents import benchmark_result, parse_document
from velollm_core.history.summary import METRICS, summary_key

if TYPE_CHECKING:
    from velollm_core.history.store import ResultDocument

# For these, smaller is better; for every other metric, larger is better.
LOWER_IS_BETTER = {"ttft_ms", "total_ms"}
# Token counts describe the workload, not its speed: shown only when they differ.
WORKLOAD_METRICS = {"prompt_tokens", "completion_tokens"}


def load_result(path: Path) -> BenchmarkResult:
    """Read a result file (VeloLLM's, or another tool's that one result of it imports from), with a
    one-sentence UserInputError when it is missing, malformed, nested too deep, not a benchmark
    result, or holds numbers no benchmark measured."""
    from velollm_core.history.store import result_documents

    return _one_result(result_documents(str(path), history=False), path)[1]


def load_source(source: str | Path) -> tuple[str, BenchmarkResult]:
    """(name, result) of a result file or a history id ('12', '#12', 'latest'); a file wins over an id."""
    from velollm_core.history.store import result_documents

    return _one_result(result_documents(str(source), history=isinstance(source, str)), source)


def _one_result(documents: list[ResultDocument], source: str | Path) -> tuple[str, BenchmarkResult]:
    """The one benchmark result of ``source``'s documents, named as compare shows it."""
    if len(documents) != 1:
        raise UserInputError(f"{source} holds {len(documents)} results: `velollm history import` it and compare "
                             "their history ids")
    found = documents[0]
    # Another tool's file is named by its path, as the user gave it.
    return (str(source) if found.imported else found.name), benchmark_result(found.data, found.name)


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


def _better(metric: str, ratio: float) -> bool:
    return (ratio < 1) if metric in LOWER_IS_BETTER else (ratio > 1)


def baseline_rows(baselines: list[BenchmarkResult], new: BenchmarkResult) -> list[dict[str, Any]]:
    """``new`` against earlier results of the same setup: a regression is a metric worse beyond noise.

    Noise has two parts, and a change must clear both. Within a run: the bootstrap interval of
    new/baseline medians over the runs (as ``compare_results``) must exclude 1. Between runs: with two
    or more baselines, their medians scatter around their common median by up to some fraction
    (another server start, another thermal state); the new median must lie beyond that fraction
    too, since that much change happens with nothing changed. One baseline gives the first part only
    (``noise_band`` None).
    """
    rows = []
    for key in new.summary:
        sources = [b for b in baselines if key in b.summary]
        if not sources:
            continue
        for metric in METRICS:
            if metric in WORKLOAD_METRICS:
                continue
            vb = _values(new, key, metric)
            per_baseline = [summarize(_values(b, key, metric)) for b in sources]
            medians = [s.median for s in per_baseline if s is not None]
            sb = summarize(vb)
            if sb is None or not medians:
                continue
            base = statistics.median(medians)
            if not base:
                continue
            pooled = [v for b in sources for v in _values(b, key, metric)]
            ratio = sb.median / base
            interval = bootstrap_ratio_interval(pooled, vb)
            spread = max(abs(m / base - 1) for m in medians) if len(medians) >= 2 else None
            band = [1 - spread, 1 + spread] if spread is not None else None
            if interval is None:
                verdict = "too few runs"
            elif interval[0] <= 1.0 <= interval[1] or (band is not None and band[0] <= ratio <= band[1]):
                verdict = "within noise"
            else:
                verdict = "better" if _better(metric, ratio) else "worse"
            rows.append({"benchmark": key, "metric": metric, "a_median": base, "b_median": sb.median,
                         "ratio": ratio, "interval_95": list(interval) if interval else None,
                         "noise_band": band, "baselines": len(medians), "n_a": len(pooled), "n_b": sb.n,
                         "verdict": verdict, "regression": verdict == "worse"})
    return rows


def find_baselines(new_document: dict, limit: int) -> list[tuple[str, BenchmarkResult]]:
    """Up to ``limit`` complete benchmarks in the history older than ``new_document``, of the same
    backend, model and machine (CPU and GPUs): "did the new runtime make this model slower here?"."""
    from velollm_core.history.store import machine_of, open_history

    settings = new_document.get("settings") or {}
    facts = {"backend": settings.get("backend"), "model": settings.get("model"),
             "machine": machine_of(new_document.get("environment")), "started_at": new_document.get("started_at")}
    with open_history(must_exist=True) as history:
        ids = history.baselines(facts, limit)
        documents = [(f"#{i}", history.document(i)) for i in ids]
    return [(name, benchmark_result(parse_document(text, name), name)) for name, text in documents]
