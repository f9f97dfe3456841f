"""Timing one streamed OpenAI-style generation: TTFT, inter-token latency, TPOT and decode rate from
the client's clock, token counts from ``usage``, and llama.cpp's ``timings`` beside them when sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from velollm_core.api import NUMBER, BackendError, GenerationTiming, check_timing, stream_event

# Generated-text fields of a choice: completions' ``text``; chat's ``delta.content``, plus the
# reasoning text some servers (vLLM, SGLang) stream separately — those are generated tokens too.
_DELTA_FIELDS = ("content", "reasoning_content", "reasoning")
# The ``timings`` object a llama-server adds to its OpenAI-style events: the fields read here.
SERVER_TIMINGS = {**dict.fromkeys(("prompt_ms", "predicted_ms", "prompt_per_second", "predicted_per_second"), NUMBER),
                  "cache_n": int}
# The fields StreamRecord and timing_from_stream read, with their types (velollm_core.contract.wire).
# One fragment of a streamed tool call: the first names the function, the rest extend its arguments.
TOOL_CALL_DELTA = {"index": int, "id": str, "function": {"name": str, "arguments": str}}
STREAM_EVENT = {
    "choices": [{"text": str, "delta": {**dict.fromkeys(_DELTA_FIELDS, str), "tool_calls": [TOOL_CALL_DELTA]},
                 "finish_reason": str}],
    "usage": {"prompt_tokens": int, "completion_tokens": int, "prompt_tokens_details": {"cached_tokens": int},
              "completion_tokens_details": {"reasoning_tokens": int}},
    "timings": SERVER_TIMINGS,
    "system_fingerprint": str,
}


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
        for key in _DELTA_FIELDS:
            value = delta.get(key)
            if isinstance(value, str):
                generated.append(value)
                if key == "content":
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
class StreamRecord:
    """What the client saw of one stream: when each content chunk arrived, and the final facts."""

    start: float
    chunk_times: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    finish_reason: str | None = None
    fingerprint: str | None = None
    reasoning_chunks: int = 0  # chunks that carried only reasoning text
    answer_at: float | None = None  # the first chunk of answer text or of a tool call
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)  # by index: name, arguments
    tool_args_at: float | None = None  # the last tool-call fragment

    def observe(self, arrived: float, event: dict[str, Any]) -> None:
        """Take one stream event in; an ``error`` event becomes a BackendError."""
        event = stream_event(event, STREAM_EVENT, "the server")
        if event.get("error"):
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise BackendError(f"the server reported an error mid-stream: {message}")
        answer, generated = chunk_text(event)
        calls = tool_call_deltas(event)
        for call in calls:
            entry = self.tool_calls.setdefault(call.get("index", len(self.tool_calls)), {"name": "", "arguments": ""})
            function = call.get("function") or {}
            entry["name"] += function.get("name") or ""
            entry["arguments"] += function.get("arguments") or ""
            self.tool_args_at = arrived
        if generated or calls:
            self.chunk_times.append(arrived)
            if answer or calls:
                self.answer_at = self.answer_at or arrived
            else:
                self.reasoning_chunks += 1
        if answer:
            self.text.append(answer)
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        self.fingerprint = event.get("system_fingerprint") or self.fingerprint

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None or self.usage is not None


class OpenAIStream(StreamRecord):
    """A StreamRecord as the core's load generator feeds it (``velollm_core.api.StreamCall``)."""

    def __init__(self, endpoint: str, server: str) -> None:
        super().__init__(start=0.0)
        self.endpoint = endpoint
        self.server = server

    @property
    def token_times(self) -> list[float]:
        return self.chunk_times

    def feed(self, event: dict[str, Any], arrived: float) -> bool:
        self.observe(arrived, event)
        return False  # usage may follow the finish_reason: the stream ends at [DONE]

    def finish(self, start: float, end: float) -> GenerationTiming:
        self.start = start
        if not self.finished:
            raise BackendError(f"the stream from {self.server} ended mid-way after {len(self.chunk_times)} "
                               "content chunk(s), without a finish_reason")
        return timing_from_stream(self, end, endpoint=self.endpoint)


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    from velollm_core.api import percentile

    if not values:
        return {}
    return {
        f"{prefix}_{name}": percentile(values, q) for name, q in (("median", 50), ("p90", 90), ("p99", 99))
    }


def timing_from_stream(record: StreamRecord, end: float, *, endpoint: str) -> GenerationTiming:
    """The GenerationTiming of a finished stream (``end``: when the stream closed)."""
    times = record.chunk_times
    usage = record.usage or {}
    usage_tokens = usage.get("completion_tokens")
    completion_tokens = usage_tokens if isinstance(usage_tokens, int) else len(times)
    total_ms = (end - record.start) * 1000
    ttft_ms = (times[0] - record.start) * 1000 if times else None
    client_rate = None
    if completion_tokens > 1 and len(times) > 1 and times[-1] > times[0]:
        # The first token comes from the prefill; each later one costs one decode step (the same
        # accounting as llama.cpp's predicted_per_second and vLLM's TPOT).
        client_rate = (completion_tokens - 1) / (times[-1] - times[0])
    itl_ms = [(b - a) * 1000 for a, b in pairwise(times)]
    extra: dict[str, Any] = {
        "endpoint": endpoint,
        "token_count_source": "usage" if isinstance(usage_tokens, int) else "chunks",
        "content_chunks": len(times),
        "itl_ms": [round(gap, 3) for gap in itl_ms],
        **_percentiles(itl_ms, "itl_ms"),
    }
    if ttft_ms is not None and completion_tokens > 1:
        extra["tpot_ms"] = (total_ms - ttft_ms) / (completion_tokens - 1)
    server = record.timings or {}
    for key, name in (
        ("prompt_ms", "server_prompt_ms"),
        ("predicted_ms", "server_predicted_ms"),
        ("cache_n", "cache_n"),
    ):
        if server.get(key) is not None:
            extra[name] = server[key]
    server_rate = server.get("predicted_per_second") or None
    details = usage.get("completion_tokens_details") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", server.get("cache_n"))
    reasoning = details.get("reasoning_tokens", record.reasoning_chunks)
    timing = GenerationTiming(
        ttft_ms=ttft_ms,
        prompt_tokens=usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None,
        completion_tokens=completion_tokens,
        prompt_tokens_per_s=server.get("prompt_per_second") or None,
        # DESIGN: the runtime's own rate where it reports one (llama.cpp's timings), the client's otherwise.
        decode_tokens_per_s=server_rate or client_rate,
        client_decode_tokens_per_s=client_rate,
        server_decode_tokens_per_s=server_rate,
        total_ms=total_ms,
        stop_reason=record.finish_reason,
        text="".join(record.text),
        extra=extra,
        cached_prompt_tokens=cached,
        tool_calls=[record.tool_calls[index] for index in sorted(record.tool_calls)],
        tool_args_ms=(record.tool_args_at - record.start) * 1000 if record.tool_args_at is not None else None,
    )
    if reasoning:  # a reasoning model: its thinking, then its answer (which may never have started)
        timing.reasoning_tokens = min(reasoning, completion_tokens)
        timing.answer_tokens = completion_tokens - timing.reasoning_tokens
    if record.answer_at is not None:
        timing.time_to_first_answer_ms = (record.answer_at - record.start) * 1000
    # usage's counts are claims: fewer tokens than the chunks that carried text is flagged, an
    # impossible count or rate refused.
    return check_timing(timing, server="the server", streamed=len(times))
