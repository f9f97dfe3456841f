"""Timing one streamed OpenAI-style generation: TTFT, inter-token latency, TPOT and decode rate from
the client's clock, token counts from ``usage``, and llama.cpp's ``timings`` beside them when sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from velollm_core.api import (
    CHAT_CHOICE,
    NUMBER,
    BackendError,
    ChatDeltas,
    GenerationTiming,
    check_timing,
    stream_event,
)

# The ``timings`` object a llama-server adds to its OpenAI-style events: the fields read here.
SERVER_TIMINGS = {**dict.fromkeys(("prompt_ms", "predicted_ms", "prompt_per_second", "predicted_per_second"), NUMBER),
                  "cache_n": int}
# The fields StreamRecord and timing_from_stream read, with their types (velollm_core.contract.wire).
STREAM_EVENT = {
    "choices": [CHAT_CHOICE],
    "usage": {"prompt_tokens": int, "completion_tokens": int, "prompt_tokens_details": {"cached_tokens": int},
              "completion_tokens_details": {"reasoning_tokens": int}},
    "timings": SERVER_TIMINGS,
    "system_fingerprint": str,
}


@dataclass
class StreamRecord:
    """What the client saw of one stream: the generated deltas as they arrived, and the final facts."""

    start: float
    deltas: ChatDeltas = field(default_factory=ChatDeltas)
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    fingerprint: str | None = None

    @property
    def chunk_times(self) -> list[float]:
        """When each chunk of generated text or tool call arrived."""
        return self.deltas.token_times

    def observe(self, arrived: float, event: dict[str, Any]) -> None:
        """Take one stream event in; an ``error`` event becomes a BackendError."""
        event = stream_event(event, STREAM_EVENT, "the server")
        if event.get("error"):
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise BackendError(f"the server reported an error mid-stream: {message}")
        self.deltas.take(event, arrived)
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        self.fingerprint = event.get("system_fingerprint") or self.fingerprint

    @property
    def finished(self) -> bool:
        return self.deltas.finish_reason is not None or self.usage is not None


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
    measured = record.deltas.timing_fields(
        record.start, completion_tokens, (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    total_ms = (end - record.start) * 1000
    ttft_ms = measured["ttft_ms"]
    client_rate = None
    if completion_tokens > 1 and len(times) > 1 and times[-1] > times[0]:
        # The first token comes from the prefill; each later one costs one decode step (the same
        # accounting as llama.cpp's predicted_per_second and vLLM's TPOT).
        client_rate = (completion_tokens - 1) / (times[-1] - times[0])
    itl_ms = record.deltas.gaps_ms()
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
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", server.get("cache_n"))
    timing = GenerationTiming(
        **measured,
        prompt_tokens=usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None,
        completion_tokens=completion_tokens,
        prompt_tokens_per_s=server.get("prompt_per_second") or None,
        # DESIGN: the runtime's own rate where it reports one (llama.cpp's timings), the client's otherwise.
        decode_tokens_per_s=server_rate or client_rate,
        client_decode_tokens_per_s=client_rate,
        server_decode_tokens_per_s=server_rate,
        total_ms=total_ms,
        extra=extra,
        cached_prompt_tokens=cached,
    )
    # usage's counts are claims: fewer tokens than the chunks that carried text is flagged, an
    # impossible count or rate refused.
    return check_timing(timing, server="the server", streamed=len(times))
