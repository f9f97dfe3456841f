"""Pydantic models of everything that crosses a plugin boundary or lands in a file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GpuVendor = Literal["nvidia", "amd", "apple", "intel", "other"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- hardware -------------------------------------------------------------------------------------


class OsInfo(_Model):
    system: str
    release: str
    machine: str
    version: str | None = None
    distribution: str | None = None


class CpuInfo(_Model):
    model: str | None = None
    vendor: str | None = None
    architecture: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    max_freq_mhz: float | None = None
    flags: list[str] = Field(default_factory=list)


class MemoryInfo(_Model):
    total_bytes: int
    available_bytes: int
    used_bytes: int
    swap_total_bytes: int | None = None
    swap_used_bytes: int | None = None


class GpuInfo(_Model):
    vendor: GpuVendor
    name: str
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_used_bytes: int | None = None
    driver_version: str | None = None
    pci_bus_id: str | None = None
    bandwidth_gbps: float | None = None
    source: str
    index: int | None = None
    uuid: str | None = None
    compute_capability: str | None = None
    cuda_driver_version: str | None = None
    memory_bus_width_bits: int | None = None
    memory_max_clock_mhz: float | None = None
    power_limit_w: float | None = None
    gpu_cores: int | None = None
    unified_memory: bool = False
    pci_vendor_id: str | None = None
    pci_device_id: str | None = None
    mig_enabled: bool | None = None


class HardwareReport(_Model):
    os: OsInfo
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: list[GpuInfo] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


# --- benchmark ------------------------------------------------------------------------------------


class GenerationRequest(_Model):
    benchmark: str
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    seed: int = 42
    options: dict[str, Any] = Field(default_factory=dict)


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


class BackendInfo(_Model):
    name: str
    version: str | None = None
    host: str | None = None
    model: ModelFacts | None = None
    server_flags: list[str] = Field(default_factory=list)


class BenchmarkEnvironment(_Model):
    hardware: HardwareReport | None = None
    backend: BackendInfo | None = None
    velollm_version: str | None = None


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


# --- configuration proposals ----------------------------------------------------------------------


class ConfigChange(_Model):
    key: str
    current: str | None = None
    proposed: str | None
    reason: str
    kind: Literal["env", "flag"] = "env"


class ConfigProposal(_Model):
    runtime: str
    changes: list[ConfigChange] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    command: list[str] | None = None
    # The systemd service that runs this runtime (e.g. "ollama"): where --format systemd and --apply write.
    systemd_unit: str | None = None
