"""Server efficiency: each load level's output tok/s against the engine alone at the same shape.

After the last level (the server closed), the engine asks the backend for its engine's ceiling at
each closed-loop level's shape (``Backend.engine_ceiling``; ``velollm_core.contract.ceiling``): the
level's streams as parallel sequences, its median prompt and output tokens as each sequence's. Each
level then holds ``engine_ceiling`` (the figure, the program and its command) and
``server_efficiency`` (output tok/s / the ceiling's output tok/s; ``server_efficiency_with_prompts``
against the engine's rate with its prompts' time counted). Open-loop levels (a rate) hold no
fixed number of sequences and get none.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from velollm_core.contract.backends import Backend
from velollm_core.contract.ceiling import EngineCeiling, EngineShape
from velollm_core.contract.errors import VeloError
from velollm_core.contract.schemas import BenchmarkContext, BenchmarkResult, RunRecord

CEILING_KEY = "engine_ceiling"
EFFICIENCY_KEY = "server_efficiency"
ERROR_KEY = "engine_ceiling_error"  # in the result's settings: why the measurement failed
# Against the engine's output rate over prompts and generation together: a closed-loop level prefills too.
EFFICIENCY_WITH_PROMPTS_KEY = "server_efficiency_with_prompts"


def level_runs(result: BenchmarkResult, level: dict[str, Any]) -> list[RunRecord]:
    """The finished runs of one level (sequential runs carry no level key)."""
    key = None if level.get("profile") == "sequential" else level.get("key")
    return [run for run in result.runs if run.benchmark == level.get("workload") and run.level == key
            and run.failed is None and run.iteration >= 1]


def level_shape(result: BenchmarkResult, level: dict[str, Any]) -> EngineShape | None:
    """The engine shape of a closed-loop level: its streams, median prompt and output tokens."""
    sequences = level.get("concurrency")
    if level.get("rate") is not None or not isinstance(sequences, int) or sequences < 1:
        return None
    runs = level_runs(result, level)
    prompts = [run.prompt_tokens for run in runs if run.prompt_tokens]
    outputs = [run.completion_tokens for run in runs if run.completion_tokens]
    if not prompts or not outputs:
        return None
    return EngineShape(sequences, round(statistics.median(prompts)), round(statistics.median(outputs)))


def annotate(level: dict[str, Any], ceiling: EngineCeiling) -> None:
    """Put ``ceiling`` and the level's efficiency against it on the level entry."""
    figure = ceiling.as_dict()
    level[CEILING_KEY] = figure
    throughput = level.get("output_throughput")
    level[EFFICIENCY_KEY] = _ratio(throughput, ceiling.output_tokens_per_s)
    level[EFFICIENCY_WITH_PROMPTS_KEY] = _ratio(throughput, ceiling.with_prompts_tokens_per_s)


def _ratio(throughput: float | None, ceiling: float | None) -> float | None:
    return round(throughput / ceiling, 4) if throughput and ceiling else None


def measure_ceilings(result: BenchmarkResult, backend: Backend, context: BenchmarkContext,
                     warn: Callable[[str], None], progress: Callable[[str], None] | None = None) -> None:
    """Ask ``backend`` for the engine's ceiling at every closed-loop level's shape and annotate the levels;
    a backend that cannot is said once, and the levels keep no efficiency."""
    if not backend.capabilities.engine_ceiling:
        warn(f"{backend.name} cannot measure its engine alone: no server efficiency in this result")
        return
    shapes: dict[EngineShape, list[dict[str, Any]]] = {}
    for level in result.levels:
        shape = level_shape(result, level)
        if shape is not None:
            shapes.setdefault(shape, []).append(level)
    if not shapes:
        return
    if progress is not None:
        progress(f"measuring the engine alone at {len(shapes)} shape(s)")
    try:
        ceilings = backend.engine_ceiling(list(shapes), context)
    except VeloError as exc:  # the levels stand measured: the run stays complete, without efficiencies
        result.settings[ERROR_KEY] = str(exc)
        warn(f"the engine ceiling was not measured: {exc}")
        return
    for ceiling in ceilings:
        for level in shapes.get(ceiling.shape, []):
            annotate(level, ceiling)
    missing = [level["key"] for levels in shapes.values() for level in levels if CEILING_KEY not in level]
    if missing:
        warn(f"{backend.name} measured no engine ceiling for level(s) {', '.join(missing)}")
