"""llama-server's Prometheus metric names (``--metrics``) for VeloLLM's generic keys.

From llama.cpp's tools/server/server-task.cpp (``to_metrics``); the backend declares them in
``capabilities.metrics``, and a test compares them with what the vendored build exposes.
"""

from __future__ import annotations

from velollm_core.api import MetricNames

LLAMACPP_METRICS = MetricNames(
    counters={
        "prompt_tokens": ("llamacpp:prompt_tokens_total",),
        "prompt_tokens_cached": ("llamacpp:prompt_tokens_cached_total",),
        "prompt_seconds": ("llamacpp:prompt_seconds_total",),
        "generated_tokens": ("llamacpp:tokens_predicted_total",),
        "generation_seconds": ("llamacpp:tokens_predicted_seconds_total",),
        "decode_calls": ("llamacpp:n_decode_total",),
        "drafts": ("llamacpp:spec_decode_num_drafts_total",),
        "draft_tokens": ("llamacpp:spec_decode_num_draft_tokens_total",),
        "accepted_tokens": ("llamacpp:spec_decode_num_accepted_tokens_total",),
    },
    gauges={
        "requests_running": ("llamacpp:requests_processing",),
        "requests_waiting": ("llamacpp:requests_deferred",),
        "kv_cache_usage": ("llamacpp:kv_cache_usage_ratio",),
        "generation_tokens_per_s": ("llamacpp:predicted_tokens_seconds",),
        "prompt_tokens_per_s": ("llamacpp:prompt_tokens_seconds",),
        "busy_slots_per_decode": ("llamacpp:n_busy_slots_per_decode",),
        "longest_sequence_tokens": ("llamacpp:n_tokens_max", "llamacpp:n_past_max"),
    },
    accepted_per_position=("llamacpp:spec_decode_num_accepted_tokens_per_pos_total",),
    flavors={"llamacpp": "llama.cpp"},
)
