"""One timed generation against Ollama: request body, stream measurement, and the timing contract.

Ollama reports durations in nanoseconds and omits fields whose value is zero (``prompt_eval_count``
on a fully cached prompt, for one), so a missing field is unknown (None), never 0, and never divides.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from velollm_core.api import NUMBER, BackendError, GenerationRequest, GenerationTiming, check_timing, conform

# Request fields that Ollama takes beside ``options``, not inside it.
TOP_LEVEL_FIELDS = {"keep_alive", "think", "raw", "format", "system", "template", "suffix"}
# Settings of this client, never sent to Ollama (the deadlines: velollm_core.contract.deadline).
CLIENT_SETTINGS = {"timeout", "first_token_timeout_s", "timeout_s", "cache_prompt"}
# The fields measure_stream reads, with their types (velollm_core.contract.wire).
STREAM_CHUNK = {
    **dict.fromkeys(("response", "thinking", "done_reason"), str),
    **dict.fromkeys(("prompt_eval_count", "eval_count"), int),
    **dict.fromkeys(("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"), NUMBER),
    "context": list,
    # /api/chat's chunks carry the same text in a message; a tool call arrives whole, its arguments an object.
    "message": {"content": str, "thinking": str, "tool_calls": [{"function": {"name": str, "arguments": dict}}]},
}


def endpoint(body: Mapping[str, Any]) -> str:
    """The path a body goes to: ``/api/chat`` for messages (a conversation, tools), else ``/api/generate``."""
    return "/api/chat" if "messages" in body else "/api/generate"


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
    """The ``/api/generate`` body for one run, and the client settings (timeout, cache_prompt).

    ``request.raw`` sends ``raw: true`` (no template: the prompt as it is); ``request.cache_prompt``
    lets Ollama reuse the prompt's KV cache, as the ``cache_prompt`` option does. Ollama has no way to
    generate past the end-of-sequence token, so ``request.ignore_eos`` is not sent: the answer may
    stop early, and the core's engine flags a run shorter than asked (``short_output``).
    """
    fields, options, settings = split_options(user_options, request.options)
    if getattr(request, "raw", False):
        fields["raw"] = True
    if getattr(request, "cache_prompt", False):
        settings["cache_prompt"] = True
    prompt = request.prompt
    if not settings.get("cache_prompt", False):
        # Ollama reuses the KV cache of an identical prompt prefix: every iteration would measure a
        # cache hit, not prompt processing. A unique first line makes each run process the prompt.
        # It cannot come before a chat template's header, which Ollama >= 0.30.1 then counts as
        # prompt tokens although they are cached: PromptLedger takes those out again.
        prompt = f"{uuid.uuid4().hex[:8]}\n{prompt}" if fields.get("raw") else f"[run {uuid.uuid4().hex[:8]}]\n{prompt}"
    if request.think is not None:
        fields["think"] = request.think
    if request.json_schema is not None:
        fields["format"] = request.json_schema
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    if request.chat or request.history or request.tools:
        message: dict[str, Any] = {"role": "user", "content": prompt}
        if request.images:
            message["images"] = list(request.images)
        body = {"model": model, "messages": [*request.history, message]}
        if request.tools:
            body["tools"] = request.tools
    elif request.images:
        body["images"] = list(request.images)
    body = {
        **body,
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


class StreamAccumulator:
    """One ``/api/generate`` stream taken in chunk by chunk: ``feed`` each parsed NDJSON line with its
    arrival time until it returns True (the final ``done`` chunk), then ``finish``.

    The sync path (``measure_stream``) and the core's asyncio load generator (``OllamaBackend.stream``)
    both use it, so Ollama's stream has one parser. ``ledger`` (a ``PromptLedger``) corrects the
    prompt count of servers that count cached tokens; without one the reported counts are used.
    Each Ollama chunk carries one token, so the client's decode rate is (token chunks - 1) over the
    time between the first and the last of them. Thinking text counts as generated tokens.
    """

    def __init__(self, ledger: PromptLedger | None = None, *, raw: bool = False, after=None) -> None:
        self.ledger = ledger
        self.raw = raw
        self.after = after  # called with the finished timing
        self.token_times: list[float] = []  # arrival of each token-bearing chunk (the load generator's)
        self.first: float | None = None
        self.last: float | None = None
        self.token_chunks = 0
        self.chunks = 0
        self.text: list[str] = []
        self.thinking: list[str] = []
        self.final: Mapping[str, Any] | None = None
        self.thought_chunks = 0  # chunks of thinking only
        self.answer_at: float | None = None  # the first chunk of answer text or a tool call
        self.tool_calls: list[dict[str, str]] = []
        self.tool_calls_at: float | None = None

    def feed(self, event: Mapping[str, Any], arrived: float) -> bool:
        """Take one chunk; True when it was the final one."""
        if event.get("error"):
            raise BackendError(f"Ollama reported an error during generation: {event['error']}")
        chunk = conform(dict(event), STREAM_CHUNK, "Ollama")
        self.chunks += 1
        message = chunk.get("message") or {}
        piece = chunk.get("response") or message.get("content") or ""
        thought = chunk.get("thinking") or message.get("thinking") or ""
        calls = message.get("tool_calls") or []
        for call in calls:
            function = call.get("function") or {}
            self.tool_calls.append({"name": function.get("name") or "",
                                    "arguments": json.dumps(function.get("arguments") or {})})
            self.tool_calls_at = arrived
        if piece or calls:
            self.answer_at = self.answer_at or arrived
        elif thought:
            self.thought_chunks += 1
        if piece or thought:
            self.token_chunks += 1
            self.token_times.append(arrived)
            self.first = arrived if self.first is None else self.first
            self.last = arrived
            self.text.append(piece)
            self.thinking.append(thought)
        if chunk.get("done"):
            self.final = chunk
            return True
        return False

    def finish(self, start: float, end: float) -> GenerationTiming:
        """The timing of the stream that began at ``start`` (the send) and ended at ``end``."""
        final = self.final
        if final is None:
            raise BackendError(
                f"Ollama's stream ended after {self.chunks} chunk(s) without its final message "
                "(done: true): the server may have stopped or restarted mid-generation"
            )
        prompt_tokens = _count(final, "prompt_eval_count")
        completion_tokens = _count(final, "eval_count")
        server_decode = _rate(completion_tokens, final.get("eval_duration"))
        client_decode = None
        first, last = self.first, self.last
        if self.token_chunks >= 2 and last is not None and first is not None and last > first:
            client_decode = (self.token_chunks - 1) / (last - first)
        extra: dict[str, Any] = {"stream_chunks": self.chunks, "token_chunks": self.token_chunks}
        for key in ("total_duration", "prompt_eval_duration", "eval_duration"):
            if _ms(final.get(key)) is not None:
                extra[f"{key}_ms"] = _ms(final.get(key))
        if any(self.thinking):
            extra["thinking"] = "".join(self.thinking)
        timing = GenerationTiming(
            ttft_ms=(first - start) * 1000 if first is not None else None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            prompt_tokens_per_s=_rate(prompt_tokens, final.get("prompt_eval_duration")),
            decode_tokens_per_s=server_decode if server_decode is not None else client_decode,
            client_decode_tokens_per_s=client_decode,
            server_decode_tokens_per_s=server_decode,
            total_ms=(end - start) * 1000,
            load_ms=_ms(final.get("load_duration")),
            stop_reason=final.get("done_reason"),
            text="".join(self.text),
            extra=extra,
            tool_calls=self.tool_calls,
            tool_args_ms=(self.tool_calls_at - start) * 1000 if self.tool_calls_at is not None else None,
        )
        if self.thought_chunks:  # one token a chunk: thinking, then the answer (eval_count counts both)
            total = completion_tokens or self.token_chunks
            timing.reasoning_tokens = min(self.thought_chunks, total)
            timing.answer_tokens = total - timing.reasoning_tokens
        if self.answer_at is not None:
            timing.time_to_first_answer_ms = (self.answer_at - start) * 1000
        # Its counts are claims: one token per chunk, so fewer than the chunks that carried text is flagged.
        check_timing(timing, server="Ollama", streamed=self.token_chunks)
        if self.ledger is not None:
            self.ledger.account(timing, final, raw=self.raw)
        if self.after is not None:
            self.after(timing)
        return timing


def measure_stream(
    events: Iterable[tuple[float, Mapping[str, Any]]], started: float, clock=time.perf_counter,
    ledger: PromptLedger | None = None, raw: bool = False, after=None,
) -> GenerationTiming:
    """Timing of one streamed generation: ``events`` are (arrival time, chunk); ``started`` the send time."""
    accumulator = StreamAccumulator(ledger, raw=raw, after=after)
    for arrived, chunk in events:
        if accumulator.feed(chunk, arrived):
            break
    return accumulator.finish(started, clock())


def _tokens(final: Mapping[str, Any]) -> list[int] | None:
    """Ollama's ``context``: the token ids of the templated prompt and the answer (None when absent)."""
    context = final.get("context")
    if not isinstance(context, list) or not context or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in context):
        return None
    return context


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


PROMPT_RATE_METHODS = {
    "reported": "prompt_eval_count / prompt_eval_duration: Ollama < 0.30.1 counts only the tokens it evaluated",
    "context_prefix": "prompt_eval_count less the tokens this prompt shares with an earlier run's context "
                      "(Ollama >= 0.30.1 counts cached tokens too; the prefix a slot still holds is cached)",
    "raw_nonce_first": "raw prompt beginning with a random nonce: at most the BOS token (and rarely one more) "
                       "can be cached, so prompt_eval_count less 1 is what was evaluated",
    "unknown_cache": "Ollama >= 0.30.1 counts cached tokens, and no earlier run's context says how many "
                     "were cached (the first run of a benchmark): prompt tok/s left unknown",
}


class PromptLedger:
    """What a server of this version has cached of each prompt, so prefill is measured on evaluated tokens.

    Ollama >= 0.30.1 reports ``prompt_eval_count = cache_n + prompt_n`` (llama-server's counts) while
    ``prompt_eval_duration`` covers ``prompt_n`` only: a chat template's header, cached from the
    previous run, is counted as evaluated, and on a short prompt it is a large share. Non-raw answers
    carry ``context`` (the templated prompt's token ids, then the answer's); llama-server reuses the
    longest prefix a slot shares with its previous request, so the longest prefix this prompt shares
    with a recent context is an upper bound of what was cached (the slot may have moved on): the
    evaluated count is never overstated. The recent contexts are kept per benchmark (``state``).
    """

    KEPT = 32

    def __init__(self, version: str | None) -> None:
        from velollm_ollama.versions import has

        self.version = version
        self.counts_cached = has(version, "prompt_count_includes_cache")
        self._lock = threading.Lock()
        self._recent: deque[list[int]] = deque(maxlen=self.KEPT)

    def account(self, timing: GenerationTiming, final: Mapping[str, Any], *, raw: bool) -> None:
        """Set ``timing``'s prompt rate on evaluated tokens and say in ``extra`` how it was counted."""
        tokens = _tokens(final)
        count = timing.prompt_tokens
        with self._lock:
            cached = None
            if tokens is not None and count is not None and self._recent:
                prompt = tokens[:count]
                cached = max(_common_prefix(prompt, earlier) for earlier in self._recent)
            if tokens is not None:
                self._recent.append(tokens)
        duration = final.get("prompt_eval_duration")
        extra = timing.extra
        if not self.counts_cached:
            method, evaluated = "reported", count
        elif raw and count is not None:
            method, evaluated = "raw_nonce_first", max(1, count - 1)
        elif cached is not None and count is not None:
            # llama-server evaluates at least the last prompt token, even of a prompt wholly cached.
            method, evaluated = "context_prefix", max(1, count - cached)
            extra["prompt_tokens_cached"] = count - evaluated
        else:
            method, evaluated = "unknown_cache", None
        extra["prompt_rate_method"] = method
        extra["ollama_version"] = self.version
        if evaluated is not None:
            extra["prompt_tokens_evaluated"] = evaluated
        timing.prompt_tokens_per_s = _rate(evaluated, duration)


def mark_prompt_cache_hit(timing: GenerationTiming, prompt: str, seen: dict[str, int]) -> None:
    """With identical prompts, a run that evaluated fewer prompt tokens than an earlier one hit the cache.

    Its prompt rate measures one cached step, not prompt processing: make it unknown.
    """
    evaluated = timing.extra.get("prompt_tokens_evaluated", timing.prompt_tokens)
    if evaluated is None:
        timing.extra["prompt_cache_hit"] = True
        return
    most = seen.get(prompt, 0)
    if evaluated < most:
        timing.extra["prompt_cache_hit"] = True
        timing.extra["prompt_tokens_evaluated"] = evaluated
        timing.prompt_tokens_per_s = None
    seen[prompt] = max(most, evaluated)


_LEDGER_KEY = "ollama_prompt_ledger"
_ledger_lock = threading.Lock()


def ledger_for(state: dict[str, Any], version: str | None) -> PromptLedger:
    """The benchmark's PromptLedger (one per ``state``, shared by concurrent runs)."""
    with _ledger_lock:
        ledger = state.get(_LEDGER_KEY)
        if ledger is None:
            ledger = state[_LEDGER_KEY] = PromptLedger(version)
        return ledger


def _after(request: GenerationRequest, settings: Mapping[str, Any], state: dict[str, Any]):
    """What each run's timing gets once measured: cache hits marked, or the nonce noted."""
    def mark(timing: GenerationTiming) -> None:
        if settings.get("cache_prompt", False):
            mark_prompt_cache_hit(timing, request.prompt, state.setdefault("ollama_prompt_tokens", {}))
        else:
            timing.extra["prompt_nonce"] = True

    return mark


def prepare(model: str, request: GenerationRequest, user_options: Mapping[str, Any], state: dict[str, Any],
            *, version: str | None) -> tuple[dict[str, Any], StreamAccumulator]:
    """The body of one run and the accumulator that will read its stream (the sync and asyncio paths).

    ``version`` is the server's (``/api/version``; None: unknown, taken as the newest). No probe is
    sent for the first run of a benchmark: on a server that counts cached prompt tokens its prompt
    rate stays unknown (a warm-up run, usually), and every later run compares with the runs before.
    A probe would double the wait on a server that hangs, and the core warms up anyway.
    """
    body, settings = build_body(model, request, user_options)
    ledger = ledger_for(state, version)
    return body, StreamAccumulator(ledger, raw=bool(body.get("raw")), after=_after(request, settings, state))


def run_generation(client, model: str, request: GenerationRequest, user_options: Mapping[str, Any],
                   state: dict[str, Any], *, version: str | None = None) -> GenerationTiming:
    """Send one generation through ``client`` and measure it (``prepare`` says what is sent)."""
    body, accumulator = prepare(model, request, user_options, state, version=version)
    started = time.perf_counter()
    with contextlib.closing(client.generate_stream(body)) as events:
        for arrived, chunk in events:
            if accumulator.feed(chunk, arrived):
                break
    return accumulator.finish(started, time.perf_counter())
