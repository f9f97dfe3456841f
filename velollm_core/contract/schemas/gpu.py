"""The GPU record every ``detect_gpu`` plugin returns: a plain dataclass, checked on creation.

Not a pydantic model: ``velollm detect --json`` runs in scripts' loops, and on a machine with a GPU
importing pydantic alone would cost about as much as the whole command does without it. The checks
are the ones pydantic made: the vendor is one of ``GpuVendor``, every fact has its field's type
(an int is accepted where a float is expected), and a bad record is one readable ``TypeError`` that
the core turns into a warning naming the plugin.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

GpuVendor = Literal["nvidia", "amd", "apple", "intel", "other"]
VENDORS = get_args(GpuVendor)
# The JSON type of each field but vendor; optional unless listed in REQUIRED.
_TYPES: dict[str, type] = {
    "name": str, "memory_total_bytes": int, "memory_free_bytes": int, "memory_used_bytes": int,
    "driver_version": str, "pci_bus_id": str, "bandwidth_gbps": float, "source": str, "index": int,
    "uuid": str, "compute_capability": str, "cuda_driver_version": str, "memory_bus_width_bits": int,
    "memory_max_clock_mhz": float, "power_limit_w": float, "gpu_cores": int, "unified_memory": bool,
    "pci_vendor_id": str, "pci_device_id": str, "mig_enabled": bool, "pcie_generation": int,
    "pcie_max_generation": int, "pcie_width": int, "pcie_max_width": int,
}
REQUIRED = frozenset({"name", "source", "unified_memory"})


def _checked(field: str, value: Any) -> Any:
    expected = _TYPES[field]
    if value is None and field not in REQUIRED:
        return None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
        return value
    raise TypeError(f"GpuInfo.{field} must be {expected.__name__}, not {type(value).__name__} ({value!r})")


@dataclass(kw_only=True)
class GpuInfo:
    """One GPU as one probe sees it; ``source`` names the probe (nvml, nvidia-smi, amdsmi, sysfs, pci...)."""

    vendor: GpuVendor
    name: str
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_used_bytes: int | None = None
    driver_version: str | None = None
    pci_bus_id: str | None = None
    bandwidth_gbps: float | None = None
    source: str
    index: int | None = None
    uuid: str | None = None
    compute_capability: str | None = None
    cuda_driver_version: str | None = None
    memory_bus_width_bits: int | None = None
    memory_max_clock_mhz: float | None = None
    power_limit_w: float | None = None
    gpu_cores: int | None = None
    unified_memory: bool = False
    pci_vendor_id: str | None = None
    pci_device_id: str | None = None
    mig_enabled: bool | None = None
    # The card's PCIe link now and at best: an idle card trains down (Gen4 reads Gen1), the width stays.
    pcie_generation: int | None = None
    pcie_max_generation: int | None = None
    pcie_width: int | None = None
    pcie_max_width: int | None = None

    def __post_init__(self) -> None:
        if self.vendor not in VENDORS:
            raise TypeError(f"GpuInfo.vendor must be one of {', '.join(VENDORS)}, not {self.vendor!r}")
        for field in _TYPES:
            object.__setattr__(self, field, _checked(field, getattr(self, field)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuInfo:
        """A record from a plugin's dict; unknown keys are refused, naming them."""
        unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"GpuInfo has no field {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, fields in declaration order (what ``detect --json`` prints)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> GpuInfo:
        """A copy with ``changes`` applied and checked."""
        return dataclasses.replace(self, **changes)


# How two GPUs of one machine reach each other, fastest first: a direct GPU-to-GPU bridge (NVLink,
# Infinity Fabric), the same board, one PCIe switch, several switches, the CPU's host bridge, two host
# bridges of one NUMA node, or the link between CPU sockets. Vendor words (NV4, PHB) stay in ``label``.
GpuLinkKind = Literal["bridge", "board", "pcie-switch", "pcie-switches", "host-bridge", "numa-node", "cross-numa"]
LINK_KINDS = get_args(GpuLinkKind)


@dataclass(kw_only=True)
class GpuLink:
    """How two GPUs are connected, by their PCI bus ids; ``bridge_links`` counts bonded bridge links."""

    pci_bus_ids: list[str]
    kind: GpuLinkKind
    source: str
    label: str | None = None
    bridge_links: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise TypeError(f"GpuLink.kind must be one of {', '.join(LINK_KINDS)}, not {self.kind!r}")
        ids = self.pci_bus_ids
        if not isinstance(ids, (list, tuple)) or len(ids) != 2 or not all(isinstance(i, str) for i in ids):
            raise TypeError(f"GpuLink.pci_bus_ids must be two PCI bus ids, not {ids!r}")
        self.pci_bus_ids = sorted(ids)
        for name, expected in (("source", str), ("label", str), ("bridge_links", int)):
            value = getattr(self, name)
            if not (value is None and name != "source") and (not isinstance(value, expected)
                                                             or isinstance(value, bool)):
                raise TypeError(f"GpuLink.{name} must be {expected.__name__}, not {value!r}")

    @property
    def speed_rank(self) -> int:
        """0 for the fastest kind of link (a bridge), growing towards the slowest (across CPU sockets)."""
        return LINK_KINDS.index(self.kind)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuLink:
        unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"GpuLink has no field {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
