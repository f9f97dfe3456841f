"""How the mock "model" behaves: the settings every wire format and the command line share."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

MOCK_VERSION = "velollm-mock 1"


@dataclass(frozen=True)
class MockConfig:
    """How the mock "model" behaves; every field is a command-line flag of the same name."""

    ttft_ms: float = 50.0  # slot start to first token, before per-token prefill
    itl_ms: float = 20.0  # gap between two tokens of one stream
    output_tokens: int = 128  # where the model ends its answer (EOS) unless ignore_eos/min_tokens
    prefill_ms_per_token: float = 0.0  # added to the TTFT per prompt token not found in the cache
    jitter_ms: float = 0.0  # each gap drawn uniformly in itl ± jitter (0: exact schedule)
    seed: int = 0
    slots: int = 0  # concurrent generations; more wait in a queue (0: no limit)
    ctx_size: int = 32768  # tokens of context per slot (/props n_ctx; longer prompts are refused)
    vocab_size: int = 32000
    model: str = "velollm-mock"
    fail_every: int = 0  # every Nth generation request answers HTTP 503 (0: never)
    # The limits a load level can meet, for the diagnosis's tests: a KV cache shared by every slot
    # (a request waits, "deferred", until its prompt and answer fit), prefills that hold every other
    # stream's next token (one engine for prompts and decoding, as llama-server batches them), and a
    # pretend GPU's utilisation while anything runs (/metrics; velollm_testkit.mock_gpu reads it).
    kv_cache_tokens: int = 0  # KV cache cells of all slots together (0: no limit)
    prefill_stalls: int = 0  # 1: a prefill delays every other stream by its per-token part
    gpu_busy_pct: float = 0.0  # utilisation reported while a generation runs (0: no GPU reported)
    reasoning_tokens: int = 0  # thinking tokens before the answer where the format separates them
    image_tokens: int = 64  # prompt tokens of each attached image

    def check(self) -> None:
        """Refuse values no schedule can follow (one readable sentence each)."""
        for name in ("ttft_ms", "itl_ms", "prefill_ms_per_token", "jitter_ms"):
            if not 0 <= getattr(self, name) <= 3_600_000:
                raise ValueError(f"--{name.replace('_', '-')} must lie between 0 and 3600000 ms")
        for name in ("output_tokens", "slots", "fail_every", "reasoning_tokens", "image_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if self.kv_cache_tokens < 0 or self.prefill_stalls not in (0, 1) or not 0 <= self.gpu_busy_pct <= 100:
            raise ValueError("--kv-cache-tokens must not be negative, --prefill-stalls is 0 or 1, and "
                             "--gpu-busy-pct lies between 0 and 100")
        if self.ctx_size < 2 or self.vocab_size < 16:
            raise ValueError("--ctx-size must be at least 2 and --vocab-size at least 16")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
