"""The AMD probe: amdsmi API, then amd-smi, then rocm-smi, then sysfs; the first that answers wins."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from velollm_core.api import DEFAULT_TIMEOUT_S, ProbeError, hookimpl, run_tool

if TYPE_CHECKING:  # every CLI command loads this module: pydantic waits until a probe runs
    from types import ModuleType

    from velollm_core.api import GpuInfo

SYSFS_ROOT = Path("/sys")
ROCM_SMI_ARGS = [
    "rocm-smi",
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showbus",
    "--showdriverversion",
    "--json",
]


def _with_sysfs_memory(gpus: list[GpuInfo], sysfs_root: Path) -> list[GpuInfo]:
    """Fill memory in use from amdgpu's sysfs files where the tool gave only the total (amd-smi static)."""
    from velollm_core.api import read_amdgpu_vram

    filled = []
    for gpu in gpus:
        if gpu.pci_bus_id and gpu.memory_used_bytes is None:
            total, used = read_amdgpu_vram(sysfs_root / "bus" / "pci" / "devices" / gpu.pci_bus_id)
            total = gpu.memory_total_bytes or total
            if used is not None and total is not None:
                gpu = gpu.replace(memory_total_bytes=total, memory_used_bytes=used, memory_free_bytes=total - used)
        filled.append(gpu)
    return filled


def probe_amd_smi(timeout: float) -> list[GpuInfo]:
    """``amd-smi static --json``, with bus ids from ``amd-smi list --json`` where static omits them."""
    from velollm_amd.parsers import parse_amd_smi_list, parse_amd_smi_static

    gpus = parse_amd_smi_static(run_tool(["amd-smi", "static", "--json"], timeout=timeout))
    if gpus and any(gpu.pci_bus_id is None for gpu in gpus):
        from velollm_core.api import normalize_pci_bus_id

        try:
            listing = parse_amd_smi_list(run_tool(["amd-smi", "list", "--json"], timeout=timeout))
        except ProbeError:
            listing = {}  # bus ids only help merging; the GPUs themselves are already known
        gpus = [
            gpu.replace(
                pci_bus_id=gpu.pci_bus_id or normalize_pci_bus_id(listing.get(gpu.index, {}).get("bdf")),
                uuid=gpu.uuid or listing.get(gpu.index, {}).get("uuid"),
            )
            for gpu in gpus
        ]
    return gpus


def probe_rocm_smi(timeout: float) -> list[GpuInfo]:
    """``rocm-smi --json`` with the product, VRAM, bus and driver sections."""
    from velollm_amd.parsers import parse_rocm_smi

    return parse_rocm_smi(run_tool(ROCM_SMI_ARGS, timeout=timeout))


def probe_sysfs(sysfs_root: Path) -> list[GpuInfo]:
    """AMD GPUs as the amdgpu kernel driver shows them in sysfs: names, VRAM, bus ids, table bandwidth."""
    from velollm_amd.bandwidth import known_bandwidth_gbps
    from velollm_core.api import gpu_from_pci, scan_display_devices

    module_version = sysfs_root / "module" / "amdgpu" / "version"  # only the DKMS driver has one
    try:
        driver = module_version.read_text().strip() or None
    except OSError:
        driver = None
    gpus = []
    for device in scan_display_devices(sysfs_root):
        if device.vendor != "amd":
            continue
        gpu = gpu_from_pci(device, source="sysfs")
        gpus.append(
            gpu.replace(driver_version=driver, bandwidth_gbps=known_bandwidth_gbps(gpu.name, gpu.memory_total_bytes))
        )
    return gpus


def detect_amd_gpus(
    warn: Callable[[str], None],
    timeout: float = DEFAULT_TIMEOUT_S,
    sysfs_root: Path = SYSFS_ROOT,
    load_amdsmi: Callable[[], ModuleType | None] | None = None,
) -> list[GpuInfo]:
    """AMD GPUs from the first method that sees any; failures of installed tools go to ``warn``.

    Missing tools are only worth a warning when sysfs shows an AMD GPU they could have described.
    """
    from velollm_amd.amdsmi_api import import_amdsmi, probe_amdsmi

    amdsmi_problem = None
    module = (load_amdsmi or import_amdsmi)()
    if module is not None:
        try:
            gpus = probe_amdsmi(module, warn)
        except Exception as exc:  # noqa: BLE001 - amdsmi fails in many ways (no driver, no permission)
            # Common where ROCm is installed without an AMD GPU: only said if sysfs shows one later.
            amdsmi_problem = f"amdsmi failed: {type(exc).__name__}: {exc}"
        else:
            if gpus:
                return _with_sysfs_memory(gpus, sysfs_root)

    missing = []
    for tool, probe in (("amd-smi", probe_amd_smi), ("rocm-smi", probe_rocm_smi)):
        if shutil.which(tool) is None:
            missing.append(tool)
            continue
        try:
            gpus = probe(timeout)
        except ProbeError as exc:
            warn(str(exc))
            continue
        if gpus:
            return _with_sysfs_memory(gpus, sysfs_root)

    gpus = probe_sysfs(sysfs_root)
    if gpus:
        if amdsmi_problem:
            warn(amdsmi_problem)
        if missing:
            warn(f"{' and '.join(missing)} not found: AMD GPU facts come from sysfs only (no driver details)")
    return gpus


@hookimpl
def detect_gpu(warn: Callable[[str], None]) -> list[GpuInfo]:
    """AMD GPUs with memory, driver and bandwidth where known."""
    return detect_amd_gpus(warn, sysfs_root=SYSFS_ROOT)
