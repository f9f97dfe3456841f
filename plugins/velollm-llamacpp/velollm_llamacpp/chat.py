"""llama-server's OpenAI-style ``/v1/chat/completions``, for what ``/completion`` cannot carry: a
conversation's turns, tools (the server needs ``--jinja``), images (it needs a multimodal projector,
``--mmproj``) and the thinking switch. The stream's ``delta.reasoning_content`` (split off by the
server's ``--reasoning-format``) is thinking, ``delta.content`` the answer, ``delta.tool_calls`` the
calls; the last chunk carries the server's ``timings`` as on ``/completion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from velollm_core.api import (
    NUMBER,
    BackendError,
    GenerationRequest,
    GenerationTiming,
    check_timing,
    stream_event,
)

SERVER_NAME = "llama-server"
_TIMINGS = {**dict.fromkeys(("prompt_n", "predicted_n", "cache_n"), int),
            **dict.fromkeys(("prompt_ms", "predicted_ms", "prompt_per_second", "predicted_per_second"), NUMBER)}
_DELTA = {"content": str, "reasoning_content": str,
          "tool_calls": [{"index": int, "function": {"name": str, "arguments": str}}]}
# The fields ChatStream reads, with their types (velollm_core.contract.wire).
CHAT_EVENT = {"choices": [{"delta": _DELTA, "finish_reason": str}],
              "usage": {"prompt_tokens": int, "completion_tokens": int}, "timings": _TIMINGS}


def needs_chat(request: GenerationRequest) -> bool:
    """Whether ``request`` carries what only the chat endpoint takes (a raw prompt, sized in tokens, never:
    it stays on ``/completion`` without a template, as the openai backend keeps it on completions)."""
    return not request.raw and bool(request.chat or request.history or request.tools or request.images
                                    or request.think is not None)


def chat_body(request: GenerationRequest, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Greedy, seeded, streamed with usage, no prompt cache unless asked (as ``completion_body``)."""
    content: str | list[dict[str, Any]] = request.prompt
    if request.images:
        content = [{"type": "text", "text": request.prompt},
                   *({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                     for image in request.images)]
    body: dict[str, Any] = {
        "messages": [*request.history, {"role": "user", "content": content}],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.seed,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": request.cache_prompt,
    }
    if request.ignore_eos:
        body["ignore_eos"] = True
    if request.temperature == 0:
        body["top_k"] = 1
    if request.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": request.json_schema}}
    if request.tools:
        body["tools"] = request.tools
        body["tool_choice"] = "required"  # the benchmark times a tool call: an answer in prose is none
    if request.think is not None:
        body["chat_template_kwargs"] = {"enable_thinking": request.think}
    body.update(fields)
    return body


class ChatStream:
    """One chat stream's events -> GenerationTiming (the sync client's and the load generator's parser)."""

    def __init__(self) -> None:
        self.token_times: list[float] = []
        self.text: list[str] = []
        self.reasoning_chunks = 0
        self.answer_at: float | None = None
        self.calls: dict[int, dict[str, str]] = {}
        self.calls_at: float | None = None
        self.final: dict[str, Any] | None = None  # the chunk with finish_reason
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}

    def feed(self, event: dict[str, Any], arrived: float) -> bool:
        event = stream_event(event, CHAT_EVENT, SERVER_NAME)
        if "error" in event:
            raise BackendError(f"llama-server reported an error: {event['error']}")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            calls = delta.get("tool_calls") or []
            for call in calls:
                entry = self.calls.setdefault(call.get("index", len(self.calls)), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                entry["name"] += function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
                self.calls_at = arrived
            answer = delta.get("content") or ""
            if answer or calls or delta.get("reasoning_content"):
                self.token_times.append(arrived)
                if answer or calls:
                    self.answer_at = self.answer_at or arrived
                else:
                    self.reasoning_chunks += 1
            if answer:
                self.text.append(answer)
            if choice.get("finish_reason"):
                self.final = event
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        return False  # usage and timings may follow the finish_reason: the stream ends at [DONE]

    def finish(self, start: float, end: float) -> GenerationTiming:
        if self.final is None:
            raise BackendError("llama-server ended the chat stream without a finish_reason")
        times, timings = self.token_times, self.timings
        completion = self.usage.get("completion_tokens") or timings.get("predicted_n") or len(times)
        client_rate = None
        if len(times) > 1 and times[-1] > times[0]:
            client_rate = (len(times) - 1) / (times[-1] - times[0])
        server_rate = timings.get("predicted_per_second") or None
        timing = GenerationTiming(
            ttft_ms=(times[0] - start) * 1000 if times else None,
            prompt_tokens=self.usage.get("prompt_tokens") or timings.get("prompt_n"),
            completion_tokens=completion,
            prompt_tokens_per_s=timings.get("prompt_per_second") or None,
            decode_tokens_per_s=server_rate or client_rate,
            client_decode_tokens_per_s=client_rate,
            server_decode_tokens_per_s=server_rate,
            total_ms=(end - start) * 1000,
            stop_reason=next((c.get("finish_reason") for c in self.final.get("choices") or []), None),
            text="".join(self.text),
            cached_prompt_tokens=timings.get("cache_n"),
            tool_calls=[self.calls[index] for index in sorted(self.calls)],
            tool_args_ms=(self.calls_at - start) * 1000 if self.calls_at is not None else None,
            extra={"endpoint": "chat", "itl_ms": [round((b - a) * 1000, 3) for a, b in pairwise(times)]},
        )
        if self.reasoning_chunks:
            timing.reasoning_tokens = min(self.reasoning_chunks, completion)
            timing.answer_tokens = completion - timing.reasoning_tokens
        if self.answer_at is not None:
            timing.time_to_first_answer_ms = (self.answer_at - start) * 1000
        return check_timing(timing, server=SERVER_NAME, streamed=len(times))
