"""The AMD probe: rocm-smi and amd-smi JSON from real machines, a fake amdsmi, and the fallback chain."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from velollm_amd import plugin
from velollm_amd.amdsmi_api import probe_amdsmi
from velollm_amd.bandwidth import known_bandwidth_gbps
from velollm_amd.parsers import parse_amd_smi_list, parse_amd_smi_static, parse_rocm_smi

from velollm_core.contract.probing.tools import ProbeError

MIB = 2**20
GIB = 2**30


def rocm(tool_outputs: Path, name: str) -> str:
    return (tool_outputs / "rocm-smi" / name).read_text()


def mi210_static(tool_outputs: Path) -> str:
    return (tool_outputs / "amd-smi" / "dme_mi210_static.json").read_text()


# --- rocm-smi -------------------------------------------------------------------------------------


def test_four_mi100_with_bus_ids_and_system_driver(tool_outputs):
    gpus = parse_rocm_smi(rocm(tool_outputs, "telegraf_mi100_rocm602.json"))
    assert [g.pci_bus_id for g in gpus] == ["0000:83:00.0", "0000:a3:00.0", "0000:c3:00.0", "0000:e3:00.0"]
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    first = gpus[0]
    assert first.name == "Arcturus GL-XL [Instinct MI100]"  # "Card series", lower-case s
    assert first.memory_total_bytes == 34342961152
    assert first.memory_free_bytes == 34342961152 - 6750208
    assert first.driver_version == "6.3.6"  # from the "system" key, not a card
    assert first.bandwidth_gbps == 1228.8
    assert first.pci_device_id == "0x738c"
    assert first.uuid == "0x79ccd55167a2124a"
    assert first.source == "rocm-smi"


def test_card_series_capital_s_and_rx_6700_xt_bandwidth(tool_outputs):
    (rx,) = parse_rocm_smi(rocm(tool_outputs, "telegraf_rx6700xt_rocm612.json"))
    assert rx.name == "Navi 22 [Radeon RX 6700/6700 XT / 6800M]"
    assert rx.bandwidth_gbps == 384.0
    assert rx.uuid is None  # "N/A"


def test_vendor_id_in_every_name_field_falls_back_to_the_sku(tool_outputs):
    (rx,) = parse_rocm_smi(rocm(tool_outputs, "telegraf_rx6700xt_rocm430.json"))
    assert "0x1002" not in rx.name
    assert rx.name == "AMD GPU (SKU 67XA6S)"
    assert rx.memory_total_bytes == 12868124672


def test_mi50_and_mi250_dies(tool_outputs):
    (mi50,) = parse_rocm_smi(rocm(tool_outputs, "telegraf_vega-20-WKS-GL-XE.json"))
    assert mi50.name == "Radeon Instinct MI50 32GB"
    assert mi50.driver_version == "5.9.17"
    assert mi50.bandwidth_gbps is None  # not in the table: unknown rather than guessed
    dies = parse_rocm_smi(
        rocm(
            tool_outputs,
            "torchserve_mi250-2gcd_showid-showproductname-showuse-showmemuse-showmeminfo-vram-P.json",
        )
    )
    assert len(dies) == 2
    assert all(d.pci_bus_id is None for d in dies)  # captured without --showbus
    assert dies[0].memory_total_bytes == 64 * GIB - 16 * MIB
    assert dies[0].bandwidth_gbps == 1638.4  # half of the MI250 package's 3276.8


def test_warning_lines_before_the_json_are_skipped(tool_outputs):
    text = "WARNING: AMD GPU device(s) is/are in a low-power state [1]\n" + rocm(
        tool_outputs, "telegraf_rx6700xt_rocm612.json"
    )
    assert len(parse_rocm_smi(text)) == 1


@pytest.mark.parametrize("garbage", ["", "rocm-smi: command failed", "{not json", "[1, 2]"])
def test_rocm_smi_garbage_raises(garbage):
    with pytest.raises(ProbeError):
        parse_rocm_smi(garbage)


def test_rocm_smi_without_cards_is_no_gpu():
    assert parse_rocm_smi('{"system": {"Driver version": "6.3.6"}}') == []


# --- amd-smi --------------------------------------------------------------------------------------


def test_amd_smi_static_mi210(tool_outputs):
    (mi210,) = parse_amd_smi_static(mi210_static(tool_outputs))
    assert mi210.name == "AMD Instinct MI210"
    assert mi210.memory_total_bytes == 65520 * MIB  # "MB" that means MiB
    assert mi210.memory_bus_width_bits == 4096
    assert mi210.bandwidth_gbps == 1638.4  # max_bandwidth is "N/A": from the table
    assert mi210.power_limit_w == 300.0
    assert mi210.driver_version == "6.14.0-24-generic (in-kernel)"
    assert mi210.pci_device_id == "0x740f"
    assert mi210.source == "amd-smi"


def test_amd_smi_bare_list_and_reported_bandwidth(tool_outputs):
    item = json.loads(mi210_static(tool_outputs))["gpu_data"][0]
    item["vram"]["max_bandwidth"] = {"value": 1600, "unit": "GB/s"}
    item["vram"]["size"] = "65520 MB"  # older amd-smi printed strings
    item["bus"]["bdf"] = "0000:C1:00.0"
    item["asic"]["market_name"] = "N/A"
    (gpu,) = parse_amd_smi_static(json.dumps([item]))
    assert gpu.bandwidth_gbps == 1600.0  # the tool's own number beats the table
    assert gpu.memory_total_bytes == 65520 * MIB
    assert gpu.pci_bus_id == "0000:c1:00.0"
    assert gpu.name == "AMD Instinct MI210"  # from the device id when market_name is N/A


def test_amd_smi_list_gives_bus_ids():
    listing = parse_amd_smi_list('{"gpu_data": [{"gpu": 0, "bdf": "0000:C1:00.0", "uuid": "N/A"}]}')
    assert listing == {0: {"bdf": "0000:c1:00.0", "uuid": None}}


@pytest.mark.parametrize("garbage", ["", "Segmentation fault", '{"something": "else"}', "[}"])
def test_amd_smi_garbage_raises(garbage):
    with pytest.raises(ProbeError):
        parse_amd_smi_static(garbage)


def test_bandwidth_table():
    assert known_bandwidth_gbps("AMD Instinct MI300X") == 5300.0
    assert known_bandwidth_gbps("AMD INSTINCT MI250X", 128 * GIB) == 3276.8  # listed as one package
    assert known_bandwidth_gbps("AMD Radeon RX 7900 XTX") == 960.0
    assert known_bandwidth_gbps("AMD Radeon RX 7900 XT") is None
    assert known_bandwidth_gbps("Radeon 780M") is None


# --- amdsmi Python API through a fake module --------------------------------------------------------


def fake_amdsmi(fail_on: set[str] = frozenset(), init_error: bool = False) -> types.ModuleType:
    module = types.ModuleType("amdsmi")

    class AmdSmiException(Exception):
        pass

    module.AmdSmiException = AmdSmiException
    module.AmdSmiMemoryType = types.SimpleNamespace(VRAM=0)
    module.calls = []

    def call(name, value):
        def function(*args):
            if name in fail_on:
                raise AmdSmiException(f"{name}: not supported")
            return value(*args) if callable(value) else value

        return function

    def init():
        module.calls.append("init")
        if init_error:
            raise AmdSmiException("AMDSMI_STATUS_DRIVER_NOT_LOADED")

    module.amdsmi_init = init
    module.amdsmi_shut_down = lambda: module.calls.append("shutdown")
    module.amdsmi_get_processor_handles = lambda: ["h0", "h1"]
    module.amdsmi_get_gpu_asic_info = call(
        "asic", {"market_name": "AMD Instinct MI300X", "device_id": 0x74A1}
    )
    module.amdsmi_get_gpu_device_bdf = call("bdf", lambda h: {"h0": "0000:0C:00.0", "h1": "0000:22:00.0"}[h])
    module.amdsmi_get_gpu_device_uuid = call("uuid", lambda h: f"uuid-{h}")
    module.amdsmi_get_gpu_vram_info = call(
        "vram",
        {"vram_type": "HBM3", "vram_size": 196592, "vram_bit_width": 8192, "vram_max_bandwidth": "N/A"},
    )
    module.amdsmi_get_gpu_driver_info = call("driver", {"driver_name": "amdgpu", "driver_version": "6.10.5"})
    module.amdsmi_get_gpu_memory_total = call("total", lambda h, kind: 196592 * MIB)
    module.amdsmi_get_gpu_memory_usage = call("usage", lambda h, kind: 300 * MIB)
    return module


def test_amdsmi_api_reads_every_gpu():
    module = fake_amdsmi()
    gpus = probe_amdsmi(module, warn=pytest.fail)
    assert [g.pci_bus_id for g in gpus] == ["0000:0c:00.0", "0000:22:00.0"]
    first = gpus[0]
    assert first.name == "AMD Instinct MI300X"
    assert first.pci_device_id == "0x74a1"
    assert first.memory_total_bytes == 196592 * MIB
    assert first.memory_free_bytes == (196592 - 300) * MIB
    assert first.memory_bus_width_bits == 8192
    assert first.driver_version == "6.10.5"
    assert first.bandwidth_gbps == 5300.0
    assert first.source == "amdsmi"
    assert module.calls == ["init", "shutdown"]


def test_amdsmi_calls_that_fail_leave_fields_unknown():
    gpus = probe_amdsmi(fake_amdsmi(fail_on={"total", "usage", "driver", "bdf"}), warn=pytest.fail)
    assert gpus[0].memory_total_bytes == 196592 * MIB  # from vram_info instead
    assert gpus[0].memory_used_bytes is None
    assert gpus[0].driver_version is None and gpus[0].pci_bus_id is None


# --- the plugin's fallback chain ------------------------------------------------------------------


def add_amd_device(
    root: Path, bus_id: str, device: str = "0x740f", total: int = 64 * GIB, used: int = GIB
) -> None:
    path = root / "bus" / "pci" / "devices" / bus_id
    path.mkdir(parents=True)
    for name, value in {
        "class": "0x038000",
        "vendor": "0x1002",
        "device": device,
        "mem_info_vram_total": str(total),
        "mem_info_vram_used": str(used),
    }.items():
        (path / name).write_text(value + "\n")


def test_amdsmi_module_answers_first(fake_tools, tmp_path):
    calls = fake_tools("amd-smi", "should not run")
    gpus = plugin.detect_amd_gpus(pytest.fail, sysfs_root=tmp_path, load_amdsmi=fake_amdsmi)
    assert [g.source for g in gpus] == ["amdsmi", "amdsmi"]
    assert calls.read_text() == ""


def test_amd_smi_when_the_module_fails_quietly(fake_tools, tool_outputs, tmp_path):
    fake_tools(
        "amd-smi",
        mi210_static(tool_outputs),
        rules=[("list", '[{"gpu": 0, "bdf": "0000:c1:00.0", "uuid": "5fff74a1-0000-1000-80a0"}]', 0, "", 0)],
    )
    add_amd_device(tmp_path, "0000:c1:00.0", used=2 * GIB)
    messages: list[str] = []
    (gpu,) = plugin.detect_amd_gpus(
        messages.append, sysfs_root=tmp_path, load_amdsmi=lambda: fake_amdsmi(init_error=True)
    )
    assert gpu.source == "amd-smi"
    assert gpu.pci_bus_id == "0000:c1:00.0"  # from "amd-smi list": static omitted it
    assert gpu.uuid == "5fff74a1-0000-1000-80a0"
    assert gpu.memory_used_bytes == 2 * GIB  # from sysfs, which amd-smi static does not report
    assert gpu.memory_free_bytes == 65520 * MIB - 2 * GIB
    assert messages == []


def test_rocm_smi_after_amd_smi_times_out(fake_tools, tool_outputs, tmp_path):
    fake_tools("amd-smi", "{}", sleep_s=30)
    fake_tools("rocm-smi", rocm(tool_outputs, "telegraf_mi100_rocm602.json"))
    messages: list[str] = []
    gpus = plugin.detect_amd_gpus(messages.append, timeout=0.5, sysfs_root=tmp_path, load_amdsmi=lambda: None)
    assert len(gpus) == 4 and {g.source for g in gpus} == {"rocm-smi"}
    assert messages == ["amd-smi did not answer within 0.5 s"]


def test_rocm_smi_garbage_then_sysfs(fake_tools, tmp_path):
    fake_tools("rocm-smi", "ERROR: GPU[0]\t: Unable to read\n")
    add_amd_device(tmp_path, "0000:03:00.0")
    messages: list[str] = []
    (gpu,) = plugin.detect_amd_gpus(messages.append, sysfs_root=tmp_path, load_amdsmi=lambda: None)
    assert gpu.source == "sysfs"
    assert gpu.name == "AMD Instinct MI210"
    assert gpu.bandwidth_gbps == 1638.4
    assert gpu.memory_total_bytes == 64 * GIB
    assert any("rocm-smi printed no JSON" in m for m in messages)
    assert any("amd-smi not found" in m for m in messages)


def test_no_tools_but_an_amd_gpu_in_sysfs_warns(fake_tools, tmp_path):
    add_amd_device(tmp_path, "0000:03:00.0")
    module_dir = tmp_path / "module" / "amdgpu"
    module_dir.mkdir(parents=True)
    (module_dir / "version").write_text("6.8.5\n")
    messages: list[str] = []
    (gpu,) = plugin.detect_amd_gpus(messages.append, sysfs_root=tmp_path, load_amdsmi=lambda: None)
    assert gpu.driver_version == "6.8.5"
    assert messages == [
        "amd-smi and rocm-smi not found: AMD GPU facts come from sysfs only (no driver details)"
    ]


def test_no_amd_gpu_and_no_tools_is_silent(fake_tools, tmp_path):
    messages: list[str] = []

    def rocm_without_gpu():
        return fake_amdsmi(init_error=True)

    assert plugin.detect_amd_gpus(messages.append, sysfs_root=tmp_path, load_amdsmi=rocm_without_gpu) == []
    assert messages == []


def test_hook_without_amdsmi_tools_or_hardware(fake_tools, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # "import amdsmi" raises ImportError
    monkeypatch.setattr(plugin, "SYSFS_ROOT", tmp_path)
    messages: list[str] = []
    assert plugin.detect_gpu(warn=messages.append) == []
    assert messages == []


def test_hook_reads_the_module_sysfs_root(fake_tools, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    monkeypatch.setattr(plugin, "SYSFS_ROOT", tmp_path)
    add_amd_device(tmp_path, "0000:03:00.0")
    (gpu,) = plugin.detect_gpu(warn=lambda message: None)
    assert gpu.pci_bus_id == "0000:03:00.0"
