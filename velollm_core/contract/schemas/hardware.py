"""Hardware report models (what `velollm detect` prints)."""

from __future__ import annotations

from pydantic import Field

from velollm_core.contract.schemas.base import VeloModel as _Model
from velollm_core.contract.schemas.base import schema_version_field
from velollm_core.contract.schemas.gpu import GpuInfo, GpuLink, GpuVendor  # noqa: F401 - part of this family


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


class HardwareReport(_Model):
    schema_version: int = schema_version_field("detect")
    os: OsInfo
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: list[GpuInfo] = Field(default_factory=list)
    # How the GPUs reach each other, one record per pair a vendor plugin could tell (none for one GPU).
    links: list[GpuLink] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
