"""Result summaries: the statistics of a result's runs per suite (and load level) and metric.

The shape is the ``summary`` of a result file, ``{<benchmark>[@c<N>|@<level>]: {<metric>: MetricStats}}``:
the engine writes it, and compare, history and report read it through these names, not through the
engine.
"""

from __future__ import annotations

from typing import Any

from velollm_core.contract.schemas import RunRecord
from velollm_core.contract.stats import summarize

# Metrics summarized per suite, in display order.
METRICS = (
    "decode_tokens_per_s",
    "client_decode_tokens_per_s",
    "prompt_tokens_per_s",
    "ttft_ms",
    "total_ms",
    "prompt_tokens",
    "completion_tokens",
    # Reasoning models, tool calls, multi-turn: summarized only where runs carry them.
    "time_to_first_answer_ms",
    "reasoning_tokens",
    "answer_tokens",
    "tool_args_ms",
    "cached_prompt_tokens",
)


def summary_key(benchmark: str, concurrency: int | str | None) -> str:
    """'short_completion' at sequential, 'short_completion@c4' / '@rate2' at a load level."""
    if concurrency in (None, 1, "seq"):
        return benchmark
    return f"{benchmark}@{concurrency if isinstance(concurrency, str) else f'c{concurrency}'}"


def run_key(run: RunRecord) -> str:
    """The summary key a run is counted under."""
    return summary_key(run.benchmark, run.level if run.level is not None else run.concurrency)


def summarize_runs(runs: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per suite (and load level), MetricStats for each metric that has values (failed runs left out, and
    reasoning runs that never started their answer: flagged ``no_answer``, not averaged in)."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.failed is None and not run.no_answer:
            groups.setdefault(run_key(run), []).append(run)
    summary = {}
    for key, group in groups.items():
        metrics = {}
        for metric in METRICS:
            stats = summarize([getattr(run, metric) for run in group])
            if stats is not None:
                metrics[metric] = stats
        summary[key] = metrics
    return summary
