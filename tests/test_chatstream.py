"""The OpenAI-style stream deltas every chat-speaking backend shares (``ChatDeltas``): thinking in either
field servers use, tool calls assembled from fragments, completions' ``text``, and the timing fields."""

from __future__ import annotations

import pytest

from velollm_core.api import CHAT_CHOICE, ChatDeltas, GenerationTiming, stream_event


def _fed(events: list[dict]) -> ChatDeltas:
    deltas = ChatDeltas()
    for arrived, event in enumerate(events, 1):
        deltas.take(stream_event(event, {"choices": [CHAT_CHOICE]}, "the server"), float(arrived))
    return deltas


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_thinking_in_either_field_then_the_answer(field):
    deltas = _fed([{"choices": [{"delta": {field: "hm"}}]}, {"choices": [{"delta": {field: "m"}}]},
                   {"choices": [{"delta": {"content": "4"}}]}, {"choices": [{"delta": {}, "finish_reason": "stop"}]}])
    fields = deltas.timing_fields(0.0, completion_tokens=3)
    assert fields["ttft_ms"] == 1000 and fields["time_to_first_answer_ms"] == 3000
    assert fields["reasoning_tokens"] == 2 and fields["answer_tokens"] == 1
    assert fields["text"] == "4" and fields["stop_reason"] == "stop" and deltas.gaps_ms() == [1000, 1000]
    # A server that counts its thinking tokens is believed over the chunks.
    assert deltas.timing_fields(0.0, completion_tokens=9, reasoning_tokens=6)["answer_tokens"] == 3


def test_tool_call_fragments_join_by_index_and_time_their_last_argument():
    deltas = _fed([
        {"choices": [{"delta": {"tool_calls": [{"index": 1, "function": {"name": "g", "arguments": "{}"}},
                                               {"index": 0, "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}])
    fields = deltas.timing_fields(0.0, completion_tokens=2)
    assert fields["tool_calls"] == [{"name": "f", "arguments": '{"a": 1}'}, {"name": "g", "arguments": "{}"}]
    assert fields["tool_args_ms"] == 2000 and fields["time_to_first_answer_ms"] == 1000
    assert "reasoning_tokens" not in fields
    assert GenerationTiming(**fields).tool_calls == fields["tool_calls"]


def test_completions_text_and_fields_of_the_wrong_type():
    deltas = _fed([{"choices": [{"text": "a"}]}, {"choices": [{"text": 7, "delta": {"content": ["x"]}}]},
                   {"choices": [{"text": "b", "finish_reason": "length"}]}])
    assert deltas.token_times == [1.0, 3.0] and "".join(deltas.text) == "ab" and deltas.finish_reason == "length"
