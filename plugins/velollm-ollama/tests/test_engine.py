"""The core's engine v2 against the replay server: load levels through the ollama backend's StreamCall
(NDJSON on the asyncio load generator), raw synthetic prompts, the fixed length Ollama cannot force."""

from __future__ import annotations

import json

import pytest
from velollm_ollama.backend import OllamaBackend

from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest


def test_stream_shares_the_body_and_the_parser(fake_ollama):
    context = BenchmarkContext(backend="ollama", model="tiny", host=fake_ollama.url)
    request = GenerationRequest(benchmark="w", prompt="hello " * 8, max_tokens=4, raw=True, ignore_eos=True)
    with context.resources:
        call = OllamaBackend().stream(request, context)
        error = call.status_error(404, b'{"error": "model \'tiny\' not found"}')
    assert "not installed" in str(error) and "Installed: llama3.2:1b, tiny:latest" in str(error)
    assert call.framing == "ndjson" and call.url == f"{fake_ollama.url}/api/generate"
    assert call.body["raw"] is True and call.body["stream"] is True
    assert "ignore_eos" not in call.body and "ignore_eos" not in call.body["options"]  # Ollama has none
    assert call.body["options"]["num_predict"] == 4
    events = [{"response": "a", "done": False}, {"response": "b", "done": False},
              {"response": "", "done": True, "done_reason": "stop", "eval_count": 2, "eval_duration": 10_000_000,
               "prompt_eval_count": 10, "prompt_eval_duration": 9_000_000}]
    assert [call.accumulator.feed(e, 1.0 + i / 10) for i, e in enumerate(events)] == [False, False, True]
    timing = call.accumulator.finish(0.9, 1.3)
    assert call.accumulator.token_times == [1.0, 1.1]
    assert timing.text == "ab" and timing.completion_tokens == 2
    assert timing.extra["prompt_rate_method"] == "raw_nonce_first"
    assert timing.prompt_tokens_per_s == pytest.approx(9 / 0.009)


def test_concurrent_level_on_the_load_generator(velollm, fake_ollama):
    code, out, err = velollm("benchmark", "--backend", "ollama", "--model", "tiny", "--host", fake_ollama.url,
                             "--workload", "pp32/tg8", "--profile", "concurrent", "--concurrency", "2",
                             "--requests", "4", "--json")
    assert code == 0, err
    result = json.loads(out)
    [level] = result["levels"]
    assert level["completed"] == 4 and level["failed"] == 0
    generates = [r for r in fake_ollama.requests if r["path"] == "/api/generate"]
    assert generates and all(r.get("raw") is True and r["stream"] is True for r in generates)
    assert all("ignore_eos" not in r for r in generates)
    assert level["output_throughput"] > 0


def test_chat_suite_on_the_load_generator_counts_prefill_honestly(velollm, fake_ollama):
    code, out, err = velollm("benchmark", "--backend", "ollama", "--model", "tiny", "--host", fake_ollama.url,
                             "--suite", "short_completion", "--profile", "concurrent", "--concurrency", "2", "--requests", "4",
                             "--max-tokens", "4", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    generates = [r for r in fake_ollama.requests if r["path"] == "/api/generate"]
    # The engine's own one-token start-up run gives every later run a context to compare with.
    assert [r["options"]["num_predict"] for r in generates[:2]] == [1, 4]
    measured = [r for r in runs if r.get("prompt_tokens_per_s") is not None]
    assert measured and all(r["extra"]["prompt_rate_method"] == "context_prefix" for r in measured)
    # Two streams share one slot: the prefix a stream shares with any recent context is an upper bound of
    # what was cached, so the rate may come out a little low (a nonce digit matched by chance), never high.
    true_rate = 1e9 / fake_ollama.prompt_token_ns
    assert all(0.8 * true_rate <= r["prompt_tokens_per_s"] <= true_rate * 1.0001 for r in measured)
