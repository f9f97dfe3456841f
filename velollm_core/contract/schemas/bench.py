"""Benchmark models: requests, timings, runs, results, and the per-benchmark context."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from velollm_core.contract.schemas.base import VeloModel as _Model
from velollm_core.contract.schemas.base import schema_version_field
from velollm_core.contract.schemas.hardware import HardwareReport


class GenerationRequest(_Model):
    """One generation the engine asks of a backend (``Backend.generate`` / ``stream`` / ``check``)."""

    benchmark: str = Field(description="The suite, workload (ppN/tgM[@dD]) or dataset this request belongs to; "
                                       "'calibration' for the probes that size prompts without a tokenizer.")
    prompt: str = Field(description="The prompt text, sent as the user's message (or as it is, when raw).")
    max_tokens: int = Field(description="Tokens to generate at most (exactly, with ignore_eos).")
    temperature: float = Field(0.0, description="Sampling temperature; 0: greedy.")
    seed: int = Field(42, description="Sampling seed, for runtimes that take one.")
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "The flat --option dict, each value read by its field's type. A backend reads its validated "
        "options from context.settings instead, the request body's extra fields from "
        "context.settings.request."))
    ignore_eos: bool = Field(False, description=(
        "Fixed output length: generate exactly max_tokens, past the end-of-sequence token. A backend "
        "whose runtime has no such switch declares capabilities.ignore_eos=False and answers naturally; "
        "the engine warns once and flags every shorter answer (RunRecord.short_output)."))
    raw: bool = Field(False, description=(
        "No chat template: send the prompt as it is (llama-server /completion, OpenAI /v1/completions, "
        "Ollama raw), so a synthetic workload's token count is the count the server evaluates."))
    cache_prompt: bool = Field(False, description=(
        "Let the server answer the prompt's prefix from its cache (--prefix-cache, a depth workload's "
        "priming request); False: the prompt is evaluated in full, so prefill is measured."))
    prompt_tokens_target: int | None = Field(None, description=(
        "The prompt length in server tokens (BOS included) a synthetic workload built, depth included; "
        "the engine compares it with the reported prompt_tokens. None for suites and datasets."))
    # What a 2026 workload adds to a request, in runtime-neutral terms; each backend plugin writes them
    # in its own wire format (and a backend whose runtime lacks one refuses it in check()).
    chat: bool = Field(False, description=(
        "Send as chat messages through the runtime's chat template even with no history, tools or images "
        "(every turn of a conversation, so all its turns share one prompt format)."))
    history: list[dict[str, str]] = Field(default_factory=list, description=(
        "Earlier turns of a conversation, oldest first, each {role: user|assistant, content}; prompt is "
        "the new user message after them."))
    think: bool | None = Field(None, description=(
        "Reasoning switched on (True) or off (False) where the runtime has the switch; None: its default."))
    json_schema: dict[str, Any] | None = Field(None, description=(
        "A JSON Schema the answer must follow (structured output), or None."))
    tools: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Tools the model may call, as OpenAI tool definitions ({type: function, function: {name, "
        "description, parameters}})."))
    images: list[str] = Field(default_factory=list, description=(
        "Images sent with the prompt, each a base64-encoded PNG."))


class GenerationTiming(_Model):
    """What one generation measured. ``None`` means the runtime did not say, never zero.

    ``prompt_tokens_per_s`` is None when the runtime reports no prefill time (never estimated from the
    time to first token). ``decode_tokens_per_s`` is the runtime's own rate where it reports one, the
    client's otherwise; ``client_decode_tokens_per_s`` always the client's (tokens after the first over
    the time between the first and the last). ``extra["itl_ms"]``, where the backend measures it, is
    the list of gaps in milliseconds between consecutive token arrivals (one per token after the
    first); load levels take their ITL percentiles from it. ``extra["tpot_ms"]`` overrides the TPOT the
    engine otherwise derives from ``total_ms``, ``ttft_ms`` and ``completion_tokens``.
    """

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
    # A reasoning model's split of completion_tokens: thinking, then the answer; TTFT is the first
    # token of either kind, time_to_first_answer_ms the first answer token's (None: no answer came).
    reasoning_tokens: int | None = None
    answer_tokens: int | None = None
    time_to_first_answer_ms: float | None = None
    # Prompt tokens the server answered from its prefix cache (of prompt_tokens), where it says.
    cached_prompt_tokens: int | None = None
    # The tool calls of the answer, each {name, arguments} with arguments as the text the model wrote,
    # and when the last one's arguments were complete (ms from the request's start).
    tool_calls: list[dict[str, str]] = Field(default_factory=list)
    tool_args_ms: float | None = None
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
    # A reasoning run whose answer never started within max_tokens: flagged, left out of the summary.
    no_answer: bool = False
    json_valid: bool | None = None  # the answer parses as JSON and follows --json-schema (None: not asked)
    tool_call_valid: bool | None = None  # every tool call names a given tool, its arguments follow its schema
    conversation: int | None = None  # a multi-turn run: which conversation, and its turn (1-based)
    turn: int | None = None


class MetricStats(_Model):
    mean: float
    median: float
    stdev: float
    min: float
    max: float
    n: int


class DecodeTraffic(_Model):
    """Bytes one generated token reads from memory, as the runtime lays the model out: the roofline's
    numerator (decode tokens/s <= memory bandwidth / bytes per token). The KV cache read grows with
    the context; layers with a sliding window read at most ``window_tokens`` of it."""

    weights_bytes: int  # weights every generated token passes through (mixture-of-experts: those used)
    resident_bytes: int  # weights held in memory: whether a GPU can hold the model
    kv_bytes_per_token: int = 0  # KV cache read per token of context, by layers attending to all of it
    window_kv_bytes_per_token: int = 0  # the same, by the sliding-window layers
    window_tokens: int = 0
    cpu_only: bool = False  # the run keeps every layer in system RAM (no GPU offload asked for)

    def bytes_per_token(self, context_tokens: int = 0) -> int:
        """Bytes one decode step reads with ``context_tokens`` of context in the cache."""
        window = min(context_tokens, self.window_tokens)
        return self.weights_bytes + self.kv_bytes_per_token * context_tokens + self.window_kv_bytes_per_token * window


class ModelFacts(_Model):
    name: str
    path: str | None = None
    size_bytes: int | None = None
    quantization: str | None = None
    architecture: str | None = None
    parameters: str | None = None
    # What a decode step reads, where the backend knows the model's layout (None: no roofline).
    decode_traffic: DecodeTraffic | None = None


def _redacted_host(host: str | None) -> str | None:
    from velollm_core.contract.urls import redact_url

    return redact_url(host) if isinstance(host, str) else host


class BackendInfo(_Model):
    name: str
    version: str | None = None
    host: str | None = None
    model: ModelFacts | None = None
    server_flags: list[str] = Field(default_factory=list)
    # What the backend wants the user to know (an endpoint that failed, a setting it could not read):
    # printed on the console once and saved in the result.
    warnings: list[str] = Field(default_factory=list)

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


class ImportedFrom(_Model):
    """Where a result measured by another tool came from (``velollm history import``): the rest of the
    document is that tool's measurements in VeloLLM's fields, None wherever the tool measured nothing."""

    tool: str = Field(description="The tool that measured it, as its importer names it (e.g. a benchmark CLI).")
    tool_version: str | None = None
    format: str = Field(description="The file format read (json, jsonl, sqlite, ...).")
    source: str | None = Field(None, description="The file's name (no directory).")


class BenchmarkResult(_Model):
    schema_version: int = schema_version_field("benchmark")
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    error: str | None = None
    started_at: str
    finished_at: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    environment: BenchmarkEnvironment = Field(default_factory=BenchmarkEnvironment)
    runs: list[RunRecord] = Field(default_factory=list)
    summary: dict[str, dict[str, MetricStats]] = Field(default_factory=dict)
    # Decode speed against the memory-bandwidth limit (velollm_core.bench.roofline); None when unknown.
    roofline: dict[str, Any] | None = None
    # One entry per measured load level (velollm_core.bench.levels): throughput, latency percentiles,
    # goodput, failures; and for a sweep the knee.
    levels: list[dict[str, Any]] = Field(default_factory=list)
    sweep: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    imported: ImportedFrom | None = None

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
    # The most requests any level of this benchmark has in flight at once: size server slots and
    # connection pools to it.
    max_concurrency: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    state: dict[str, Any] = field(default_factory=dict)
    hardware: HardwareReport | None = None  # this machine, where the engine detected it
    # The backend's validated options (a ``velollm_core.contract.backends.BackendOptions``), set by the core
    # before the backend's first call; ``options`` keeps the flat ``--option`` dict as given.
    settings: Any = None
    # ``state`` is shared by every call of this benchmark, and calls at a load level run on several
    # threads: take this lock to create a shared thing (a client, a session) once.
    lock: threading.RLock = field(default_factory=threading.RLock)
