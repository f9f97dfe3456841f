"""What the engine checks of each answer beside its speed: a reasoning run whose answer never started
(flagged, left out of the averages), structured output that must follow ``--json-schema``, and tool
calls whose arguments must parse and follow the tool's parameters schema. Validated with the
jsonschema library, the same for every backend; the notes say the shares under the result table.
"""

from __future__ import annotations

import json
from typing import Any

from velollm_core.contract.schemas import BenchmarkResult, GenerationRequest, RunRecord


def follows(instance: Any, schema: dict[str, Any]) -> bool:
    """Whether ``instance`` is valid under ``schema`` (a schema checked when it was loaded)."""
    from jsonschema import validators

    validator = validators.validator_for(schema, default=validators.Draft202012Validator)
    return validator(schema).is_valid(instance)


def json_answer_valid(text: str, schema: dict[str, Any]) -> bool:
    """The answer parses as one JSON value and follows ``schema``."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return follows(value, schema)


def tool_calls_valid(calls: list[dict[str, str]], tools: list[dict[str, Any]]) -> bool:
    """At least one call; each names a given tool, and its arguments parse as a JSON object that
    follows that tool's parameters schema."""
    schemas = {tool["function"]["name"]: tool["function"].get("parameters") or {} for tool in tools}
    if not calls:
        return False
    for call in calls:
        if call.get("name") not in schemas:
            return False
        try:
            arguments = json.loads(call.get("arguments") or "")
        except ValueError:
            return False
        if not isinstance(arguments, dict) or not follows(arguments, schemas[call["name"]]):
            return False
    return True


def annotate(record: RunRecord, request: GenerationRequest) -> None:
    """Set the record's answer checks from the request it answered."""
    if record.failed is not None:
        return
    if record.reasoning_tokens and record.time_to_first_answer_ms is None and not record.tool_calls:
        record.no_answer = True  # it thought through the whole budget: no answer latency to average
    if request.json_schema is not None:
        record.json_valid = json_answer_valid(record.text, request.json_schema)
    if request.tools:
        record.tool_call_valid = tool_calls_valid(record.tool_calls, request.tools)


def _share(runs: list[RunRecord], field: str) -> tuple[int, int]:
    checked = [getattr(run, field) for run in runs if getattr(run, field) is not None]
    return sum(1 for value in checked if value), len(checked)


def answer_notes(result: BenchmarkResult) -> list[str]:
    """Lines under the result table: validity shares and answers that never started."""
    notes = []
    for name, runs in _by_benchmark(result).items():
        valid, checked = _share(runs, "json_valid")
        if checked:
            notes.append(f"{name}: {valid}/{checked} answers valid JSON following the schema")
        valid, checked = _share(runs, "tool_call_valid")
        if checked:
            notes.append(f"{name}: {valid}/{checked} tool calls valid (arguments follow the tool's schema)")
        missing = sum(1 for run in runs if run.no_answer)
        if missing:
            notes.append(f"{name}: {missing} run(s) thought through the token budget without an answer "
                         "(flagged, not averaged)")
    return notes


def _by_benchmark(result: BenchmarkResult) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for run in result.runs:
        if run.failed is None:
            groups.setdefault(run.benchmark, []).append(run)
    return groups


def _median_cell(values: list[float | int | None], digits: int = 1) -> str:
    from velollm_core.contract.stats import percentile

    present = [value for value in values if value is not None]
    return f"{percentile(present, 50):.{digits}f}" if present else "-"


def reasoning_table(result: BenchmarkResult):
    """Medians per suite of the reasoning split (a rich Table), or None when no run reasoned."""
    from rich.table import Table

    rows = []
    for name, runs in _by_benchmark(result).items():
        if not any(run.reasoning_tokens for run in runs):
            continue
        answered = [run for run in runs if not run.no_answer]
        rows.append((name, _median_cell([r.reasoning_tokens for r in answered], 0),
                     _median_cell([r.answer_tokens for r in answered], 0),
                     _median_cell([r.ttft_ms for r in answered]),
                     _median_cell([r.time_to_first_answer_ms for r in answered]),
                     str(len(runs) - len(answered))))
    if not rows:
        return None
    table = Table(title="reasoning (medians)",
                  caption="thinking/answer: tokens; TTFT: any first token; TTFA: first answer token")
    for header in ("suite", "thinking", "answer", "TTFT ms", "TTFA ms", "no answer"):
        table.add_column(header, justify="left" if header == "suite" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def turn_notes(result: BenchmarkResult) -> list[str]:
    """One line per turn of each multi-turn level: TTFT and prompt tokens (cached of them) medians."""
    notes = []
    for level in result.levels:
        for row in level.get("turns") or []:
            ttft = "-" if row["ttft_ms"] is None else f"{row['ttft_ms']:.1f} ms"
            prompt = "-" if row["prompt_tokens"] is None else f"{row['prompt_tokens']:g}"
            cached = "" if row["cached_prompt_tokens"] is None else f" ({row['cached_prompt_tokens']:g} cached)"
            notes.append(f"{level['workload']} {level['key']} turn {row['turn']}: TTFT {ttft}, "
                         f"prompt {prompt}{cached}, n={row['completed']}")
    return notes
