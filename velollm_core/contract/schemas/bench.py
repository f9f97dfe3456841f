"""Benchmark models: requests, timings, runs, results, and the per-benchmark context."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from velollm_core.contract.schemas.base import VeloModel as _Model
from velollm_core.contract.schemas.hardware import HardwareReport


class GenerationRequest(_Model):
    benchmark: str
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    seed: int = 42
    options: dict[str, Any] = Field(default_factory=dict)
    # Fixed output length: generate exactly max_tokens, past the end-of-sequence token, where the
    # runtime can (llama-server and vLLM ``ignore_eos``); elsewhere a shorter answer is flagged.
    ignore_eos: bool = False
    # No chat template: the prompt is sent as it is (llama-server /completion, OpenAI /v1/completions,
    # Ollama ``raw``), so a synthetic workload's token count is the count the server evaluates.
    raw: bool = False
    # Let the server answer the prompt's prefix from its cache (llama-server ``cache_prompt``).
    cache_prompt: bool = False
    # The prompt length (server tokens) a synthetic workload built, to check against the reported count.
    prompt_tokens_target: int | None = None

    def body_fields(self) -> dict[str, Any]:
        """Fields the user adds to each request body (``--option request.FIELD=VALUE``)."""
        return {k.removeprefix("request."): v for k, v in self.options.items() if k.startswith("request.")}


class GenerationTiming(_Model):
    """What one generation measured. ``None`` means the runtime did not say, never zero."""

    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    client_decode_tokens_per_s: float | None = None
    server_decode_tokens_per_s: float | None = None
    total_ms: float | None = None
    load_ms: float | None = None
    stop_reason: str | None = None
    text: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class RunRecord(GenerationTiming):
    benchmark: str
    iteration: int
    concurrency: int = 1
    level: str | None = None  # the load level's key ("c4", "rate2", "poisson2"); None: sequential
    profile: str | None = None
    started_s: float | None = None  # seconds since the level began
    ended_s: float | None = None
    short_output: bool = False  # fewer tokens than asked, with a fixed output length requested
    failed: str | None = None  # why the request failed (then no timings)


class MetricStats(_Model):
    mean: float
    median: float
    stdev: float
    min: float
    max: float
    n: int


class ModelFacts(_Model):
    name: str
    path: str | None = None
    size_bytes: int | None = None
    quantization: str | None = None
    architecture: str | None = None
    parameters: str | None = None


def _redacted_host(host: str | None) -> str | None:
    from velollm_core.contract.urls import redact_url

    return redact_url(host) if isinstance(host, str) else host


class BackendInfo(_Model):
    name: str
    version: str | None = None
    host: str | None = None
    model: ModelFacts | None = None
    server_flags: list[str] = Field(default_factory=list)

    @field_validator("host")
    @classmethod
    def _redact_host(cls, host: str | None) -> str | None:
        """Whatever a backend plugin hands over, a result file never shows a --host's password or query."""
        return _redacted_host(host)
    # Which source the runtime was built from, as llama-bench records build_commit (None: unknown).
    build_commit: str | None = None
    build: dict[str, Any] | None = None


class BenchmarkEnvironment(_Model):
    hardware: HardwareReport | None = None
    backend: BackendInfo | None = None
    velollm_version: str | None = None
    # CPUs' worth of other work on this process's CPUs just before the first run, and how many
    # CPUs it may use: numbers measured on a busy machine describe the contention.
    cpu_busy_at_start: float | None = None
    usable_cpus: int | None = None


class BenchmarkResult(_Model):
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    error: str | None = None
    started_at: str
    finished_at: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    environment: BenchmarkEnvironment = Field(default_factory=BenchmarkEnvironment)
    runs: list[RunRecord] = Field(default_factory=list)
    summary: dict[str, dict[str, MetricStats]] = Field(default_factory=dict)
    concurrency: dict[str, Any] = Field(default_factory=dict)
    # Decode speed against the memory-bandwidth limit (velollm_core.tune.roofline); None when unknown.
    roofline: dict[str, Any] | None = None
    # One entry per measured load level (velollm_core.bench.levels): throughput, latency percentiles,
    # goodput, failures; and for a sweep the knee.
    levels: list[dict[str, Any]] = Field(default_factory=list)
    sweep: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None

    @field_validator("settings")
    @classmethod
    def _redact_settings_host(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """The plan's --host as recorded: the backend got it whole, the file gets it redacted."""
        if isinstance(settings.get("host"), str):
            return {**settings, "host": _redacted_host(settings["host"])}
        return settings


@dataclass
class BenchmarkContext:
    """State shared by every run of one benchmark; not serialized."""

    backend: str
    model: str
    host: str | None = None
    parallel: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    state: dict[str, Any] = field(default_factory=dict)
    hardware: HardwareReport | None = None  # this machine, where the engine detected it
    # The backend's validated options (a ``velollm_core.contract.backends.BackendOptions``), set by the core
    # before the backend's first call; ``options`` keeps the flat ``--option`` dict as given.
    settings: Any = None
