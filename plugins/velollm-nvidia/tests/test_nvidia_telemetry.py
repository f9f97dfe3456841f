"""NVML as a telemetry source: units, calls a GPU does not answer (said once, energy from power), the
hook's silence where no NVIDIA GPU can be, and (gpu marker) a real GPU's counters during real work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import types

import pytest
from velollm_nvidia import plugin
from velollm_nvidia.telemetry import NvmlSource

from velollm_core.api import SensorUnavailable


def nvml_module(gpus: list[dict], init_error: bool = False) -> types.ModuleType:
    """pynvml's names for the calls the source makes; a value "unsupported" raises NVMLError_NotSupported."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    module.NVMLError, module.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    module.shutdowns = 0

    def init():
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def shutdown():
        module.shutdowns += 1

    def answer(key):
        def call(handle):
            value = gpus[handle][key]
            if value == "unsupported":
                raise NVMLError_NotSupported("Not Supported")
            return value() if callable(value) else value
        return call

    module.nvmlInit, module.nvmlShutdown = init, shutdown
    module.nvmlDeviceGetCount = lambda: len(gpus)
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    for function, key in {"nvmlDeviceGetName": "name", "nvmlDeviceGetUtilizationRates": "util",
                          "nvmlDeviceGetMemoryInfo": "memory", "nvmlDeviceGetPowerUsage": "power_mw",
                          "nvmlDeviceGetTotalEnergyConsumption": "energy_mj"}.items():
        setattr(module, function, answer(key))
    return module


def h200(**changes) -> dict:
    gpu = {"name": b"NVIDIA H200", "util": types.SimpleNamespace(gpu=87, memory=40),
           "memory": types.SimpleNamespace(total=150_754_820_096, used=20_000_000_000, free=130_754_820_096),
           "power_mw": 412_345, "energy_mj": 9_876_543_210}
    gpu.update(changes)
    return gpu


def test_units_and_names():
    source = NvmlSource(nvml_module([h200()]))
    assert source.open() == []
    (reading,) = source.read()
    assert (reading.device, reading.name, reading.kind) == ("nvml:0", "NVIDIA H200", "gpu")
    assert reading.utilization_pct == 87.0
    assert reading.memory_used_bytes == 20_000_000_000 and reading.memory_total_bytes == 150_754_820_096
    assert reading.power_w == pytest.approx(412.345)
    assert reading.energy_j == pytest.approx(9_876_543.21)
    source.close()
    assert source.module.shutdowns == 1


def test_unanswered_calls_are_said_once_and_read_as_none():
    calls = {"n": 0}

    def counted_power():
        calls["n"] += 1
        return 75_000

    gpus = [h200(), h200(name="NVIDIA GeForce RTX 3060", energy_mj="unsupported", util="unsupported",
                        power_mw=counted_power)]
    source = NvmlSource(nvml_module(gpus))
    (note,) = source.open()
    assert note == ("NVML: GPU 1 (NVIDIA GeForce RTX 3060) reports no utilization, total energy counter "
                    "(energy integrated from power)")
    first, second = source.read()
    assert second.energy_j is None and second.utilization_pct is None and second.power_w == 75.0
    assert first.energy_j is not None
    source.read()
    assert calls["n"] == 3  # one probe at open, one per read: unsupported calls are not retried each tick


def test_nvml_that_cannot_start_is_one_sentence():
    with pytest.raises(SensorUnavailable, match="NVML could not start.*unknown"):
        NvmlSource(nvml_module([], init_error=True)).open()
    with pytest.raises(SensorUnavailable, match="sees no GPU"):
        NvmlSource(nvml_module([])).open()


def test_no_source_where_no_nvidia_gpu_can_be(monkeypatch):
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(plugin.shutil, "which", lambda name: None)
    monkeypatch.setattr(plugin, "nvidia_hardware_seen", lambda: False)
    monkeypatch.setattr(plugin, "nvml_library_loadable", lambda: False)
    assert plugin.telemetry_sources() == []


@pytest.mark.gpu
def test_real_gpu_counters_move_under_load():
    """The real NVML: energy grows while nvidia-smi and the driver are busy; power and memory are read."""
    pytest.importorskip("pynvml")
    if not plugin.nvml_library_loadable():
        pytest.skip("NVML's library does not load here")
    source = NvmlSource()
    try:
        source.open()
    except SensorUnavailable as exc:
        pytest.skip(str(exc))
    try:
        first = source.read()
        if shutil.which("nvidia-smi"):
            subprocess.run(["nvidia-smi", "-q"], capture_output=True, timeout=60, check=False)
        time.sleep(1.0)
        second = source.read()
    finally:
        source.close()
    for a, b in zip(first, second):
        assert b.memory_used_bytes and b.memory_total_bytes and b.memory_used_bytes <= b.memory_total_bytes
        assert b.power_w is None or b.power_w > 0  # an idle H200 still draws ~70-120 W
        if a.energy_j is not None:
            assert b.energy_j > a.energy_j  # a second of even idle power moves the counter
