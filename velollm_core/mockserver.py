"""A loopback mock LLM server for the test kit and the capacity benchmark.

One asyncio process on real sockets that streams tokens on a schedule (time to first token, gap
between tokens, output length) in the wire formats of llama-server (``/completion`` SSE with its final
``timings``, ``/tokenize``, ``/detokenize``, ``/props``, ``/health``, ``/metrics``), OpenAI
(``/v1/completions``, ``/v1/chat/completions`` SSE with ``usage`` when ``stream_options.include_usage``,
``/v1/models``) and Ollama (``/api/generate`` and ``/api/chat`` NDJSON with nanosecond durations,
``/api/version``, ``/api/tags``, ``/api/ps``, ``/api/show``).

    python -m velollm_core.mockserver --port 0 --ttft-ms 50 --itl-ms 20 --output-tokens 128

prints its URL on the first stdout line and serves until SIGTERM or Ctrl-C.

Why not a thread per stream: the point is holding 1,000+ streams on a 2-core machine while a load
generator runs beside it, so every token is one ``loop.call_at`` callback and one socket write, and
token texts are encoded once. The mock measures its own lateness (how long after its scheduled time
each token left) and CPU: ``GET /mock/stats`` (JSON) and ``/metrics`` say whether the mock, rather
than the client under test, was the limit. ``POST /mock/reset`` clears the counters between levels.

Output length follows the request as the real servers do: ``n_predict`` / ``max_tokens`` /
``max_completion_tokens`` / ``options.num_predict`` limit it; without ``ignore_eos`` the "model" stops
after ``--output-tokens`` (its end of sequence), vLLM's ``min_tokens`` raises that, and ``ignore_eos``
generates to the limit (to the end of the context where there is none). Ollama has no ``ignore_eos``.
A prompt's tokens are counted by the mock's own tokenizer (one token per word, leading space
included, BOS first), the same one ``/tokenize`` answers with, so a prompt built from ``/tokenize``
reports exactly the count it was built for; ``cache_n`` counts the prefix shared with a recent prompt
(llama-server's ``cache_prompt``, default on as in llama-server).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as _dt
import heapq
import json
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

MOCK_VERSION = "velollm-mock 1"
OLLAMA_VERSION = "0.12.0"  # what /api/version claims: a current Ollama's answer shape
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
BOS_ID, EOS_ID = 1, 2
SPECIAL = ["<unk>", "<s>", "</s>"]
# The words the "model" answers with, in a cycle: common English, each one token with its space.
ANSWER = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "small", "bird",
          "sings", "in", "the", "old", "oak", "tree", "near", "a", "quiet", "river", "that", "runs", "down", "to",
          "the", "sea"]
LAG_BUCKET_S = 1e-4  # the lateness histogram's resolution: 0.1 ms
LAG_BUCKETS = 20_000  # up to 2 s; later tokens all count in the last bucket


@dataclass(frozen=True)
class MockConfig:
    """How the mock "model" behaves; every field is a command-line flag of the same name."""

    ttft_ms: float = 50.0  # slot start to first token, before per-token prefill
    itl_ms: float = 20.0  # gap between two tokens of one stream
    output_tokens: int = 128  # where the model ends its answer (EOS) unless ignore_eos/min_tokens
    prefill_ms_per_token: float = 0.0  # added to the TTFT per prompt token not found in the cache
    jitter_ms: float = 0.0  # each gap drawn uniformly in itl ± jitter (0: exact schedule)
    seed: int = 0
    slots: int = 0  # concurrent generations; more wait in a queue (0: no limit)
    ctx_size: int = 32768  # tokens of context per slot (/props n_ctx; longer prompts are refused)
    vocab_size: int = 32000
    model: str = "velollm-mock"
    fail_every: int = 0  # every Nth generation request answers HTTP 503 (0: never)

    def check(self) -> None:
        """Refuse values no schedule can follow (one readable sentence each)."""
        for name in ("ttft_ms", "itl_ms", "prefill_ms_per_token", "jitter_ms"):
            if not 0 <= getattr(self, name) <= 3_600_000:
                raise ValueError(f"--{name.replace('_', '-')} must lie between 0 and 3600000 ms")
        for name in ("output_tokens", "slots", "fail_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if self.ctx_size < 2 or self.vocab_size < 16:
            raise ValueError("--ctx-size must be at least 2 and --vocab-size at least 16")


class BadRequest(Exception):
    """A request the mock refuses, as the real server would: HTTP status and message."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


# --- tokenizer: one token per word with its leading whitespace ------------------------------------------

_WORD = re.compile(r"\s*\S+|\s+")


def _letters(n: int) -> str:
    out = ""
    while True:
        n, rest = divmod(n, 26)
        out = chr(97 + rest) + out
        if not n:
            return out
        n -= 1


class Tokenizer:
    """Ids below ``vocab_size`` are fixed (id i is " " plus i written in letters); other words get
    ids above it in the order first seen, so ``tokenize(detokenize(ids)) == ids`` for fixed ids."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.ids: dict[str, int] = {piece: i for i, piece in enumerate(SPECIAL)}
        self.pieces: dict[int, str] = dict(enumerate(SPECIAL))
        for word in ANSWER:
            self.id_of(f" {word}")

    def piece(self, token: int) -> str:
        found = self.pieces.get(token)
        if found is not None:
            return found
        if not len(SPECIAL) <= token < self.vocab_size:
            raise BadRequest(f"token id {token} is outside the vocabulary (0-{self.vocab_size - 1})")
        return f" {_letters(token)}"

    def id_of(self, piece: str) -> int:
        token = self.ids.get(piece)
        if token is None:
            word = piece[1:]
            if piece.startswith(" ") and word.isalpha() and word.islower() and word.isascii():
                token = _index_of_letters(word)
            if token is None or not len(SPECIAL) <= token < self.vocab_size or token in self.pieces:
                token = self.vocab_size + len(self.ids)
            self.ids[piece] = token
            self.pieces[token] = piece
        return token

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        tokens = [self.id_of(piece) for piece in _WORD.findall(text)]
        return [BOS_ID, *tokens] if add_special else tokens

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(self.piece(token) for token in tokens if token not in (BOS_ID, EOS_ID))


def _index_of_letters(word: str) -> int:
    n = 0
    for char in word:
        n = n * 26 + (ord(char) - 96)
    return n - 1


# --- the prompt of each wire format ----------------------------------------------------------------------


def _int_field(body: dict[str, Any], *names: str, default: int | None = None) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise BadRequest(f"'{name}' must be an integer, not {json.dumps(value)[:40]}")
        return int(value)
    return default


def _text_of(content: Any) -> str:
    """A chat message's content: a string, or OpenAI's list of parts (the text ones)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    raise BadRequest("a message's 'content' must be a string or a list of parts")


def render_chat(messages: Any) -> str:
    """The mock's chat template: every message behind its role marker, then the assistant's."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object with 'role' and 'content'")
        parts.append(f"<|{message.get('role', 'user')}|> {_text_of(message.get('content'))}")
    return " ".join(parts) + " <|assistant|>"


# --- one generation's plan -----------------------------------------------------------------------------------


@dataclass
class Plan:
    """What one request will produce: prompt tokens, how many to generate, why it stops."""

    prompt: list[int]
    n_out: int
    stop: str  # "eos" | "limit"
    cache_allowed: bool
    stream: bool


def _length(config: MockConfig, n_prompt: int, limit: int | None, ignore_eos: bool, min_tokens: int = 0,
            ctx_size: int | None = None) -> tuple[int, str]:
    """How many tokens to generate and why it stops: the request's limit, the context's end, or EOS."""
    room = (ctx_size or config.ctx_size) - n_prompt
    if limit is not None and limit < 0:
        limit = None  # -1: no limit (llama-server n_predict, Ollama num_predict)
    cap = room if limit is None else min(limit, room)
    wanted = cap if ignore_eos else max(config.output_tokens, min_tokens)
    n_out = max(0, min(wanted, cap))
    return n_out, ("limit" if n_out >= cap else "eos")


def _check_context(config: MockConfig, n_prompt: int) -> None:
    if n_prompt >= config.ctx_size:
        raise BadRequest(f"the request exceeds the available context size ({n_prompt} prompt tokens, "
                         f"{config.ctx_size} per slot), try increasing it", kind="exceed_context_size_error")


def _prompt_tokens(tokenizer: Tokenizer, prompt: Any, add_special: bool) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer.tokenize(prompt, add_special)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        return _prompt_tokens(tokenizer, prompt[0], add_special)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        for token in prompt:
            tokenizer.piece(token)  # refuses an id outside the vocabulary
        return list(prompt)
    raise BadRequest("'prompt' must be a string or a list of token ids (one prompt per request)")


def plan_llama(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any]) -> Plan:
    if "prompt" not in body:
        raise BadRequest('"prompt" must be provided')
    prompt = _prompt_tokens(tokenizer, body["prompt"], add_special=True)
    _check_context(config, len(prompt))
    n_out, stop = _length(config, len(prompt), _int_field(body, "n_predict", "max_tokens", default=-1),
                          bool(body.get("ignore_eos")))
    return Plan(prompt, n_out, stop, body.get("cache_prompt", True) is not False, bool(body.get("stream", False)))


def plan_openai(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any], chat: bool) -> Plan:
    if _int_field(body, "n", default=1) != 1:
        raise BadRequest("the mock answers one choice per request ('n' must be 1)")
    if chat:
        prompt = tokenizer.tokenize(render_chat(body.get("messages")), add_special=True)
    elif "prompt" in body:
        prompt = _prompt_tokens(tokenizer, body["prompt"], add_special=True)
    else:
        raise BadRequest('"prompt" must be provided')
    _check_context(config, len(prompt))
    limit = _int_field(body, "max_completion_tokens", "max_tokens")
    n_out, stop = _length(config, len(prompt), limit, bool(body.get("ignore_eos")),
                          _int_field(body, "min_tokens", default=0) or 0)
    return Plan(prompt, n_out, stop, body.get("cache_prompt", True) is not False, bool(body.get("stream", False)))


def plan_ollama(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any], chat: bool) -> Plan:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model is required")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object")
    if chat:
        text = render_chat(body.get("messages"))
    else:
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string")
        text = prompt if body.get("raw") else render_chat([{"role": "user", "content": prompt}])
    tokens = tokenizer.tokenize(text, add_special=True)
    context = int(_int_field(options, "num_ctx", default=config.ctx_size) or config.ctx_size)
    if len(tokens) >= context:  # Ollama truncates a prompt longer than num_ctx: keep its tail
        tokens = [BOS_ID, *tokens[-(context // 2):]]
    n_out, stop = _length(config, len(tokens), _int_field(options, "num_predict", default=-1), False,
                          ctx_size=min(context, config.ctx_size))
    # Ollama streams unless told not to.
    return Plan(tokens, n_out, stop, True, body.get("stream", True) is not False)


def _config_dict(config: MockConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


# --- wire formats -------------------------------------------------------------------------------------------


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


class Format:
    """One wire format: its content type and the bytes of each event; ``token`` is the hot path."""

    content_type = "text/event-stream"
    sse = True

    def __init__(self, gen: Generation) -> None:
        self.gen = gen

    def event(self, data: dict[str, Any] | str) -> bytes:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        return f"data: {text}\n\n".encode() if self.sse else f"{text}\n".encode()

    def token(self, index: int, piece_json: str, token: int) -> bytes:
        raise NotImplementedError

    def final(self) -> bytes:
        raise NotImplementedError

    def whole(self) -> dict[str, Any]:
        """The non-streamed answer."""
        raise NotImplementedError

    @staticmethod
    def error(message: str, status: int, kind: str) -> dict[str, Any]:
        """An error body in this format (llama-server's and OpenAI's: an object with a code)."""
        return {"error": {"code": status, "message": message, "type": kind}}


def llama_timings(gen: Generation) -> dict[str, Any]:
    """llama-server's ``timings`` (server_slot_stats::to_json), from the mock's own clock."""
    prompt_ms = max(gen.t_first - gen.t_slot, 0.0) * 1000 if gen.t_first else 0.0
    predicted_ms = max(gen.t_last - gen.t_first, 0.0) * 1000 if gen.t_first else 0.0
    prompt_n = len(gen.plan.prompt) - gen.cache_n
    predicted_n = gen.emitted
    return {
        "cache_n": gen.cache_n,
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
        "prompt_per_second": round(prompt_n / prompt_ms * 1000, 3) if prompt_ms else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / predicted_n, 3) if predicted_n else 0.0,
        "predicted_per_second": round(predicted_n / predicted_ms * 1000, 3) if predicted_ms else 0.0,
    }


class LlamaFormat(Format):
    def __init__(self, gen: Generation) -> None:
        super().__init__(gen)
        # Everything of a token event but the token: formatted once per stream.
        self.template = (f'data: {{"index":0,"content":%s,"tokens":[%d],"stop":false,"id_slot":{gen.slot},'
                         f'"tokens_predicted":%d,"tokens_evaluated":{len(gen.plan.prompt)}}}\n\n')

    def token(self, index: int, piece_json: str, token: int) -> bytes:
        return (self.template % (piece_json, token, index + 1)).encode()

    def _final(self, content: str) -> dict[str, Any]:
        gen = self.gen
        return {
            "index": 0, "content": content, "tokens": [], "id_slot": gen.slot, "stop": True,
            "model": gen.server.config.model, "tokens_predicted": gen.emitted,
            "tokens_evaluated": len(gen.plan.prompt), "generation_settings": {"n_predict": gen.plan.n_out},
            "prompt": "", "has_new_line": False, "truncated": False, "stop_type": gen.plan.stop,
            "stopping_word": "", "tokens_cached": len(gen.plan.prompt) + gen.emitted,
            "timings": llama_timings(gen),
        }

    def final(self) -> bytes:
        return self.event(self._final(""))

    def whole(self) -> dict[str, Any]:
        return self._final(self.gen.text())


class OpenAIFormat(Format):
    chat = False

    def __init__(self, gen: Generation) -> None:
        super().__init__(gen)
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-mock{gen.number}"
        self.created = int(time.time())
        model = json.dumps(gen.model)
        tail = (f'"created":{self.created},"id":"{self.id}","model":{model},'
                f'"system_fingerprint":"{MOCK_VERSION}","object":"{self.object}"')
        self.tail = tail
        if self.chat:
            self.template = ('data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":%s}}],'
                             + tail + "}\n\n")
            role = '{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],'
            self.first = ("data: " + role + tail + "}\n\n").encode()
        else:
            self.template = ('data: {"choices":[{"text":%s,"index":0,"logprobs":null,"finish_reason":null}],'
                             + tail + "}\n\n")

    @property
    def object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def token(self, index: int, piece_json: str, token: int) -> bytes:
        event = (self.template % piece_json).encode()
        return self.first + event if self.chat and index == 0 else event

    def finish_reason(self) -> str:
        return "length" if self.gen.plan.stop == "limit" else "stop"

    def usage(self) -> dict[str, Any]:
        gen = self.gen
        n_prompt = len(gen.plan.prompt)
        return {"completion_tokens": gen.emitted, "prompt_tokens": n_prompt, "total_tokens": gen.emitted + n_prompt,
                "prompt_tokens_details": {"cached_tokens": gen.cache_n}}

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"choices": choices, "created": self.created, "id": self.id, "model": self.gen.model,
                "system_fingerprint": MOCK_VERSION, "object": self.object, **extra}

    def final(self) -> bytes:
        last = {"finish_reason": self.finish_reason(), "index": 0}
        last.update({"delta": {}} if self.chat else {"text": "", "logprobs": None})
        events = [self._chunk([last])]
        options = self.gen.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            events.append(self._chunk([], usage=self.usage()))
        events[-1]["timings"] = llama_timings(self.gen)  # as llama-server puts them on its last chunk
        return b"".join(self.event(e) for e in events) + self.event("[DONE]")

    def whole(self) -> dict[str, Any]:
        text = self.gen.text()
        choice: dict[str, Any] = {"finish_reason": self.finish_reason(), "index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice.update(text=text, logprobs=None)
        return {**self._chunk([choice]), "object": "chat.completion" if self.chat else "text_completion",
                "usage": self.usage(), "timings": llama_timings(self.gen)}


class OpenAIChatFormat(OpenAIFormat):
    chat = True


class OllamaFormat(Format):
    """Ollama's NDJSON (the replay server of the Ollama plugin's tests keeps the same shape)."""

    content_type = "application/x-ndjson"
    sse = False
    chat = False

    def __init__(self, gen: Generation) -> None:
        super().__init__(gen)
        model = json.dumps(gen.model)
        if self.chat:
            self.template = f'{{"model":{model},"created_at":"%s","message":{{"role":"assistant","content":%s}},"done":false}}\n'
        else:
            self.template = f'{{"model":{model},"created_at":"%s","response":%s,"done":false}}\n'

    def token(self, index: int, piece_json: str, token: int) -> bytes:
        return (self.template % (_now_iso(), piece_json)).encode()

    @staticmethod
    def error(message: str, status: int, kind: str) -> dict[str, Any]:
        return {"error": message}

    def _final(self, text: str) -> dict[str, Any]:
        gen = self.gen
        out: dict[str, Any] = {"model": gen.model, "created_at": _now_iso()}
        if self.chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out.update(done=True, done_reason="length" if gen.plan.stop == "limit" else "stop")
        if not self.chat:
            out["context"] = [*gen.plan.prompt, *gen.tokens()]
        ns = 1e9
        now = gen.server.loop.time()
        metrics = {
            "total_duration": int((now - gen.t_arrived) * ns),
            "load_duration": 0,
            # Ollama counts only the prompt tokens it evaluated: a cached prefix is not in the count.
            "prompt_eval_count": len(gen.plan.prompt) - gen.cache_n,
            "prompt_eval_duration": int((gen.t_first - gen.t_slot) * ns) if gen.t_first else 0,
            "eval_count": gen.emitted,
            "eval_duration": int((gen.t_last - gen.t_first) * ns) if gen.t_first else 0,
        }
        # Ollama's metrics are omitempty: a zero is left out.
        out.update({key: value for key, value in metrics.items() if value})
        return out

    def final(self) -> bytes:
        return self.event(self._final(""))

    def whole(self) -> dict[str, Any]:
        return self._final(self.gen.text())


class OllamaChatFormat(OllamaFormat):
    chat = True


# --- the schedule ----------------------------------------------------------------------------------------


class Generation:
    """One request's tokens, each written at its scheduled time by a ``loop.call_at`` callback."""

    def __init__(self, server: MockServer, conn: Connection, plan: Plan, body: dict[str, Any],
                 format_cls: type[Format]) -> None:
        self.server, self.conn, self.plan, self.body = server, conn, plan, body
        self.model = body.get("model") if isinstance(body.get("model"), str) else server.config.model
        self.number = next(server.numbers)
        self.t_arrived = server.loop.time()
        self.t_slot = self.t_first = self.t_last = 0.0
        self.slot = -1
        self.cache_n = 0
        self.emitted = 0
        self.due = 0.0
        self.handle: asyncio.TimerHandle | None = None
        self.done = False
        self.format_cls = format_cls
        self.format: Format | None = None

    def start(self, slot: int) -> None:
        """A slot is free: prefill, then the first token."""
        server = self.server
        self.slot = slot
        self.t_slot = server.loop.time()
        self.cache_n = server.cache.lookup(self.plan.prompt) if self.plan.cache_allowed else 0
        server.cache.store(self.plan.prompt)
        self.format = self.format_cls(self)
        if self.plan.stream:
            self.conn.start_stream(200, self.format.content_type)
        config = server.config
        uncached = len(self.plan.prompt) - self.cache_n
        self.due = self.t_slot + (config.ttft_ms + config.prefill_ms_per_token * uncached) / 1000
        if self.plan.n_out == 0:
            self.handle = server.loop.call_at(self.due, self.finish)
        else:
            self.handle = server.loop.call_at(self.due, self.emit)

    def emit(self) -> None:
        server = self.server
        now = server.loop.time()
        server.stats.late(now - self.due)
        index = self.emitted
        if index == 0:
            self.t_first = now
        self.t_last = now
        self.emitted += 1
        if self.plan.stream:
            piece_json, token = server.answer[index % len(server.answer)]
            self.conn.write_chunk(self.format.token(index, piece_json, token))
        if self.emitted >= self.plan.n_out:
            self.finish()
            return
        self.due += server.gap()
        self.handle = server.loop.call_at(self.due, self.emit)

    def finish(self) -> None:
        server = self.server
        self.done = True
        self.handle = None
        server.stats.finished(self)
        if self.plan.stream:
            self.conn.write_chunk(self.format.final())
            self.conn.end_stream()
        else:
            self.conn.send_json(200, self.format.whole())
        server.release(self)

    def cancel(self) -> None:
        """The client went away mid-stream."""
        if self.done:
            return
        self.done = True
        if self.handle is not None:
            self.handle.cancel()
        self.server.stats.cancelled += 1
        self.server.release(self)

    def tokens(self) -> list[int]:
        answer = self.server.answer
        return [answer[i % len(answer)][1] for i in range(self.emitted)]

    def text(self) -> str:
        tokenizer = self.server.tokenizer
        return "".join(tokenizer.piece(token) for token in self.tokens())


class PrefixCache:
    """The last prompts seen (llama-server keeps one per slot): the longest shared prefix."""

    def __init__(self, size: int) -> None:
        self.prompts: collections.deque[tuple[int, ...]] = collections.deque(maxlen=size)

    def lookup(self, prompt: list[int]) -> int:
        best = 0
        wanted = tuple(prompt)
        for seen in self.prompts:
            # Binary search on the prefix length: each comparison is one C-level tuple compare.
            low, high = best, min(len(seen), len(wanted))
            if high <= best or seen[:best + 1] != wanted[:best + 1]:
                continue
            while low < high:
                mid = (low + high + 1) // 2
                if seen[:mid] == wanted[:mid]:
                    low = mid
                else:
                    high = mid - 1
            best = low
        # The last prompt token is always evaluated again: its logits give the first output token.
        return min(best, max(len(prompt) - 1, 0))

    def store(self, prompt: list[int]) -> None:
        self.prompts.append(tuple(prompt))


class Stats:
    """Counters for /metrics and /mock/stats; ``late`` is on the hot path (one list index)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lag = [0] * (LAG_BUCKETS + 1)
        self.lag_sum = 0.0
        self.lag_max = 0.0
        self.tokens = 0
        self.started = self.completed = self.cancelled = self.failed = self.queued_max = self.active_max = 0
        self.accepted = 0  # connections opened: a client that reuses its connections opens few
        self.prompt_tokens = self.prompt_cached = 0
        self.prompt_seconds = self.predicted_seconds = 0.0
        self.n_tokens_max = 0
        self.cpu_start = time.process_time()
        self.wall_start = time.monotonic()

    def late(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.tokens += 1
        self.lag_sum += seconds
        self.lag_max = max(self.lag_max, seconds)
        self.lag[min(int(seconds / LAG_BUCKET_S), LAG_BUCKETS)] += 1

    def finished(self, gen: Generation) -> None:
        self.completed += 1
        self.prompt_tokens += len(gen.plan.prompt) - gen.cache_n
        self.prompt_cached += gen.cache_n
        if gen.t_first:
            self.prompt_seconds += gen.t_first - gen.t_slot
            self.predicted_seconds += gen.t_last - gen.t_first
        self.n_tokens_max = max(self.n_tokens_max, len(gen.plan.prompt) + gen.emitted)

    def lag_quantile(self, q: float) -> float:
        if not self.tokens:
            return 0.0
        wanted = q * self.tokens
        seen = 0
        for index, count in enumerate(self.lag):
            seen += count
            if seen >= wanted:
                return (index + 1) * LAG_BUCKET_S  # the bucket's upper edge: never flatters the mock
        return self.lag_max


class MockServer:
    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.tokenizer = Tokenizer(config.vocab_size)
        self.answer = [(json.dumps(f" {w}"), self.tokenizer.id_of(f" {w}")) for w in ANSWER]
        self.numbers = iter(range(1, 1 << 62))
        self.requests = 0
        self.stats = Stats()
        self.cache = PrefixCache(max(config.slots, 16))
        self.active: set[Generation] = set()
        self.waiting: collections.deque[Generation] = collections.deque()
        self.free_slots: list[int] = []
        self.next_slot = 0
        self.connections = 0
        self.random = random.Random(config.seed)
        self.server: asyncio.base_events.Server | None = None

    async def listen(self, host: str, port: int) -> str:
        self.server = await self.loop.create_server(lambda: Connection(self), host, port, backlog=4096,
                                                    reuse_address=True)
        bound_host, bound_port = self.server.sockets[0].getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{bound_port}"

    def gap(self) -> float:
        config = self.config
        if not config.jitter_ms:
            return config.itl_ms / 1000
        return max(config.itl_ms + self.random.uniform(-config.jitter_ms, config.jitter_ms), 0.0) / 1000

    # slots: llama-server's --parallel; a request beyond them waits ("deferred")
    def submit(self, gen: Generation) -> None:
        self.stats.started += 1
        if self.config.slots and len(self.active) >= self.config.slots:
            self.waiting.append(gen)
            self.stats.queued_max = max(self.stats.queued_max, len(self.waiting))
            return
        self._run(gen)

    def _run(self, gen: Generation) -> None:
        self.active.add(gen)
        self.stats.active_max = max(self.stats.active_max, len(self.active))
        if self.free_slots:
            slot = heapq.heappop(self.free_slots)
        else:
            slot, self.next_slot = self.next_slot, self.next_slot + 1
        gen.start(slot)

    def release(self, gen: Generation) -> None:
        if gen in self.active:
            self.active.discard(gen)
            heapq.heappush(self.free_slots, gen.slot)
        else:
            try:
                self.waiting.remove(gen)
            except ValueError:
                pass
        while self.waiting and (not self.config.slots or len(self.active) < self.config.slots):
            self._run(self.waiting.popleft())

    # --- routes ---

    def handle(self, conn: Connection, method: str, path: str, body: bytes) -> None:
        route = ROUTES.get(path)
        if route is None:
            conn.send_json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
            return
        wanted, name = route
        if method != wanted and not (method == "HEAD" and wanted == "GET"):
            conn.send_json(405, {"error": {"code": 405, "message": f"{path} takes {wanted}",
                                           "type": "invalid_request_error"}})
            return
        data: dict[str, Any] = {}
        if wanted == "POST":
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                conn.send_json(400, {"error": {"code": 400, "message": "the request body is not valid JSON",
                                               "type": "invalid_request_error"}})
                return
            if not isinstance(data, dict):
                conn.send_json(400, {"error": {"code": 400, "message": "the request body must be a JSON object",
                                               "type": "invalid_request_error"}})
                return
        getattr(self, name)(conn, data)

    def _generate(self, conn: Connection, body: dict[str, Any], planner, format_cls: type[Format]) -> None:
        try:
            plan = planner(body)
        except BadRequest as exc:
            error = format_cls.error(str(exc), exc.status, exc.kind)
            conn.send_json(exc.status, error)
            return
        self.requests += 1
        if self.config.fail_every and self.requests % self.config.fail_every == 0:
            self.stats.failed += 1
            message = f"mock: injected failure (every {self.config.fail_every}th request)"
            conn.send_json(503, format_cls.error(message, 503, "unavailable_error"))
            return
        gen = Generation(self, conn, plan, body, format_cls)
        conn.generation = gen
        self.submit(gen)

    def completion(self, conn: Connection, body: dict[str, Any]) -> None:
        self._generate(conn, body, lambda b: plan_llama(self.config, self.tokenizer, b), LlamaFormat)

    def v1_completions(self, conn: Connection, body: dict[str, Any]) -> None:
        self._generate(conn, body, lambda b: plan_openai(self.config, self.tokenizer, b, chat=False), OpenAIFormat)

    def v1_chat(self, conn: Connection, body: dict[str, Any]) -> None:
        self._generate(conn, body, lambda b: plan_openai(self.config, self.tokenizer, b, chat=True), OpenAIChatFormat)

    def api_generate(self, conn: Connection, body: dict[str, Any]) -> None:
        self._generate(conn, body, lambda b: plan_ollama(self.config, self.tokenizer, b, chat=False), OllamaFormat)

    def api_chat(self, conn: Connection, body: dict[str, Any]) -> None:
        self._generate(conn, body, lambda b: plan_ollama(self.config, self.tokenizer, b, chat=True), OllamaChatFormat)

    def tokenize(self, conn: Connection, body: dict[str, Any]) -> None:
        content = body.get("content", "")
        try:
            tokens = _prompt_tokens(self.tokenizer, content, bool(body.get("add_special", False)))
        except BadRequest as exc:
            conn.send_json(400, {"error": {"code": 400, "message": str(exc), "type": exc.kind}})
            return
        if body.get("with_pieces"):
            conn.send_json(200, {"tokens": [{"id": t, "piece": self.tokenizer.piece(t)} for t in tokens]})
        else:
            conn.send_json(200, {"tokens": tokens})

    def detokenize(self, conn: Connection, body: dict[str, Any]) -> None:
        tokens = body.get("tokens", [])
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            conn.send_json(400, {"error": {"code": 400, "message": "'tokens' must be a list of token ids",
                                           "type": "invalid_request_error"}})
            return
        try:
            conn.send_json(200, {"content": self.tokenizer.detokenize(tokens)})
        except BadRequest as exc:
            conn.send_json(400, {"error": {"code": 400, "message": str(exc), "type": exc.kind}})

    def health(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, {"status": "ok"})

    def props(self, conn: Connection, body: dict[str, Any]) -> None:
        config = self.config
        conn.send_json(200, {
            "default_generation_settings": {"n_ctx": config.ctx_size, "params": {"n_predict": -1}},
            "total_slots": config.slots or 1_000_000, "model_alias": config.model, "model_path": config.model,
            "modalities": {"vision": False, "audio": False}, "endpoint_slots": False, "endpoint_props": False,
            "endpoint_metrics": True, "chat_template": "<|{role}|> {content} <|assistant|>",
            "bos_token": SPECIAL[BOS_ID], "eos_token": SPECIAL[EOS_ID], "build_info": MOCK_VERSION,
            "is_sleeping": False, "mock": _config_dict(config),
        })

    def models(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, {"object": "list", "data": [
            {"id": self.config.model, "object": "model", "created": 0, "owned_by": "velollm-mock",
             "meta": {"n_ctx_train": self.config.ctx_size, "n_vocab": self.config.vocab_size}}]})

    def api_version(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, {"version": OLLAMA_VERSION})

    def _ollama_model(self) -> dict[str, Any]:
        return {"name": self.config.model, "model": self.config.model, "modified_at": _now_iso(), "size": 0,
                "digest": "0" * 64, "details": {"format": "gguf", "family": "mock", "families": ["mock"],
                                                 "parameter_size": "0", "quantization_level": "F16"}}

    def api_tags(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, {"models": [self._ollama_model()]})

    def api_ps(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, {"models": [{**self._ollama_model(), "size_vram": 0, "context_length": self.config.ctx_size,
                                         "expires_at": "2999-01-01T00:00:00Z"}]})

    def api_show(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, {"details": self._ollama_model()["details"], "capabilities": ["completion"],
                             "model_info": {"general.architecture": "mock",
                                            "mock.context_length": self.config.ctx_size},
                             "parameters": "", "template": "{{ .Prompt }}"})

    def mock_stats(self, conn: Connection, body: dict[str, Any]) -> None:
        conn.send_json(200, self.snapshot())

    def mock_reset(self, conn: Connection, body: dict[str, Any]) -> None:
        self.stats.reset()
        conn.send_json(200, {"reset": True})

    def snapshot(self) -> dict[str, Any]:
        """The mock's own account: how late its tokens left, its CPU, its counters."""
        stats = self.stats
        wall = time.monotonic() - stats.wall_start
        cpu = time.process_time() - stats.cpu_start
        return {
            "config": _config_dict(self.config),
            "tokens": stats.tokens, "started": stats.started, "completed": stats.completed,
            "cancelled": stats.cancelled, "failed": stats.failed, "active": len(self.active),
            "waiting": len(self.waiting), "queued_max": stats.queued_max, "active_max": stats.active_max, "connections": self.connections,
            "accepted": stats.accepted, "lag_ms": {"mean": stats.lag_sum / stats.tokens * 1000 if stats.tokens else 0.0,
                       "p50": stats.lag_quantile(0.5) * 1000, "p99": stats.lag_quantile(0.99) * 1000,
                       "max": stats.lag_max * 1000},
            "cpu_s": cpu, "wall_s": wall, "cpu_per_token_ms": cpu / stats.tokens * 1000 if stats.tokens else None,
        }

    def metrics(self, conn: Connection, body: dict[str, Any]) -> None:
        stats = self.stats
        decode_rate = stats.tokens / stats.predicted_seconds if stats.predicted_seconds else 0.0
        prompt_rate = stats.prompt_tokens / stats.prompt_seconds if stats.prompt_seconds else 0.0
        counters = [
            ("prompt_tokens_total", "Number of prompt tokens processed, excluding cached tokens", stats.prompt_tokens),
            ("prompt_tokens_cached_total", "Number of prompt tokens reused from the cache", stats.prompt_cached),
            ("prompt_seconds_total", "Total time spent processing prompts", stats.prompt_seconds),
            ("tokens_predicted_total", "Number of generation tokens processed", stats.tokens),
            ("tokens_predicted_seconds_total", "Total time spent generating tokens", stats.predicted_seconds),
            ("n_decode_total", "Total number of llama_decode() calls", stats.tokens),
            ("n_tokens_max", "Largest observed sequence length (prompt + generation)", stats.n_tokens_max),
        ]
        gauges = [
            ("prompt_tokens_seconds", "Average prompt throughput in tokens/s", prompt_rate),
            ("predicted_tokens_seconds", "Average generation throughput in tokens/s", decode_rate),
            ("requests_processing", "Number of requests processing", len(self.active)),
            ("requests_deferred", "Number of requests deferred", len(self.waiting)),
            ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call", 1.0),
        ]
        lines: list[str] = []
        for kind, items in (("counter", counters), ("gauge", gauges)):
            for name, text, value in items:
                lines += [f"# HELP llamacpp:{name} {text}", f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value}"]
        snap = self.snapshot()
        lines += ["# HELP velollm_mock_token_lateness_seconds How long after its scheduled time each token left",
                  "# TYPE velollm_mock_token_lateness_seconds summary"]
        for q in (0.5, 0.99):
            lines.append(f'velollm_mock_token_lateness_seconds{{quantile="{q}"}} {stats.lag_quantile(q)}')
        lines += [f"velollm_mock_token_lateness_seconds_sum {stats.lag_sum}",
                  f"velollm_mock_token_lateness_seconds_count {stats.tokens}",
                  "# HELP velollm_mock_cpu_seconds_total CPU time of the mock process since start or reset",
                  "# TYPE velollm_mock_cpu_seconds_total counter", f"velollm_mock_cpu_seconds_total {snap['cpu_s']}",
                  "# HELP velollm_mock_connections Open client connections",
                  "# TYPE velollm_mock_connections gauge", f"velollm_mock_connections {self.connections}"]
        conn.send_bytes(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")


ROUTES: dict[str, tuple[str, str]] = {
    "/completion": ("POST", "completion"), "/completions": ("POST", "completion"),
    "/v1/completions": ("POST", "v1_completions"),
    "/v1/chat/completions": ("POST", "v1_chat"), "/chat/completions": ("POST", "v1_chat"),
    "/tokenize": ("POST", "tokenize"), "/detokenize": ("POST", "detokenize"),
    "/health": ("GET", "health"), "/v1/health": ("GET", "health"), "/props": ("GET", "props"),
    "/metrics": ("GET", "metrics"), "/v1/models": ("GET", "models"), "/models": ("GET", "models"),
    "/api/generate": ("POST", "api_generate"), "/api/chat": ("POST", "api_chat"),
    "/api/version": ("GET", "api_version"), "/api/tags": ("GET", "api_tags"), "/api/ps": ("GET", "api_ps"),
    "/api/show": ("POST", "api_show"),
    "/mock/stats": ("GET", "mock_stats"), "/mock/reset": ("POST", "mock_reset"),
}


# --- HTTP/1.1 over one asyncio Protocol per connection -----------------------------------------------------

_REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large", 501: "Not Implemented",
            503: "Service Unavailable"}


class Connection(asyncio.Protocol):
    """Keep-alive HTTP/1.1: one request at a time (pipelined ones wait in the buffer), chunked streams."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.keep_alive = True
        self.continued = False
        self.head_only = False
        self.generation: Generation | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.stats.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections -= 1
        self.transport = None
        if self.generation is not None:
            self.generation.cancel()
            self.generation = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._refuse(431, "request headers too large")
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = head[0].split(" ", 2)
            except ValueError:
                self._refuse(400, "malformed request line")
                return
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                try:
                    parsed = _dechunk(self.buffer, end + 4)
                except BadRequest as exc:
                    self._refuse(400, str(exc))
                    return
                if parsed is None:
                    self._expect_continue(headers)
                    return
                body, used = parsed
            else:
                try:
                    length = int(headers.get("content-length") or 0)
                except ValueError:
                    self._refuse(400, "bad Content-Length")
                    return
                if length > MAX_BODY_BYTES:
                    self._refuse(413, "request body too large")
                    return
                if len(self.buffer) < end + 4 + length:
                    self._expect_continue(headers)
                    return
                body, used = bytes(self.buffer[end + 4:end + 4 + length]), end + 4 + length
            del self.buffer[:used]
            self.continued = False
            connection = headers.get("connection", "").lower()
            self.keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
            self.busy = True
            self.head_only = method == "HEAD"
            self.server.handle(self, method, urlsplit(target).path, body)

    def _expect_continue(self, headers: dict[str, str]) -> None:
        # curl waits a second for this before sending a body over 1 kB.
        if headers.get("expect", "").lower() == "100-continue" and not self.continued and self.transport:
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, status: int, message: str) -> None:
        self.keep_alive = False
        self.busy = True
        self.send_json(status, {"error": {"code": status, "message": message, "type": "invalid_request_error"}})

    def _head(self, status: int, content_type: str, length: int | None) -> bytes:
        framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        keep = "keep-alive" if self.keep_alive else "close"
        return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"{framing}\r\nConnection: {keep}\r\nServer: {MOCK_VERSION}\r\n\r\n").encode()

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        if self.transport is not None:
            head = self._head(status, content_type, len(body))
            self.transport.write(head if self.head_only else head + body)
        self._done()

    def send_json(self, status: int, data: Any) -> None:
        self.send_bytes(status, json.dumps(data, separators=(",", ":")).encode(), "application/json; charset=utf-8")

    def start_stream(self, status: int, content_type: str) -> None:
        if self.transport is not None:
            self.transport.write(self._head(status, content_type, None))

    def write_chunk(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self) -> None:
        if self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self._done()

    def _done(self) -> None:
        self.generation = None
        self.busy = False
        if self.transport is None:
            return
        if not self.keep_alive:
            self.transport.close()
            return
        if self.buffer:
            self.server.loop.call_soon(self._next_request)


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked request body: (body, bytes used), or None while it is incomplete."""
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        except ValueError:
            raise BadRequest("malformed chunked body") from None
        if size == 0:
            trailer_end = buffer.find(b"\r\n", line_end + 2)
            return (bytes(body), trailer_end + 2) if trailer_end >= 0 else None
        if len(buffer) < line_end + 2 + size + 2:
            return None
        body += buffer[line_end + 2:line_end + 2 + size]
        position = line_end + 2 + size + 2


# --- the command ---------------------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    """1,000 streams need more than the common soft limit of 1,024 open files."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


async def serve(config: MockConfig, host: str = "127.0.0.1", port: int = 0, ready=None) -> None:
    """Serve until SIGTERM/SIGINT; ``ready(url)`` is called once the socket listens."""
    mock = MockServer(config)
    url = await mock.listen(host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            mock.loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    if ready is not None:
        ready(url)
    try:
        await stop.wait()
    finally:
        mock.server.close()
        for gen in list(mock.active) + list(mock.waiting):
            gen.cancel()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2: a usage error
        sys.stderr.write(f"velollm mockserver: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m velollm_core.mockserver",
                     description="A loopback mock LLM server (llama-server, OpenAI and Ollama wire formats).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one; the URL is printed)")
    defaults = MockConfig()
    helps = {"ttft_ms": "time to first token", "itl_ms": "gap between tokens",
             "output_tokens": "answer length when the request does not force one (the model's EOS)",
             "prefill_ms_per_token": "added to the TTFT per uncached prompt token",
             "jitter_ms": "each gap uniform in itl +/- jitter", "seed": "seed of the jitter",
             "slots": "concurrent generations, more wait (0: no limit)", "ctx_size": "context per slot",
             "vocab_size": "fixed token ids", "model": "model name served",
             "fail_every": "every Nth generation request answers HTTP 503 (0: never)"}
    for field in fields(MockConfig):
        default = getattr(defaults, field.name)
        kind = type(default)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default,
                            help=f"{helps[field.name]} (default {default})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = MockConfig(**{f.name: getattr(args, f.name) for f in fields(MockConfig)})
    try:
        config.check()
        if not 0 <= args.port <= 65535:
            raise ValueError("--port must lie between 0 and 65535")
    except ValueError as exc:
        sys.stderr.write(f"velollm mockserver: {exc}\n")
        return 2
    _raise_fd_limit()

    def ready(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        sys.stderr.write(f"velollm mockserver: {url} ttft {config.ttft_ms:g} ms, itl {config.itl_ms:g} ms, "
                         f"{config.output_tokens} tokens, pid {os.getpid()}\n")

    try:
        asyncio.run(serve(config, args.host, args.port, ready))
    except OSError as exc:
        sys.stderr.write(f"velollm mockserver: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
