"""AMD GPUs through the amdsmi Python API (ships with ROCm 6+): no process to start, no text to parse."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from velollm_amd.bandwidth import known_bandwidth_gbps
from velollm_amd.parsers import AMD_VENDOR_ID
from velollm_core.api import OptionalCalls, normalize_pci_bus_id, pci_device_name

if TYPE_CHECKING:  # every `velollm detect` imports this module: pydantic waits until a GPU answers
    from velollm_core.api import GpuInfo

MIB = 2**20


def import_amdsmi() -> ModuleType | None:
    """The amdsmi module, or None: a missing or broken ROCm install only means "try the next method"."""
    try:
        import amdsmi
    except Exception:  # noqa: BLE001 - amdsmi raises more than ImportError when its .so is missing
        return None
    return amdsmi


def _positive(value: Any) -> float | None:
    # amdsmi reports "N/A" (or the max uint it was given) where a GPU does not expose a value.
    return float(value) if isinstance(value, (int, float)) and 0 < value < 2**32 else None


def _device_record(calls: OptionalCalls, handle: Any, index: int) -> GpuInfo:
    from velollm_core.api import GpuInfo

    asic = calls.get("amdsmi_get_gpu_asic_info", handle) or {}
    vram = calls.get("amdsmi_get_gpu_vram_info", handle) or {}
    driver = calls.get("amdsmi_get_gpu_driver_info", handle) or {}
    vram_kind = calls.constant("AmdSmiMemoryType.VRAM")
    total = calls.get("amdsmi_get_gpu_memory_total", handle, vram_kind) if vram_kind is not None else None
    used = calls.get("amdsmi_get_gpu_memory_usage", handle, vram_kind) if vram_kind is not None else None
    if not isinstance(total, int):
        size_mib = vram.get("vram_size", vram.get("vram_size_mb"))  # MB meaning MiB, renamed in ROCm 6.1
        total = int(size_mib) * MIB if isinstance(size_mib, int) else None
    used = used if isinstance(used, int) else None

    device_id = asic.get("device_id")
    device_id = (
        f"0x{device_id:04x}"
        if isinstance(device_id, int)
        else (str(device_id).lower() if device_id else None)
    )
    market_name = asic.get("market_name")
    name = (
        market_name
        if market_name and market_name != "N/A"
        else pci_device_name(AMD_VENDOR_ID, device_id or "")
    )
    bdf = calls.get("amdsmi_get_gpu_device_bdf", handle)
    uuid = calls.get("amdsmi_get_gpu_device_uuid", handle)
    bandwidth = _positive(vram.get("vram_max_bandwidth"))
    return GpuInfo(
        vendor="amd",
        name=name,
        index=index,
        uuid=str(uuid) if uuid else None,
        pci_bus_id=normalize_pci_bus_id(str(bdf)) if bdf else None,
        pci_vendor_id=AMD_VENDOR_ID,
        pci_device_id=device_id,
        memory_total_bytes=total,
        memory_used_bytes=used,
        memory_free_bytes=total - used if total is not None and used is not None else None,
        memory_bus_width_bits=int(_positive(vram.get("vram_bit_width")) or 0) or None,
        driver_version=driver.get("driver_version") or None,
        bandwidth_gbps=bandwidth or known_bandwidth_gbps(name, total),
        source="amdsmi",
    )


def probe_amdsmi(module: ModuleType, warn: Callable[[str], None]) -> list[GpuInfo]:
    """One record per GPU handle amdsmi gives; raises when amdsmi cannot start or list GPUs."""
    calls = OptionalCalls(module, "AmdSmiException")
    module.amdsmi_init()
    try:
        gpus = []
        for index, handle in enumerate(module.amdsmi_get_processor_handles()):
            try:
                gpus.append(_device_record(calls, handle, index))
            except Exception as exc:  # noqa: BLE001 - one odd GPU must not hide the others
                warn(f"amdsmi could not describe GPU {index}: {type(exc).__name__}: {exc}")
        return gpus
    finally:
        calls.get("amdsmi_shut_down")
