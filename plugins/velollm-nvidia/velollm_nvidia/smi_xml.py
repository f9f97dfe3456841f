"""NVIDIA GPUs from ``nvidia-smi -q -x``: the XML report, for drivers whose ``--query-gpu`` fails."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from velollm_core.api import GpuInfo, ProbeError, normalize_pci_bus_id
from velollm_nvidia.smi import pcie_link

# The XML prints values the way the CSV does ("81920 MiB", "500.00 W", "N/A", "[Not Supported]").
from velollm_nvidia.values import as_bytes as _bytes
from velollm_nvidia.values import as_float as _float
from velollm_nvidia.values import clean as _clean

# The XML's PCIe link elements under <pci>, by the CSV field each one answers ("16x" reads as 16).
_PCIE_PATHS = {
    "pcie.link.gen.current": "pci/pci_gpu_link_info/pcie_gen/current_link_gen",
    "pcie.link.gen.max": "pci/pci_gpu_link_info/pcie_gen/max_link_gen",
    "pcie.link.width.current": "pci/pci_gpu_link_info/link_widths/current_link_width",
    "pcie.link.width.max": "pci/pci_gpu_link_info/link_widths/max_link_width",
}

_MIG_MODES = {"enabled": True, "disabled": False}


def _value(element: ET.Element, *paths: str) -> str | None:
    """The first of ``paths`` (children of ``element``) that holds a value; None for placeholders."""
    for path in paths:
        value = _clean(element.findtext(path))
        if value is not None:
            return value
    return None


def _device_id(value: str | None) -> str | None:
    """``"20B210DE"`` (device id over vendor id) -> ``"0x20b2"``."""
    try:
        return f"0x{(int(value, 16) >> 16) & 0xFFFF:04x}" if value else None
    except ValueError:
        return None


def _width(value: str | None) -> str | None:
    return value.removesuffix("x") if value else None


def parse_smi_xml(text: str) -> list[GpuInfo]:
    """One GpuInfo per ``<gpu>`` of ``nvidia-smi -q -x``; raises ProbeError when the text is not that XML.

    Only direct children of ``<gpu>`` are read: with MIG on, ``<mig_devices>`` comes first and holds each
    instance's own ``fb_memory_usage``, which must not stand for the whole GPU's memory.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ProbeError(f"nvidia-smi -q -x printed no readable XML: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise ProbeError(f"nvidia-smi -q -x printed <{root.tag}>, not <nvidia_smi_log>")
    driver = _value(root, "driver_version")
    cuda = _value(root, "cuda_version")
    gpus: list[GpuInfo] = []
    # nvidia-smi lists the GPUs in its index order (PCI bus order); minor_number is /dev/nvidiaN, not it.
    for index, gpu in enumerate(root.findall("gpu")):
        name = _value(gpu, "product_name")
        if name is None:
            continue
        mig_mode = _value(gpu, "mig_mode/current_mig")
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                name=name,
                index=index,
                uuid=_value(gpu, "uuid"),
                pci_bus_id=normalize_pci_bus_id(_value(gpu, "pci/pci_bus_id") or gpu.get("id")),
                pci_vendor_id="0x10de",
                pci_device_id=_device_id(_value(gpu, "pci/pci_device_id")),
                memory_total_bytes=_bytes(_value(gpu, "fb_memory_usage/total"), None),
                memory_free_bytes=_bytes(_value(gpu, "fb_memory_usage/free"), None),
                memory_used_bytes=_bytes(_value(gpu, "fb_memory_usage/used"), None),
                driver_version=driver,
                cuda_driver_version=cuda,
                # Schema v12 moved power_readings/power_limit to gpu_power_readings/current_power_limit.
                power_limit_w=_float(
                    _value(gpu, "gpu_power_readings/current_power_limit", "power_readings/power_limit")
                ),
                # No bus width in the XML, so no bandwidth, as with the CSV query.
                memory_max_clock_mhz=_float(_value(gpu, "max_clocks/mem_clock")),
                mig_enabled=_MIG_MODES.get(mig_mode.lower()) if mig_mode else None,
                **pcie_link(lambda field, _gpu=gpu: _width(_value(_gpu, _PCIE_PATHS[field]))),
                source="nvidia-smi",
            )
        )
    return gpus
