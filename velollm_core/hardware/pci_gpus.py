"""The generic PCI GPU probe: a built-in plugin giving one record per display device on the PCI bus.

Vendor plugins' records (NVML, amdsmi, ...) replace these for the same PCI bus id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from velollm_core.contract.probing import pci
from velollm_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from velollm_core.contract.schemas import GpuInfo


@hookimpl
def detect_gpu(warn: Callable[[str], None]) -> list[GpuInfo]:
    """Generic records for every GPU on the PCI bus; vendor plugins' records replace them."""
    try:
        return pci.probe_pci_gpus(pci.SYSFS_ROOT)
    except OSError as exc:
        warn(f"pci: could not read {pci.SYSFS_ROOT / 'bus/pci/devices'}: {exc}")
        return []
