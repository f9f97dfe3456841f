"""Hardware report models (what `velollm detect` prints)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from velollm_core.contract.schemas.base import VeloModel as _Model

GpuVendor = Literal["nvidia", "amd", "apple", "intel", "other"]



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
