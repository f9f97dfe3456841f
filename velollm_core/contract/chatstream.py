"""The generated part of an OpenAI-style stream (chat ``delta``s, completions' ``text``), as every server
that speaks the format sends it (vLLM, SGLang, llama-server's ``/v1/chat/completions``): which chunks
carry answer text and which only thinking (``delta.reasoning_content``, or ``delta.reasoning``), the
tool calls assembled from their fragments, and when the answer began.

A backend's accumulator conforms each event to its own schema (``CHAT_CHOICE`` for the choices, plus
what its server adds: usage details, llama-server's ``timings``), words the server's error events,
and hands the event to ``ChatDeltas.take``; ``ChatDeltas.timing_fields`` then gives the
GenerationTiming fields the deltas measured, the backend adding its counts and rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

# Generated-text fields of a chat delta: the answer (``content``), and the reasoning text some servers
# stream separately (``reasoning_content``: llama-server, vLLM; ``reasoning``: newer vLLM, SGLang),
# generated tokens too.
ANSWER_FIELD = "content"
DELTA_TEXT_FIELDS = (ANSWER_FIELD, "reasoning_content", "reasoning")
# One fragment of a streamed tool call: the first names the function, the rest extend its arguments.
TOOL_CALL_DELTA = {"index": int, "id": str, "function": {"name": str, "arguments": str}}
# One choice of a stream event, with the types ChatDeltas reads (velollm_core.contract.wire's schemas):
# chat's ``delta``, completions' ``text``.
CHAT_CHOICE = {"text": str, "delta": {**dict.fromkeys(DELTA_TEXT_FIELDS, str), "tool_calls": [TOOL_CALL_DELTA]},
               "finish_reason": str}


def chunk_text(event: dict[str, Any]) -> tuple[str, str]:
    """(answer text, all generated text) of one stream event, over every choice."""
    answer: list[str] = []
    generated: list[str] = []
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            answer.append(choice["text"])
            generated.append(choice["text"])
        delta = choice.get("delta") or {}
        for key in DELTA_TEXT_FIELDS:
            value = delta.get(key)
            if isinstance(value, str):
                generated.append(value)
                if key == ANSWER_FIELD:
                    answer.append(value)
    return "".join(answer), "".join(generated)


def tool_call_deltas(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool-call fragments of one stream event (chat ``delta.tool_calls``), over every choice."""
    deltas = []
    for choice in event.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        deltas += [call for call in calls or [] if isinstance(call, dict)]
    return deltas


@dataclass
class ChatDeltas:
    """What the generated part of one stream told the client, and when (``time.perf_counter()`` times)."""

    token_times: list[float] = field(default_factory=list)  # each event that carried text or a tool call
    text: list[str] = field(default_factory=list)  # the answer's pieces (thinking left out)
    reasoning_chunks: int = 0  # events that carried only thinking
    answer_at: float | None = None  # the first event of answer text or of a tool call
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)  # by index: name, arguments
    tool_args_at: float | None = None  # the last tool-call fragment
    finish_reason: str | None = None

    def take(self, event: dict[str, Any], arrived: float) -> None:
        """Take in the choices of one stream event, already conformed to a schema with ``CHAT_CHOICE``."""
        answer, generated = chunk_text(event)
        calls = tool_call_deltas(event)
        for call in calls:
            entry = self.tool_calls.setdefault(call.get("index", len(self.tool_calls)), {"name": "", "arguments": ""})
            function = call.get("function") or {}
            entry["name"] += function.get("name") or ""
            entry["arguments"] += function.get("arguments") or ""
            self.tool_args_at = arrived
        if generated or calls:
            self.token_times.append(arrived)
            if answer or calls:
                self.answer_at = self.answer_at or arrived
            else:
                self.reasoning_chunks += 1
        if answer:
            self.text.append(answer)
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def gaps_ms(self) -> list[float]:
        """The inter-token latencies: milliseconds between consecutive token-bearing events."""
        return [(later - earlier) * 1000 for earlier, later in pairwise(self.token_times)]

    def timing_fields(self, start: float, completion_tokens: int, reasoning_tokens: int | None = None) -> dict[str, Any]:
        """The GenerationTiming fields the deltas measured from ``start`` (the request was sent): TTFT, the
        answer's text, the stop reason, the tool calls and when their arguments ended, and, for a model
        that thought, how many of the ``completion_tokens`` were thinking (the server's
        ``reasoning_tokens`` where it counts them, else one per thinking-only event) and when the answer
        began."""
        times = self.token_times
        fields: dict[str, Any] = {
            "ttft_ms": (times[0] - start) * 1000 if times else None,
            "text": "".join(self.text),
            "stop_reason": self.finish_reason,
            "tool_calls": [self.tool_calls[index] for index in sorted(self.tool_calls)],
            "tool_args_ms": (self.tool_args_at - start) * 1000 if self.tool_args_at is not None else None,
        }
        reasoning = self.reasoning_chunks if reasoning_tokens is None else reasoning_tokens
        if reasoning:  # a reasoning model: its thinking, then its answer (which may never have started)
            fields["reasoning_tokens"] = min(reasoning, completion_tokens)
            fields["answer_tokens"] = completion_tokens - fields["reasoning_tokens"]
        if self.answer_at is not None:
            fields["time_to_first_answer_ms"] = (self.answer_at - start) * 1000
        return fields
