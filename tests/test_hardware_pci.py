"""The generic PCI probe over fake sysfs trees, and bus id normalization."""

from __future__ import annotations

from pathlib import Path

import pytest

from velollm_core.contract.probing import pci
from velollm_core.contract.probing.pci import normalize_pci_bus_id, probe_pci_gpus, vendor_seen_on_pci


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000000:65:00.0", "0000:65:00.0"),  # nvidia-smi's 32-bit domain
        ("0000:A3:00.0", "0000:a3:00.0"),  # rocm-smi upper case
        ("65:00.0", "0000:65:00.0"),  # no domain (lspci)
        ("00000001:0C:00.1", "0001:0c:00.1"),
        (" 0000:07:00.0\n", "0000:07:00.0"),
        ("N/A", None),
        ("", None),
        (None, None),
        ("0000:65:00", None),
    ],
)
def test_normalize_pci_bus_id(raw, expected):
    assert normalize_pci_bus_id(raw) == expected


def add_device(root: Path, bus_id: str, pci_class: str, vendor: str, device: str, **files: str) -> Path:
    """One PCI function in a fake sysfs tree, the way the kernel lays it out."""
    path = root / "bus" / "pci" / "devices" / bus_id
    path.mkdir(parents=True)
    (path / "class").write_text(f"{pci_class}\n")
    (path / "vendor").write_text(f"{vendor}\n")
    (path / "device").write_text(f"{device}\n")
    for name, content in files.items():
        (path / name).write_text(f"{content}\n")
    return path


@pytest.fixture
def sysfs(tmp_path) -> Path:
    root = tmp_path / "sys"
    add_device(root, "0000:00:00.0", "0x060000", "0x8086", "0x0d57")  # host bridge: not a GPU
    add_device(root, "0000:03:00.0", "0x020000", "0x15b3", "0x101b")  # network card
    add_device(root, "0000:65:00.0", "0x030200", "0x10de", "0x2330")  # H100: 3D controller
    amd = add_device(
        root,
        "0000:83:00.0",
        "0x030000",
        "0x1002",
        "0x738c",
        mem_info_vram_total="34342961152",
        mem_info_vram_used="6750208",
    )
    driver = root / "bus" / "pci" / "drivers" / "amdgpu"
    driver.mkdir(parents=True)
    (amd / "driver").symlink_to(driver)
    add_device(root, "0000:00:02.0", "0x038000", "0x8086", "0x9a49")  # Intel iGPU: display controller
    add_device(root, "0000:02:00.0", "0x030000", "0x1a03", "0x2000")  # ASPEED BMC VGA
    return root


def test_finds_every_display_device_in_bus_order(sysfs):
    gpus = probe_pci_gpus(sysfs)
    assert [gpu.pci_bus_id for gpu in gpus] == [
        "0000:00:02.0",
        "0000:02:00.0",
        "0000:65:00.0",
        "0000:83:00.0",
    ]
    assert [gpu.vendor for gpu in gpus] == ["intel", "other", "nvidia", "amd"]
    assert {gpu.source for gpu in gpus} == {"pci"}


def test_names_from_table_or_ids(sysfs):
    by_bus = {gpu.pci_bus_id: gpu for gpu in probe_pci_gpus(sysfs)}
    assert by_bus["0000:65:00.0"].name == "NVIDIA H100 80GB HBM3"
    assert by_bus["0000:00:02.0"].name == "Intel GPU [8086:9a49]"
    assert by_bus["0000:02:00.0"].name == "Unknown GPU [1a03:2000]"
    assert by_bus["0000:65:00.0"].pci_device_id == "0x2330"


def test_amdgpu_vram_read_from_sysfs(sysfs):
    amd = next(gpu for gpu in probe_pci_gpus(sysfs) if gpu.vendor == "amd")
    assert amd.name == "AMD Instinct MI100"
    assert amd.memory_total_bytes == 34342961152
    assert amd.memory_used_bytes == 6750208
    assert amd.memory_free_bytes == 34342961152 - 6750208
    nvidia = next(gpu for gpu in probe_pci_gpus(sysfs) if gpu.vendor == "nvidia")
    assert nvidia.memory_total_bytes is None  # sysfs knows no NVIDIA memory: unknown, not zero


def test_product_name_file_wins(tmp_path):
    add_device(tmp_path, "0000:0a:00.0", "0x030000", "0x1002", "0x9999", product_name="Radeon Pro W7900")
    assert probe_pci_gpus(tmp_path)[0].name == "Radeon Pro W7900"


def test_scanner_scans_devices_and_drivers(sysfs):
    devices = {device.bus_id: device for device in pci.scan_display_devices(sysfs)}
    assert devices["0000:83:00.0"].driver == "amdgpu"
    assert devices["0000:65:00.0"].driver is None
    assert devices["0000:65:00.0"].pci_class == 0x030200


def test_missing_sysfs_means_no_gpu(tmp_path):
    assert probe_pci_gpus(tmp_path / "nothing") == []


def test_vendor_seen_on_pci(sysfs):
    assert vendor_seen_on_pci("nvidia", sysfs)
    assert vendor_seen_on_pci("amd", sysfs)
    assert not vendor_seen_on_pci("apple", sysfs)


def test_hook_reads_the_module_root(sysfs, monkeypatch):
    monkeypatch.setattr(pci, "SYSFS_ROOT", sysfs)
    messages = []
    from velollm_core.hardware import pci_gpus

    gpus = pci_gpus.detect_gpu(warn=messages.append)
    assert len(gpus) == 4
    assert messages == []


def test_garbage_files_are_skipped(tmp_path):
    add_device(tmp_path, "0000:01:00.0", "garbage", "0x10de", "0x2330")
    add_device(tmp_path, "0000:02:00.0", "0x030000", "", "0x2330")
    assert probe_pci_gpus(tmp_path) == []
