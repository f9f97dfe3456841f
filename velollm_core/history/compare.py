"""Compare two benchmark results (files or history ids): ratio of medians per suite and metric, and
whether the difference exceeds run-to-run noise (bootstrap interval of the ratio excludes 1); and a
baseline mode, a result against earlier ones of the same setup, that flags regressions."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import BenchmarkResult
from velollm_core.contract.stats import bootstrap_ratio_interval, summarize
from velollm_core.history.summary import METRICS, summary_key

# For these, smaller is better; for every other metric, larger is better.
LOWER_IS_BETTER = {"ttft_ms", "total_ms"}
# Token counts describe the workload, not its speed: shown only when they differ.
WORKLOAD_METRICS = {"prompt_tokens", "completion_tokens"}
# A result file VeloLLM writes nests a handful of levels; json's recursive parser gives up with a
# RecursionError near 1000, and anything this deep is no result of ours anyway.
MAX_DEPTH = 64
# No measurement comes near these (1e12 ms is 31 years, 1e12 tokens/s a million times any machine,
# 1e-12 ms a thousandth of a nanosecond): beyond them ratios and variances overflow (1e308 did, in
# fsum), so a value outside is a corrupt or forged file, refused instead of compared.
MAX_MEASUREMENT = 1e12
MIN_MEASUREMENT = 1e-12


def read_document(path: Path) -> tuple[str, object]:
    """(text, parsed JSON) of a result file; a UserInputError when it is missing, unreadable, not JSON,
    nested too deep or holds NaN or infinities."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"result file not found: {path}") from None
    except OSError as exc:
        raise UserInputError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # bytes that are not UTF-8
        raise UserInputError(f"{path} is not valid JSON: {exc}") from None
    return text, parse_document(text, path)


def parse_document(text: str, name: Path | str) -> object:
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserInputError(f"{name} nests JSON too deeply to be a VeloLLM result") from None
    except ValueError as exc:  # malformed JSON
        raise UserInputError(f"{name} is not valid JSON: {exc}") from None
    check_finite(data, name)
    return data


def check_finite(data: object, path: Path) -> None:
    """Refuse NaN and infinities anywhere in ``data`` (json reads ``NaN`` and ``1e999`` without a
    word), and nesting deeper than MAX_DEPTH; iterative, so depth itself cannot crash it."""
    stack: list[tuple[object, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            top = where.split(".")[0].split("[")[0]
            raise UserInputError(f"{path} nests JSON more than {MAX_DEPTH} levels deep (under {top!r}): "
                                 "not a VeloLLM result")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserInputError(f"{path} has {value} at {where or 'its top level'}, but a VeloLLM result "
                                 "holds finite numbers only")
        if isinstance(value, dict):
            items = [(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        stack.extend((v, w, depth + 1) for v, w in reversed(items))  # reversed: the first one is seen first


def _shown(value: float) -> str:
    try:
        return f"{value:g}"
    except OverflowError:  # an int beyond any float
        return f"a {len(str(abs(int(value))))}-digit number"


def check_measurements(result: BenchmarkResult, path: Path) -> None:
    """Refuse a metric no benchmark could have measured (see MAX_MEASUREMENT)."""
    for i, run in enumerate(result.runs):
        for metric in METRICS:
            value = getattr(run, metric)
            if value and not MIN_MEASUREMENT <= abs(value) <= MAX_MEASUREMENT:
                raise UserInputError(
                    f"{path} has {metric} = {_shown(value)} in runs[{i}], beyond any measurement (a nonzero "
                    f"value lies within {MIN_MEASUREMENT:g}..{MAX_MEASUREMENT:g}): not a VeloLLM result"
                )


def _validation_problem(exc) -> str:
    """The first problem pydantic found, as 'field: message'."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))


def load_result(path: Path) -> BenchmarkResult:
    """Read a result file, with a one-sentence UserInputError when it is missing, malformed, nested
    too deep, not a VeloLLM result, or holds numbers no benchmark measured."""
    return result_from_document(read_document(path)[1], path)


def result_from_document(data: object, name: Path | str) -> BenchmarkResult:
    """A parsed, finite document as a BenchmarkResult, checked (see ``load_result``)."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise UserInputError(f"{name} is not a VeloLLM benchmark result: it holds a JSON {type(data).__name__}, "
                             "not an object")
    if {"vanilla", "speculative"} <= data.keys():
        raise UserInputError(f"{name} is a speculative bench (vanilla vs speculative in one file), not a "
                             "benchmark: `velollm report` shows it")
    try:
        result = BenchmarkResult.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(f"{name} is not a VeloLLM benchmark result ({_validation_problem(exc)})") from None
    check_measurements(result, name)
    return result


def load_source(source: str | Path) -> tuple[str, BenchmarkResult]:
    """(name, result) of a result file or a history id ('12', '#12', 'latest'); a file wins over an id."""
    path = Path(source)
    if path.exists() or not isinstance(source, str):
        return str(source), load_result(path)
    from velollm_core.history.store import load_ref

    found = load_ref(source)
    if found is None:
        raise UserInputError(f"result file not found: {source}")
    name, text = found
    return name, result_from_document(parse_document(text, name), name)


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
    return [(name, result_from_document(parse_document(text, name), name)) for name, text in documents]
