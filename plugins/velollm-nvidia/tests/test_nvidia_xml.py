"""``nvidia-smi -q -x``: real XML reports, and the fallback from a refused or unreadable CSV query."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from velollm_nvidia import plugin
from velollm_nvidia.smi import probe_smi
from velollm_nvidia.smi_xml import parse_smi_xml

from velollm_core.contract.probing.tools import ProbeError

MIB = 2**20
A100_MIG = "telegraf_a100-sxm4-80gb-mig_v12.xml"
DUAL_A5000 = "telegraf_dual-rtx-a5000_v13.xml"
GTX_1660_TI = "telegraf_gtx-1660-ti_graphics-device.xml"
TESLA_T4 = "telegraf_tesla-t4_v11.xml"
QUERY_NOT_RECOGNIZED = "ERROR: Option --query-gpu is not recognized. Please run 'nvidia-smi -h'.\n"


def captured(tool_outputs: Path, name: str) -> str:
    return (tool_outputs / "nvidia-smi-xml" / name).read_text()


# --- parse_smi_xml on real reports ----------------------------------------------------------------


def test_a100_with_mig_is_one_gpu_with_its_whole_memory(tool_outputs):
    # Four <mig_device> entries with 19968 MiB each come before the GPU's own fb_memory_usage.
    (a100,) = parse_smi_xml(captured(tool_outputs, A100_MIG))
    assert a100.name == "NVIDIA A100-SXM4-80GB"
    assert a100.memory_total_bytes == 81920 * MIB
    assert a100.memory_free_bytes == 80999 * MIB
    assert a100.memory_used_bytes == 50 * MIB
    assert a100.mig_enabled is True
    assert (a100.driver_version, a100.cuda_driver_version) == ("535.54.03", "12.2")
    assert a100.pci_bus_id == "0000:01:00.0"  # "00000000:01:00.0": 8-digit domain cut to 4
    assert (a100.pci_vendor_id, a100.pci_device_id) == ("0x10de", "0x20b2")  # "20B210DE"
    assert a100.uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert a100.power_limit_w == 500.0  # gpu_power_readings/current_power_limit (schema v12)
    assert a100.memory_max_clock_mhz == 1593.0
    assert a100.index == 0
    assert a100.source == "nvidia-smi"
    # The XML has neither bus width nor compute capability: left unknown, as with the CSV query.
    assert a100.bandwidth_gbps is None and a100.memory_bus_width_bits is None
    assert a100.compute_capability is None


def test_dual_rtx_a5000_v13(tool_outputs):
    gpus = parse_smi_xml(captured(tool_outputs, DUAL_A5000))
    assert len(gpus) == 2
    first, second = gpus
    assert [g.name for g in gpus] == ["NVIDIA RTX A5000", "NVIDIA RTX A5000"]
    assert [g.pci_bus_id for g in gpus] == ["0000:81:00.0", "0000:c1:00.0"]  # "C1" lowercased
    # Indexes follow the listing order; <minor_number> is 1 then 0 here and must not be taken for them.
    assert [g.index for g in gpus] == [0, 1]
    assert [g.uuid for g in gpus] == [
        "GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
        "GPU-12345678-aaaa-bbbb-cccc-0123456789cd",
    ]
    assert first.memory_total_bytes == second.memory_total_bytes == 24564 * MIB
    assert (first.memory_free_bytes, second.memory_free_bytes) == (1678 * MIB, 6862 * MIB)
    assert (first.memory_used_bytes, second.memory_used_bytes) == (22437 * MIB, 17253 * MIB)
    assert first.driver_version == "590.44.01" and first.cuda_driver_version == "13.1"
    assert first.power_limit_w == 230.0
    # max_clocks/mem_clock, not applications_clocks, which v13 reports as "deprecated".
    assert first.memory_max_clock_mhz == 8001.0
    assert first.mig_enabled is None  # <current_mig>N/A</current_mig> on a workstation card
    assert first.pci_device_id == "0x2231"


def test_gtx_1660_ti_old_schema(tool_outputs):
    # Driver 418: no DOCTYPE, no <mig_mode>, power under power_readings/power_limit, and the name
    # the driver gave a GPU it did not know yet.
    (gtx,) = parse_smi_xml(captured(tool_outputs, GTX_1660_TI))
    assert gtx.name == "Graphics Device"
    assert gtx.memory_total_bytes == gtx.memory_free_bytes == 5912 * MIB
    assert gtx.memory_used_bytes == 0
    assert (gtx.driver_version, gtx.cuda_driver_version) == ("418.43", "10.1")
    assert gtx.pci_bus_id == "0000:43:00.0"
    assert gtx.pci_device_id == "0x2184"
    assert gtx.power_limit_w == 130.0
    assert gtx.memory_max_clock_mhz == 4001.0
    assert gtx.mig_enabled is None


def test_tesla_t4_v11(tool_outputs):
    (t4,) = parse_smi_xml(captured(tool_outputs, TESLA_T4))
    assert t4.name == "Tesla T4"
    assert t4.memory_total_bytes == 15360 * MIB
    assert t4.memory_free_bytes == 13939 * MIB
    assert (t4.driver_version, t4.cuda_driver_version) == ("515.105.01", "11.7")
    assert t4.pci_bus_id == "0000:00:1e.0"
    assert t4.pci_device_id == "0x1eb8"
    assert t4.power_limit_w == 70.0
    assert t4.memory_max_clock_mhz == 5001.0
    assert t4.mig_enabled is None


# --- placeholders and malformed reports -----------------------------------------------------------


@pytest.mark.parametrize("placeholder", ["N/A", "[N/A]", "[Not Supported]", ""])
def test_placeholders_and_missing_elements_become_none(placeholder):
    text = f"""<?xml version="1.0" ?>
<nvidia_smi_log>
    <driver_version>{placeholder}</driver_version>
    <gpu id="00000000:0F:00.0">
        <product_name>NVIDIA A100-SXM4-80GB</product_name>
        <fb_memory_usage>
            <total>81920 MiB</total>
            <free>{placeholder}</free>
        </fb_memory_usage>
        <gpu_power_readings><current_power_limit>{placeholder}</current_power_limit></gpu_power_readings>
        <max_clocks><mem_clock>{placeholder}</mem_clock></max_clocks>
        <mig_mode><current_mig>{placeholder}</current_mig></mig_mode>
    </gpu>
</nvidia_smi_log>
"""
    (gpu,) = parse_smi_xml(text)
    assert gpu.memory_total_bytes == 81920 * MIB
    assert gpu.memory_free_bytes is None and gpu.memory_used_bytes is None  # <used> is missing
    assert gpu.driver_version is None and gpu.cuda_driver_version is None
    assert gpu.power_limit_w is None and gpu.memory_max_clock_mhz is None
    assert gpu.mig_enabled is None and gpu.uuid is None
    assert gpu.pci_bus_id == "0000:0f:00.0"  # no <pci>: the id attribute of <gpu>


@pytest.mark.parametrize(
    "garbage",
    ["", "Segmentation fault\n", "<nvidia_smi_log><gpu>", '<?xml version="1.0" ?>\n<html></html>'],
)
def test_unreadable_xml_raises_probe_error(garbage):
    with pytest.raises(ProbeError, match="nvidia-smi -q -x"):
        parse_smi_xml(garbage)


def test_report_without_gpus_is_no_gpu():
    assert parse_smi_xml("<nvidia_smi_log><attached_gpus>0</attached_gpus></nvidia_smi_log>") == []


# --- the fallback, end to end through a fake nvidia-smi -------------------------------------------


@pytest.fixture
def no_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # "import pynvml" raises ImportError


def test_unrecognized_query_falls_back_to_xml(no_pynvml, fake_tools, tool_outputs):
    calls = fake_tools(
        "nvidia-smi",
        captured(tool_outputs, DUAL_A5000),
        rules=[("--query-gpu", "", 2, QUERY_NOT_RECOGNIZED, 0)],
    )
    messages: list[str] = []
    gpus = plugin.detect_nvidia_gpus(messages.append)
    assert [(g.name, g.pci_bus_id, g.source) for g in gpus] == [
        ("NVIDIA RTX A5000", "0000:81:00.0", "nvidia-smi"),
        ("NVIDIA RTX A5000", "0000:c1:00.0", "nvidia-smi"),
    ]
    assert messages == []
    queries = calls.read_text().splitlines()
    # Not a field error, so the smaller field sets are not tried before the XML.
    assert len(queries) == 2 and queries[0].startswith("--query-gpu=") and queries[1] == "-q -x"


def test_fields_refused_in_every_set_fall_back_to_xml(fake_tools, tool_outputs):
    calls = fake_tools(
        "nvidia-smi",
        captured(tool_outputs, TESLA_T4),
        rules=[("--query-gpu", "", 2, 'Field "memory.used" is not a valid field to query.\n', 0)],
    )
    (t4,) = probe_smi()
    assert (t4.name, t4.memory_total_bytes, t4.driver_version) == ("Tesla T4", 15360 * MIB, "515.105.01")
    queries = calls.read_text().splitlines()
    assert len(queries) == 4 and queries[-1] == "-q -x"
    assert "compute_cap" in queries[0] and "compute_cap" not in queries[1]


def test_unreadable_csv_falls_back_to_xml(fake_tools, tool_outputs):
    calls = fake_tools(
        "nvidia-smi",
        captured(tool_outputs, A100_MIG),
        rules=[("--query-gpu", "Segmentation fault\n", 0, "", 0)],
    )
    (a100,) = probe_smi()
    assert (a100.name, a100.memory_total_bytes, a100.mig_enabled) == (
        "NVIDIA A100-SXM4-80GB",
        81920 * MIB,
        True,
    )
    assert calls.read_text().splitlines()[-1] == "-q -x"


def test_both_failing_is_one_warning_naming_both(no_pynvml, fake_tools):
    fake_tools(
        "nvidia-smi",
        rules=[
            ("--query-gpu", "", 2, QUERY_NOT_RECOGNIZED, 0),
            ("-q -x", "", 2, "ERROR: Option -x is not recognized. Please run 'nvidia-smi -h'.\n", 0),
        ],
    )
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append) == []
    csv_error = "nvidia-smi exited with code 2: " + QUERY_NOT_RECOGNIZED.strip()
    xml_error = (
        "nvidia-smi exited with code 2: ERROR: Option -x is not recognized. Please run 'nvidia-smi -h'."
    )
    assert messages == [f"{csv_error}; nvidia-smi -q -x failed too: {xml_error}"]


def test_broken_driver_does_not_fall_back(no_pynvml, fake_tools, tool_outputs):
    # A driver that cannot talk to the GPU fails the same way for -q -x: one call, today's warning.
    calls = fake_tools(
        "nvidia-smi",
        captured(tool_outputs, TESLA_T4),
        rules=[("--query-gpu", "", 9, "NVIDIA-SMI has failed because it couldn't communicate\n", 0)],
    )
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append) == []
    assert messages == [
        "nvidia-smi exited with code 9: NVIDIA-SMI has failed because it couldn't communicate"
    ]
    (query,) = calls.read_text().splitlines()
    assert query.startswith("--query-gpu=index,name,uuid,pci.bus_id,")  # no -q -x call after it


def test_h200_driver_580_capture_matches_what_nvml_reported_there():
    # Captured on the H200 this project benchmarks on; NVML there gave the same values.
    text = (Path(__file__).parent / "data" / "velollm_h200_580.159.04_q-x.xml").read_text()
    (h200,) = parse_smi_xml(text)
    assert h200.name == "NVIDIA H200" and h200.memory_total_bytes == 143771 * MIB
    assert h200.driver_version == "580.159.04" and h200.cuda_driver_version == "13.0"
    assert h200.pci_bus_id == "0000:00:06.0" and h200.pci_device_id == "0x2335"
    assert h200.uuid == "GPU-1b6e424a-6032-07ac-1a6b-51ec4ebea5ce"
    assert h200.power_limit_w == 700.0 and h200.memory_max_clock_mhz == 3201.0 and h200.mig_enabled is False
