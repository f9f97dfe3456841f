"""Intel GPUs through ``xpu-smi`` (Intel XPU Manager): names, memory, driver and bus ids.

Its records replace the generic ``pci`` record of the same card (same PCI bus id) when the report is
merged.

``xpu-smi discovery -j`` lists the devices; ``xpu-smi discovery -d ID -j`` describes one. Both also
exist as box-drawn tables of ``Key: Value`` lines (the only form some captures show), read by
``parse_xpu_table``. Output that is neither raises ProbeError, like a tool that failed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from velollm_core.api import DEFAULT_TIMEOUT_S, ProbeError, ProbeTimeout, hookimpl, memory_bytes, run_tool

if TYPE_CHECKING:  # pydantic loads only when a GPU record is built: every CLI command loads this module
    from velollm_core.api import GpuInfo

TOOL = "xpu-smi"
SOURCE = "xpu-smi"
INTEL_VENDOR_ID = "0x8086"

# Table labels -> the JSON keys of the same facts. Newer xpu-smi prints "SOC UUID" for "uuid".
# Labels not listed become snake_case ("PCI Slot" -> "pci_slot").
_TABLE_KEYS = {
    "Device ID": "device_id",
    "Device Type": "device_type",
    "Device Name": "device_name",
    "PCI Device ID": "pci_device_id",
    "PCI Vendor ID": "pci_vendor_id",
    "Vendor Name": "vendor_name",
    "UUID": "uuid",
    "SOC UUID": "uuid",
    "Driver Version": "driver_version",
    "Kernel Version": "kernel_version",
    "PCI BDF Address": "pci_bdf_address",
    "Memory Physical Size": "memory_physical_size",
    "Memory Bus Width": "memory_bus_width",
    "Function Type": "device_function_type",
}
_PLACEHOLDERS = {"", "N/A", "NA", "UNKNOWN", "NONE"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_BORDER = re.compile(r"^\+[-=+]*\+$")
# A row label is words ("Max Tx/Rx Speed per Xe Link port"); a wrapped value ("0000:4d:00.0") is not.
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9 ()/._-]*$")


# --- parsing --------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A value as stripped text, None for the placeholders xpu-smi prints where it knows nothing."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return None if text.upper() in _PLACEHOLDERS else text


def _int(value: Any) -> int | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):  # OverflowError: digits beyond a float's range
        return None


def _size_bytes(value: Any, default_unit: str = "B") -> int | None:
    """``34359738368``, ``"34359738368"`` or ``"32768.00 MiB"`` as bytes; None when unknown or zero."""
    text = _text(value)
    if text is None:
        return None
    match = _SIZE.match(text)
    if match is None:
        return None
    size = memory_bytes(float(match.group(1)), match.group(2), default_unit)
    if size is None:
        return None
    return round(size) or None  # xpu-smi prints 0 where it does not know


def _hex_id(value: Any) -> str | None:
    """A PCI id as sysfs writes it, ``0x020a``: xpu-smi drops leading zeros (``0x20a``)."""
    text = _text(value)
    if text is None:
        return None
    try:
        return f"0x{int(text, 16):04x}"
    except ValueError:
        return None


def _load_json(text: str) -> Any:
    """The JSON document in xpu-smi's output; an ``{"error": ...}`` answer becomes its message."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ProbeError(f"{TOOL} printed no JSON; output starts {text.strip()[:60]!r}")
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{TOOL} printed invalid JSON: {exc}") from None
    if isinstance(data, dict) and _text(data.get("error")):
        raise ProbeError(f"{TOOL}: {_text(data['error'])}")
    return data


def parse_xpu_discovery_json(text: str) -> list[dict[str, Any]]:
    """``xpu-smi discovery -j``: one dict per entry of ``device_list`` (device_id, device_name, ...)."""
    data = _load_json(text)
    items = data.get("device_list") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProbeError(f"{TOOL} JSON holds no device_list")
    return [item for item in items if isinstance(item, dict)]


def parse_xpu_device_json(text: str) -> dict[str, Any]:
    """``xpu-smi discovery -d ID -j``: one flat object of properties (values mostly strings)."""
    data = _load_json(text)
    if not isinstance(data, dict) or "device_list" in data or not data:
        raise ProbeError(f"{TOOL} JSON is not one device's properties")
    return data


def _join_wrapped(head: str, tail: str) -> str:
    # xpu-smi cuts long values after ", \t/" and pads the cell: the cut space is lost to the padding.
    return head + tail if head.endswith("/") else f"{head} {tail}"


def parse_xpu_table(text: str) -> list[dict[str, str]]:
    """The box-drawn table of ``xpu-smi discovery`` and ``discovery -d ID``: one dict per device.

    Keys are JSON keys where the label has one (``Device Name`` -> ``device_name``), else the label
    in snake_case; values are the printed text (``"12216.00 MiB"``). A value too long for its cell
    continues on the next row, indented or without a label, and is joined back.
    """
    lines = [line.strip() for line in text.splitlines()]
    if not any(_BORDER.match(line) for line in lines):
        raise ProbeError(f"{TOOL} printed no device table; output starts {text.strip()[:60]!r}")
    devices: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    last_key: str | None = None
    for line in lines:
        if not (line.startswith("|") and line.endswith("|") and len(line) > 1):
            last_key = None  # borders between devices and anything that is not a table row
            continue
        first, bar, rest = line[1:-1].partition("|")
        if not bar:
            continue
        device_id, cell = first.strip(), rest.rstrip()
        cell = cell.removeprefix(" ")  # the cell's one-space margin
        if device_id:
            if not device_id.isdigit():  # the "Device ID | Device Information" title row
                current, last_key = None, None
                continue
            current = {"device_id": device_id}
            devices.append(current)
            last_key = None
        if current is None or not cell.strip():
            last_key = None  # blank rows separate the groups of facts
            continue
        label, colon, value = cell.partition(":")
        is_row = bool(colon) and not cell[0].isspace() and _LABEL.match(label) is not None
        if not is_row:
            if last_key is not None:
                current[last_key] = _join_wrapped(current[last_key], cell.strip())
            continue
        label = label.strip()
        last_key = _TABLE_KEYS.get(label) or re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
        current[last_key] = value.strip()
    return devices


def parse_xpu_device_text(text: str) -> dict[str, str]:
    """``xpu-smi discovery -d ID`` (the table form of ``-j``): that device's properties."""
    devices = parse_xpu_table(text)
    if not devices:
        raise ProbeError(f"{TOOL} printed a table without a device")
    return devices[0]


def gpu_from_xpu(props: dict[str, Any]) -> GpuInfo:
    """A GpuInfo from xpu-smi's properties of one device (list entry, details, or both merged).

    No bandwidth: xpu-smi reports no memory clock, and its "Memory Bus Width" is not the data-sheet
    figure (384 on an Arc B580, whose GDDR6 bus is 192 bits), so neither is recorded.
    """
    from velollm_core.api import GpuInfo, normalize_pci_bus_id, pci_device_name

    device_id = _hex_id(props.get("pci_device_id"))
    name = _text(props.get("device_name"))
    if name is None:
        name = pci_device_name(INTEL_VENDOR_ID, device_id) if device_id else "Intel GPU"
    total = _size_bytes(props.get("memory_physical_size_byte"))
    if total is None:
        total = _size_bytes(props.get("memory_physical_size"), default_unit="MiB")
    free = _size_bytes(props.get("memory_free_size_byte"))
    if free is not None and (total is None or free > total):
        free = None
    driver = _text(props.get("driver_version"))
    if driver is None and _text(props.get("kernel_version")):
        # i915 and xe ship with the kernel: its release is the driver's version.
        driver = f"{_text(props.get('kernel_version'))} (in-kernel)"
    uuid = _text(props.get("uuid"))
    return GpuInfo(
        vendor="intel",
        name=name,
        memory_total_bytes=total,
        memory_free_bytes=free,
        memory_used_bytes=total - free if total is not None and free is not None else None,
        driver_version=driver,
        pci_bus_id=normalize_pci_bus_id(_text(props.get("pci_bdf_address"))),
        source=SOURCE,
        index=_int(props.get("device_id")),
        uuid=uuid.lower() if uuid else None,
        pci_vendor_id=_hex_id(props.get("pci_vendor_id")),
        pci_device_id=device_id,
    )


# --- probing --------------------------------------------------------------------------------------


def _json_else_table(
    args: list[str], parse_json: Callable[[str], Any], parse_text: Callable[[str], Any], timeout: float
) -> Any:
    """``args + ["-j"]``; when that fails (an xpu-smi without ``-j``, or odd output), the table form.

    The JSON form's error is the one reported if both fail; a hung tool is not asked twice.
    """
    try:
        return parse_json(run_tool([*args, "-j"], timeout=timeout))
    except ProbeTimeout:
        raise
    except ProbeError as json_error:
        try:
            return parse_text(run_tool(args, timeout=timeout))
        except ProbeError:
            raise json_error from None


def probe_xpu(warn: Callable[[str], None], timeout: float = DEFAULT_TIMEOUT_S) -> list[GpuInfo]:
    """Intel GPUs from xpu-smi; [] without a word when it is not installed (most machines).

    A failing or garbled device list costs one warning and no records; a failing detail query costs
    one warning and leaves the listed devices with name and bus id only (no more queries after it).
    """
    if shutil.which(TOOL) is None:
        return []
    try:
        listing = _json_else_table([TOOL, "discovery"], parse_xpu_discovery_json, parse_xpu_table, timeout)
    except ProbeError as exc:
        warn(str(exc))
        return []
    gpus = []
    problem = None
    for device in listing:
        details: dict[str, Any] = {}
        device_id = _int(device.get("device_id"))
        if problem is None and device_id is not None:
            try:
                details = _json_else_table(
                    [TOOL, "discovery", "-d", str(device_id)],
                    parse_xpu_device_json,
                    parse_xpu_device_text,
                    timeout,
                )
            except ProbeError as exc:
                problem = f"{exc} (Intel GPU memory and driver unknown)"
        gpus.append(gpu_from_xpu({**device, **details}))
    if problem:
        warn(problem)
    return gpus


@hookimpl
def detect_gpu(warn: Callable[[str], None]) -> list[GpuInfo]:
    """Intel GPUs as xpu-smi sees them; they replace the generic PCI records of the same cards."""
    return probe_xpu(warn)
