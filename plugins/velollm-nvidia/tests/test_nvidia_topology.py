"""How NVIDIA cards are linked: ``nvidia-smi topo -m`` of real multi-GPU machines, a fake NVML, and the
PCIe link of each card from real ``-q -x`` and ``--query-gpu`` captures."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from velollm_nvidia import plugin
from velollm_nvidia.smi import parse_smi_csv
from velollm_nvidia.smi_xml import parse_smi_xml
from velollm_nvidia.topology import detect_links, links_from_matrix, nvml_links, parse_topo_matrix

from velollm_core.api import GpuInfo
from velollm_core.contract.probing.tools import ProbeError

BUS = {0: "0000:09:00.0", 1: "0000:41:00.0", 2: "0000:61:00.0", 3: "0000:81:00.0"}
DATA = Path(__file__).parent / "data"  # captured on the GPUs lent to this project (SOURCES.md)


def topo(tool_outputs, name: str) -> str:
    return (tool_outputs / "nvidia-smi-topo" / name).read_text()


def test_two_rtx_5090_behind_one_host_bridge(tool_outputs):
    pairs = parse_topo_matrix(topo(tool_outputs, "club3090-1229_2x-rtx5090_phb.txt"))
    assert pairs == {(0, 1): "PHB"}
    (link,) = links_from_matrix(pairs, BUS)
    assert (link.kind, link.label, link.bridge_links, link.source) == ("host-bridge", "PHB", None, "nvidia-smi")
    assert link.pci_bus_ids == ["0000:09:00.0", "0000:41:00.0"]


def test_two_rtx_3090_across_numa_nodes_with_an_empty_affinity_cell(tool_outputs):
    pairs = parse_topo_matrix(topo(tool_outputs, "club3090-178_2x-rtx3090_sys.txt"))
    assert pairs == {(0, 1): "SYS"}
    assert [link.kind for link in links_from_matrix(pairs, BUS)] == ["cross-numa"]


def test_four_h100_on_nvlink_with_nic_rows_and_columns(tool_outputs):
    pairs = parse_topo_matrix(topo(tool_outputs, "nccl-1617_4x-h100_nv6-nics.txt"))
    assert pairs == {pair: "NV6" for pair in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]}
    links = links_from_matrix(pairs, {0: BUS[0], 1: BUS[1]})  # only the cards the report holds
    assert [(link.kind, link.bridge_links) for link in links] == [("bridge", 6)]


def test_a_real_one_gpu_matrix_with_its_underlined_header_has_no_pairs():
    text = (DATA / "velollm_h100_580.159.04_topo-m.txt").read_text()
    assert "\x1b[4m" in text  # nvidia-smi writes the escapes into a file too
    assert parse_topo_matrix(text) == {}


def test_the_underlined_header_of_a_two_gpu_matrix_is_read(tool_outputs):
    lines = topo(tool_outputs, "club3090-1229_2x-rtx5090_phb.txt").split("\n")
    lines[0] = "\t\x1b[4m" + lines[0].lstrip("\t") + "\x1b[0m"  # as the H100 capture shows it
    assert parse_topo_matrix("\n".join(lines)) == {(0, 1): "PHB"}


def test_text_without_a_matrix_is_a_probe_error():
    with pytest.raises(ProbeError, match="no GPU matrix"):
        parse_topo_matrix("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")


# --- NVML ---------------------------------------------------------------------------------------------


def fake_nvml(buses: list[str], nvlinks: dict[int, list[str]], ancestor: int) -> types.ModuleType:
    """pynvml's names for these GPUs: ``nvlinks[i]`` lists the peer bus id of each active link of GPU i."""
    module = types.ModuleType("pynvml")
    module.NVMLError = type("NVMLError", (Exception,), {})
    module.NVML_FEATURE_ENABLED = 1
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetCount = lambda: len(buses)
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetPciInfo = lambda handle: types.SimpleNamespace(busId=buses[handle].encode())

    def link_state(handle, link):
        if link >= len(nvlinks.get(handle, [])):
            raise module.NVMLError("Not Supported")  # what a GPU without that link answers
        return 1

    module.nvmlDeviceGetNvLinkState = link_state
    module.nvmlDeviceGetNvLinkRemotePciInfo_v2 = lambda handle, link: types.SimpleNamespace(
        busId=nvlinks[handle][link])
    module.nvmlDeviceGetTopologyCommonAncestor = lambda first, second: ancestor
    return module


def test_nvml_counts_the_nvlinks_joining_two_cards():
    buses = ["00000000:07:00.0", "00000000:0F:00.0"]
    module = fake_nvml(buses, {0: [buses[1]] * 4, 1: [buses[0]] * 4}, ancestor=30)
    (link,) = nvml_links(module, ["0000:07:00.0", "0000:0f:00.0"], pytest.fail)
    assert (link.kind, link.label, link.bridge_links, link.source) == ("bridge", "NV4", 4, "nvml")


def test_nvml_without_nvlink_names_the_common_pcie_ancestor():
    module = fake_nvml(["00000000:07:00.0", "00000000:0F:00.0"], {}, ancestor=40)
    (link,) = nvml_links(module, ["0000:07:00.0", "0000:0f:00.0"], pytest.fail)
    assert (link.kind, link.label) == ("numa-node", "NODE")


def gpu(index: int, bus: str) -> GpuInfo:
    return GpuInfo(vendor="nvidia", name="NVIDIA GeForce RTX 3090", index=index, pci_bus_id=bus, source="nvml")


def test_without_nvml_the_plugin_reads_nvidia_smi_topo(monkeypatch, fake_tools, tool_outputs):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # "import pynvml" raises ImportError
    calls = fake_tools("nvidia-smi", topo(tool_outputs, "club3090-178_2x-rtx3090_sys.txt"))
    warnings: list[str] = []
    links = plugin.detect_gpu_links(gpus=[gpu(0, BUS[0]), gpu(1, BUS[1])], warn=warnings.append)
    assert [(link.pci_bus_ids, link.kind) for link in links] == [([BUS[0], BUS[1]], "cross-numa")]
    assert calls.read_text().split() == ["topo", "-m"] and warnings == []


def test_one_card_asks_no_tool(fake_tools):
    calls = fake_tools("nvidia-smi", "")
    assert plugin.detect_gpu_links(gpus=[gpu(0, BUS[0])], warn=pytest.fail) == []
    assert not calls.exists() or calls.read_text() == ""


def test_a_failing_topology_is_one_warning(monkeypatch, fake_tools):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    fake_tools("nvidia-smi", "", exit_code=9, stderr="Failed to initialize NVML: Driver/library version mismatch\n")
    warnings: list[str] = []
    assert detect_links([gpu(0, BUS[0]), gpu(1, BUS[1])], warnings.append) == []
    assert len(warnings) == 1 and warnings[0].startswith("GPU links unknown:")


# --- each card's PCIe link --------------------------------------------------------------------------


def test_dual_a5000_xml_reads_an_idle_gen4_x16_link(tool_outputs):
    text = (tool_outputs / "nvidia-smi-xml" / "telegraf_dual-rtx-a5000_v13.xml").read_text()
    cards = parse_smi_xml(text)
    assert [(c.pcie_generation, c.pcie_max_generation, c.pcie_width, c.pcie_max_width) for c in cards] == [
        (1, 4, 16, 16), (1, 4, 16, 16)]


def test_l40s_query_reads_its_pcie_columns_by_name(tool_outputs):
    (l40s,) = parse_smi_csv((tool_outputs / "nvidia-smi-csv" / "nvexporter_l40s_595.80.csv").read_text())
    assert (l40s.pcie_generation, l40s.pcie_max_generation, l40s.pcie_width, l40s.pcie_max_width) == (4, 4, 16, 16)


def test_h100_query_reads_its_gen5_x16_link():
    (h100,) = parse_smi_csv((DATA / "velollm_h100_580.159.04_query-pcie.csv").read_text())
    assert (h100.pcie_generation, h100.pcie_max_generation, h100.pcie_width, h100.pcie_max_width) == (5, 5, 16, 16)
