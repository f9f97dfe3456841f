"""The Intel plugin's probe: xpu-smi's real outputs (Arc B580, Data Center GPU Max 0x020a), fakes of
the tool, the merge with the generic PCI record, and ``velollm detect``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from velollm_intel.plugin import (
    gpu_from_xpu,
    parse_xpu_device_json,
    parse_xpu_device_text,
    parse_xpu_discovery_json,
    parse_xpu_table,
    probe_xpu,
)

from velollm_core.cli import cli
from velollm_core.contract.probing.pci import probe_pci_gpus
from velollm_core.contract.probing.tools import ProbeError
from velollm_core.hardware.report import merge_gpus

MIB = 2**20
B580_D0 = "xpumanager-readme_arc-b580_discovery-d0.txt"
PVC_LIST_JSON = "xpumanager-userguide_pvc-0x020a_discovery-j.json"
PVC_LIST_TEXT = "xpumanager-userguide_pvc-0x020a_discovery.txt"
PVC_DETAIL_TEXT = "xpumanager-userguide_pvc-0x020a_discovery-d.txt"


def read(tool_outputs: Path, name: str) -> str:
    return (tool_outputs / "xpu-smi" / name).read_text()


# --- parsers over the real outputs ----------------------------------------------------------------


def test_discovery_json_lists_the_pvc(tool_outputs):
    (device,) = parse_xpu_discovery_json(read(tool_outputs, PVC_LIST_JSON))
    assert device["device_id"] == 0
    assert device["device_name"] == "Intel(R) Graphics [0x020a]"
    assert device["pci_bdf_address"] == "0000:4d:00.0"
    gpu = gpu_from_xpu(device)
    assert gpu.vendor == "intel" and gpu.source == "xpu-smi"
    assert gpu.index == 0
    assert gpu.pci_bus_id == "0000:4d:00.0"
    assert gpu.pci_device_id == "0x020a"  # xpu-smi prints "0x20a"; sysfs and the PCI probe "0x020a"
    assert gpu.uuid == "00000000-0000-0000-0000-020a00008086"
    assert gpu.memory_total_bytes is None  # the list has no memory: that is discovery -d's


def test_discovery_table_says_what_the_json_says(tool_outputs):
    (row,) = parse_xpu_table(read(tool_outputs, PVC_LIST_TEXT))
    (device,) = parse_xpu_discovery_json(read(tool_outputs, PVC_LIST_JSON))
    assert row["device_id"] == "0"
    for key in ("device_name", "pci_bdf_address", "uuid", "vendor_name"):
        assert row[key] == device[key], key
    assert row["device_function_type"] == "physical"
    assert gpu_from_xpu(row).to_dict() == gpu_from_xpu(device).to_dict() | {"pci_device_id": None}


def test_arc_b580_details_from_the_table(tool_outputs):
    props = parse_xpu_device_text(read(tool_outputs, B580_D0))
    assert props["memory_physical_size"] == "12216.00 MiB"
    assert props["uuid"] == "00000000-0000-0003-0000-0000e20b8086"  # labelled "SOC UUID" here
    assert props["pcie_max_bandwidth"] == "15.75 GB/s"
    assert props["gfx_firmware_version"] == ""  # "GFX Firmware Version:" with nothing after it
    gpu = gpu_from_xpu(props)
    assert gpu.name == "Intel(R) Arc(TM) B580 Graphics"
    assert gpu.memory_total_bytes == 12216 * MIB == 12809404416
    assert gpu.driver_version == "9FF4708BCC22C0EE6FD801A"
    assert gpu.pci_bus_id == "0000:03:00.0"
    assert gpu.pci_device_id == "0xe20b"
    assert gpu.index == 0
    # No memory clock in xpu-smi, and its "Memory Bus Width: 384" is twice the B580's 192-bit bus.
    assert props["memory_bus_width"] == "384"
    assert gpu.bandwidth_gbps is None and gpu.memory_bus_width_bits is None


def test_pvc_details_from_the_table(tool_outputs):
    props = parse_xpu_device_text(read(tool_outputs, PVC_DETAIL_TEXT))
    assert props["pci_slot"] == "Riser 1, slot 1"
    assert props["max_tx_rx_speed_per_xe_link_port"] == "51879.88 MiB/s"
    assert props["number_of_tiles"] == "2"
    gpu = gpu_from_xpu(props)
    assert gpu.name == "Intel(R) Graphics [0x020a]"
    assert gpu.memory_total_bytes == 32768 * MIB == 32 * 2**30
    assert gpu.driver_version == "16929133"
    assert gpu.pci_bus_id == "0000:4d:00.0"
    assert gpu.uuid == "00000000-0000-0000-0000-020a00008086"
    assert gpu.pci_device_id is None  # this older xpu-smi prints no "PCI Device ID" row


def test_a_wrapped_value_is_joined_back(tool_outputs):
    """xpu-smi cuts a value too long for its cell after a space and indents the rest by two."""
    text = read(tool_outputs, B580_D0).replace(
        "| Device Name: Intel(R) Arc(TM) B580 Graphics                                          |",
        "| Device Name: Intel(R) Arc(TM)                                                        |\n"
        "|           |   B580 Graphics                                                        |",
    )
    assert text.count("\n") == read(tool_outputs, B580_D0).count("\n") + 1
    props = parse_xpu_device_text(text)
    assert props["device_name"] == "Intel(R) Arc(TM) B580 Graphics"
    assert props["device_state"] == "normal"  # the next row is still its own


def test_device_json_as_xpu_smi_writes_it(tool_outputs):
    """No capture of ``discovery -d 0 -j`` exists: this is the B580 table's facts under the keys
    xpu-smi's gatherDeviceProperties writes (all values strings, sizes in bytes)."""
    text = json.dumps(
        {
            "device_id": "0",
            "device_name": "Intel(R) Arc(TM) B580 Graphics",
            "pci_bdf_address": "0000:03:00.0",
            "pci_vendor_id": "0x8086",
            "pci_device_id": "0xe20b",
            "uuid": "00000000-0000-0003-0000-0000e20b8086",
            "driver_version": "",
            "kernel_version": "6.19.0-rc6",
            "memory_physical_size": "12216.00 MiB",
            "memory_physical_size_byte": "12809404416",
            "memory_free_size_byte": "12000000000",
            "memory_bus_width": "384",
        }
    )
    gpu = gpu_from_xpu(parse_xpu_device_json(text))
    table_gpu = gpu_from_xpu(parse_xpu_device_text(read(tool_outputs, B580_D0)))
    assert gpu.memory_total_bytes == table_gpu.memory_total_bytes == 12809404416
    assert gpu.memory_free_bytes == 12000000000
    assert gpu.memory_used_bytes == 12809404416 - 12000000000
    assert gpu.driver_version == "6.19.0-rc6 (in-kernel)"  # no driver version: the kernel's
    assert gpu.pci_vendor_id == "0x8086"
    assert (gpu.name, gpu.pci_bus_id, gpu.index) == (table_gpu.name, table_gpu.pci_bus_id, 0)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_xpu_discovery_json, "Segmentation fault\n", "printed no JSON"),
        (parse_xpu_discovery_json, '{"device_list": [', "printed invalid JSON"),
        (parse_xpu_discovery_json, '{"errno": 3, "error": "Level Zero Initialization Error"}', "Level Zero"),
        (parse_xpu_discovery_json, "{}", "no device_list"),
        (parse_xpu_device_json, '{"device_list": []}', "not one device"),
        (parse_xpu_device_text, "Error: device not found\n", "no device table"),
        (parse_xpu_table, "", "no device table"),
    ],
)
def test_garbage_is_a_probe_error(parse, text, message):
    with pytest.raises(ProbeError, match=message):
        parse(text)


def test_an_empty_device_list_is_no_gpu():
    assert parse_xpu_discovery_json('{"device_list": []}') == []


# --- the probe with a fake xpu-smi ----------------------------------------------------------------


def pvc_tool(fake_tools, tool_outputs) -> Path:
    """xpu-smi answering the PVC captures; ``-d 0 -j`` rejected, so the table form must be read."""
    rules = [
        ("-d 0 -j", "", 2, "The following argument was not expected: -j\n", 0),
        ("discovery -d 0", read(tool_outputs, PVC_DETAIL_TEXT), 0, "", 0),
        ("discovery -j", read(tool_outputs, PVC_LIST_JSON), 0, "", 0),
    ]
    return fake_tools("xpu-smi", "", exit_code=9, stderr="unexpected call\n", rules=rules)


def test_probe_reads_the_list_then_each_device_falling_back_to_the_table(fake_tools, tool_outputs):
    calls = pvc_tool(fake_tools, tool_outputs)
    messages: list[str] = []
    (gpu,) = probe_xpu(messages.append, timeout=30)
    assert messages == []
    assert calls.read_text().splitlines() == ["discovery -j", "discovery -d 0 -j", "discovery -d 0"]
    assert gpu.name == "Intel(R) Graphics [0x020a]"
    assert gpu.memory_total_bytes == 32768 * MIB
    assert gpu.driver_version == "16929133"
    assert gpu.pci_bus_id == "0000:4d:00.0"
    assert gpu.pci_device_id == "0x020a"  # from the list: the older table lacks it


def test_absent_xpu_smi_is_silent(fake_tools):
    messages: list[str] = []
    assert probe_xpu(messages.append) == []
    assert messages == []


def test_failing_xpu_smi_is_one_warning(fake_tools):
    calls = fake_tools("xpu-smi", "", exit_code=1, stderr="Error: Level Zero Initialization Error\n")
    messages: list[str] = []
    assert probe_xpu(messages.append, timeout=30) == []
    assert messages == ["xpu-smi exited with code 1: Error: Level Zero Initialization Error"]
    assert calls.read_text().splitlines() == ["discovery -j", "discovery"]  # the table form tried too


def test_garbage_from_xpu_smi_is_one_warning(fake_tools):
    fake_tools("xpu-smi", "xpu-smi: symbol lookup error: libze_loader.so.1\n")
    messages: list[str] = []
    assert probe_xpu(messages.append, timeout=30) == []
    assert len(messages) == 1 and messages[0].startswith("xpu-smi printed no JSON")


def test_hung_xpu_smi_is_asked_once(fake_tools):
    calls = fake_tools("xpu-smi", "{}", sleep_s=30)
    messages: list[str] = []
    assert probe_xpu(messages.append, timeout=0.5) == []
    assert messages == ["xpu-smi did not answer within 0.5 s"]
    assert calls.read_text().splitlines() == ["discovery -j"]


def test_failing_details_keep_the_listed_gpu_and_warn_once(fake_tools, tool_outputs):
    fake_tools(
        "xpu-smi",
        "",
        exit_code=1,
        stderr="Error: device 0 is busy\n",
        rules=[("discovery -j", read(tool_outputs, PVC_LIST_JSON), 0, "", 0)],
    )
    messages: list[str] = []
    (gpu,) = probe_xpu(messages.append, timeout=30)
    assert gpu.name == "Intel(R) Graphics [0x020a]" and gpu.pci_bus_id == "0000:4d:00.0"
    assert gpu.memory_total_bytes is None
    assert messages == [
        "xpu-smi exited with code 1: Error: device 0 is busy (Intel GPU memory and driver unknown)"
    ]


# --- merge with the PCI probe ---------------------------------------------------------------------


def test_xpu_record_replaces_the_pci_record_of_the_same_card(tmp_path, tool_outputs):
    device = tmp_path / "sys" / "bus" / "pci" / "devices" / "0000:03:00.0"
    device.mkdir(parents=True)
    for name, content in {"class": "0x030000", "vendor": "0x8086", "device": "0xe20b"}.items():
        (device / name).write_text(f"{content}\n")
    (generic,) = probe_pci_gpus(tmp_path / "sys")
    assert (generic.source, generic.name) == ("pci", "Intel Arc B580")
    b580 = gpu_from_xpu(parse_xpu_device_text(read(tool_outputs, B580_D0)))
    for records in ([generic, b580], [b580, generic]):
        (merged,) = merge_gpus(records)
        assert merged.source == "xpu-smi"
        assert merged.name == "Intel(R) Arc(TM) B580 Graphics"
        assert merged.memory_total_bytes == 12216 * MIB
        assert merged.pci_bus_id == "0000:03:00.0"
        assert merged.pci_vendor_id == "0x8086"  # a gap filled from sysfs


# --- velollm detect -------------------------------------------------------------------------------


def intel_gpus(document: dict) -> list[dict]:
    return [gpu for gpu in document["gpus"] if gpu["source"] == "xpu-smi"]


def test_velollm_detect_lists_the_intel_gpu(fake_tools, tool_outputs):
    """The installed entry point, xpu-smi faked with the real PVC captures."""
    pvc_tool(fake_tools, tool_outputs)
    script = Path(sys.executable).parent / "velollm"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "velollm_core"]
    proc = subprocess.run(
        [*command, "detect", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    (gpu,) = intel_gpus(document)
    assert gpu["vendor"] == "intel"
    assert gpu["name"] == "Intel(R) Graphics [0x020a]"
    assert gpu["memory_total_bytes"] == 34359738368
    assert gpu["pci_bus_id"] == "0000:4d:00.0"
    assert gpu["driver_version"] == "16929133"
    assert not [w for w in document["warnings"] if w.startswith("xpu")]


def test_detect_without_xpu_smi_has_no_xpu_warning(fake_tools):
    result = CliRunner().invoke(cli, ["detect", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert intel_gpus(document) == []
    assert not [w for w in document["warnings"] if "xpu" in w]


def test_detect_with_failing_xpu_smi_warns_once_and_succeeds(fake_tools):
    fake_tools("xpu-smi", "", exit_code=1, stderr="Error: Level Zero Initialization Error\n")
    result = CliRunner().invoke(cli, ["detect", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert intel_gpus(document) == []
    xpu_warnings = [w for w in document["warnings"] if "xpu" in w]
    # The warning is labelled with the plugin's entry-point name, as every vendor plugin's is.
    assert xpu_warnings == ["intel: xpu-smi exited with code 1: Error: Level Zero Initialization Error"]


def test_intel_is_a_detect_gpu_plugin_of_its_own_distribution():
    from velollm_core.contract.plugins import describe_plugins

    plugin = next(p for p in describe_plugins() if p["name"] == "intel")
    assert plugin["builtin"] is False and plugin["hooks"] == ["detect_gpu"]
    assert plugin["distribution"] == "velollm-intel"
