"""The Apple probe: captured system_profiler output, synthetic SPHardwareDataType, the usable-memory rule."""

from __future__ import annotations

import json
import platform

import pytest
from velollm_apple import plugin
from velollm_apple.plugin import apple_bandwidth_gbps, parse_system_profiler, usable_gpu_memory_bytes

from velollm_core.contract.probing.tools import ProbeError

GIB = 2**30
MIB = 2**20


def m1_displays(tool_outputs) -> str:
    return (
        tool_outputs / "system_profiler" / "torchserve_apple-m1_SPDisplaysDataType_reformatted.json"
    ).read_text()


def with_hardware(displays: list[dict], chip: str = "Apple M3 Max", memory: str = "64 GB") -> str:
    hardware = {
        "_name": "hardware_overview",
        "chip_type": chip,
        "machine_model": "Mac15,9",
        "number_processors": "proc 16:12:4",
        "physical_memory": memory,
    }
    # Real output: 2-space indent and "key" : value, unlike the re-indented capture.
    return json.dumps({"SPDisplaysDataType": displays, "SPHardwareDataType": [hardware]}, indent=2).replace(
        '": ', '" : '
    )


def test_captured_m1(tool_outputs):
    (m1,) = parse_system_profiler(m1_displays(tool_outputs), ram_bytes=16 * GIB)
    assert m1.vendor == "apple"
    assert m1.name == "Apple M1"  # sppci_model, not the _name localization key
    assert m1.gpu_cores == 7
    assert m1.unified_memory is True
    assert m1.memory_total_bytes == 16 * GIB * 2 // 3  # never all of RAM
    assert m1.bandwidth_gbps == 68.25
    assert m1.pci_bus_id is None
    assert m1.source == "system_profiler"


def test_memory_unknown_without_ram(tool_outputs):
    (m1,) = parse_system_profiler(m1_displays(tool_outputs))
    assert m1.memory_total_bytes is None  # no sysctl and no SPHardwareDataType: unknown, not zero


@pytest.mark.parametrize(("cores", "expected"), [(30, 300.0), (40, 400.0), (None, 300.0)])
def test_m3_max_bandwidth_depends_on_gpu_cores(cores, expected):
    display = {
        "_name": "Apple M3 Max",
        "sppci_model": "Apple M3 Max",
        "spdisplays_vendor": "sppci_vendor_Apple",
    }
    if cores:
        display["sppci_cores"] = str(cores)
    (gpu,) = parse_system_profiler(with_hardware([display]))
    assert gpu.bandwidth_gbps == expected


def test_large_ram_from_sp_hardware_uses_three_quarters():
    display = {"sppci_model": "Apple M3 Max", "sppci_cores": "40", "spdisplays_vendor": "sppci_vendor_Apple"}
    (gpu,) = parse_system_profiler(with_hardware([display], memory="64 GB"))
    assert gpu.memory_total_bytes == 48 * GIB


def test_wired_limit_overrides_the_default_share():
    display = {"sppci_model": "Apple M2 Ultra", "spdisplays_vendor": "sppci_vendor_Apple"}
    (gpu,) = parse_system_profiler(
        with_hardware([display], chip="Apple M2 Ultra", memory="192 GB"),
        ram_bytes=192 * GIB,
        wired_limit_mb=180000,
    )
    assert gpu.memory_total_bytes == 180000 * MIB
    assert gpu.bandwidth_gbps == 800.0


def test_chip_name_from_localization_key_or_hardware():
    (from_key,) = parse_system_profiler(
        json.dumps(
            {
                "SPDisplaysDataType": [
                    {
                        "_name": "kHW_AppleM1ProItem",
                        "spdisplays_vendor": "sppci_vendor_Apple",
                        "sppci_cores": "16",
                    }
                ]
            }
        )
    )
    assert from_key.name == "Apple M1 Pro" and from_key.bandwidth_gbps == 200.0
    (from_hardware,) = parse_system_profiler(
        with_hardware([{"spdisplays_vendor": "sppci_vendor_Apple", "sppci_cores": "40"}], chip="Apple M4 Max")
    )
    assert from_hardware.name == "Apple M4 Max" and from_hardware.bandwidth_gbps == 546.0


def test_intel_mac_with_a_radeon():
    displays = [
        {"sppci_model": "Intel UHD Graphics 630", "spdisplays_vendor": "Intel", "spdisplays_vram": "1536 MB"},
        {
            "sppci_model": "AMD Radeon Pro 5500M",
            "spdisplays_vendor": "sppci_vendor_amd",
            "spdisplays_vram": "8 GB",
        },
    ]
    intel, radeon = parse_system_profiler(with_hardware(displays, chip=None, memory="32 GB"))
    assert (intel.vendor, radeon.vendor) == ("intel", "amd")
    assert radeon.memory_total_bytes == 8 * GIB and radeon.unified_memory is False
    assert radeon.bandwidth_gbps is None


def test_usable_memory_rule():
    assert usable_gpu_memory_bytes(36 * GIB, None) == 24 * GIB
    assert usable_gpu_memory_bytes(48 * GIB, 0) == 36 * GIB  # 0 means "not set"
    assert usable_gpu_memory_bytes(8 * GIB, 7000) == 7000 * MIB


def test_bandwidth_table_lookups():
    assert apple_bandwidth_gbps("Apple M4 Pro", 20) == 273.0
    assert apple_bandwidth_gbps("Apple M4 Max", 32) == 410.0
    assert apple_bandwidth_gbps("Apple M2", 10) == 100.0
    assert apple_bandwidth_gbps("Apple M9 Hyper", 10) is None
    assert apple_bandwidth_gbps("Intel Iris", None) is None


@pytest.mark.parametrize("garbage", ["", "system_profiler: crashed", "[1, 2]"])
def test_garbage_raises(garbage):
    with pytest.raises(ProbeError):
        parse_system_profiler(garbage)


def test_empty_sections_are_no_gpu():
    assert parse_system_profiler('{"SPDisplaysDataType": []}') == []


# --- the hook -------------------------------------------------------------------------------------


def test_not_macos_runs_nothing(monkeypatch, fake_tools):
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    calls = fake_tools("system_profiler", "{}")
    assert plugin.detect_gpu(warn=pytest.fail) == []
    assert calls.read_text() == ""


def test_macos_with_tools(monkeypatch, fake_tools, tool_outputs):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    fake_tools("system_profiler", m1_displays(tool_outputs))
    fake_tools(
        "sysctl",
        "",
        rules=[("hw.memsize", f"{16 * GIB}\n", 0, "", 0), ("iogpu.wired_limit_mb", "0\n", 0, "", 0)],
    )
    (gpu,) = plugin.detect_gpu(warn=pytest.fail)
    assert gpu.memory_total_bytes == 16 * GIB * 2 // 3


def test_macos_before_14_has_no_wired_limit_sysctl(monkeypatch, fake_tools, tool_outputs):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    fake_tools("system_profiler", m1_displays(tool_outputs))
    fake_tools(
        "sysctl",
        "",
        exit_code=1,
        stderr="sysctl: unknown oid 'iogpu.wired_limit_mb'\n",
        rules=[("hw.memsize", f"{8 * GIB}\n", 0, "", 0)],
    )
    (gpu,) = plugin.detect_gpu(warn=pytest.fail)
    assert gpu.memory_total_bytes == 8 * GIB * 2 // 3


def test_system_profiler_timing_out_becomes_a_warning(monkeypatch, fake_tools):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(plugin, "SYSTEM_PROFILER_TIMEOUT_S", 0.5)
    fake_tools("system_profiler", "{}", sleep_s=30)
    messages: list[str] = []
    assert plugin.detect_gpu(warn=messages.append) == []
    assert messages == ["system_profiler did not answer within 0.5 s"]


def test_system_profiler_missing_becomes_a_warning(monkeypatch, fake_tools):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    messages: list[str] = []
    assert plugin.detect_gpu(warn=messages.append) == []
    assert messages == ["system_profiler not found on PATH"]
