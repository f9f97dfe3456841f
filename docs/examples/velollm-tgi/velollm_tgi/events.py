"""TGI's stream events, and the timing of one streamed generation built from them.

``POST /generate_stream`` answers with server-sent events, one JSON object per ``data:`` line and no
``[DONE]`` marker:

- a token: ``{"index": 1, "token": {"id": 363, "text": " the", "logprob": -0.4, "special": false},
  "generated_text": null, "details": null}``;
- the last token also carries ``generated_text`` (the whole answer) and ``details``
  (``finish_reason``: ``length`` | ``eos_token`` | ``stop_sequence``, ``generated_tokens``, ``seed``,
  and on TGI 2.x ``input_length``, the prompt's tokens);
- an error, in place of a token: ``{"error": "...", "error_type": "generation"}``.

TGI reports no prefill or decode times in the stream, so every rate here is the client's, measured
from each event's arrival time.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from velollm_core.api import (
    NUMBER,
    BackendError,
    GenerationTiming,
    check_timing,
    percentile,
    stream_cut,
    stream_event,
)

# The fields read here, with their types: a field of another type is dropped (velollm_core.api.conform).
STREAM_EVENT = {
    "token": {"id": int, "text": str, "logprob": NUMBER, "special": bool},
    "generated_text": str,
    "details": {"finish_reason": str, "generated_tokens": int, "seed": int, "input_length": int},
    "error": str,
    "error_type": str,
}


class TGIStream:
    """One request's events, fed in arrival order (the core's load generator calls ``feed`` and
    ``finish`` exactly so; the backend's own sequential client does the same)."""

    def __init__(self, server: str, max_tokens: int | None = None) -> None:
        self.server = server  # "Text Generation Inference at http://..." for messages
        self.max_tokens = max_tokens  # what the request asked for: a server claiming more is refused
        self.token_times: list[float] = []  # arrival of each token event
        self.pieces: list[str] = []  # the text of each token that is not special
        self.details: dict[str, Any] | None = None
        self.generated_text: str | None = None

    def feed(self, event: dict[str, Any], arrived: float) -> bool:
        """Take one event in; True once the final event (the one with ``details``) has come."""
        event = stream_event(event, STREAM_EVENT, self.server)
        if "error" in event:
            kind = event.get("error_type") or "error"
            raise BackendError(f"{self.server} reported a {kind} error after {len(self.token_times)} "
                               f"token(s): {event['error']}")
        token = event.get("token")
        if not isinstance(token, dict) or not isinstance(token.get("text"), str):
            fields = ", ".join(sorted(event)) or "none"
            raise BackendError(f"{self.server} sent an event that is not a TGI stream event "
                               f"(no token object; fields: {fields})")
        self.token_times.append(arrived)
        if not token.get("special"):
            self.pieces.append(token["text"])
        if isinstance(event.get("details"), dict) or isinstance(event.get("generated_text"), str):
            self.details = event.get("details") or {}
            self.generated_text = event.get("generated_text")
            return True
        return False

    def finish(self, start: float, end: float) -> GenerationTiming:
        """The timing of the request sent at ``start`` whose stream closed at ``end`` (perf_counter)."""
        if self.details is None:  # the body ended before the final event: the core's wording of a cut stream
            raise stream_cut(self.server, len(self.token_times), "no final event (details, generated_text)")
        # The server's counts are claims: numbers that cannot be true are one readable BackendError.
        return check_timing(timing_of(self, start, end), server=self.server, max_tokens=self.max_tokens,
                            streamed=len(self.token_times))


def timing_of(stream: TGIStream, start: float, end: float) -> GenerationTiming:
    """A finished stream's GenerationTiming: counts from ``details``, times from the client's clock."""
    times = stream.token_times
    details = stream.details or {}
    counted = details.get("generated_tokens")
    completion_tokens = counted if isinstance(counted, int) else len(times)
    ttft_ms = (times[0] - start) * 1000 if times else None
    total_ms = (end - start) * 1000
    decode = None
    if completion_tokens > 1 and len(times) > 1 and times[-1] > times[0]:
        # The first token ends the prefill; each later one is one decode step.
        decode = (completion_tokens - 1) / (times[-1] - times[0])
    itl_ms = [round((later - earlier) * 1000, 3) for earlier, later in pairwise(times)]
    extra: dict[str, Any] = {"itl_ms": itl_ms,
                             "token_count_source": "details" if isinstance(counted, int) else "events"}
    if itl_ms:
        extra.update({f"itl_ms_{name}": percentile(itl_ms, q)
                      for name, q in (("median", 50), ("p90", 90), ("p99", 99))})
    if ttft_ms is not None and completion_tokens > 1:
        extra["tpot_ms"] = (total_ms - ttft_ms) / (completion_tokens - 1)
    if isinstance(details.get("seed"), int):
        extra["seed"] = details["seed"]
    text = stream.generated_text if stream.generated_text is not None else "".join(stream.pieces)
    return GenerationTiming(
        ttft_ms=ttft_ms,
        prompt_tokens=details.get("input_length"),
        completion_tokens=completion_tokens,
        prompt_tokens_per_s=None,  # TGI's stream carries no prefill time
        decode_tokens_per_s=decode,  # no server-side rate either: the client's is the only one
        client_decode_tokens_per_s=decode,
        total_ms=total_ms,
        stop_reason=details.get("finish_reason"),
        text=text,
        extra=extra,
    )
