"""NVIDIA GPUs through NVML (``import pynvml`` from nvidia-ml-py): the driver's own numbers, no parsing."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from velollm_core.api import OptionalCalls, normalize_pci_bus_id

if TYPE_CHECKING:  # every `velollm detect` imports this module: pydantic waits until a GPU answers
    from velollm_core.api import GpuInfo

# nvmlInit errors that only mean "no NVIDIA driver here": quiet unless the PCI bus shows a GPU.
ABSENT_ERRORS = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded")


# NVML's answer for each GpuInfo PCIe field ("current" is the link as trained now: lower when idle).
PCIE_CALLS = {
    "pcie_generation": "nvmlDeviceGetCurrPcieLinkGeneration",
    "pcie_max_generation": "nvmlDeviceGetMaxPcieLinkGeneration",
    "pcie_width": "nvmlDeviceGetCurrPcieLinkWidth",
    "pcie_max_width": "nvmlDeviceGetMaxPcieLinkWidth",
}


class NvmlUnavailable(Exception):
    """NVML cannot start: library or driver missing (``absent``) or another init failure."""

    def __init__(self, message: str, absent: bool) -> None:
        super().__init__(message)
        self.absent = absent


def theoretical_bandwidth_gbps(
    bus_width_bits: int | None, max_memory_clock_mhz: float | None
) -> float | None:
    """Peak memory bandwidth in GB/s: bytes per transfer x clock x 2 (double data rate).

    NVML's memory clock already folds in the GDDR prefetch (L40S: 9001 MHz x 384 bit -> 864 GB/s), and
    for HBM it is the real clock (H100 SXM: 2619 MHz x 5120 bit -> 3352 GB/s); both match the data
    sheets with the same x2.
    """
    if not bus_width_bits or not max_memory_clock_mhz:
        return None
    return round(bus_width_bits / 8 * max_memory_clock_mhz * 2 / 1000, 1)


def _text(value: Any) -> str:
    # nvidia-ml-py before 11.5 returned bytes, later versions str.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cuda_version(value: int | None) -> str | None:
    """NVML's integer CUDA driver version (12040) as ``"12.4"``."""
    if not value:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def _is_absent_error(module: ModuleType, exc: BaseException) -> bool:
    absent_types = tuple(
        cls for cls in (getattr(module, name, None) for name in ABSENT_ERRORS) if isinstance(cls, type)
    )
    return bool(absent_types) and isinstance(exc, absent_types)


def _device_record(
    nvml: OptionalCalls, handle: Any, index: int, driver: str | None, cuda: str | None
) -> GpuInfo:
    from velollm_core.api import GpuInfo

    name = nvml.get("nvmlDeviceGetName", handle)
    memory = nvml.get("nvmlDeviceGetMemoryInfo", handle)
    pci = nvml.get("nvmlDeviceGetPciInfo", handle)
    capability = nvml.get("nvmlDeviceGetCudaComputeCapability", handle)
    bus_width = nvml.get("nvmlDeviceGetMemoryBusWidth", handle)
    clock_kind = nvml.constant("NVML_CLOCK_MEM", 2)
    max_clock = nvml.get("nvmlDeviceGetMaxClockInfo", handle, clock_kind)
    power_mw = nvml.get("nvmlDeviceGetPowerManagementLimit", handle)
    mig = nvml.get("nvmlDeviceGetMigMode", handle)
    uuid = nvml.get("nvmlDeviceGetUUID", handle)
    pcie = {field: nvml.get(call, handle) for field, call in PCIE_CALLS.items()}

    bus_id = normalize_pci_bus_id(_text(pci.busId)) if pci is not None else None
    device_id = None
    if pci is not None and getattr(pci, "pciDeviceId", None):
        # pciDeviceId packs the device id in the high 16 bits and the vendor id in the low 16.
        device_id = f"0x{(pci.pciDeviceId >> 16) & 0xFFFF:04x}"
    return GpuInfo(
        vendor="nvidia",
        name=_text(name) if name is not None else f"NVIDIA GPU {index}",
        index=index,
        uuid=_text(uuid) if uuid is not None else None,
        pci_bus_id=bus_id,
        pci_vendor_id="0x10de",
        pci_device_id=device_id,
        memory_total_bytes=int(memory.total) if memory is not None else None,
        memory_free_bytes=int(memory.free) if memory is not None else None,
        memory_used_bytes=int(memory.used) if memory is not None else None,
        driver_version=driver,
        cuda_driver_version=cuda,
        compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
        memory_bus_width_bits=int(bus_width) if bus_width else None,
        memory_max_clock_mhz=float(max_clock) if max_clock else None,
        bandwidth_gbps=theoretical_bandwidth_gbps(bus_width, max_clock),
        power_limit_w=power_mw / 1000.0 if power_mw else None,
        mig_enabled=bool(mig[0]) if mig else None,
        **{field: int(value) if value else None for field, value in pcie.items()},
        source="nvml",
    )


def probe_nvml(module: ModuleType, warn: Callable[[str], None]) -> list[GpuInfo]:
    """One record per GPU NVML counts; raises NvmlUnavailable when NVML cannot start."""
    nvml = OptionalCalls(module, "NVMLError")
    try:
        module.nvmlInit()
    except nvml.error as exc:
        raise NvmlUnavailable(f"NVML could not start: {exc}", absent=_is_absent_error(module, exc)) from None
    try:
        driver = nvml.get("nvmlSystemGetDriverVersion")
        cuda = nvml.get("nvmlSystemGetCudaDriverVersion_v2") or nvml.get("nvmlSystemGetCudaDriverVersion")
        try:
            count = module.nvmlDeviceGetCount()
        except nvml.error as exc:
            raise NvmlUnavailable(f"NVML could not count GPUs: {exc}", absent=False) from None
        gpus = []
        for index in range(count):
            try:
                handle = module.nvmlDeviceGetHandleByIndex(index)
            except nvml.error as exc:
                # A GPU fallen off the bus or hidden by permissions: report it, keep the others.
                warn(f"NVML could not open GPU {index}: {exc}")
                continue
            gpus.append(
                _device_record(nvml, handle, index, _text(driver) if driver else None, _cuda_version(cuda))
            )
        return gpus
    finally:
        nvml.get("nvmlShutdown")
