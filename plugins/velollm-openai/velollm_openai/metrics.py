"""The Prometheus metric names of the OpenAI-compatible servers this backend knows, for VeloLLM's
generic keys: vLLM (docs/design/metrics.md), SGLang (its production_metrics page) and llama-server
(``--metrics``, tools/server/server-task.cpp). The first name a server exposes wins, so one
declaration serves all three.
"""

from __future__ import annotations

from velollm_core.api import MetricNames

VLLM = MetricNames(
    counters={
        "prompt_tokens": ("vllm:prompt_tokens_total",),
        "prompt_tokens_cached": ("vllm:prefix_cache_hits_total",),
        "generated_tokens": ("vllm:generation_tokens_total",),
        "requests": ("vllm:request_success_total",),
        "preemptions": ("vllm:num_preemptions_total",),
        "drafts": ("vllm:spec_decode_num_drafts_total",),
        "draft_tokens": ("vllm:spec_decode_num_draft_tokens_total",),
        "accepted_tokens": ("vllm:spec_decode_num_accepted_tokens_total",),
    },
    gauges={
        "requests_running": ("vllm:num_requests_running",),
        "requests_waiting": ("vllm:num_requests_waiting",),
        # a 0..1 share despite the name
        "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    },
    accepted_per_position=("vllm:spec_decode_num_accepted_tokens_per_pos_total",),
    flavors={"vllm": "vLLM"},
)

SGLANG = MetricNames(
    counters={
        "prompt_tokens": ("sglang:prompt_tokens_total",),
        "prompt_tokens_cached": ("sglang:cached_tokens_total",),
        "generated_tokens": ("sglang:generation_tokens_total",),
        "requests": ("sglang:num_requests_total",),
    },
    gauges={
        "requests_running": ("sglang:num_running_reqs",),
        "requests_waiting": ("sglang:num_queue_reqs",),
        "kv_cache_usage": ("sglang:token_usage",),
        "generation_tokens_per_s": ("sglang:gen_throughput",),
        "spec_accept_length": ("sglang:spec_accept_length",),
    },
    flavors={"sglang": "SGLang"},
)

LLAMA_SERVER = MetricNames(
    counters={
        "prompt_tokens": ("llamacpp:prompt_tokens_total",),
        "prompt_tokens_cached": ("llamacpp:prompt_tokens_cached_total",),
        "prompt_seconds": ("llamacpp:prompt_seconds_total",),
        "generated_tokens": ("llamacpp:tokens_predicted_total",),
        "generation_seconds": ("llamacpp:tokens_predicted_seconds_total",),
    },
    gauges={
        "requests_running": ("llamacpp:requests_processing",),
        "requests_waiting": ("llamacpp:requests_deferred",),
        "kv_cache_usage": ("llamacpp:kv_cache_usage_ratio",),
    },
    flavors={"llamacpp": "llama.cpp"},
)

OPENAI_SERVER_METRICS = LLAMA_SERVER | VLLM | SGLANG
