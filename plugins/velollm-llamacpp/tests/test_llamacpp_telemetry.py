"""A llama-server VeloLLM starts has --metrics on, and its endpoint (``metrics_url``) counts what the
backend's own generations produced, token for token."""

from __future__ import annotations

import pytest
from velollm_llamacpp.backend import LlamaCppBackend, server_args

from velollm_core.api import BenchmarkContext, GenerationRequest
from velollm_core.telemetry.session import TelemetrySession

pytestmark = pytest.mark.llamacpp


def test_server_args_turn_metrics_on_once(llama_server_bin):
    assert server_args(llama_server_bin, {}, 1)[-1] == "--metrics"
    args = server_args(llama_server_bin, {"server_args": "--metrics --no-warmup"}, 2)
    assert args.count("--metrics") == 1


def test_started_server_counts_the_backends_generations(gemma):
    backend = LlamaCppBackend()
    context = BenchmarkContext(backend="llamacpp", model=str(gemma), options={"ctx_size": 2048, "threads": 2})
    with context.resources:
        url = backend.metrics_url(context)  # starts the server: the endpoint lives beside its API
        assert url.endswith("/metrics") and url.startswith("http://127.0.0.1:")
        session = TelemetrySession(url, sources=[], warn=None)
        session.start()
        session.begin_level("seq")
        request = GenerationRequest(benchmark="t", prompt="Name three colours.", max_tokens=20,
                                    options={"request.ignore_eos": True})
        timings = [backend.generate(request, context) for _ in range(2)]
        level = session.end_level("seq", runs=timings)
        result = session.finish()
    assert result["server"]["available"] and result["server"]["flavor"] == "llama.cpp"
    assert level["server"]["generated_tokens"] == sum(t.completion_tokens for t in timings) == 40
    assert level["client_vs_server"]["completion_tokens"] == {"client": 40, "server": 40.0, "diff_pct": 0.0,
                                                              "disagree": False}
    assert level["client_vs_server"]["prompt_tokens"]["disagree"] is False
    # the stream's decode rate against llama-server's own counters, token-weighted over the two runs
    assert level["client_vs_server"]["decode_tokens_per_s"]["disagree"] is False, level["client_vs_server"]
