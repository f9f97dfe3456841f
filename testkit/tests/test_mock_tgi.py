"""The mock's TGI wire format (Hugging Face Text Generation Inference's native API): the event stream
of ``/generate_stream`` and its final event, ``/generate``, ``/info``, ``/tokenize``, its refusals, and
no ignore_eos (answers end at the model's own end of sequence)."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
from velollm_testkit.mock import MockConfig, mock_llm
from velollm_testkit.mock.tgi import plan_tgi
from velollm_testkit.mock.tokenizer import ANSWER, EOS_ID, Tokenizer
from velollm_testkit.mock.wire import BadRequest

PROMPT = "Tell me about the sea"


def _stream(url: str, parameters: dict, inputs: str = PROMPT) -> tuple[bytes, list[dict]]:
    """The raw body of one /generate_stream answer and its events."""
    response = httpx.post(f"{url}/generate_stream", json={"inputs": inputs, "parameters": parameters}, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    events = [json.loads(block.removeprefix("data:")) for block in response.text.split("\n\n") if block]
    return response.content, events


def test_a_stream_ends_at_the_models_eos_token_and_counts_it(mock_llm_server):
    # The mock's model says 16 words then its end of sequence; max_new_tokens above that is not reached.
    body, events = _stream(mock_llm_server.url, {"max_new_tokens": 40, "details": True})
    assert body.startswith(b'data:{"index":1,')  # TGI's router writes no space after "data:", no [DONE]
    assert b"[DONE]" not in body
    assert [event["index"] for event in events] == list(range(1, 18))
    words = [event["token"]["text"] for event in events[:-1]]
    assert words == [f" {word}" for word in ANSWER[:16]]
    assert all(event["generated_text"] is None and event["details"] is None for event in events[:-1])
    assert not any(event["token"]["special"] for event in events[:-1])
    last = events[-1]
    assert last["token"] == {"id": EOS_ID, "text": "</s>", "logprob": pytest.approx(-0.25), "special": True}
    assert last["generated_text"] == "".join(words)
    tokens = httpx.post(f"{mock_llm_server.url}/tokenize", json={"inputs": PROMPT}).json()
    assert last["details"] == {"finish_reason": "eos_token", "generated_tokens": 17, "input_length": len(tokens),
                               "seed": None}


def test_max_new_tokens_ends_a_stream_with_the_last_token_in_the_final_event(mock_llm_server):
    _, events = _stream(mock_llm_server.url, {"max_new_tokens": 5, "details": True, "do_sample": True,
                                              "seed": 42, "temperature": 0.7})
    assert [event["index"] for event in events] == [1, 2, 3, 4, 5]
    last = events[-1]
    assert last["token"]["text"] == f" {ANSWER[4]}" and not last["token"]["special"]
    assert last["generated_text"] == "".join(f" {word}" for word in ANSWER[:5])
    assert last["details"]["finish_reason"] == "length" and last["details"]["generated_tokens"] == 5
    assert last["details"]["seed"] == 42  # reported where sampling was asked for


def test_details_only_when_asked_and_generate_answers_at_once(mock_llm_server):
    _, events = _stream(mock_llm_server.url, {"max_new_tokens": 3})
    assert events[-1]["details"] is None and events[-1]["generated_text"] == " The quick brown"
    response = httpx.post(f"{mock_llm_server.url}/generate", json={"inputs": PROMPT,
                                                                   "parameters": {"details": True}})
    assert response.status_code == 200
    answer = response.json()
    assert answer["generated_text"] == "".join(f" {word}" for word in ANSWER[:16])
    assert answer["details"]["finish_reason"] == "eos_token" and answer["details"]["generated_tokens"] == 17


def test_tokenize_gives_each_token_with_where_its_text_lies(mock_llm_server):
    text = "Hello  wide world"
    tokens = httpx.post(f"{mock_llm_server.url}/tokenize", json={"inputs": text}).json()
    assert tokens[0] == {"id": 1, "text": "<s>", "start": 0, "stop": 0}  # BOS, as TGI's tokenizer adds it
    assert "".join(token["text"] for token in tokens[1:]) == text
    assert all(text[token["start"]:token["stop"]] == token["text"] for token in tokens[1:])
    # The same tokenizer counts a prompt: a stream's input_length is the length of this list.
    _, events = _stream(mock_llm_server.url, {"max_new_tokens": 1, "details": True}, inputs=text)
    assert events[-1]["details"]["input_length"] == len(tokens)
    # llama-server's /tokenize (a body with "content") still answers on the same path.
    assert httpx.post(f"{mock_llm_server.url}/tokenize", json={"content": text}).json() == {
        "tokens": [token["id"] for token in tokens[1:]]}


def test_info_names_the_model_and_its_limits(mock_llm_server):
    info = httpx.get(f"{mock_llm_server.url}/info").json()
    assert info["model_id"] == "velollm-mock" and info["version"]
    assert info["max_total_tokens"] == MockConfig().ctx_size
    assert info["max_input_tokens"] == MockConfig().ctx_size - 1


@pytest.mark.parametrize("body, message", [
    ({"inputs": ""}, "`inputs` cannot be empty"),
    ({"inputs": "a", "parameters": {"max_new_tokens": 0}}, "`max_new_tokens` must be strictly positive"),
    ({"inputs": "a", "parameters": {"temperature": 0}}, "`temperature` must be strictly positive"),
    ({"inputs": "a", "parameters": {"stop": ["x"] * 5}}, "up to 4 stop sequences"),
    ({"inputs": "a", "parameters": {"max_new_tokens": 40000}}, "must be <= 32768"),
    ({"inputs": "a", "parameters": {"max_new_tokens": "many"}}, "must be an integer"),
    ({"inputs": "a", "parameters": []}, "Failed to deserialize"),
])
def test_refusals_are_tgis_validation_errors(mock_llm_server, body, message):
    response = httpx.post(f"{mock_llm_server.url}/generate_stream", json=body)
    assert response.status_code == 422
    error = response.json()
    assert message in error["error"] and error["error_type"] == "validation"


def test_the_eos_token_comes_on_the_schedule_like_any_other():
    with mock_llm(ttft_ms=10, itl_ms=60, output_tokens=2) as mock:
        arrivals = []
        with httpx.stream("POST", f"{mock.url}/generate_stream", json={"inputs": "hi"}, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.perf_counter())
    assert len(arrivals) == 3  # two words, then the EOS token
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap > 0.03 for gap in gaps), gaps


@pytest.mark.parametrize("parameters, n_out, stop", [
    ({}, 11, "eos"),  # ten words and the EOS token
    ({"max_new_tokens": 4}, 4, "limit"),
    ({"max_new_tokens": 10}, 10, "limit"),  # the limit reached exactly where the model would have ended
    ({"max_new_tokens": 50}, 11, "eos"),
])
def test_output_length_has_no_ignore_eos(parameters, n_out, stop):
    config = MockConfig(output_tokens=10, ctx_size=100)
    plan = plan_tgi(config, Tokenizer(config.vocab_size), {"inputs": "a b", "parameters": {**parameters,
                                                                                          "ignore_eos": True}},
                    stream=True)
    assert (plan.n_out, plan.stop) == (n_out, stop)


def test_a_prompt_longer_than_the_context_is_refused():
    config = MockConfig(ctx_size=8)
    with pytest.raises(BadRequest, match="`inputs` must have less than 7 tokens") as refused:
        plan_tgi(config, Tokenizer(config.vocab_size), {"inputs": "one two three four five six seven"}, stream=True)
    assert refused.value.status == 422
