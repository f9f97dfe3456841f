"""How the GPUs of one machine are linked: the ``detect_gpu_links`` hook, the merge to one link per pair,
the ``links`` of ``velollm detect --json`` and the links table at 80 columns."""

from __future__ import annotations

import pytest
from rich.console import Console

from velollm_core.contract.plugins import hook, pm
from velollm_core.contract.schemas import CpuInfo, GpuInfo, GpuLink, HardwareReport, MemoryInfo, OsInfo
from velollm_core.hardware import report
from velollm_core.hardware.report import merge_links, render_hardware
from velollm_core.hookspecs import hookimpl

BUS_A, BUS_B, BUS_C = "0000:09:00.0", "0000:41:00.0", "0000:61:00.0"


def card(bus: str, **fields) -> GpuInfo:
    return GpuInfo(vendor="nvidia", name="NVIDIA GeForce RTX 3090", source="nvml", pci_bus_id=bus,
                   memory_total_bytes=24 * 2**30, **fields)


def link(first: str, second: str, kind: str, **fields) -> GpuLink:
    return GpuLink(pci_bus_ids=[first, second], kind=kind, source=fields.pop("source", "test"), **fields)


def test_one_link_per_pair_the_fastest_kept_and_unknown_cards_dropped():
    gpus = [card(BUS_A), card(BUS_B)]
    merged = merge_links([link(BUS_B, BUS_A, "host-bridge"), link(BUS_A, BUS_B, "bridge", bridge_links=4),
                          link(BUS_A, BUS_C, "pcie-switch"), link("00000000:09:00.0", BUS_A, "board")], gpus)
    assert [(m.pci_bus_ids, m.kind, m.bridge_links) for m in merged] == [([BUS_A, BUS_B], "bridge", 4)]


def test_a_link_record_is_checked_on_creation():
    with pytest.raises(TypeError, match="kind must be one of"):
        GpuLink(pci_bus_ids=[BUS_A, BUS_B], kind="infiniband", source="x")
    with pytest.raises(TypeError, match="two PCI bus ids"):
        GpuLink(pci_bus_ids=[BUS_A], kind="bridge", source="x")


class TwoCards:
    @hookimpl
    def detect_gpu(self, warn):
        return [card(BUS_A, index=0, pcie_max_generation=4, pcie_width=16), card(BUS_B, index=1)]

    @hookimpl
    def detect_gpu_links(self, gpus, warn):
        assert [g.pci_bus_id for g in gpus] == [BUS_A, BUS_B]
        return [{"pci_bus_ids": [BUS_A, BUS_B], "kind": "cross-numa", "label": "SYS", "source": "fake"}]


class BrokenLinks:
    @hookimpl
    def detect_gpu_links(self, gpus):
        raise RuntimeError("topology bug")


@pytest.fixture
def two_cards(monkeypatch):
    hook()
    # Only these plugins' GPUs: the machine's own vendor plugins may see nothing or something.
    monkeypatch.setattr(report, "merge_gpus", lambda records: [r for r in records if r.pci_bus_id in (BUS_A, BUS_B)])
    plugins = {"fake-two-cards": TwoCards(), "fake-broken-links": BrokenLinks()}
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    yield
    for name in plugins:
        pm.unregister(name=name)


def test_detect_json_holds_the_links_and_is_the_models_dump(two_cards):
    data = report.detect_hardware_data()
    assert data["links"] == [{"pci_bus_ids": [BUS_A, BUS_B], "kind": "cross-numa", "source": "fake",
                              "label": "SYS", "bridge_links": None}]
    assert any(w.startswith("fake-broken-links: detect_gpu_links failed: RuntimeError") for w in data["warnings"])
    assert list(data).index("links") == list(data).index("gpus") + 1
    assert HardwareReport.model_validate(data).model_dump(mode="json") == data


def sample(links: list[GpuLink]) -> HardwareReport:
    return HardwareReport(os=OsInfo(system="Linux", release="6.8", machine="x86_64"), cpu=CpuInfo(),
                          memory=MemoryInfo(total_bytes=2**36, available_bytes=2**35, used_bytes=2**35),
                          gpus=[card(BUS_A, pcie_max_generation=4, pcie_generation=1, pcie_width=16),
                                card(BUS_B, pcie_max_generation=3, pcie_width=4)], links=links)


def test_detect_tables_show_each_cards_pcie_link_and_the_pair_at_80_columns():
    console = Console(record=True, width=80)
    render_hardware(sample([link(BUS_A, BUS_B, "bridge", label="NV4", bridge_links=4, source="nvml")]), console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Gen4 x16" in text and "Gen3 x4" in text  # the link it trains to under load, not the idle Gen1
    assert "GPU links" in text
    row = next(line for line in text.splitlines() if "NV4" in line)
    assert "0 - 1" in row and "direct GPU bridge, 4 links" in row and "nvml" in row


def test_no_links_table_without_links():
    console = Console(record=True, width=80)
    render_hardware(sample([]), console)
    assert "GPU links" not in console.export_text()
