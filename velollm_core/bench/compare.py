"""Compare two benchmark result files: ratio of medians per suite and metric, and whether the
difference exceeds run-to-run noise (bootstrap interval of the ratio excludes 1)."""

from __future__ import annotations

import json
import math
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
# A result file VeloLLM writes nests a handful of levels; json's recursive parser gives up with a
# RecursionError near 1000, and anything this deep is no result of ours anyway.
MAX_DEPTH = 64
# No measurement comes near these (1e12 ms is 31 years, 1e12 tokens/s a million times any machine,
# 1e-12 ms a thousandth of a nanosecond): beyond them ratios and variances overflow (1e308 did, in
# fsum), so a value outside is a corrupt or forged file, refused instead of compared.
MAX_MEASUREMENT = 1e12
MIN_MEASUREMENT = 1e-12


def _read_json(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"result file not found: {path}") from None
    except RecursionError:
        raise UserInputError(f"{path} nests JSON too deeply to be a VeloLLM result") from None
    except OSError as exc:
        raise UserInputError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # malformed JSON, or bytes that are not UTF-8
        raise UserInputError(f"{path} is not valid JSON: {exc}") from None


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
    from pydantic import ValidationError

    data = _read_json(path)
    if not isinstance(data, dict):
        raise UserInputError(f"{path} is not a VeloLLM benchmark result: it holds a JSON {type(data).__name__}, "
                             "not an object")
    check_finite(data, path)
    try:
        result = BenchmarkResult.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(f"{path} is not a VeloLLM benchmark result ({_validation_problem(exc)})") from None
    check_measurements(result, path)
    return result


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
