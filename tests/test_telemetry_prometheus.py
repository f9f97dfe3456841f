"""The Prometheus text format reader and the server vocabulary: the format's own example, vLLM and
SGLang expositions as their docs print them, and a real llama-server started with --metrics."""

from __future__ import annotations

import math

import httpx
import pytest

from velollm_core.telemetry import prometheus
from velollm_core.testing import llama_server

# The example of https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4).
FORMAT_EXAMPLE = r'''
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
'''


def test_the_formats_own_example():
    parsed = prometheus.parse(FORMAT_EXAMPLE)
    assert parsed.types == {"http_requests_total": "counter", "http_request_duration_seconds": "histogram"}
    requests = parsed.values("http_requests_total")
    assert [(s.label("code"), s.value) for s in requests] == [("200", 1027.0), ("400", 3.0)]
    (msdos,) = parsed.values("msdos_file_access_time_seconds")
    assert msdos.label("path") == "C:\\DIR\\FILE.TXT"
    assert msdos.label("error") == 'Cannot find file:\n"FILE.TXT"'
    assert msdos.value == 1.458255915e9
    assert parsed.values("metric_without_timestamp_and_labels")[0].value == 12.47
    weird = parsed.values("something_weird")[0]
    assert weird.value == math.inf and weird.label("problem") == "division by zero"
    assert parsed.values("http_request_duration_seconds_bucket")[1].label("le") == "+Inf"
    assert len(parsed.samples) == 9


@pytest.mark.parametrize("line", ["name{a=\"1\" 2", "name{a=1} 2", "name", "name 1 2 3", "name abc"])
def test_a_malformed_line_is_a_format_error(line):
    with pytest.raises(prometheus.MetricsFormatError):
        prometheus.parse(line)


# vLLM 0.10 (v1 engine) as it writes it: labels on every sample, KV usage a 0..1 fraction.
VLLM = '''
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 5.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.42
vllm:prompt_tokens_total{engine="0",model_name="m"} 1200.0
vllm:generation_tokens_total{engine="0",model_name="m"} 800.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 6.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 4.0
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 100.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 300.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 210.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 90.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="1"} 70.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="2"} 50.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
'''

SGLANG = '''
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
sglang:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.557572e+06
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2
sglang:gen_throughput{model_name="meta-llama/Llama-3.1-8B-Instruct"} 355.2
'''


def test_vllm_names_map_onto_ours():
    figures = prometheus.server_figures(prometheus.parse(VLLM))
    assert figures.flavor == "vLLM"
    assert figures.counters["prompt_tokens"] == 1200 and figures.counters["generated_tokens"] == 800
    assert figures.counters["requests"] == 10  # summed over finished_reason
    assert figures.gauges == {"requests_running": 3, "requests_waiting": 5, "kv_cache_usage": 0.42}
    assert figures.accepted_per_position == {0: 90, 1: 70, 2: 50}
    assert (figures.counters["drafts"], figures.counters["draft_tokens"], figures.counters["accepted_tokens"]) == (
        100, 300, 210)


def test_sglang_names_map_onto_ours():
    figures = prometheus.server_figures(prometheus.parse(SGLANG))
    assert figures.flavor == "SGLang"
    assert figures.counters == {"prompt_tokens": 8128902.0, "generated_tokens": 7557572.0}
    assert figures.gauges == {"kv_cache_usage": 0.28, "requests_waiting": 2, "generation_tokens_per_s": 355.2}


def test_deltas_leave_out_a_counter_that_went_back():
    before = prometheus.server_figures(prometheus.parse(VLLM))
    after = prometheus.server_figures(prometheus.parse(
        VLLM.replace("} 800.0", "} 950.0").replace("prompt_tokens_total{engine=\"0\",model_name=\"m\"} 1200.0",
                                                  "prompt_tokens_total{engine=\"0\",model_name=\"m\"} 10.0")))
    deltas = prometheus.counter_deltas(before, after)
    assert deltas["generated_tokens"] == 150
    assert "prompt_tokens" not in deltas  # the server restarted: no negative figure


@pytest.mark.llamacpp
def test_real_llama_server_counts_what_it_served(llama_server_bin, gemma):
    """One completion between two scrapes: the counters move by the completion's own timings."""
    with llama_server(llama_server_bin, gemma, ["-c", "2048", "--metrics"]) as url:
        before = prometheus.server_figures(prometheus.parse(httpx.get(f"{url}/metrics").text))
        assert before.flavor == "llama.cpp"
        # Every name the vendored llama.cpp writes is one we map (none silently dropped).
        exposed = {s.name for s in prometheus.parse(httpx.get(f"{url}/metrics").text).samples}
        known = {n for names in (*prometheus.COUNTERS.values(), *prometheus.GAUGES.values()) for n in names}
        assert exposed - known == set(), exposed - known
        body = {"prompt": "The capital of France is", "n_predict": 24, "cache_prompt": False,
                "ignore_eos": True, "temperature": 0}
        timings = httpx.post(f"{url}/completion", json=body, timeout=120).json()["timings"]
        after = prometheus.server_figures(prometheus.parse(httpx.get(f"{url}/metrics").text))
    deltas = prometheus.counter_deltas(before, after)
    assert deltas["generated_tokens"] == timings["predicted_n"] == 24
    assert deltas["prompt_tokens"] == timings["prompt_n"]
    assert deltas["generation_seconds"] == pytest.approx(timings["predicted_ms"] / 1000, rel=0.01)
    assert after.gauges["requests_running"] == 0 and after.gauges["requests_waiting"] == 0
