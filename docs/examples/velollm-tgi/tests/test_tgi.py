"""velollm-tgi's own tests, as a third party writes them with VeloLLM's test kit: the event reader with
no server at all, and the backend object in process against the kit's mock server speaking TGI.

Run them where velollm-tgi and velollm-testkit are installed: ``python -m pytest tests``."""

from __future__ import annotations

import pytest
from velollm_testkit.hostile import HOSTILITIES, Stream
from velollm_testkit.mock import mock_llm
from velollm_testkit.plugin import BackendCalls
from velollm_tgi.backend import TGIBackend
from velollm_tgi.events import TGIStream

from velollm_core.api import BackendError, BenchmarkContext, GenerationRequest, UserInputError, VeloError


def token_event(index: int, **final) -> dict:
    return {"index": index, "token": {"id": index, "text": f" t{index}", "logprob": -0.1, "special": False},
            **final}


def test_events_make_a_timing():
    stream = TGIStream("TGI at http://x")
    assert not stream.feed(token_event(1), 1.0)
    final = {"finish_reason": "length", "generated_tokens": 2, "input_length": 7}
    assert stream.feed(token_event(2, generated_text=" t1 t2", details=final), 1.5)
    timing = stream.finish(0.5, 1.6)
    assert (timing.completion_tokens, timing.prompt_tokens, timing.text) == (2, 7, " t1 t2")
    assert timing.ttft_ms == pytest.approx(500) and timing.decode_tokens_per_s == pytest.approx(2.0)
    assert timing.extra["itl_ms"] == [500.0] and timing.stop_reason == "length"
    assert timing.prompt_tokens_per_s is None  # TGI reports no prefill time


def test_bad_events_are_readable_errors():
    with pytest.raises(BackendError, match=r"reported a generation error after 0 token\(s\): CUDA OOM"):
        TGIStream("TGI").feed({"error": "CUDA OOM", "error_type": "generation"}, 1.0)
    with pytest.raises(BackendError, match="not a TGI stream event .no token object; fields: choices"):
        TGIStream("TGI").feed({"choices": []}, 1.0)
    with pytest.raises(BackendError, match="not a JSON object"):
        TGIStream("TGI").feed([1, 2], 1.0)
    cut = TGIStream("TGI")
    cut.feed(token_event(1), 1.0)
    with pytest.raises(BackendError, match=r"cut mid-way after 1 token\(s\): no final event"):
        cut.finish(0.5, 1.1)


def test_the_backend_in_process_against_the_mock():
    """Generate, stream, tokenize and describe, called as the engine calls them (BackendCalls)."""
    calls = BackendCalls(TGIBackend())
    with mock_llm(ttft_ms=5, itl_ms=2, output_tokens=6) as mock:
        context = BenchmarkContext(backend="tgi", model="velollm-mock", host=mock.url)
        with context.resources:
            asked = GenerationRequest(benchmark="t", prompt="hello there", max_tokens=12)
            timing = calls.generate(asked, context)
            call = calls.stream(GenerationRequest(benchmark="t", prompt="hello", max_tokens=4), context)
            tokens = calls.tokenize("hello world", context)
            info = calls.describe(context)
    assert timing.completion_tokens == 7 and timing.stop_reason == "eos_token"  # six words and the EOS
    assert call.url == f"{mock.url}/generate_stream" and call.body["parameters"]["max_new_tokens"] == 4
    assert len(tokens) > 1 and info.name == "tgi" and info.version


TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(("fields", "flags"), [
    ({"tools": [TOOL]}, "--tools"),
    ({"think": False}, "--think"),
    ({"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "chat": True},
     "--turns"),
    ({"json_schema": {"type": "object"}, "images": ["iVBORw0KGgo="]}, "--images, --json-schema"),
])
def test_check_refuses_what_the_native_api_cannot_send(fields, flags):
    """A workload of tools, thinking, conversations, schemas or images is refused before anything starts."""
    context = BenchmarkContext(backend="tgi", model="org/tiny", host="http://127.0.0.1:9")
    plain = GenerationRequest(benchmark="t", prompt="hi", max_tokens=4)
    TGIBackend().check(context, [plain])  # a plain prompt passes
    with pytest.raises(UserInputError, match=f"sends a plain prompt .*: drop {flags}$"):
        TGIBackend().check(context, [plain, plain.model_copy(update=fields)])


INFO = {"model_id": "org/tiny", "version": "3.3.0", "max_total_tokens": 4096}
ANSWER = Stream([
    {"index": 1, "token": {"id": 5, "text": " a", "logprob": -0.1, "special": False},
     "generated_text": None, "details": None},
    {"index": 2, "token": {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}, "generated_text": " a",
     "details": {"finish_reason": "eos_token", "generated_tokens": 2, "seed": None, "input_length": 3}},
])


@pytest.mark.parametrize("hostility", HOSTILITIES)
def test_a_hostile_server_costs_a_readable_error_at_most(hostile_server, hostility):
    """Every attack of the kit's hostile server, through start() and generate(): either a timing whose
    numbers can be true or one VeloLLM error in one line, never a traceback or a hang."""
    server = hostile_server(hostility, {"/info": INFO, "/generate_stream": ANSWER})
    calls = BackendCalls(TGIBackend())
    context = BenchmarkContext(backend="tgi", model="org/tiny", host=server.url,
                               options={"first_token_timeout_s": 5, "timeout_s": 10})
    with context.resources:
        try:
            timing = calls.generate(GenerationRequest(benchmark="t", prompt="hi", max_tokens=8), context)
        except VeloError as exc:
            assert str(exc) and "\n" not in str(exc), str(exc)
            return
    assert 0 < timing.completion_tokens <= 8 and timing.total_ms >= 0
