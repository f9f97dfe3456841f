"""Server metrics by meaning: the generic keys the benchmark's telemetry reads, and ``MetricNames``, the
Prometheus names one server uses for them, which a backend declares in ``Capabilities.metrics``.

The core knows no server's names: llama-server's, vLLM's and SGLang's live in the plugins that talk
to them. A key a server does not expose is left out of its ``MetricNames``; a key the core reads
and no declaration names is unknown in the result, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Counters (cumulative totals; a level's figure is the difference between two scrapes).
COUNTER_KEYS: dict[str, str] = {
    "prompt_tokens": "prompt tokens evaluated",
    "prompt_tokens_cached": "prompt tokens answered from the prefix cache",
    "prompt_seconds": "seconds spent evaluating prompts",
    "generated_tokens": "tokens generated",
    "generation_seconds": "seconds spent generating",
    "decode_calls": "decode (batch) calls",
    "requests": "requests finished",
    "preemptions": "requests preempted",
    "drafts": "speculative drafts made",
    "draft_tokens": "speculative tokens drafted",
    "accepted_tokens": "speculative tokens accepted",
}
# Gauges (read while the load runs; a level keeps their mean and peak).
GAUGE_KEYS: dict[str, str] = {
    "requests_running": "requests being processed",
    "requests_waiting": "requests queued",
    "kv_cache_usage": "share of the KV cache in use, 0..1",
    "generation_tokens_per_s": "the server's own generation rate",
    "prompt_tokens_per_s": "the server's own prompt rate",
    "busy_slots_per_decode": "slots busy per decode call",
    "longest_sequence_tokens": "tokens of the longest sequence",
    "spec_accept_length": "mean accepted speculative length",
}
# Gauges that are 0..1 shares: the largest over label sets is kept; other gauges are summed over them
# (requests running on two engines add up).
RATIO_GAUGE_KEYS = frozenset({"kv_cache_usage"})


@dataclass(frozen=True)
class MetricNames:
    """The Prometheus names of one server (or family of servers) for the generic keys.

    ``counters`` and ``gauges`` map a key of ``COUNTER_KEYS`` / ``GAUGE_KEYS`` to the names a server may
    use for it, first present wins (one declaration may cover vLLM and SGLang together).
    ``accepted_per_position`` names counters with one series per draft position (label ``position``).
    ``flavors`` maps a name's prefix (before ``:``) to the software it shows: ``{"vllm": "vLLM"}``.
    """

    counters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    gauges: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    accepted_per_position: tuple[str, ...] = ()
    flavors: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted((set(self.counters) - set(COUNTER_KEYS)) | (set(self.gauges) - set(GAUGE_KEYS)))
        if unknown:
            raise ValueError(f"MetricNames: unknown keys {', '.join(unknown)}; the keys are those of "
                             "velollm_core.contract.metricnames.COUNTER_KEYS and GAUGE_KEYS")

    def __or__(self, other: MetricNames) -> MetricNames:
        """Both declarations: for a key both name, this one's names first."""
        def joined(a: Mapping[str, tuple[str, ...]], b: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
            return {key: (*a.get(key, ()), *(n for n in b.get(key, ()) if n not in a.get(key, ()))) for key in {**a, **b}}

        return MetricNames(counters=joined(self.counters, other.counters), gauges=joined(self.gauges, other.gauges),
                           accepted_per_position=(*self.accepted_per_position, *other.accepted_per_position),
                           flavors={**self.flavors, **{k: v for k, v in other.flavors.items() if k not in self.flavors}})

    def all_names(self) -> set[str]:
        """Every metric name declared (a test compares them with what a real server exposes)."""
        return {name for names in (*self.counters.values(), *self.gauges.values()) for name in names} | set(
            self.accepted_per_position)
