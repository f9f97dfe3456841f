"""Which llama-server endpoint a request goes to, and what its body carries: ``/completion`` for a
prompt (its schema as ``json_schema``), ``/v1/chat/completions`` for a conversation, tools, images or
the thinking switch; a raw prompt sized in tokens stays on ``/completion`` whatever it asks."""

from __future__ import annotations

from velollm_llamacpp.chat import ChatStream
from velollm_llamacpp.client import CompletionStream, request_route

from velollm_core.api import GenerationRequest

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def _request(**fields) -> GenerationRequest:
    return GenerationRequest(benchmark="b", prompt="hi", max_tokens=8, **fields)


def test_a_prompt_with_a_schema_stays_on_completion_with_json_schema():
    path, body, stream = request_route(_request(json_schema=SCHEMA), {})
    assert path == "/completion" and body["json_schema"] == SCHEMA and isinstance(stream, CompletionStream)


def test_chat_shaped_requests_go_to_the_chat_endpoint_in_its_own_fields():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    path, body, stream = request_route(_request(history=history, tools=[TOOL], images=["iVBORw0KGgo="],
                                                think=False, json_schema=SCHEMA), {"top_k": 5})
    assert path == "/v1/chat/completions" and isinstance(stream, ChatStream)
    assert body["messages"][:2] == history
    parts = body["messages"][2]["content"]
    assert parts[0] == {"type": "text", "text": "hi"}
    assert parts[1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="
    assert body["tools"] == [TOOL] and body["tool_choice"] == "required"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["top_k"] == 5  # the request option's fields over ours


def test_a_raw_prompt_never_goes_through_a_chat_template():
    path, _, _ = request_route(_request(raw=True, think=True), {})
    assert path == "/completion"
    path, _, _ = request_route(_request(chat=True), {})
    assert path == "/v1/chat/completions"


def test_the_chat_stream_splits_thinking_answer_and_tool_calls():
    stream = ChatStream()
    events = [{"choices": [{"delta": {"reasoning_content": "hm"}}]},
              {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
              {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
              {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
              {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3},
               "timings": {"cache_n": 4, "predicted_per_second": 50.0}}]
    for arrived, event in enumerate(events, 1):
        stream.feed(event, float(arrived))
    timing = stream.finish(0.0, 6.0)
    assert timing.ttft_ms == 1000 and timing.time_to_first_answer_ms == 2000 and timing.tool_args_ms == 3000
    assert timing.reasoning_tokens == 1 and timing.answer_tokens == 2 and timing.completion_tokens == 3
    assert timing.tool_calls == [{"name": "f", "arguments": '{"a": 1}'}]
    assert timing.cached_prompt_tokens == 4 and timing.prompt_tokens == 9 and timing.stop_reason == "tool_calls"
