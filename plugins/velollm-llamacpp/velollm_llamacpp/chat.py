"""llama-server's OpenAI-style ``/v1/chat/completions``, for what ``/completion`` cannot carry: a
conversation's turns, tools (the server needs ``--jinja``), images (it needs a multimodal projector,
``--mmproj``) and the thinking switch. The stream's ``delta.reasoning_content`` (split off by the
server's ``--reasoning-format``) is thinking, ``delta.content`` the answer, ``delta.tool_calls`` the
calls; the last chunk carries the server's ``timings`` as on ``/completion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from velollm_core.api import (
    CHAT_CHOICE,
    NUMBER,
    BackendError,
    ChatDeltas,
    GenerationRequest,
    GenerationTiming,
    check_timing,
    stream_event,
)
from velollm_llamacpp.client import sampling_fields

SERVER_NAME = "llama-server"
_TIMINGS = {**dict.fromkeys(("prompt_n", "predicted_n", "cache_n"), int),
            **dict.fromkeys(("prompt_ms", "predicted_ms", "prompt_per_second", "predicted_per_second"), NUMBER)}
# The fields ChatStream reads, with their types (velollm_core.contract.wire).
CHAT_EVENT = {"choices": [CHAT_CHOICE], "usage": {"prompt_tokens": int, "completion_tokens": int}, "timings": _TIMINGS}


def needs_chat(request: GenerationRequest) -> bool:
    """Whether ``request`` carries what only the chat endpoint takes (a raw prompt, sized in tokens, never:
    it stays on ``/completion`` without a template, as the openai backend keeps it on completions)."""
    return not request.raw and bool(request.chat or request.history or request.tools or request.images
                                    or request.think is not None)


def chat_body(request: GenerationRequest, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The conversation, ``sampling_fields`` (as ``completion_body``) and usage in the stream; ``fields``
    (the ``request`` option) over these."""
    content: str | list[dict[str, Any]] = request.prompt
    if request.images:
        content = [{"type": "text", "text": request.prompt},
                   *({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                     for image in request.images)]
    body: dict[str, Any] = {
        "messages": [*request.history, {"role": "user", "content": content}],
        "max_tokens": request.max_tokens,
        **sampling_fields(request),
        "stream_options": {"include_usage": True},
    }
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
    """One chat stream's events -> GenerationTiming (the sync client's and the load generator's parser):
    the deltas as every OpenAI-style server sends them (``ChatDeltas``), llama-server's ``timings`` beside."""

    def __init__(self) -> None:
        self.deltas = ChatDeltas()
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}

    @property
    def token_times(self) -> list[float]:
        return self.deltas.token_times

    @property
    def final(self) -> str | None:
        """The stream's finish_reason once it came (``stream_completion`` checks that one did)."""
        return self.deltas.finish_reason

    def feed(self, event: dict[str, Any], arrived: float) -> bool:
        event = stream_event(event, CHAT_EVENT, SERVER_NAME)
        if "error" in event:
            raise BackendError(f"llama-server reported an error: {event['error']}")
        self.deltas.take(event, arrived)
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        return False  # usage and timings may follow the finish_reason: the stream ends at [DONE]

    def finish(self, start: float, end: float) -> GenerationTiming:
        if self.deltas.finish_reason is None:
            raise BackendError("llama-server ended the chat stream without a finish_reason")
        times, timings = self.token_times, self.timings
        completion = self.usage.get("completion_tokens") or timings.get("predicted_n") or len(times)
        client_rate = None
        if len(times) > 1 and times[-1] > times[0]:
            client_rate = (len(times) - 1) / (times[-1] - times[0])
        server_rate = timings.get("predicted_per_second") or None
        timing = GenerationTiming(
            **self.deltas.timing_fields(start, completion),
            prompt_tokens=self.usage.get("prompt_tokens") or timings.get("prompt_n"),
            completion_tokens=completion,
            prompt_tokens_per_s=timings.get("prompt_per_second") or None,
            decode_tokens_per_s=server_rate or client_rate,
            client_decode_tokens_per_s=client_rate,
            server_decode_tokens_per_s=server_rate,
            total_ms=(end - start) * 1000,
            cached_prompt_tokens=timings.get("cache_n"),
            extra={"endpoint": "chat", "itl_ms": [round(gap, 3) for gap in self.deltas.gaps_ms()]},
        )
        return check_timing(timing, server=SERVER_NAME, streamed=len(times))
