"""Hardware telemetry sources: what a plugin returns from ``telemetry_sources()``, and how they are gathered.

A source reads one kind of sensor (NVML, amdsmi, RAPL) for every device it sees. ``open()`` starts it
and says, in sentences, what it cannot read; ``read()`` is called ~10 times a second from the sampler
thread and must be cheap; ``close()`` ends it. A value a device does not report is None, never 0:
the summary says "unknown" for it, and why, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class SensorUnavailable(Exception):
    """Nothing of this source can be read here; the message says why in one sentence."""


@dataclass(frozen=True)
class DeviceReading:
    """One device at one instant. ``energy_j`` is a cumulative counter (any origin, never decreasing:
    the source unwraps its hardware counter); None where the device has no energy counter."""

    device: str  # stable id across readings: "nvml:0", "rapl:package-0"
    name: str  # what a person calls it: "NVIDIA H200", "CPU package 0"
    kind: str  # "gpu" or "cpu"
    utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_w: float | None = None
    energy_j: float | None = None


@runtime_checkable
class TelemetrySource(Protocol):
    """A hardware sensor family; see the module docstring."""

    name: str  # "nvml", "amdsmi", "rapl"

    def open(self) -> list[str]:
        """Start reading; return sentences about what cannot be read (empty when all is readable).

        Raise ``SensorUnavailable`` when nothing can be read at all.
        """
        ...

    def read(self) -> list[DeviceReading]:
        """The current reading of every device this source opened."""
        ...

    def close(self) -> None:
        ...


def hardware_sources() -> list[TelemetrySource]:
    """Every source the plugins offer through ``telemetry_sources()`` (the core's RAPL among them)."""
    from velollm_core.contract import plugins

    plugins.load_plugins()
    found: list[TelemetrySource] = []
    for answer in plugins.call_each("telemetry_sources"):
        found.extend(source for source in answer if isinstance(source, TelemetrySource))
    return found
