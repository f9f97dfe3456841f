"""The benchmark runner against a loopback server replaying Ollama's streaming wire format."""

from __future__ import annotations

import pytest
from velollm_ollama.backend import OllamaBackend
from velollm_ollama.runner import build_body, mark_prompt_cache_hit, measure_stream, split_options
from velollm_testkit.plugin import BackendCalls

from velollm_core.contract.errors import BackendError, UserInputError
from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest

plugin = BackendCalls(OllamaBackend())  # called as the engine calls it


def request(max_tokens: int = 8, **options) -> GenerationRequest:
    return GenerationRequest(benchmark="short", prompt="Why is the sky blue?", max_tokens=max_tokens,
                             options=options)


def run(fake, model: str = "tiny", max_tokens: int = 8, context: BenchmarkContext | None = None, **options):
    context = context or BenchmarkContext(backend="ollama", model=model, host=fake.url, options=options)
    with context.resources:
        return plugin.generate(request(max_tokens), context)


def test_timing_contract(fake_ollama):
    context = BenchmarkContext(backend="ollama", model="tiny", host=fake_ollama.url)
    with context.resources:  # the first run tells the second what the server caches
        plugin.generate(request(8), context)
        timing = plugin.generate(request(8), context)
    # Runtime's own numbers, from nanosecond durations.
    final_eval_ns = 7 * int(fake_ollama.token_delay * 1e9)
    assert timing.completion_tokens == 8
    assert timing.server_decode_tokens_per_s == pytest.approx(8 / final_eval_ns * 1e9)
    assert timing.decode_tokens_per_s == timing.server_decode_tokens_per_s
    # The template's header was cached (from the first run): counted, but not in the prompt rate.
    assert timing.prompt_tokens == timing.extra["prompt_tokens_evaluated"] + timing.extra["prompt_tokens_cached"]
    assert timing.extra["prompt_tokens_cached"] > 0
    assert timing.prompt_tokens_per_s == pytest.approx(1e9 / fake_ollama.prompt_token_ns)
    assert timing.load_ms == pytest.approx(1234.56789)
    assert timing.stop_reason == "length"
    assert timing.text == "The sky is blue because of Rayleigh scattering"
    # Client-side numbers, from the stream's pacing (50 ms to the first token, then 10 ms per token).
    assert 50 <= timing.ttft_ms < 1000
    assert timing.client_decode_tokens_per_s == pytest.approx(100, rel=0.5)
    assert timing.total_ms >= timing.ttft_ms + 60
    assert timing.extra["token_chunks"] == 8
    assert timing.extra["stream_chunks"] == 9


def test_request_body_options_and_prompt_nonce(fake_ollama):
    run(fake_ollama, max_tokens=5, num_ctx="4096", num_gpu=99, keep_alive="10m", num_batch=256)
    body = fake_ollama.requests[-1]
    assert body["path"] == "/api/generate"
    assert body["stream"] is True
    assert body["keep_alive"] == "10m"  # a top-level field, not a model option
    assert body["options"] == {"temperature": 0.0, "seed": 42, "num_predict": 5, "num_ctx": 4096,
                               "num_gpu": 99, "num_batch": 256}
    # Each run gets a unique first line so Ollama's prompt cache cannot turn it into a cache hit.
    assert body["prompt"].endswith("\nWhy is the sky blue?")
    assert body["prompt"].startswith("[run ")
    run(fake_ollama, max_tokens=5)
    assert fake_ollama.requests[-1]["prompt"] != body["prompt"]


def test_cache_prompt_option_keeps_the_prompt(fake_ollama):
    run(fake_ollama, cache_prompt=True, timeout=30)
    body = fake_ollama.requests[-1]
    assert body["prompt"] == "Why is the sky blue?"
    assert "cache_prompt" not in body["options"] and "timeout" not in body["options"]


def test_omitted_zero_fields_are_unknown_not_zero(fake_ollama):
    timing = run(fake_ollama, model="cached")
    assert timing.prompt_tokens is None
    assert timing.prompt_tokens_per_s is None
    assert timing.load_ms is None
    assert timing.decode_tokens_per_s is not None


def test_missing_eval_duration_falls_back_to_the_client_rate(fake_ollama):
    timing = run(fake_ollama, model="one-token")
    assert timing.completion_tokens == 1
    assert timing.server_decode_tokens_per_s is None
    assert timing.client_decode_tokens_per_s is None  # one token: no interval to measure
    assert timing.decode_tokens_per_s is None


def test_slow_first_token_is_in_ttft(fake_ollama):
    timing = run(fake_ollama, model="slow-first")
    assert timing.ttft_ms >= 300
    assert timing.client_decode_tokens_per_s == pytest.approx(100, rel=0.5)


def test_thinking_counts_as_generated_tokens(fake_ollama):
    timing = run(fake_ollama, model="thinker", max_tokens=4)
    assert timing.text == "The sky is blue"
    assert timing.extra["thinking"] == "Let me think"
    assert timing.extra["token_chunks"] == 7
    assert timing.ttft_ms < 300


def test_connection_dropped_mid_stream(fake_ollama):
    with pytest.raises(BackendError, match="closed the connection in the middle of its answer"):
        run(fake_ollama, model="drop")


def test_stream_without_final_message(fake_ollama):
    with pytest.raises(BackendError, match=r"ended after 8 chunk\(s\) without its final message"):
        run(fake_ollama, model="no-done")


def test_malformed_ndjson(fake_ollama):
    with pytest.raises(BackendError, match="not a JSON object: 'this is not json'"):
        run(fake_ollama, model="garbage")


def test_error_object_mid_stream(fake_ollama):
    with pytest.raises(BackendError, match="error during generation: an error was encountered while running"):
        run(fake_ollama, model="midstream-error")


def test_http_errors_show_ollamas_text(fake_ollama):
    with pytest.raises(BackendError) as info:
        run(fake_ollama, model="boom")
    assert str(info.value) == (f"Ollama at {fake_ollama.url} answered HTTP 500: "
                               "llama runner process has terminated: exit status 2")
    with pytest.raises(BackendError, match='HTTP 400: option "num_ctx" must be of type integer'):
        run(fake_ollama, model="bad-request")


def test_model_missing_is_a_user_error(fake_ollama):
    with pytest.raises(UserInputError) as info:
        run(fake_ollama, model="mistral")
    assert "model 'mistral' is not installed" in str(info.value)
    assert "ollama pull mistral" in str(info.value)


def test_unreachable(dead_url):
    context = BenchmarkContext(backend="ollama", model="tiny", host=dead_url)
    with pytest.raises(BackendError, match=r"not reachable at .* is `ollama serve` running\?"):
        run(None, context=context)


def test_bad_timeout_option(fake_ollama):
    with pytest.raises(UserInputError, match="timeout"):
        run(fake_ollama, timeout="soon")


def test_read_timeout(fake_ollama):
    with pytest.raises(BackendError, match="did not answer within 0.1 s"):
        run(fake_ollama, model="slow-first", timeout=0.1)


def test_client_is_shared_and_closed_by_the_core(fake_ollama):
    context = BenchmarkContext(backend="ollama", model="tiny", host=fake_ollama.url)
    with context.resources:
        plugin.generate(request(2), context)
        client = context.state["ollama_client"]
        plugin.generate(request(2), context)
        assert context.state["ollama_client"] is client
    assert client._http.is_closed


def test_concurrent_runs(fake_ollama):
    from concurrent.futures import ThreadPoolExecutor

    context = BenchmarkContext(backend="ollama", model="tiny", host=fake_ollama.url, max_concurrency=4)
    with context.resources, ThreadPoolExecutor(4) as pool:
        timings = list(pool.map(lambda _: plugin.generate(request(4), context), range(4)))
    assert [t.completion_tokens for t in timings] == [4, 4, 4, 4]


def test_through_the_registry(fake_ollama):
    from velollm_core.contract import backends

    registered = BackendCalls(backends.get("ollama"))
    context = BenchmarkContext(backend="ollama", model="tiny", host=fake_ollama.url)
    with context.resources:
        timing = registered.generate(request(3), context)
        info = registered.describe(context)
    assert timing.completion_tokens == 3
    assert info.name == "ollama"


def test_describe_backend_records_model_facts(fake_ollama, isolated_ollama):
    context = BenchmarkContext(backend="ollama", model="tiny", host=fake_ollama.url, options={"num_ctx": 4096})
    with context.resources:
        info = plugin.describe(context)
    data = info.model_dump()
    assert data["version"] == fake_ollama.version
    assert data["host"] == fake_ollama.url
    assert data["server_flags"] == ["num_ctx=4096"]
    model = data["model"]
    assert model["quantization"] == "Q8_0"
    assert model["parameters"] == "1.2B"
    assert model["architecture"] == "llama"
    assert model["size_bytes"] == 1_321_098_329
    assert model["block_count"] == 16 and model["head_count_kv"] == 8 and model["context_length"] == 131072
    assert model["size_vram_bytes"] == 1_900_000_000 and model["gpu_fraction"] == 1.0
    assert model["loaded_context_length"] == 4096
    assert data["warnings"] == []  # BackendInfo.warnings is declared: empty, not absent


def test_describe_backend_survives_failing_endpoints(fake_ollama, isolated_ollama):
    context = BenchmarkContext(backend="ollama", model="unknown-model", host=fake_ollama.url)
    with context.resources:
        info = plugin.describe(context)
    assert info.version == fake_ollama.version
    assert info.model.name == "unknown-model"
    assert any("/api/show" in w for w in info.warnings)


# --- pure parts -------------------------------------------------------------------------------------


def test_split_options_routes_fields():
    fields, options, settings = split_options({"request.think": "false", "num_ctx": "2048", "timeout": "5"})
    assert fields == {"think": False}
    assert options == {"num_ctx": 2048}
    assert settings == {"timeout": 5}


def test_build_body_later_sources_win():
    body, _ = build_body("m", request(3, num_ctx=1024, cache_prompt=True), {"num_ctx": 2048})
    assert body["options"]["num_ctx"] == 1024
    assert body["prompt"] == "Why is the sky blue?"


def test_measure_stream_final_chunk_may_carry_a_token():
    events = [(1.0, {"response": "a", "done": False}), (1.5, {"response": "b", "done": False}),
              (2.0, {"response": "c", "done": True, "eval_count": 3, "eval_duration": 1_000_000_000})]
    timing = measure_stream(events, started=0.5, clock=lambda: 2.5)
    assert timing.text == "abc"
    assert timing.ttft_ms == pytest.approx(500)
    assert timing.client_decode_tokens_per_s == pytest.approx(2 / 1.0)
    assert timing.server_decode_tokens_per_s == pytest.approx(3.0)
    assert timing.total_ms == pytest.approx(2000)
    assert timing.stop_reason is None


def test_measure_stream_zero_durations_never_divide():
    events = [(1.0, {"response": "a", "done": True, "eval_count": 1, "eval_duration": 0,
                     "prompt_eval_count": 5, "prompt_eval_duration": 0})]
    timing = measure_stream(events, started=0.0, clock=lambda: 1.0)
    assert timing.decode_tokens_per_s is None and timing.prompt_tokens_per_s is None
    assert timing.prompt_tokens == 5


def test_prompt_cache_hit_is_marked():
    seen: dict[str, int] = {}
    first = measure_stream([(1.0, {"response": "a", "done": True, "prompt_eval_count": 26,
                                   "prompt_eval_duration": 10_000_000})], 0.0, clock=lambda: 1.0)
    mark_prompt_cache_hit(first, "p", seen)
    assert first.prompt_tokens_per_s == pytest.approx(2600)
    second = measure_stream([(1.0, {"response": "a", "done": True, "prompt_eval_count": 1,
                                    "prompt_eval_duration": 20_000_000})], 0.0, clock=lambda: 1.0)
    mark_prompt_cache_hit(second, "p", seen)
    assert second.prompt_tokens_per_s is None
    assert second.extra["prompt_cache_hit"] is True
