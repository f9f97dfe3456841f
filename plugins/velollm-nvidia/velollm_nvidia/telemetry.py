"""NVML as a telemetry source: per GPU utilization, memory used, power and the total energy counter.

``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded; Volta and later) is
the energy figure; where a GPU lacks it, the session integrates ``nvmlDeviceGetPowerUsage``. Which
calls a GPU answers is found once, at ``open()``; ``read()`` (ten times a second) asks only those.
"""

from __future__ import annotations

from typing import Any

from velollm_core.api import DeviceReading, OptionalCalls, SensorUnavailable

# What each reading asks, and how a missing one is said.
FIELDS = {
    "nvmlDeviceGetUtilizationRates": "utilization",
    "nvmlDeviceGetMemoryInfo": "memory use",
    "nvmlDeviceGetPowerUsage": "power draw",
    "nvmlDeviceGetTotalEnergyConsumption": "total energy counter",
}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Every GPU NVML counts, read through pynvml (nvidia-ml-py)."""

    name = "nvml"

    def __init__(self, module: Any = None) -> None:
        self.module = module  # pynvml, or a test's stand-in; imported at open() otherwise
        self.calls: OptionalCalls | None = None
        self.gpus: list[tuple[int, Any, str, set[str]]] = []  # index, handle, name, calls it answers

    def open(self) -> list[str]:
        if self.module is None:
            try:
                import pynvml
            except ImportError:
                raise SensorUnavailable("NVML: nvidia-ml-py is not installed: GPU power and energy unknown") from None
            self.module = pynvml
        calls = self.calls = OptionalCalls(self.module, "NVMLError")
        try:
            self.module.nvmlInit()
            count = self.module.nvmlDeviceGetCount()
        except calls.error as exc:
            raise SensorUnavailable(f"NVML could not start ({exc}): GPU power and energy unknown") from None
        notes = []
        for index in range(count):
            handle = calls.get("nvmlDeviceGetHandleByIndex", index)
            if handle is None:
                notes.append(f"NVML could not open GPU {index}: its power and energy are unknown")
                continue
            name = calls.get("nvmlDeviceGetName", handle)
            name = _text(name) if name is not None else f"NVIDIA GPU {index}"
            answered = {function for function in FIELDS if calls.get(function, handle) is not None}
            missing = [what for function, what in FIELDS.items() if function not in answered]
            if missing:
                fallback = (" (energy integrated from power)" if "nvmlDeviceGetTotalEnergyConsumption" not in answered
                            and "nvmlDeviceGetPowerUsage" in answered else "")
                notes.append(f"NVML: GPU {index} ({name}) reports no {', '.join(missing)}{fallback}")
            self.gpus.append((index, handle, name, answered))
        if not self.gpus:
            self.close()
            raise SensorUnavailable("NVML sees no GPU it can open: GPU power and energy unknown")
        return notes

    def read(self) -> list[DeviceReading]:
        assert self.calls is not None
        get = self.calls.get
        readings = []
        for index, handle, name, answered in self.gpus:
            rates = get("nvmlDeviceGetUtilizationRates", handle) if "nvmlDeviceGetUtilizationRates" in answered else None
            memory = get("nvmlDeviceGetMemoryInfo", handle) if "nvmlDeviceGetMemoryInfo" in answered else None
            power_mw = get("nvmlDeviceGetPowerUsage", handle) if "nvmlDeviceGetPowerUsage" in answered else None
            energy_mj = (get("nvmlDeviceGetTotalEnergyConsumption", handle)
                         if "nvmlDeviceGetTotalEnergyConsumption" in answered else None)
            readings.append(DeviceReading(
                device=f"nvml:{index}", name=name, kind="gpu",
                utilization_pct=float(rates.gpu) if rates is not None else None,
                memory_used_bytes=int(memory.used) if memory is not None else None,
                memory_total_bytes=int(memory.total) if memory is not None else None,
                power_w=power_mw / 1000.0 if power_mw is not None else None,
                energy_j=energy_mj / 1000.0 if energy_mj is not None else None,
            ))
        return readings

    def close(self) -> None:
        if self.calls is not None:
            self.calls.get("nvmlShutdown")
            self.calls = None
        self.gpus = []
