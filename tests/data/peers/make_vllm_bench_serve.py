"""Writes vllm-bench-serve-reconstructed.json: a `vllm bench serve --save-result --save-detailed` result
in the field layout of vLLM's vllm/benchmarks/serve.py (vllm-project/vllm at commit 009e6d4a1cd6,
main_async's result_json merged with benchmark()'s result), RECONSTRUCTED from that source, not
produced by vLLM: vLLM cannot be installed on this CPU-only sandbox. The per-request timings are
invented at the scale of Gemma 3 270M on a 2-core CPU (pp512/tg128); the aggregates are computed from
them the way vLLM computes its own (numpy mean/median/std/percentiles, ms).

    python tests/data/peers/make_vllm_bench_serve.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

TTFTS = [0.7412, 0.7388, 0.7521, 0.7460]  # seconds
# Every request streamed 128 tokens, one per chunk: 127 gaps of about 21 ms.
ITLS = [[0.0209 + 0.0001 * (i % 5) + 0.0002 * request for i in range(127)] for request in range(4)]
OUTPUT_LEN, INPUT_LEN = 128, 512


def percentile(values: list[float], p: float) -> float:
    """numpy's default (linear) percentile."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(name: str, values_ms: list[float]) -> dict[str, float]:
    return {f"mean_{name}_ms": statistics.fmean(values_ms), f"median_{name}_ms": statistics.median(values_ms),
            f"std_{name}_ms": statistics.pstdev(values_ms), f"p99_{name}_ms": percentile(values_ms, 99)}


def main() -> None:
    latencies = [ttft + sum(gaps) for ttft, gaps in zip(TTFTS, ITLS)]
    duration = sum(latencies) + 0.05
    tpots = [sum(gaps) / (OUTPUT_LEN - 1) * 1000 for gaps in ITLS]
    result = {
        "date": "20261205-211500", "endpoint_type": "openai", "backend": "openai", "label": None,
        "model_id": "gemma3-270m", "tokenizer_id": "/tmp/tok-gemma3", "num_prompts": 4,
        "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 1,
        "duration": duration, "completed": 4, "failed": 0,
        "total_input_tokens": 4 * INPUT_LEN, "total_output_tokens": 4 * OUTPUT_LEN,
        "request_throughput": 4 / duration, "request_goodput": None, "output_throughput": 4 * OUTPUT_LEN / duration,
        "total_token_throughput": 4 * (INPUT_LEN + OUTPUT_LEN) / duration,
        "input_lens": [INPUT_LEN] * 4, "output_lens": [OUTPUT_LEN] * 4, "ttfts": TTFTS, "itls": ITLS,
        "latencies": latencies, "start_times": [0.0, latencies[0], sum(latencies[:2]), sum(latencies[:3])],
        "queue_times": [0.0] * 4, "generated_texts": [" house work" * 64] * 4, "errors": [""] * 4,
        "max_output_tokens_per_s": 48.0, "max_concurrent_requests": 1, "rtfx": 0.0,
        **stats("ttft", [t * 1000 for t in TTFTS]), **stats("tpot", tpots),
        **stats("itl", [gap * 1000 for gaps in ITLS for gap in gaps]), **stats("e2el", [x * 1000 for x in latencies]),
    }
    out = Path(__file__).with_name("vllm-bench-serve-reconstructed.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
