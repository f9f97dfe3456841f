"""Prompt tok/s on evaluated tokens: Ollama >= 0.30.1 counts the cached template header in
prompt_eval_count; older servers count evaluated tokens only. The replay server does either."""

from __future__ import annotations

import pytest
from velollm_ollama.backend import OllamaBackend
from velollm_ollama.runner import PROMPT_RATE_METHODS, PromptLedger, measure_stream
from velollm_testkit.plugin import BackendCalls

from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest

plugin = BackendCalls(OllamaBackend())
PROMPT = "Why is the sky blue?"


def runs(fake, n: int = 3, **request_fields):
    context = BenchmarkContext(backend="ollama", model="tiny", host=fake.url)
    request = GenerationRequest(benchmark="short", prompt=PROMPT, max_tokens=4, **request_fields)
    with context.resources:
        return [plugin.generate(request, context) for _ in range(n)]


def test_current_ollama_counts_the_cached_header_and_the_rate_leaves_it_out(fake_ollama):
    first, *timings = runs(fake_ollama)
    generates = [r for r in fake_ollama.requests if r["path"] == "/api/generate"]
    assert len(generates) == 3  # no probe: the first run (a warm-up, as the core runs them) has no reference
    assert first.prompt_tokens_per_s is None and first.extra["prompt_rate_method"] == "unknown_cache"
    header = len(fake_ollama.tokenize(fake_ollama.HEADER)) - 1  # without the BOS
    true_rate = 1e9 / fake_ollama.prompt_token_ns
    for timing, sent in zip(timings, generates[1:]):
        total = len(fake_ollama.tokenize(fake_ollama.HEADER + sent["prompt"] + fake_ollama.FOOTER))
        assert timing.prompt_tokens == total  # the count as Ollama reports it, cached part included
        # BOS, the header, "[" and "run" are what each run shares with the one before (and any hex by chance).
        assert header + 1 + 2 <= timing.extra["prompt_tokens_cached"] <= header + 1 + 2 + 9
        assert timing.prompt_tokens_per_s == pytest.approx(true_rate)
        assert timing.extra["prompt_rate_method"] == "context_prefix"
        naive = timing.prompt_tokens / (timing.extra["prompt_eval_duration_ms"] / 1000)
        assert naive > 2 * true_rate  # what prompt_eval_count / prompt_eval_duration would have said


def test_older_ollama_counts_evaluated_tokens(fake_ollama):
    fake_ollama.version = fake_ollama.OLD_VERSION
    timings = runs(fake_ollama, n=2)
    assert len([r for r in fake_ollama.requests if r["path"] == "/api/generate"]) == 2
    for timing in timings:
        assert timing.extra["prompt_rate_method"] == "reported"
        assert timing.prompt_tokens == timing.extra["prompt_tokens_evaluated"]
        assert timing.prompt_tokens_per_s == pytest.approx(1e9 / fake_ollama.prompt_token_ns)
        assert "prompt_tokens_cached" not in timing.extra


def test_raw_prompts_start_with_the_nonce(fake_ollama):
    timings = runs(fake_ollama, n=2, raw=True)
    generates = [r for r in fake_ollama.requests if r["path"] == "/api/generate"]
    assert len(generates) == 2 and all(r["raw"] is True for r in generates)
    assert all(r["prompt"].endswith("\n" + PROMPT) and r["prompt"][:8].isalnum() for r in generates)
    for timing in timings:
        assert timing.extra["prompt_rate_method"] == "raw_nonce_first"
        # At most the BOS and a digit or two of the nonce were cached: the rate is within a few percent.
        assert timing.prompt_tokens_per_s == pytest.approx(1e9 / fake_ollama.prompt_token_ns, rel=0.15)


def test_cache_prompt_lets_the_cache_work_and_marks_hits(fake_ollama):
    first, second = runs(fake_ollama, n=2, cache_prompt=True)
    generates = [r for r in fake_ollama.requests if r["path"] == "/api/generate"]
    assert [r["prompt"] for r in generates] == [PROMPT, PROMPT]  # no nonce, no probe
    assert "prompt_cache_hit" not in first.extra
    assert second.extra["prompt_cache_hit"] is True  # all but the last token came from the cache
    assert second.extra["prompt_tokens_evaluated"] == 1
    assert second.prompt_tokens_per_s is None


def test_no_earlier_context_leaves_the_rate_unknown():
    ledger = PromptLedger("0.33.0")
    final = {"response": "a", "done": True, "prompt_eval_count": 40, "prompt_eval_duration": 10_000_000}
    timing = measure_stream([(1.0, final)], 0.0, clock=lambda: 1.0, ledger=ledger)
    assert timing.prompt_tokens == 40
    assert timing.prompt_tokens_per_s is None
    assert timing.extra["prompt_rate_method"] == "unknown_cache"
    assert set(PROMPT_RATE_METHODS) >= {"reported", "context_prefix", "raw_nonce_first", "unknown_cache"}


def test_a_dev_build_is_taken_as_the_newest():
    assert PromptLedger("0.0.0").counts_cached
    assert PromptLedger(None).counts_cached
    assert not PromptLedger("0.30.0").counts_cached
    assert PromptLedger("0.30.1").counts_cached
