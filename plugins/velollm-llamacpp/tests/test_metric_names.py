"""The metric names the llamacpp backend declares (``capabilities.metrics``), against what a real
llama-server started with --metrics writes: every name it exposes is declared, and the counters move
by a completion's own timings."""

from __future__ import annotations

import httpx
import pytest
from velollm_llamacpp.metrics import LLAMACPP_METRICS
from velollm_testkit.llama_server import llama_server

from velollm_core.telemetry import prometheus


@pytest.mark.llamacpp
def test_real_llama_server_counts_what_it_served(llama_server_bin, gemma):
    """One completion between two scrapes: the counters move by the completion's own timings."""
    with llama_server(llama_server_bin, gemma, ["-c", "2048", "--metrics"]) as url:
        before = prometheus.server_figures(prometheus.parse(httpx.get(f"{url}/metrics").text), LLAMACPP_METRICS)
        assert before.flavor == "llama.cpp"
        # Every name the vendored llama.cpp writes is one we map (none silently dropped).
        exposed = {s.name for s in prometheus.parse(httpx.get(f"{url}/metrics").text).samples}
        known = LLAMACPP_METRICS.all_names()
        assert exposed - known == set(), exposed - known
        body = {"prompt": "The capital of France is", "n_predict": 24, "cache_prompt": False,
                "ignore_eos": True, "temperature": 0}
        timings = httpx.post(f"{url}/completion", json=body, timeout=120).json()["timings"]
        after = prometheus.server_figures(prometheus.parse(httpx.get(f"{url}/metrics").text), LLAMACPP_METRICS)
    deltas = prometheus.counter_deltas(before, after)
    assert deltas["generated_tokens"] == timings["predicted_n"] == 24
    assert deltas["prompt_tokens"] == timings["prompt_n"]
    assert deltas["generation_seconds"] == pytest.approx(timings["predicted_ms"] / 1000, rel=0.01)
    assert after.gauges["requests_running"] == 0 and after.gauges["requests_waiting"] == 0
