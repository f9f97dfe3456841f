"""One timed generation against Ollama: request body, stream measurement, and the timing contract.

Ollama reports durations in nanoseconds and omits fields whose value is zero (``prompt_eval_count``
on a fully cached prompt, for one), so a missing field is unknown (None), never 0, and never divides.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from velollm_core.api import NUMBER, BackendError, GenerationRequest, GenerationTiming, conform

# Request fields that Ollama takes beside ``options``, not inside it.
TOP_LEVEL_FIELDS = {"keep_alive", "think", "raw", "format", "system", "template", "suffix"}
# Settings of this client, never sent to Ollama (the deadlines: velollm_core.deadline).
CLIENT_SETTINGS = {"timeout", "first_token_timeout_s", "timeout_s", "cache_prompt"}
# The fields measure_stream reads, with their types (velollm_core.wire).
STREAM_CHUNK = {
    **dict.fromkeys(("response", "thinking", "done_reason"), str),
    **dict.fromkeys(("prompt_eval_count", "eval_count"), int),
    **dict.fromkeys(("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"), NUMBER),
}


def coerce_option(value: Any) -> Any:
    """Numbers and booleans typed as text become numbers and booleans (Ollama rejects "4096" for num_ctx)."""
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def split_options(*sources: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(top-level request fields, model ``options``, client settings) from user option mappings.

    Later mappings win. A ``request.`` prefix (the core's per-request convention) is dropped.
    """
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for source in sources:
        for raw_key, raw_value in source.items():
            key = raw_key.removeprefix("request.")
            value = coerce_option(raw_value)
            if key in CLIENT_SETTINGS:
                settings[key] = value
            elif key in TOP_LEVEL_FIELDS:
                fields[key] = value
            else:
                options[key] = value
    return fields, options, settings


def build_body(model: str, request: GenerationRequest, user_options: Mapping[str, Any]) -> tuple[dict, dict]:
    """The ``/api/generate`` body for one run, and the client settings (timeout, cache_prompt)."""
    fields, options, settings = split_options(user_options, request.options)
    prompt = request.prompt
    if not settings.get("cache_prompt", False):
        # Ollama reuses the KV cache of an identical prompt prefix and then reports only the few
        # tokens it evaluated: every iteration would measure a cache hit, not prompt processing.
        # A unique first line makes each run process the whole prompt, as llama.cpp runs do.
        prompt = f"[run {uuid.uuid4().hex[:8]}]\n{prompt}"
    body = {
        "model": model,
        "prompt": prompt,
        "stream": True,
        **fields,
        "options": {
            "temperature": request.temperature,
            "seed": request.seed,
            "num_predict": request.max_tokens,
            **options,
        },
    }
    return body, settings


def _count(final: Mapping[str, Any], key: str) -> int | None:
    value = final.get(key)
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _rate(count: int | None, duration_ns: Any) -> float | None:
    if count is None or not isinstance(duration_ns, (int, float)) or duration_ns <= 0:
        return None
    return count / duration_ns * 1e9


def _ms(duration_ns: Any) -> float | None:
    return duration_ns / 1e6 if isinstance(duration_ns, (int, float)) and duration_ns > 0 else None


def measure_stream(
    events: Iterable[tuple[float, Mapping[str, Any]]], started: float, clock=time.perf_counter
) -> GenerationTiming:
    """Timing of one streamed generation: ``events`` are (arrival time, chunk); ``started`` the send time.

    Each Ollama chunk carries one token, so the client's decode rate is (token chunks - 1) over the
    time between the first and the last of them. Thinking text counts as generated tokens.
    """
    first = last = None
    token_chunks = chunks = 0
    text: list[str] = []
    thinking: list[str] = []
    final: Mapping[str, Any] | None = None
    for arrived, chunk in events:
        chunk = conform(chunk, STREAM_CHUNK)
        chunks += 1
        piece = chunk.get("response") or ""
        thought = chunk.get("thinking") or ""
        if piece or thought:
            token_chunks += 1
            first = arrived if first is None else first
            last = arrived
            text.append(piece)
            thinking.append(thought)
        if chunk.get("done"):
            final = chunk
            break
    ended = clock()
    if final is None:
        raise BackendError(
            f"Ollama's stream ended after {chunks} chunk(s) without its final message "
            "(done: true): the server may have stopped or restarted mid-generation"
        )
    prompt_tokens = _count(final, "prompt_eval_count")
    completion_tokens = _count(final, "eval_count")
    server_decode = _rate(completion_tokens, final.get("eval_duration"))
    client_decode = None
    if token_chunks >= 2 and last is not None and first is not None and last > first:
        client_decode = (token_chunks - 1) / (last - first)
    extra: dict[str, Any] = {"stream_chunks": chunks, "token_chunks": token_chunks}
    for key in ("total_duration", "prompt_eval_duration", "eval_duration"):
        if _ms(final.get(key)) is not None:
            extra[f"{key}_ms"] = _ms(final.get(key))
    if any(thinking):
        extra["thinking"] = "".join(thinking)
    return GenerationTiming(
        ttft_ms=(first - started) * 1000 if first is not None else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_tokens_per_s=_rate(prompt_tokens, final.get("prompt_eval_duration")),
        decode_tokens_per_s=server_decode if server_decode is not None else client_decode,
        client_decode_tokens_per_s=client_decode,
        server_decode_tokens_per_s=server_decode,
        total_ms=(ended - started) * 1000,
        load_ms=_ms(final.get("load_duration")),
        stop_reason=final.get("done_reason"),
        text="".join(text),
        extra=extra,
    )


def mark_prompt_cache_hit(timing: GenerationTiming, prompt: str, seen: dict[str, int]) -> None:
    """With identical prompts, a run that evaluated fewer prompt tokens than an earlier one hit the cache.

    Its prompt rate measures one cached step, not prompt processing: make it unknown.
    """
    if timing.prompt_tokens is None:
        timing.extra["prompt_cache_hit"] = True
        return
    most = seen.get(prompt, 0)
    if timing.prompt_tokens < most:
        timing.extra["prompt_cache_hit"] = True
        timing.extra["prompt_tokens_evaluated"] = timing.prompt_tokens
        timing.prompt_tokens_per_s = None
    seen[prompt] = max(most, timing.prompt_tokens)


def run_generation(client, model: str, request: GenerationRequest, user_options: Mapping[str, Any],
                   state: dict[str, Any]) -> GenerationTiming:
    """Send one generation through ``client`` and measure it."""
    body, settings = build_body(model, request, user_options)
    started = time.perf_counter()
    with contextlib.closing(client.generate_stream(body)) as events:
        timing = measure_stream(events, started)
    if settings.get("cache_prompt", False):
        mark_prompt_cache_hit(timing, request.prompt, state.setdefault("ollama_prompt_tokens", {}))
    else:
        timing.extra["prompt_nonce"] = True
    return timing
