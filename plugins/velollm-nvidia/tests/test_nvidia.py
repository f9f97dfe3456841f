"""The NVIDIA probe: nvidia-smi CSV from real drivers, a fake NVML, and failing or missing tools."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from velollm_nvidia import plugin
from velollm_nvidia.nvml import NvmlUnavailable, probe_nvml, theoretical_bandwidth_gbps
from velollm_nvidia.smi import FULL_FIELDS, parse_smi_csv, probe_smi

from velollm_core.contract.probing.tools import ProbeError

MIB = 2**20


def captured(tool_outputs: Path, name: str) -> str:
    return (tool_outputs / "nvidia-smi-csv" / name).read_text()


# --- nvidia-smi CSV -------------------------------------------------------------------------------


def test_h100_with_mig_from_a_212_column_query(tool_outputs):
    (h100,) = parse_smi_csv(captured(tool_outputs, "nvexporter_h100-80gb-hbm3-mig_590.48.01.csv"))
    assert h100.name == "NVIDIA H100 80GB HBM3"
    assert h100.memory_total_bytes == 81559 * MIB  # "81559 MiB": units inside values
    assert h100.memory_free_bytes == 81022 * MIB
    assert h100.memory_used_bytes == 59 * MIB
    assert h100.driver_version == "590.48.01"
    assert h100.pci_bus_id == "0000:00:09.0"  # 8-digit domain cut to 4
    assert h100.compute_capability == "9.0"
    assert h100.power_limit_w == 700.0
    assert h100.memory_max_clock_mhz == 2619.0
    assert h100.mig_enabled is True
    assert h100.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert h100.index == 0
    assert h100.source == "nvidia-smi"


def test_l40s_and_windows_rtx_2080_super(tool_outputs):
    (l40s,) = parse_smi_csv(captured(tool_outputs, "nvexporter_l40s_595.80.csv"))
    assert (l40s.name, l40s.memory_total_bytes, l40s.compute_capability) == (
        "NVIDIA L40S",
        46068 * MIB,
        "8.9",
    )
    assert l40s.pci_bus_id == "0000:01:00.0"
    (rtx,) = parse_smi_csv(captured(tool_outputs, "nvexporter_windows_rtx-2080-super_591.86.csv"))
    assert rtx.name == "NVIDIA GeForce RTX 2080 SUPER"
    assert rtx.pci_bus_id == "0000:0c:00.0"
    assert rtx.memory_total_bytes == 8192 * MIB
    assert rtx.driver_version == "591.86"
    assert rtx.mig_enabled is None  # "[N/A]" on a GeForce


def test_nounits_header_and_multi_gpu():
    text = (
        "index, name, pci.bus_id, memory.total [MiB], memory.free [MiB], power.limit [W], compute_cap\n"
        "0, NVIDIA A100-SXM4-80GB, 00000000:07:00.0, 81920, 81000, 400.00, 8.0\n"
        "1, NVIDIA A100-SXM4-80GB, 00000000:0F:00.0, 81920, [N/A], [Not Supported], 8.0\n"
    )
    first, second = parse_smi_csv(text)
    assert (first.index, first.memory_total_bytes, first.power_limit_w) == (0, 81920 * MIB, 400.0)
    assert second.pci_bus_id == "0000:0f:00.0"
    assert second.memory_free_bytes is None and second.power_limit_w is None


def test_noheader_output_needs_the_field_list():
    row = "0, Tesla T4, GPU-1234, 00000000:3B:00.0, 15360, 15000, 360, 535.104.05, 7.5, 70.00, 5001\n"
    (t4,) = parse_smi_csv(row, FULL_FIELDS)
    assert (t4.name, t4.compute_capability, t4.memory_used_bytes) == ("Tesla T4", "7.5", 360 * MIB)
    with pytest.raises(ProbeError):
        parse_smi_csv(row)


def test_deprecated_and_placeholder_values_become_none():
    text = (
        "name, memory.total [MiB], driver_version, compute_cap, clocks.max.memory [MHz]\n"
        "Quadro, [Requested functionality has been deprecated], [Unknown Error], [N/A], N/A\n"
    )
    (quadro,) = parse_smi_csv(text)
    assert quadro.name == "Quadro"
    assert quadro.memory_total_bytes is None
    assert quadro.driver_version is None and quadro.compute_capability is None
    assert quadro.memory_max_clock_mhz is None


def test_repeated_bus_id_rows_and_short_rows_are_dropped():
    text = (
        "index, name, pci.bus_id, memory.total [MiB]\n"
        "0, NVIDIA A100, 00000000:07:00.0, 81920 MiB\n"
        "0, NVIDIA A100, 00000000:07:00.0, 10240 MiB\n"  # a MIG slice of the same GPU
        "1, truncated\n"
        "\n"
    )
    (a100,) = parse_smi_csv(text)
    assert a100.memory_total_bytes == 81920 * MIB


@pytest.mark.parametrize(
    "garbage", ["NVIDIA-SMI has failed because it couldn't communicate", "\x00\x01binary"]
)
def test_garbage_raises_probe_error(garbage):
    with pytest.raises(ProbeError):
        parse_smi_csv(garbage)


def test_empty_output_is_no_gpu():
    assert parse_smi_csv("") == []
    assert parse_smi_csv("name, memory.total [MiB]\n") == []


# --- bandwidth ------------------------------------------------------------------------------------


def test_bandwidth_matches_data_sheets():
    assert theoretical_bandwidth_gbps(5120, 2619) == pytest.approx(3352.3, abs=0.1)  # H100 SXM HBM3
    assert theoretical_bandwidth_gbps(384, 9001) == pytest.approx(864.0, abs=0.2)  # L40S GDDR6
    assert theoretical_bandwidth_gbps(256, 5001) == pytest.approx(320.0, abs=0.2)  # T4
    assert theoretical_bandwidth_gbps(None, 2619) is None
    assert theoretical_bandwidth_gbps(5120, 0) is None


# --- NVML through a fake pynvml ---------------------------------------------------------------------


def fake_pynvml(devices: list[dict], init_error: str | None = None) -> types.ModuleType:
    """A module with pynvml's names; a device value that is an exception name raises that NVMLError."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    errors = {
        name: type(name, (NVMLError,), {})
        for name in (
            "NVMLError_LibraryNotFound",
            "NVMLError_DriverNotLoaded",
            "NVMLError_NotSupported",
            "NVMLError_NoPermission",
            "NVMLError_GpuIsLost",
        )
    }
    module.NVMLError = NVMLError
    for name, cls in errors.items():
        setattr(module, name, cls)
    module.NVML_CLOCK_MEM = 2
    module.calls = []

    def init():
        module.calls.append("init")
        if init_error:
            raise errors[init_error]("init failed")

    def answer(key):
        def call(handle, *args):
            value = devices[handle][key]
            if isinstance(value, str) and value.startswith("NVMLError_"):
                raise errors[value](value)
            return value

        return call

    def handle_by_index(index):
        if devices[index].get("lost"):
            raise errors["NVMLError_GpuIsLost"]("GPU is lost")
        return index

    module.nvmlInit = init
    module.nvmlShutdown = lambda: module.calls.append("shutdown")
    module.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    module.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12040
    module.nvmlDeviceGetCount = lambda: len(devices)
    module.nvmlDeviceGetHandleByIndex = handle_by_index
    for function, key in {
        "nvmlDeviceGetName": "name",
        "nvmlDeviceGetUUID": "uuid",
        "nvmlDeviceGetPciInfo": "pci",
        "nvmlDeviceGetMemoryInfo": "memory",
        "nvmlDeviceGetCudaComputeCapability": "cc",
        "nvmlDeviceGetMemoryBusWidth": "bus_width",
        "nvmlDeviceGetMaxClockInfo": "mem_clock",
        "nvmlDeviceGetPowerManagementLimit": "power_mw",
        "nvmlDeviceGetMigMode": "mig",
    }.items():
        setattr(module, function, answer(key))
    return module


def h100(bus: str = "00000000:65:00.0") -> dict:
    return {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-6f2e6b0c",
        "pci": types.SimpleNamespace(busId=bus, pciDeviceId=0x233010DE),
        "memory": types.SimpleNamespace(total=85520809984, free=84950384640, used=570425344),
        "cc": (9, 0),
        "bus_width": 5120,
        "mem_clock": 2619,
        "power_mw": 700000,
        "mig": [0, 0],
    }


def test_nvml_reads_every_field():
    module = fake_pynvml([h100()])
    (record,) = probe_nvml(module, warn=pytest.fail)
    assert record.name == "NVIDIA H100 80GB HBM3"
    assert record.pci_bus_id == "0000:65:00.0"
    assert record.pci_device_id == "0x2330"
    assert record.memory_total_bytes == 85520809984 and record.memory_free_bytes == 84950384640
    assert (record.driver_version, record.cuda_driver_version) == ("550.54.15", "12.4")
    assert record.compute_capability == "9.0"
    assert record.bandwidth_gbps == pytest.approx(3352.3, abs=0.1)
    assert record.power_limit_w == 700.0
    assert record.mig_enabled is False
    assert record.source == "nvml"
    assert module.calls == ["init", "shutdown"]


def test_nvml_errors_on_single_calls_leave_those_fields_unknown():
    geforce = h100() | {
        "name": b"NVIDIA GeForce RTX 4090",  # old nvidia-ml-py returned bytes
        "power_mw": "NVMLError_NoPermission",
        "bus_width": "NVMLError_NotSupported",
        "mig": "NVMLError_NotSupported",
        "cc": "NVMLError_NotSupported",
    }
    (record,) = probe_nvml(fake_pynvml([geforce]), warn=pytest.fail)
    assert record.name == "NVIDIA GeForce RTX 4090"
    assert record.power_limit_w is None and record.bandwidth_gbps is None
    assert record.mig_enabled is None and record.compute_capability is None
    assert record.memory_total_bytes == 85520809984


def test_a_lost_gpu_is_reported_and_the_others_kept():
    messages: list[str] = []
    records = probe_nvml(
        fake_pynvml([h100("0000:07:00.0"), {"lost": True}, h100("0000:0f:00.0")]), messages.append
    )
    assert [r.index for r in records] == [0, 2]
    assert messages == ["NVML could not open GPU 1: GPU is lost"]


@pytest.mark.parametrize(
    ("error", "absent"), [("NVMLError_LibraryNotFound", True), ("NVMLError_NoPermission", False)]
)
def test_nvml_init_failure(error, absent):
    module = fake_pynvml([], init_error=error)
    with pytest.raises(NvmlUnavailable) as caught:
        probe_nvml(module, warn=pytest.fail)
    assert caught.value.absent is absent
    assert "shutdown" not in module.calls


# --- the plugin: NVML, then nvidia-smi ------------------------------------------------------------


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="NVMLError_LibraryNotFound"))


def test_plugin_prefers_nvml(monkeypatch, fake_tools):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([h100()]))
    smi_calls = fake_tools("nvidia-smi", "should not run")
    (record,) = plugin.detect_gpu(warn=pytest.fail)
    assert record.source == "nvml"
    assert smi_calls.read_text() == ""


def test_no_nvidia_anywhere_is_silent(no_nvml, fake_tools):
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append, hardware_seen=lambda: False) == []
    assert messages == []


def test_missing_tools_warn_when_a_gpu_is_on_the_bus(no_nvml, fake_tools):
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append, hardware_seen=lambda: True) == []
    assert len(messages) == 1
    assert "nvidia-smi is not on PATH" in messages[0] and "NVML could not start" in messages[0]


def test_missing_pynvml_falls_back_to_nvidia_smi(monkeypatch, fake_tools, tool_outputs):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # "import pynvml" raises ImportError
    fake_tools("nvidia-smi", captured(tool_outputs, "nvexporter_l40s_595.80.csv"))
    messages: list[str] = []
    (record,) = plugin.detect_nvidia_gpus(messages.append)
    assert (record.name, record.source) == ("NVIDIA L40S", "nvidia-smi")
    assert messages == []


def test_nvidia_smi_retries_without_fields_an_old_driver_rejects(no_nvml, fake_tools):
    old_driver_csv = (
        "index, name, uuid, pci.bus_id, memory.total [MiB], memory.free [MiB], memory.used [MiB], "
        "driver_version, power.limit [W], clocks.max.memory [MHz]\n"
        "0, Tesla P100-PCIE-16GB, GPU-abc, 00000000:04:00.0, 16280, 16000, 280, 470.82.01, 250.00, 715\n"
    )
    calls = fake_tools(
        "nvidia-smi",
        old_driver_csv,
        rules=[("compute_cap", "", 2, 'Field "compute_cap" is not a valid field to query.\n', 0)],
    )
    (record,) = plugin.detect_nvidia_gpus(pytest.fail)
    assert record.name == "Tesla P100-PCIE-16GB"
    assert record.compute_capability is None
    assert record.driver_version == "470.82.01"
    queries = calls.read_text().splitlines()
    assert len(queries) == 2 and "compute_cap" in queries[0] and "compute_cap" not in queries[1]


def test_nvidia_smi_failing_without_field_error_is_not_retried(no_nvml, fake_tools):
    calls = fake_tools(
        "nvidia-smi", exit_code=9, stderr="NVIDIA-SMI has failed because it couldn't communicate\n"
    )
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append) == []
    assert len(calls.read_text().splitlines()) == 1
    assert messages == [
        "nvidia-smi exited with code 9: NVIDIA-SMI has failed because it couldn't communicate"
    ]


def test_nvidia_smi_timing_out_becomes_a_warning(no_nvml, fake_tools):
    fake_tools("nvidia-smi", "never printed", sleep_s=30)
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append, timeout=0.5) == []
    assert messages == ["nvidia-smi did not answer within 0.5 s"]


def test_nvidia_smi_garbage_becomes_a_warning(no_nvml, fake_tools):
    fake_tools("nvidia-smi", "Segmentation fault\n")
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append) == []
    assert len(messages) == 1 and "no CSV header" in messages[0]


def test_probe_smi_uses_the_header(fake_tools, tool_outputs):
    calls = fake_tools("nvidia-smi", captured(tool_outputs, "nvexporter_h100-80gb-hbm3-mig_590.48.01.csv"))
    (record,) = probe_smi()
    assert record.memory_total_bytes == 81559 * MIB
    assert "--format=csv,nounits" in calls.read_text()


def test_nvml_failure_with_a_gpu_falls_back_and_says_so(monkeypatch, fake_tools, tool_outputs):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="NVMLError_NoPermission"))
    fake_tools("nvidia-smi", captured(tool_outputs, "nvexporter_l40s_595.80.csv"))
    messages: list[str] = []
    (record,) = plugin.detect_nvidia_gpus(messages.append, hardware_seen=lambda: False)
    assert record.source == "nvidia-smi"
    assert messages == ["NVML could not start: init failed; falling back to nvidia-smi"]


def test_nvml_failure_without_nvidia_smi_warns_even_without_pci_evidence(monkeypatch, fake_tools):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="NVMLError_NoPermission"))
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append, hardware_seen=lambda: False) == []
    assert messages == [
        "an NVIDIA GPU seems present but NVML could not start: init failed, and nvidia-smi is not on PATH"
    ]
