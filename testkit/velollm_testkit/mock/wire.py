"""What every wire format of the mock shares: the refusal of a bad request, the plan of one
generation (prompt, output length, why it stops), the chat template, and the ``Format`` base class
whose subclasses write each format's events."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from velollm_testkit.mock.config import MockConfig
    from velollm_testkit.mock.scheduler import Generation


class BadRequest(Exception):
    """A request the mock refuses, as the real server would: HTTP status and message."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def int_field(body: dict[str, Any], *names: str, default: int | None = None) -> int | None:
    """The first of ``names`` present in ``body``, as an integer (a whole float is accepted)."""
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


@dataclass
class Plan:
    """What one request will produce: prompt tokens, how many to generate, why it stops."""

    prompt: list[int]
    n_out: int
    stop: str  # "eos" | "limit"
    cache_allowed: bool
    stream: bool
    # Per token (kind, text) where the answer is more than the fixed words: reasoning first, JSON
    # following a schema, a tool call's arguments (velollm_testkit.mock.answers); None: the words.
    script: list[tuple[str, str]] | None = None
    tool_name: str | None = None


def output_cap(config: MockConfig, n_prompt: int, limit: int | None, ctx_size: int | None = None) -> int:
    """The most tokens a request may generate: its limit, or the room left in the context."""
    room = (ctx_size or config.ctx_size) - n_prompt
    if limit is not None and limit < 0:
        limit = None  # -1: no limit (llama-server n_predict, Ollama num_predict)
    return room if limit is None else min(limit, room)


def output_length(config: MockConfig, n_prompt: int, limit: int | None, ignore_eos: bool, min_tokens: int = 0,
                  ctx_size: int | None = None) -> tuple[int, str]:
    """How many tokens to generate and why it stops: the request's limit, the context's end, or EOS."""
    cap = output_cap(config, n_prompt, limit, ctx_size)
    wanted = cap if ignore_eos else max(config.output_tokens, min_tokens)
    n_out = max(0, min(wanted, cap))
    return n_out, ("limit" if n_out >= cap else "eos")


def check_context(config: MockConfig, n_prompt: int) -> None:
    if n_prompt >= config.ctx_size:
        raise BadRequest(f"the request exceeds the available context size ({n_prompt} prompt tokens, "
                         f"{config.ctx_size} per slot), try increasing it", kind="exceed_context_size_error")


def now_iso() -> str:
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
        """The event of the ``index``-th token (``piece_json``: its text as a JSON string); b"" for none."""
        raise NotImplementedError

    def scripted(self, index: int, kind: str, piece: str) -> bytes:
        """The event of a scripted token (``kind``: reasoning, answer or tool); a format without its own
        fields for reasoning and tool calls writes every kind as answer text, as a raw completion does."""
        return self.token(index, json.dumps(piece), 0)

    def final(self) -> bytes:
        raise NotImplementedError

    def whole(self) -> dict[str, Any]:
        """The non-streamed answer."""
        raise NotImplementedError

    @staticmethod
    def error(message: str, status: int, kind: str) -> dict[str, Any]:
        """An error body in this format (llama-server's and OpenAI's: an object with a code)."""
        return {"error": {"code": status, "message": message, "type": kind}}
