"""Ollama's wire format in the mock: ``/api/generate`` and ``/api/chat`` NDJSON with nanosecond
durations and its zero fields left out, ``/api/version``, ``/api/tags``, ``/api/ps``, ``/api/show``.
Ollama has no ``ignore_eos``: ``options.num_predict`` limits an answer, EOS ends it sooner."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from velollm_testkit.mock import answers
from velollm_testkit.mock.config import MockConfig
from velollm_testkit.mock.tokenizer import BOS_ID, Tokenizer
from velollm_testkit.mock.wire import (
    BadRequest,
    Format,
    Plan,
    int_field,
    now_iso,
    output_cap,
    output_length,
    render_chat,
)

if TYPE_CHECKING:
    from velollm_testkit.mock.scheduler import Generation
    from velollm_testkit.mock.server import Connection, MockServer

OLLAMA_VERSION = "0.12.0"  # what /api/version claims: a current Ollama's answer shape


def plan_ollama(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any], chat: bool) -> Plan:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequest("model is required")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object")
    features = answers.Features(reasoning=body.get("think") is not False, tool=answers.first_tool(body.get("tools")))
    if body.get("format") is not None and body.get("format") != "json":
        if not isinstance(body["format"], dict):
            raise BadRequest("'format' must be \"json\" or a JSON Schema object")
        features.schema = body["format"]
    if features.tool is not None and not chat:
        raise BadRequest("tools are taken by /api/chat only")
    if chat:
        text = render_chat(body.get("messages"))
        features.images = sum(answers.png_count(message.get("images"), "images") for message in body["messages"])
    else:
        features.images = answers.png_count(body.get("images"), "images")
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string")
        text = prompt if body.get("raw") else render_chat([{"role": "user", "content": prompt}])
    tokens = tokenizer.tokenize(text, add_special=True)
    context = int(int_field(options, "num_ctx", default=config.ctx_size) or config.ctx_size)
    if len(tokens) >= context:  # Ollama truncates a prompt longer than num_ctx: keep its tail
        tokens = [BOS_ID, *tokens[-(context // 2):]]
    n_out, stop = output_length(config, len(tokens), int_field(options, "num_predict", default=-1), False,
                                ctx_size=min(context, config.ctx_size))
    # Ollama streams unless told not to.
    return answers.apply(Plan(tokens, n_out, stop, True, body.get("stream", True) is not False), features, config, False,
                         output_cap(config, len(tokens), int_field(options, "num_predict", default=-1),
                                                     min(context, config.ctx_size)))


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
        return (self.template % (now_iso(), piece_json)).encode()

    def _chunk(self, **fields: Any) -> bytes:
        out: dict[str, Any] = {"model": self.gen.model, "created_at": now_iso()}
        if self.chat:
            out["message"] = {"role": "assistant", "content": "", **fields}
        else:
            out.update(response="", **fields)
        return self.event({**out, "done": False})

    def scripted(self, index: int, kind: str, piece: str) -> bytes:
        """Thinking in its own ``thinking`` field; a tool call held back, as Ollama does, until its
        arguments are whole, then sent as one ``message.tool_calls`` (its text, if they never parse)."""
        if kind == "reasoning":
            return self._chunk(thinking=piece)
        if kind == "answer":
            return super().scripted(index, kind, piece)
        plan = self.gen.plan
        if index + 1 < plan.n_out:
            return b""
        text = "".join(part for part_kind, part in plan.script if part_kind == "tool")
        try:
            arguments = json.loads(text)
        except ValueError:
            return self.token(index, json.dumps(text), 0)
        return self._chunk(tool_calls=[{"function": {"name": plan.tool_name, "arguments": arguments}}])

    @staticmethod
    def error(message: str, status: int, kind: str) -> dict[str, Any]:
        return {"error": message}

    def _final(self, text: str) -> dict[str, Any]:
        gen = self.gen
        out: dict[str, Any] = {"model": gen.model, "created_at": now_iso()}
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


def generate(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, functools.partial(plan_ollama, chat=False), OllamaFormat)


def chat(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, functools.partial(plan_ollama, chat=True), OllamaChatFormat)


def version(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    conn.send_json(200, {"version": OLLAMA_VERSION})


def _model(config: MockConfig) -> dict[str, Any]:
    return {"name": config.model, "model": config.model, "modified_at": now_iso(), "size": 0,
            "digest": "0" * 64, "details": {"format": "gguf", "family": "mock", "families": ["mock"],
                                             "parameter_size": "0", "quantization_level": "F16"}}


def tags(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    conn.send_json(200, {"models": [_model(server.config)]})


def ps(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    conn.send_json(200, {"models": [{**_model(server.config), "size_vram": 0, "context_length": server.config.ctx_size,
                                     "expires_at": "2999-01-01T00:00:00Z"}]})


def show(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    conn.send_json(200, {"details": _model(server.config)["details"], "capabilities": ["completion"],
                         "model_info": {"general.architecture": "mock", "mock.context_length": server.config.ctx_size},
                         "parameters": "", "template": "{{ .Prompt }}"})


ROUTES = {
    "/api/generate": ("POST", generate), "/api/chat": ("POST", chat),
    "/api/version": ("GET", version), "/api/tags": ("GET", tags), "/api/ps": ("GET", ps),
    "/api/show": ("POST", show),
}
