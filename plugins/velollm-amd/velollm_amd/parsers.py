"""Parsers of ``amd-smi static --json`` and ``rocm-smi --json``: text in, GpuInfo records out.

Output that is not the expected JSON raises ProbeError, like a tool that failed.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from velollm_amd.bandwidth import known_bandwidth_gbps
from velollm_core.api import ProbeError, memory_bytes, normalize_pci_bus_id, pci_device_name

if TYPE_CHECKING:  # every `velollm detect` imports this module: pydantic waits until a GPU answers
    from velollm_core.api import GpuInfo

AMD_VENDOR_ID = "0x1002"
_HEX_ID = re.compile(r"^0x[0-9a-f]+$", re.IGNORECASE)
_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z/]*)\s*$")
_INBOX_DRIVER = re.compile(r"^Linux\s*version\s*([^\s(]+)", re.IGNORECASE)


def _placeholder(value: Any) -> bool:
    """True for the values AMD tools print where they know nothing, including bare PCI ids."""
    if value is None:
        return True
    text = str(value).strip()
    return text == "" or text.upper() in {"N/A", "NA", "UNKNOWN"} or bool(_HEX_ID.match(text))


def _text(value: Any) -> str | None:
    return None if _placeholder(value) else str(value).strip()


def _id(value: Any) -> str | None:
    """A hex id or serial as lowercase text, None for N/A; unlike names, hex is the point here."""
    if value is None or str(value).strip().upper() in {"", "N/A", "NA", "UNKNOWN"}:
        return None
    return str(value).strip().lower()


def _measure(value: Any) -> tuple[float, str | None] | None:
    """``{"value": 65520, "unit": "MB"}``, ``"65520 MB"`` or ``65520`` as (number, unit)."""
    unit = None
    if isinstance(value, dict):
        value, unit = value.get("value"), value.get("unit")
        unit = unit if isinstance(unit, str) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), unit
    if isinstance(value, str):
        match = _NUMBER_WITH_UNIT.match(value)
        if match:
            return float(match.group(1)), unit or match.group(2) or None
    return None


def _bytes(value: Any, default_unit: str = "B") -> int | None:
    measured = _measure(value)
    if measured is None:
        return None
    size = memory_bytes(*measured, default_unit)  # AMD's "MB" is MiB
    return int(size) if size is not None else None


def _driver_version(value: Any) -> str | None:
    """The amdgpu version; the in-kernel driver reports the kernel's banner, cut to its release."""
    text = _text(value)
    if text is None:
        return None
    inbox = _INBOX_DRIVER.match(text)
    return f"{inbox.group(1)} (in-kernel)" if inbox else text


def _fallback_name(device_id: str | None, sku: str | None = None) -> str:
    if device_id:
        return pci_device_name(AMD_VENDOR_ID, device_id)
    return f"AMD GPU (SKU {sku})" if sku else "AMD GPU"


def _load_json(text: str, tool: str) -> Any:
    """The JSON document in a tool's output, which may follow warning lines (rocm-smi prints some)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(("{", "["))]
    if not starts:
        raise ProbeError(f"{tool} printed no JSON; output starts {text.strip()[:60]!r}")
    try:
        return json.loads("\n".join(lines[starts[0] :]))
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{tool} printed invalid JSON: {exc}") from None


def _amd_smi_items(data: Any) -> list[dict]:
    """amd-smi's GPU list: bare (ROCm 6.0-6.3), wrapped in ``gpu_data`` (later), or one object."""
    if isinstance(data, dict) and "gpu_data" in data:
        data = data["gpu_data"]
    elif isinstance(data, dict) and "gpu" in data:
        data = [data]
    if not isinstance(data, list):
        raise ProbeError("amd-smi JSON holds no GPU list")
    return [item for item in data if isinstance(item, dict)]


def parse_amd_smi_list(text: str) -> dict[int, dict[str, str | None]]:
    """``amd-smi list --json`` as {gpu index: {"bdf", "uuid"}}: bus ids that ``static`` may omit."""
    found = {}
    for item in _amd_smi_items(_load_json(text, "amd-smi")):
        if isinstance(item.get("gpu"), int):
            found[item["gpu"]] = {"bdf": _id(item.get("bdf")), "uuid": _id(item.get("uuid"))}
    return found


def _section(item: dict[str, Any], key: str) -> dict[str, Any]:
    """A sub-object of an amd-smi GPU entry; {} where it is missing or not an object."""
    value = item.get(key)
    return value if isinstance(value, dict) else {}


def parse_amd_smi_static(text: str) -> list[GpuInfo]:
    """GpuInfo records from ``amd-smi static --json``."""
    from velollm_core.api import GpuInfo

    gpus = []
    for position, item in enumerate(_amd_smi_items(_load_json(text, "amd-smi"))):
        asic, board, bus, vram, limit = (_section(item, key) for key in ("asic", "board", "bus", "vram", "limit"))
        device_id = _id(asic.get("device_id"))
        name = _text(asic.get("market_name")) or _text(board.get("product_name")) or _fallback_name(device_id)
        total = _bytes(vram.get("size"), default_unit="MB")
        if total is None and "size_mb" in vram:
            total = _bytes(vram.get("size_mb"), default_unit="MB")
        bandwidth = _measure(vram.get("max_bandwidth"))
        power = _measure(limit.get("socket_power")) or _measure(limit.get("max_power"))
        index = item.get("gpu") if isinstance(item.get("gpu"), int) else position
        gpus.append(
            GpuInfo(
                vendor="amd",
                name=name,
                index=index,
                pci_bus_id=normalize_pci_bus_id(_id(bus.get("bdf"))),
                pci_vendor_id=AMD_VENDOR_ID,
                pci_device_id=device_id,
                memory_total_bytes=total,
                memory_bus_width_bits=vram.get("bit_width")
                if isinstance(vram.get("bit_width"), int)
                else None,
                driver_version=_driver_version(_section(item, "driver").get("version")),
                bandwidth_gbps=bandwidth[0] if bandwidth else known_bandwidth_gbps(name, total),
                power_limit_w=power[0] if power else None,
                source="amd-smi",
            )
        )
    return gpus


# rocm-smi renamed its keys over releases ("Card series" -> "Card Series"); the first real name wins.
ROCM_NAME_KEYS = ("Device Name", "Card Series", "Card series", "Marketing Name", "Card Model", "Card model")


def _rocm_card_name(card: dict[str, Any]) -> str:
    for key in ROCM_NAME_KEYS:
        name = _text(card.get(key))
        if name:
            return name
    # Old rocm-smi printed the vendor id (0x1002) in every name field: fall back to ids.
    return _fallback_name(_id(card.get("Device ID")), _text(card.get("Card SKU")))


def parse_rocm_smi(text: str) -> list[GpuInfo]:
    """GpuInfo records from ``rocm-smi ... --json`` (keys ``card0``.. plus ``system``)."""
    from velollm_core.api import GpuInfo

    data = _load_json(text, "rocm-smi")
    if not isinstance(data, dict):
        raise ProbeError("rocm-smi JSON is not an object")
    system = data.get("system") if isinstance(data.get("system"), dict) else {}
    cards = [
        (int(key[4:]), value)
        for key, value in data.items()
        if key.startswith("card") and key[4:].isdigit() and isinstance(value, dict)
    ]
    gpus = []
    for index, card in sorted(cards):
        name = _rocm_card_name(card)
        total = _bytes(card.get("VRAM Total Memory (B)"))
        used = _bytes(card.get("VRAM Total Used Memory (B)"))
        device_id = _id(card.get("Device ID"))
        gpus.append(
            GpuInfo(
                vendor="amd",
                name=name,
                index=index,
                uuid=_id(card.get("Unique ID")),
                pci_bus_id=normalize_pci_bus_id(_id(card.get("PCI Bus"))),
                pci_vendor_id=AMD_VENDOR_ID,
                pci_device_id=device_id,
                memory_total_bytes=total,
                memory_used_bytes=used,
                memory_free_bytes=total - used if total is not None and used is not None else None,
                driver_version=_driver_version(card.get("Driver version") or system.get("Driver version")),
                bandwidth_gbps=known_bandwidth_gbps(name, total),
                source="rocm-smi",
            )
        )
    return gpus
