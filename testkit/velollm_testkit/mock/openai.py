"""OpenAI's wire format in the mock: ``/v1/completions`` and ``/v1/chat/completions`` (SSE, ``usage``
when ``stream_options.include_usage``, llama-server's ``timings`` on the last chunk as llama-server
adds them) and ``/v1/models``; vLLM's ``min_tokens`` and llama-server's ``ignore_eos`` are obeyed."""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING, Any

from velollm_testkit.mock import answers
from velollm_testkit.mock.config import MOCK_VERSION, MockConfig
from velollm_testkit.mock.llamacpp import llama_timings
from velollm_testkit.mock.tokenizer import Tokenizer, prompt_tokens
from velollm_testkit.mock.wire import (
    BadRequest,
    Format,
    Plan,
    int_field,
    render_chat,
)

if TYPE_CHECKING:
    from velollm_testkit.mock.scheduler import Generation
    from velollm_testkit.mock.server import Connection, MockServer


def plan_openai(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any], chat: bool) -> Plan:
    if int_field(body, "n", default=1) != 1:
        raise BadRequest("the mock answers one choice per request ('n' must be 1)")
    if chat:
        prompt = tokenizer.tokenize(render_chat(body.get("messages")), add_special=True)
    elif "prompt" in body:
        prompt = prompt_tokens(tokenizer, body["prompt"], add_special=True)
    else:
        raise BadRequest('"prompt" must be provided')
    features = answers.Features()
    if chat:
        features.images = answers.chat_images(body.get("messages"))
        switches = body.get("chat_template_kwargs")
        features.reasoning = not (isinstance(switches, dict) and switches.get("enable_thinking") is False)
        features.tool = answers.first_tool(body.get("tools"))
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        features.schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
    return answers.plan_request(config, prompt, body, int_field(body, "max_completion_tokens", "max_tokens"),
                                features, int_field(body, "min_tokens", default=0) or 0)


class OpenAIFormat(Format):
    chat = False

    def __init__(self, gen: Generation) -> None:
        super().__init__(gen)
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-mock{gen.number}"
        self.created = int(time.time())
        model = json.dumps(gen.model)
        tail = (f'"created":{self.created},"id":"{self.id}","model":{model},'
                f'"system_fingerprint":"{MOCK_VERSION}","object":"{self.object}"')
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

    def scripted(self, index: int, kind: str, piece: str) -> bytes:
        if not self.chat or kind == "answer":
            return super().scripted(index, kind, piece)
        if kind == "reasoning":
            delta: dict[str, Any] = {"reasoning_content": piece}
        else:
            call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
            if not self.tool_started:  # the first fragment names the function
                self.tool_started = True
                call.update(id=f"call_mock{self.gen.number}", type="function")
                call["function"]["name"] = self.gen.plan.tool_name
            delta = {"tool_calls": [call]}
        event = self.event(self._chunk([{"finish_reason": None, "index": 0, "delta": delta}]))
        return self.first + event if index == 0 else event

    tool_started = False

    def finish_reason(self) -> str:
        if self.gen.plan.stop == "limit":
            return "length"
        return "tool_calls" if self.gen.plan.tool_name else "stop"

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
            done = answers.emitted(self.gen.plan, self.gen.emitted)
            if done.reasoning:
                choice["message"]["reasoning_content"] = "".join(done.reasoning)
            if done.tool:
                choice["message"]["tool_calls"] = [{"id": f"call_mock{self.gen.number}", "type": "function", "function": {
                    "name": self.gen.plan.tool_name, "arguments": "".join(done.tool)}}]
        else:
            choice.update(text=text, logprobs=None)
        return {**self._chunk([choice]), "object": "chat.completion" if self.chat else "text_completion",
                "usage": self.usage(), "timings": llama_timings(self.gen)}


class OpenAIChatFormat(OpenAIFormat):
    chat = True


def completions(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, functools.partial(plan_openai, chat=False), OpenAIFormat)


def chat_completions(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, functools.partial(plan_openai, chat=True), OpenAIChatFormat)


def models(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    config = server.config
    conn.send_json(200, {"object": "list", "data": [
        {"id": config.model, "object": "model", "created": 0, "owned_by": "velollm-mock",
         "meta": {"n_ctx_train": config.ctx_size, "n_vocab": config.vocab_size}}]})


ROUTES = {
    "/v1/completions": ("POST", completions),
    "/v1/chat/completions": ("POST", chat_completions), "/chat/completions": ("POST", chat_completions),
    "/v1/models": ("GET", models), "/models": ("GET", models),
}
