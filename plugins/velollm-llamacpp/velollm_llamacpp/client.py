"""Streamed generations against llama-server's native ``/completion`` endpoint, timed on the client."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from velollm_core.api import (
    NUMBER,
    BackendError,
    Deadlines,
    GenerationRequest,
    GenerationTiming,
    RequestWatch,
    check_timing,
    read_bounded,
    stream_cut,
    stream_event,
)

CONNECT_TIMEOUT_S = 5.0
SERVER_NAME = "llama-server"
# llama-server sends an event per token (a few with speculative decoding): far more is a broken count.
MAX_TOKENS_PER_EVENT = 1024
# llama-server's ``timings`` object (also in its OpenAI-style events).
LLAMACPP_TIMINGS = {
    **dict.fromkeys(("prompt_n", "predicted_n", "cache_n", "draft_n", "draft_n_accepted"), int),
    **dict.fromkeys(("prompt_ms", "predicted_ms", "prompt_per_second", "predicted_per_second"), NUMBER),
}
# The fields stream_completion and timing_from_final read, with their types (velollm_core.contract.wire).
COMPLETION_EVENT = {"tokens_predicted": int, "tokens_evaluated": int, "tokens": list, "content": str,
                    "stop_type": str, "timings": LLAMACPP_TIMINGS}


def sampling_fields(request: GenerationRequest) -> dict[str, Any]:
    """What a generation asks of llama-server on either endpoint: greedy (``top_k`` 1 at temperature 0),
    seeded, streamed, no prompt cache unless asked (every run processes its whole prompt, so prefill is
    measured), and ``ignore_eos`` for a fixed output length."""
    fields: dict[str, Any] = {
        "temperature": request.temperature,
        "seed": request.seed,
        "stream": True,
        "cache_prompt": request.cache_prompt,
    }
    if request.ignore_eos:
        fields["ignore_eos"] = True
    if request.temperature == 0:
        fields["top_k"] = 1
    return fields


def completion_body(request: GenerationRequest, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/completion`` body: the prompt and ``sampling_fields``; ``fields`` (the ``request`` option)
    over these."""
    body: dict[str, Any] = {"prompt": request.prompt, "n_predict": request.max_tokens, **sampling_fields(request)}
    if request.json_schema is not None:
        body["json_schema"] = request.json_schema  # llama-server turns it into a grammar
    body.update(fields)
    return body


def _message(body: bytes) -> str:
    """The server's own error message from an error body (JSON ``error.message`` or the raw text)."""
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        return error.get("message", str(error)) if isinstance(error, dict) else str(error)
    except ValueError:
        return body[:200].decode(errors="replace")


def status_error(status: int, body: bytes) -> BackendError:
    """A refused /completion as one readable error."""
    return BackendError(f"llama-server answered HTTP {status}: {_message(body)}")


class CompletionStream:
    """One ``/completion`` stream's events -> GenerationTiming; shared by the sync client and the
    load generator (velollm_core.api.StreamCall), so both read the wire format the same way."""

    def __init__(self) -> None:
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.n_tokens = 0
        self.text: list[str] = []
        self.final: dict[str, Any] | None = None
        self.token_times: list[float] = []

    def feed(self, event: dict[str, Any], arrived: float) -> bool:
        event = stream_event(event, COMPLETION_EVENT, SERVER_NAME)
        if "error" in event:
            raise BackendError(f"llama-server reported an error: {event['error']}")
        predicted = event.get("tokens_predicted")
        if predicted is None:
            predicted = self.n_tokens + len(event.get("tokens") or [])
        if predicted - self.n_tokens > MAX_TOKENS_PER_EVENT:  # a claim, and each token costs a timestamp here
            raise BackendError(f"llama-server claimed {predicted - self.n_tokens} new tokens in one stream event "
                               f"(at most {MAX_TOKENS_PER_EVENT}): its token counts cannot be trusted")
        if predicted > self.n_tokens and not event.get("stop"):
            if self.t_first is None:
                self.t_first = arrived
            self.t_last = arrived
            self.token_times.extend([arrived] * (predicted - self.n_tokens))
            self.n_tokens = predicted
        if event.get("content"):
            self.text.append(event["content"])
        if event.get("stop"):
            self.final = event
            return True
        return False

    def finish(self, start: float, end: float) -> GenerationTiming:
        if self.final is None:
            raise BackendError("llama-server ended the stream without its final event")
        timing = timing_from_final(self.final, start, self.t_first, self.t_last, self.n_tokens, end,
                                   "".join(self.text))
        # One gap per token after the first, as the contract says; tokens that arrived in one read have 0.
        gaps = [round((b - a) * 1000, 3) for a, b in zip(self.token_times, self.token_times[1:])]
        timing.extra["itl_ms"] = gaps
        # Each event with text holds one token: a final count below theirs is flagged.
        return check_timing(timing, server=SERVER_NAME, streamed=len(self.text))


def request_route(request: GenerationRequest, fields: Mapping[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """(path, body, accumulator) of one request: ``/completion`` for a prompt, llama-server's OpenAI-style
    ``/v1/chat/completions`` for a conversation, tools, images or the thinking switch (which only its
    chat template and parsers know)."""
    from velollm_llamacpp import chat

    if chat.needs_chat(request):
        return "/v1/chat/completions", chat.chat_body(request, fields), chat.ChatStream()
    return "/completion", completion_body(request, fields), CompletionStream()


def stream_completion(client, base_url: str, request: GenerationRequest,
                      deadlines: Deadlines | None = None, fields: Mapping[str, Any] | None = None) -> GenerationTiming:
    """Run one streamed generation and time it: TTFT and decode rate from the stream, beside the
    server's own ``timings``; ``deadlines`` (velollm_core.contract.deadline) bound it."""
    import httpx

    path, body, stream = request_route(request, fields or {})
    deadlines = deadlines or Deadlines()
    watch = RequestWatch(deadlines, server=SERVER_NAME, url=base_url)
    timeout = deadlines.httpx_timeout(CONNECT_TIMEOUT_S)
    start = time.perf_counter()
    try:
        with watch, client.stream("POST", f"{base_url}{path}", json=body, timeout=timeout) as response:
            watch.attach(response)
            if response.status_code != 200:
                raise status_error(response.status_code, read_bounded(response, server=watch.who).content)
            for line in watch.lines(response):
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                arrived = time.perf_counter()
                try:
                    event = json.loads(payload)
                except ValueError:
                    raise BackendError(f"llama-server sent a malformed stream event: {payload[:120]!r}") from None
                watch.event()
                if stream.feed(event, arrived):
                    break
    except httpx.TransportError as exc:
        raise watch.error(exc) or stream_cut(f"llama-server at {base_url}", len(stream.token_times),
                                             str(exc) or None) from None
    end = time.perf_counter()
    if stream.final is None:
        raise BackendError(f"llama-server at {base_url} ended the stream without its final event")
    return stream.finish(start, end)


def timing_from_final(final, start, t_first, t_last, n_stream_tokens, end, text) -> GenerationTiming:
    """Combine the server's final ``timings`` with the client's stream timestamps."""
    timings = final.get("timings") or {}
    completion_tokens = final.get("tokens_predicted") or timings.get("predicted_n") or n_stream_tokens
    server_rate = timings.get("predicted_per_second") or None
    client_rate = None
    if t_first is not None and t_last is not None and t_last > t_first and n_stream_tokens > 1:
        # The first token comes from the prompt's logits; the rest each cost one decode step —
        # the same accounting as the server's predicted_per_second.
        client_rate = (n_stream_tokens - 1) / (t_last - t_first)
    prompt_n = timings.get("prompt_n")
    extra: dict[str, Any] = {}
    for key in ("draft_n", "draft_n_accepted", "cache_n"):
        if key in timings:
            extra[key] = timings[key]
    if timings.get("prompt_ms") is not None:
        extra["server_prompt_ms"] = timings["prompt_ms"]
    if timings.get("predicted_ms") is not None:
        extra["server_predicted_ms"] = timings["predicted_ms"]
    return GenerationTiming(
        ttft_ms=(t_first - start) * 1000 if t_first is not None else None,
        prompt_tokens=final.get("tokens_evaluated") or prompt_n,
        completion_tokens=completion_tokens,
        prompt_tokens_per_s=timings.get("prompt_per_second") or None,
        decode_tokens_per_s=server_rate or client_rate,
        client_decode_tokens_per_s=client_rate,
        server_decode_tokens_per_s=server_rate,
        total_ms=(end - start) * 1000,
        stop_reason=final.get("stop_type"),
        text=text,
        extra=extra,
        cached_prompt_tokens=timings.get("cache_n"),
    )
