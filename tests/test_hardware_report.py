"""The hardware report: merging GPU records, isolating probe failures, and ``velollm detect``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from velollm_core.cli import cli
from velollm_core.contract.plugins import hook, pm
from velollm_core.contract.schemas import CpuInfo, GpuInfo, HardwareReport, MemoryInfo, OsInfo
from velollm_core.hardware import report
from velollm_core.hardware.report import collect_gpus, detect_hardware, merge_gpus, render_hardware
from velollm_core.hookspecs import hookimpl


def gpu(source: str, bus: str | None, name: str = "GPU", **fields) -> GpuInfo:
    return GpuInfo(vendor=fields.pop("vendor", "nvidia"), name=name, source=source, pci_bus_id=bus, **fields)


# --- merge ----------------------------------------------------------------------------------------


def test_vendor_record_replaces_generic_pci_record_across_bus_id_spellings():
    merged = merge_gpus(
        [
            gpu("pci", "0000:65:00.0", "NVIDIA GPU [10de:2330]", pci_device_id="0x2330"),
            gpu("nvml", "00000000:65:00.0", "NVIDIA H100 80GB HBM3", memory_total_bytes=85 * 10**9),
        ]
    )
    assert len(merged) == 1
    assert merged[0].source == "nvml"
    assert merged[0].name == "NVIDIA H100 80GB HBM3"
    assert merged[0].pci_bus_id == "0000:65:00.0"
    assert merged[0].pci_device_id == "0x2330"  # a gap filled from the generic record
    assert merged[0].memory_total_bytes == 85 * 10**9


def test_vendor_record_wins_whatever_the_order():
    pci_first = merge_gpus([gpu("pci", "0000:83:00.0", "AMD GPU"), gpu("rocm-smi", "0000:83:00.0", "MI100")])
    vendor_first = merge_gpus(
        [gpu("rocm-smi", "0000:83:00.0", "MI100"), gpu("pci", "0000:83:00.0", "AMD GPU")]
    )
    assert [g.source for g in pci_first] == [g.source for g in vendor_first] == ["rocm-smi"]


def test_vendor_facts_are_never_overwritten_by_generic_ones():
    merged = merge_gpus(
        [
            gpu("pci", "0000:07:00.0", "AMD GPU", vendor="amd", memory_total_bytes=1, memory_used_bytes=1),
            gpu("amd-smi", "0000:07:00.0", "RX 6700 XT", vendor="amd", memory_total_bytes=12 * 2**30),
        ]
    )
    assert merged[0].memory_total_bytes == 12 * 2**30
    assert merged[0].memory_used_bytes == 1  # unknown to the vendor record: taken from sysfs


def test_multi_gpu_sorted_by_bus_id_and_records_without_bus_id_kept():
    merged = merge_gpus(
        [
            gpu("nvml", "0000:C3:00.0", "third"),
            gpu("system_profiler", None, "Apple M1", vendor="apple"),
            gpu("nvml", "0000:83:00.0", "second"),
            gpu("pci", "0000:02:00.0", "BMC VGA", vendor="other"),
            gpu("pci", "0000:83:00.0", "generic"),
            gpu("system_profiler", None, "Apple M1 again", vendor="apple"),
        ]
    )
    assert [g.name for g in merged] == ["BMC VGA", "second", "third", "Apple M1", "Apple M1 again"]
    assert merged[2].pci_bus_id == "0000:c3:00.0"


def test_unparseable_bus_id_counts_as_none():
    merged = merge_gpus([gpu("nvidia-smi", "[N/A]", "a"), gpu("nvidia-smi", "[N/A]", "b")])
    assert [(g.name, g.pci_bus_id) for g in merged] == [("a", None), ("b", None)]


def test_merge_of_nothing_is_empty():
    assert merge_gpus([]) == []


# --- plugins and failures -------------------------------------------------------------------------


class GoodPlugin:
    @hookimpl
    def detect_gpu(self, warn):
        warn("saw something odd")
        return [
            gpu("fake", "0000:aa:00.0", "good fake"),
            {"vendor": "amd", "name": "dict fake", "source": "fake"},
        ]


class BrokenPlugin:
    @hookimpl
    def detect_gpu(self):  # takes no warn: allowed, pluggy-style
        raise RuntimeError("plugin bug")


class BadRecordPlugin:
    @hookimpl
    def detect_gpu(self, warn):
        return [{"vendor": "martian", "name": "x", "source": "fake"}]


@pytest.fixture
def fake_plugins():
    hook()  # load the real plugins first so registration order is the usual one
    plugins = {"fake-good": GoodPlugin(), "fake-broken": BrokenPlugin(), "fake-bad": BadRecordPlugin()}
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    yield
    for name in plugins:
        pm.unregister(name=name)


def test_one_broken_plugin_does_not_hide_the_others(fake_plugins):
    warnings: list[str] = []
    records = [record for record in collect_gpus(warnings) if record.source == "fake"]
    assert sorted(record.name for record in records) == ["dict fake", "good fake"]
    assert "fake-good: saw something odd" in warnings
    assert any(w.startswith("fake-broken: detect_gpu failed: RuntimeError: plugin bug") for w in warnings)
    assert any(w.startswith("fake-bad: detect_gpu failed: TypeError: GpuInfo.vendor must be one of") for w in warnings)


def test_detect_hardware_survives_failing_probes(monkeypatch):
    def explode():
        raise PermissionError("/proc/cpuinfo: denied")

    monkeypatch.setattr(report, "probe_cpu", explode)
    monkeypatch.setattr(report, "probe_memory", explode)
    result = detect_hardware()
    assert result.cpu == CpuInfo()
    assert result.memory.total_bytes == 0
    assert "cpu: probe failed: PermissionError: /proc/cpuinfo: denied" in result.warnings
    assert any(w.startswith("memory: probe failed") for w in result.warnings)
    assert result.os.system  # the other probes still ran


def test_detect_hardware_merges_plugin_records(fake_plugins):
    result = detect_hardware()
    names = [g.name for g in result.gpus]
    assert "good fake" in names and "dict fake" in names
    assert any("fake-broken" in w for w in result.warnings)


# --- rendering ------------------------------------------------------------------------------------


def sample_report() -> HardwareReport:
    return HardwareReport(
        os=OsInfo(system="Linux", release="6.8.0", machine="x86_64", distribution="Ubuntu 24.04 LTS"),
        cpu=CpuInfo(model="AMD EPYC 9654", physical_cores=96, logical_cores=192, flags=["avx2", "avx512f"]),
        memory=MemoryInfo(total_bytes=512 * 2**30, available_bytes=500 * 2**30, used_bytes=12 * 2**30),
        gpus=[
            gpu(
                "nvml",
                "0000:65:00.0",
                "NVIDIA H100 80GB HBM3",
                memory_total_bytes=80 * 2**30,
                memory_free_bytes=79 * 2**30,
                bandwidth_gbps=3352.3,
                driver_version="550.54.15",
            ),
            gpu(
                "system_profiler",
                None,
                "Apple M1",
                vendor="apple",
                unified_memory=True,
                memory_total_bytes=int(10.7 * 2**30),
            ),
        ],
        warnings=["rocm-smi: value [N/A] for card0"],
    )


def test_render_shows_system_gpus_and_warnings():
    console = Console(record=True, width=200)
    render_hardware(sample_report(), console)
    text = console.export_text()
    for expected in (
        "Ubuntu 24.04 LTS",
        "AMD EPYC 9654",
        "96 physical / 192 logical",
        "512.0 GiB total",
        "NVIDIA H100 80GB HBM3",
        "80.0 GiB",
        "3352 GB/s",
        "550.54.15",
        "0000:65:00.0",
        "nvml",
        "(unified)",
        "warning: rocm-smi: value [N/A] for card0",
    ):
        assert expected in text


def test_render_without_gpu_says_so():
    console = Console(record=True, width=120)
    empty = sample_report().model_copy(update={"gpus": [], "warnings": []})
    render_hardware(empty, console)
    assert "No GPU found" in console.export_text()


# --- the CLI --------------------------------------------------------------------------------------

DESIGN_GPU_FIELDS = {
    "vendor",
    "name",
    "memory_total_bytes",
    "memory_free_bytes",
    "driver_version",
    "pci_bus_id",
    "bandwidth_gbps",
    "source",
}


def check_detect_document(data: dict) -> None:
    assert set(data) >= {"os", "cpu", "memory", "gpus", "warnings"}
    assert set(data["os"]) >= {"system", "release", "machine"}
    assert set(data["cpu"]) >= {"model", "physical_cores", "logical_cores", "max_freq_mhz", "flags"}
    assert set(data["memory"]) >= {"total_bytes", "available_bytes", "used_bytes"}
    assert data["memory"]["total_bytes"] > 0
    for record in data["gpus"]:
        assert set(record) >= DESIGN_GPU_FIELDS
        assert record["vendor"] in {"nvidia", "amd", "apple", "intel", "other"}
    assert all(isinstance(w, str) for w in data["warnings"])


def test_detect_json_through_click(tmp_path):
    result = CliRunner().invoke(cli, ["detect", "--json"])
    assert result.exit_code == 0, result.output
    check_detect_document(json.loads(result.output))


def test_detect_output_writes_the_same_document(tmp_path):
    target = tmp_path / "out" / "hw.json"
    result = CliRunner().invoke(cli, ["detect", "--json", "--output", str(target)])
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    check_detect_document(written)
    printed = json.loads(result.stdout)  # stderr says the folder was created; stdout holds the JSON alone
    assert written["cpu"] == printed["cpu"]


def test_detect_tables_by_default():
    result = CliRunner().invoke(cli, ["detect"])
    assert result.exit_code == 0, result.output
    assert "System" in result.output and "CPU" in result.output


def test_velollm_detect_json_subprocess(tmp_path):
    """The installed entry point: one JSON document on stdout, exit 0, even without any GPU."""
    script = Path(sys.executable).parent / "velollm"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "velollm_core"]
    proc = subprocess.run(
        [*command, "detect", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    check_detect_document(json.loads(proc.stdout))


# --- detect --json without pydantic: the same document ---------------------------------------------

VOLATILE_MEMORY = ("available_bytes", "used_bytes", "swap_used_bytes")


def test_detect_data_is_the_models_dump_byte_for_byte():
    data = report.detect_hardware_data()
    typed = detect_hardware().model_dump(mode="json")
    for document in (data, typed):
        document["memory"].update(dict.fromkeys(VOLATILE_MEMORY, 0))
    assert json.dumps(data, indent=2) == json.dumps(typed, indent=2)  # same keys, same order, same types


def test_system_facts_hold_every_field_in_model_order(tool_outputs):
    from velollm_core.hardware import system

    cases = [(system.os_facts(), OsInfo), (system.cpu_facts(), CpuInfo), (system.memory_facts(), MemoryInfo)]
    for path in sorted((tool_outputs / "cpuinfo").glob("*.cpuinfo")):
        cases.append((system.cpuinfo_facts(path.read_text()), CpuInfo))
    for facts, model in cases:
        assert json.dumps(model(**facts).model_dump(mode="json")) == json.dumps(facts), model.__name__


def test_detect_data_after_a_failed_probe_is_the_models_dump(monkeypatch):
    def explode():
        raise PermissionError("/proc/cpuinfo: denied")

    monkeypatch.setattr(report, "cpu_facts", explode)
    data = report.detect_hardware_data()
    assert data["cpu"] == CpuInfo().model_dump(mode="json")
    assert "cpu: probe failed: PermissionError: /proc/cpuinfo: denied" in data["warnings"]


def test_detect_data_with_plugin_gpus(fake_plugins):
    data = report.detect_hardware_data()
    records = {record["name"]: record for record in data["gpus"]}
    assert {"good fake", "dict fake"} <= set(records)
    assert list(records["dict fake"]) == [field.name for field in dataclasses.fields(GpuInfo)]
    assert any("fake-broken" in w for w in data["warnings"])


def test_detect_data_with_gpus_needs_no_pydantic_and_matches_the_models(fake_plugins):
    """GPU records are dataclasses: the JSON of a machine with GPUs is built without the models, and
    is exactly what the pydantic report would dump."""
    from velollm_core.contract.schemas import HardwareReport

    data = report.detect_hardware_data()
    assert data["gpus"]
    assert HardwareReport.model_validate(data).model_dump(mode="json") == data


def test_a_gpu_record_of_the_wrong_type_is_refused_by_name():
    with pytest.raises(TypeError, match="memory_total_bytes must be int"):
        GpuInfo(vendor="nvidia", name="x", source="nvml", memory_total_bytes="lots")
    with pytest.raises(TypeError, match="vendor must be one of"):
        GpuInfo(vendor="matrox", name="x", source="pci")
    assert GpuInfo(vendor="amd", name="x", source="sysfs", bandwidth_gbps=1000).bandwidth_gbps == 1000.0
