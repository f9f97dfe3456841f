"""The metric names the openai backend declares (``capabilities.metrics``), read from vLLM and SGLang
expositions as their docs print them, onto VeloLLM's generic keys."""

from __future__ import annotations

from velollm_openai.metrics import OPENAI_SERVER_METRICS

from velollm_core.telemetry import prometheus

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
    figures = prometheus.server_figures(prometheus.parse(VLLM), OPENAI_SERVER_METRICS)
    assert figures.flavor == "vLLM"
    assert figures.counters["prompt_tokens"] == 1200 and figures.counters["generated_tokens"] == 800
    assert figures.counters["requests"] == 10  # summed over finished_reason
    assert figures.gauges == {"requests_running": 3, "requests_waiting": 5, "kv_cache_usage": 0.42}
    assert figures.accepted_per_position == {0: 90, 1: 70, 2: 50}
    assert (figures.counters["drafts"], figures.counters["draft_tokens"], figures.counters["accepted_tokens"]) == (
        100, 300, 210)


def test_sglang_names_map_onto_ours():
    figures = prometheus.server_figures(prometheus.parse(SGLANG), OPENAI_SERVER_METRICS)
    assert figures.flavor == "SGLang"
    assert figures.counters == {"prompt_tokens": 8128902.0, "generated_tokens": 7557572.0}
    assert figures.gauges == {"kv_cache_usage": 0.28, "requests_waiting": 2, "generation_tokens_per_s": 355.2}


def test_deltas_leave_out_a_counter_that_went_back():
    before = prometheus.server_figures(prometheus.parse(VLLM), OPENAI_SERVER_METRICS)
    after = prometheus.server_figures(prometheus.parse(
        VLLM.replace("} 800.0", "} 950.0").replace("prompt_tokens_total{engine=\"0\",model_name=\"m\"} 1200.0",
                                                  "prompt_tokens_total{engine=\"0\",model_name=\"m\"} 10.0")),
        OPENAI_SERVER_METRICS)
    deltas = prometheus.counter_deltas(before, after)
    assert deltas["generated_tokens"] == 150
    assert "prompt_tokens" not in deltas  # the server restarted: no negative figure
