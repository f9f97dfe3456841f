"""Generic GPU probe over the PCI devices in sysfs: sees every display controller, whatever its driver.

Vendor plugins know more (memory in use, bandwidth, driver); the core merges their records over these
by PCI bus id, so this probe only has to be right about *which* GPUs exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic loads only when a GPU record is built: every CLI command loads this module
    from velollm_core.contract.schemas import GpuInfo, GpuVendor

SYSFS_ROOT = Path("/sys")

# PCI class codes (class >> 8): VGA controller, 3D controller (datacenter GPUs), display controller.
DISPLAY_CLASSES = frozenset({0x0300, 0x0302, 0x0380})

PCI_VENDORS: dict[str, GpuVendor] = {
    "0x10de": "nvidia",
    "0x1002": "amd",
    "0x8086": "intel",
    "0x106b": "apple",
}
VENDOR_LABELS: dict[GpuVendor, str] = {
    "nvidia": "NVIDIA",
    "amd": "AMD",
    "intel": "Intel",
    "apple": "Apple",
    "other": "Unknown",
}

# A few devices people run LLMs on, so a GPU without its vendor tools still gets a readable name.
# Anything else is shown as "<Vendor> GPU [vendor:device]", which `lspci -nn` users can look up.
PCI_DEVICE_NAMES: dict[tuple[str, str], str] = {
    ("0x10de", "0x2330"): "NVIDIA H100 80GB HBM3",
    ("0x10de", "0x2331"): "NVIDIA H100 PCIe",
    ("0x10de", "0x2335"): "NVIDIA H200",
    ("0x10de", "0x20b0"): "NVIDIA A100-SXM4-40GB",
    ("0x10de", "0x20b2"): "NVIDIA A100-SXM4-80GB",
    ("0x10de", "0x20b5"): "NVIDIA A100 80GB PCIe",
    ("0x10de", "0x26b9"): "NVIDIA L40S",
    ("0x10de", "0x1eb8"): "Tesla T4",
    ("0x10de", "0x2684"): "NVIDIA GeForce RTX 4090",
    ("0x10de", "0x2204"): "NVIDIA GeForce RTX 3090",
    ("0x1002", "0x738c"): "AMD Instinct MI100",
    ("0x1002", "0x740f"): "AMD Instinct MI210",
    ("0x1002", "0x740c"): "AMD Instinct MI250X/MI250",
    ("0x1002", "0x74a1"): "AMD Instinct MI300X",
    ("0x1002", "0x744c"): "AMD Radeon RX 7900 XTX/XT",
    ("0x1002", "0x73df"): "AMD Radeon RX 6700 XT/6700/6800M",
    ("0x8086", "0xe20b"): "Intel Arc B580",
    ("0x8086", "0x56a0"): "Intel Arc A770",
    ("0x8086", "0x0bd5"): "Intel Data Center GPU Max 1550",
}

_BUS_ID = re.compile(
    r"^(?:(?P<domain>[0-9a-f]{1,8}):)?(?P<bus>[0-9a-f]{1,2}):(?P<dev>[0-9a-f]{1,2})\.(?P<fn>[0-7])$"
)


def normalize_pci_bus_id(raw: str | None) -> str | None:
    """Return ``dddd:bb:dd.f`` in lowercase (nvidia-smi's 8-digit domain cut to 4), None if not a bus id."""
    if not raw:
        return None
    match = _BUS_ID.match(raw.strip().lower())
    if match is None:
        return None
    # nvidia-smi prints a 32-bit domain ("00000000:65:00.0"); sysfs and the other tools print 16 bits.
    domain = int(match["domain"] or "0", 16) & 0xFFFF
    return f"{domain:04x}:{int(match['bus'], 16):02x}:{int(match['dev'], 16):02x}.{match['fn']}"


@dataclass
class PciDisplayDevice:
    """One display-class PCI function as sysfs shows it."""

    path: Path
    bus_id: str
    vendor_id: str
    device_id: str
    pci_class: int
    driver: str | None

    @property
    def vendor(self) -> GpuVendor:
        return PCI_VENDORS.get(self.vendor_id, "other")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def scan_display_devices(sysfs_root: Path = SYSFS_ROOT) -> list[PciDisplayDevice]:
    """Every GPU-like PCI function under ``sysfs_root``/bus/pci/devices, ordered by bus id."""
    devices_dir = sysfs_root / "bus" / "pci" / "devices"
    if not devices_dir.is_dir():
        return []  # not Linux, or sysfs not mounted (containers): nothing to say
    found = []
    for entry in sorted(devices_dir.iterdir()):
        pci_class = _read_int(entry / "class")
        if pci_class is None or (pci_class >> 8) not in DISPLAY_CLASSES:
            continue
        bus_id = normalize_pci_bus_id(entry.name)
        vendor_id = (_read(entry / "vendor") or "").lower()
        device_id = (_read(entry / "device") or "").lower()
        if bus_id is None or not vendor_id:
            continue
        driver_link = entry / "driver"
        driver = driver_link.resolve().name if driver_link.exists() else None
        found.append(PciDisplayDevice(entry, bus_id, vendor_id, device_id, pci_class, driver))
    return found


def read_amdgpu_vram(device_dir: Path) -> tuple[int | None, int | None]:
    """(total, used) VRAM bytes from an amdgpu device directory in sysfs; None where not exposed."""
    return _read_int(device_dir / "mem_info_vram_total"), _read_int(device_dir / "mem_info_vram_used")


def pci_device_name(vendor_id: str, device_id: str) -> str:
    """A readable name from the small table, else ``"<Vendor> GPU [vendor:device]"``."""
    known = PCI_DEVICE_NAMES.get((vendor_id, device_id))
    if known:
        return known
    label = VENDOR_LABELS[PCI_VENDORS.get(vendor_id, "other")]
    return f"{label} GPU [{vendor_id.removeprefix('0x')}:{device_id.removeprefix('0x')}]"


def gpu_from_pci(device: PciDisplayDevice, source: str = "pci") -> GpuInfo:
    """A GpuInfo holding what sysfs alone knows about ``device``."""
    from velollm_core.contract.schemas import GpuInfo

    name = _read(device.path / "product_name") or pci_device_name(device.vendor_id, device.device_id)
    total, used = read_amdgpu_vram(device.path)
    free = total - used if total is not None and used is not None else None
    return GpuInfo(
        vendor=device.vendor,
        name=name,
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=free,
        pci_bus_id=device.bus_id,
        pci_vendor_id=device.vendor_id,
        pci_device_id=device.device_id,
        source=source,
    )


def probe_pci_gpus(sysfs_root: Path = SYSFS_ROOT) -> list[GpuInfo]:
    """One generic record per display-class PCI device."""
    return [gpu_from_pci(device) for device in scan_display_devices(sysfs_root)]


def vendor_seen_on_pci(vendor: GpuVendor, sysfs_root: Path = SYSFS_ROOT) -> bool:
    """Whether sysfs shows a display device of ``vendor``: tells a missing tool from a missing GPU."""
    return any(device.vendor == vendor for device in scan_display_devices(sysfs_root))
