"""The engine's ceiling: what a backend's inference engine generates alone, with no server around it.

A load level runs N streams through a server; the same engine, driven directly at N parallel
sequences of the same prompt and output lengths, shows how fast generation could be at that load.
The level's output tok/s divided by that figure is its *server efficiency*. A backend that can
measure its engine alone declares ``Capabilities.engine_ceiling`` and answers
``Backend.engine_ceiling(shapes, context)`` with one ``EngineCeiling`` per ``EngineShape`` it could
measure (llama.cpp: ``llama-batched-bench``); the engine asks only when the user opts in
(``velollm benchmark --engine-ceiling``), after the last level, once the server is closed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class EngineShape:
    """One load level's shape: parallel sequences, prompt tokens and output tokens per sequence."""

    sequences: int
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class EngineCeiling:
    """The engine alone at one ``EngineShape``.

    ``output_tokens_per_s``: every sequence's generated tokens over the generation time (the
    ceiling a server's output tok/s is divided by); ``prompt_tokens_per_s``: the prompts' rate;
    ``with_prompts_tokens_per_s``: the generated tokens over the whole time, prompts processed too (the
    same work a closed-loop server level does); ``step_ms``: one generation step of all sequences
    together; ``tool``: the program that measured
    it and ``command`` how (argv, for the result file).
    """

    shape: EngineShape
    output_tokens_per_s: float
    prompt_tokens_per_s: float | None = None
    with_prompts_tokens_per_s: float | None = None
    step_ms: float | None = None
    tool: str = ""
    command: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["command"] = list(self.command)
        return data
