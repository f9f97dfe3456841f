"""NVIDIA GPUs through ``nvidia-smi --query-gpu``, else ``-q -x``: the fallback when NVML fails."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from typing import Any

from velollm_core.api import DEFAULT_TIMEOUT_S, GpuInfo, ProbeError, normalize_pci_bus_id, run_tool
from velollm_nvidia.values import as_bytes as _bytes
from velollm_nvidia.values import as_float as _float
from velollm_nvidia.values import clean as _clean

FULL_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "memory.total",
    "memory.free",
    "memory.used",
    "driver_version",
    "compute_cap",
    "power.limit",
    "clocks.max.memory",
)
# The card's PCIe link: asked with the richest set only, so an old driver's retry drops them too.
PCIE_FIELDS = ("pcie.link.gen.current", "pcie.link.gen.max", "pcie.link.width.current", "pcie.link.width.max")
# nvidia-smi refuses the whole query when one field is unknown to its driver (compute_cap came with
# the 510 drivers), so each retry drops the fields that arrived late.
FIELD_SETS = (
    (*FULL_FIELDS, *PCIE_FIELDS),
    tuple(field for field in FULL_FIELDS if field != "compute_cap"),
    ("index", "name", "uuid", "pci.bus_id", "memory.total", "memory.free", "memory.used", "driver_version"),
)

_HEADER_UNIT = re.compile(r"\s*\[([^\]]*)\]\s*$")


def _field_key(header: str) -> tuple[str, str | None]:
    """``"memory.total [MiB]"`` -> ``("memory.total", "MiB")``."""
    header = header.strip()
    unit = _HEADER_UNIT.search(header)
    if unit:
        return header[: unit.start()].strip().lower(), unit.group(1)
    return header.lower(), None


def parse_smi_csv(text: str, fields: tuple[str, ...] | None = None) -> list[GpuInfo]:
    """GpuInfo records from ``--query-gpu`` CSV, read by its header (with or without units).

    ``fields`` names the columns of header-less output (``--format=csv,noheader``). Raises ProbeError
    when the text is not such CSV.
    """
    rows = [
        [cell.strip() for cell in row] for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)
    ]
    if not rows:
        return []
    first_keys = [_field_key(cell)[0] for cell in rows[0]]
    if "name" in first_keys or "pci.bus_id" in first_keys:
        header = [_field_key(cell) for cell in rows[0]]
        rows = rows[1:]
    elif fields is not None:
        header = [(field, None) for field in fields]
    else:
        raise ProbeError(f"nvidia-smi printed no CSV header in output starting {text.strip()[:60]!r}")

    gpus: list[GpuInfo] = []
    seen_bus_ids: set[str] = set()
    for row in rows:
        if len(row) != len(header):
            continue  # a warning line or a truncated row, not a GPU
        values = {key: value for (key, _), value in zip(header, row)}
        units = {key: unit for key, unit in header}
        name = _clean(values.get("name"))
        if name is None:
            continue
        bus_id = normalize_pci_bus_id(_clean(values.get("pci.bus_id")))
        if bus_id is not None:
            # MIG-era tools may repeat a physical GPU; one record per device is what the core merges.
            if bus_id in seen_bus_ids:
                continue
            seen_bus_ids.add(bus_id)
        index = _float(values.get("index"))
        mig_mode = _clean(values.get("mig.mode.current"))
        record: dict[str, Any] = {
            "vendor": "nvidia",
            "name": name,
            "index": int(index) if index is not None else None,
            "uuid": _clean(values.get("uuid")),
            "pci_bus_id": bus_id,
            "pci_vendor_id": "0x10de",
            "memory_total_bytes": _bytes(values.get("memory.total"), units.get("memory.total")),
            "memory_free_bytes": _bytes(values.get("memory.free"), units.get("memory.free")),
            "memory_used_bytes": _bytes(values.get("memory.used"), units.get("memory.used")),
            "driver_version": _clean(values.get("driver_version")),
            "compute_capability": _clean(values.get("compute_cap")),
            "power_limit_w": _float(values.get("power.limit")),
            "memory_max_clock_mhz": _float(values.get("clocks.max.memory")),
            "mig_enabled": mig_mode.lower() == "enabled" if mig_mode else None,
            **pcie_link(values.get),
            "source": "nvidia-smi",
        }
        gpus.append(GpuInfo(**record))
    return gpus


def pcie_link(value: Callable[[str], str | None]) -> dict[str, int | None]:
    """The GpuInfo PCIe fields from ``value(field)`` (a CSV row's or the XML's reader of the same names)."""
    def number(field: str) -> int | None:
        read = _float(value(field))
        return int(read) if read is not None and 0 < read < 1000 else None

    return {"pcie_generation": number("pcie.link.gen.current"), "pcie_max_generation": number("pcie.link.gen.max"),
            "pcie_width": number("pcie.link.width.current"), "pcie_max_width": number("pcie.link.width.max")}


def _rejected_field(exc: ProbeError) -> bool:
    # nvidia-smi: 'Field "compute_cap" is not a valid field to query.'
    return "valid field" in str(exc).lower()


def _query_refused(exc: ProbeError) -> bool:
    """Whether nvidia-smi refused the query itself (not the GPU or driver failing): -q -x may still work."""
    # 'ERROR: Option --query-gpu is not recognized.', 'Invalid combination of input arguments.'
    message = str(exc).lower()
    return _rejected_field(exc) or "not recognized" in message or "invalid combination" in message


def probe_smi(timeout: float = DEFAULT_TIMEOUT_S) -> list[GpuInfo]:
    """Run nvidia-smi with the richest field set its driver accepts; raises ProbeError.

    When every query is refused, or its output cannot be read, ``nvidia-smi -q -x`` is tried instead.
    """
    for fields in FIELD_SETS:
        # The header is kept (no "noheader") so columns are read by name, whatever the driver returns.
        args = ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,nounits"]
        try:
            output = run_tool(args, timeout=timeout)
        except ProbeError as exc:
            if _rejected_field(exc) and fields is not FIELD_SETS[-1]:
                continue
            if _query_refused(exc):
                return _probe_xml(timeout, exc)
            raise
        try:
            return parse_smi_csv(output)
        except ProbeError as exc:
            return _probe_xml(timeout, exc)
    return []  # unreachable: the last field set either answers or raises


def _probe_xml(timeout: float, csv_error: ProbeError) -> list[GpuInfo]:
    """``nvidia-smi -q -x``; a failure raises one ProbeError that names both attempts."""
    from velollm_nvidia.smi_xml import parse_smi_xml  # only where the CSV query failed

    try:
        return parse_smi_xml(run_tool(["nvidia-smi", "-q", "-x"], timeout=timeout))
    except ProbeError as exc:
        raise ProbeError(f"{csv_error}; nvidia-smi -q -x failed too: {exc}") from None
