"""The Apple probe: system_profiler and sysctl on macOS; one unified-memory GPU per Apple chip.

The GPU shares RAM with the CPU, but Metal lets it wire only part of it: ``recommendedMaxWorkingSetSize``
is about 2/3 of RAM up to 36 GiB and 3/4 above, unless the user raised the limit with
``sysctl iogpu.wired_limit_mb``. ``memory_total_bytes`` is that usable share, never all of RAM, so the
planners that read it do not propose a model the GPU cannot hold.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from velollm_core.api import ProbeError, hookimpl, run_tool

if TYPE_CHECKING:  # every CLI command loads this module: pydantic waits until a probe runs
    from velollm_core.api import GpuInfo, GpuVendor

GIB = 2**30
MIB = 2**20
SYSTEM_PROFILER_TIMEOUT_S = 30.0  # system_profiler is slow on a cold start; the data types asked are small

# Peak memory bandwidth (GB/s) from Apple's chip specifications. Chips sold with two memory
# configurations are told apart by GPU core count: {cores at or above: GB/s}.
APPLE_BANDWIDTH_GBPS: dict[str, float | dict[int, float]] = {
    "M1": 68.25,
    "M1 Pro": 200.0,
    "M1 Max": 400.0,
    "M1 Ultra": 800.0,
    "M2": 100.0,
    "M2 Pro": 200.0,
    "M2 Max": 400.0,
    "M2 Ultra": 800.0,
    "M3": 100.0,
    "M3 Pro": 150.0,
    "M3 Max": {0: 300.0, 40: 400.0},  # 30-core GPU: 300, 40-core: 400
    "M3 Ultra": 819.0,
    "M4": 120.0,
    "M4 Pro": 273.0,
    "M4 Max": {0: 410.0, 40: 546.0},  # 32-core GPU: 410, 40-core: 546
}
_CHIP = re.compile(r"\b(M\d+)(?:\s*(Pro|Max|Ultra))?\b", re.IGNORECASE)
# Older system_profiler versions name the GPU item after a localization key: "kHW_AppleM1ProItem".
_LOCALIZATION_KEY = re.compile(r"^kHW_Apple(M\d+)(Pro|Max|Ultra)?Item$")
VENDORS: dict[str, GpuVendor] = {
    "apple": "apple",
    "amd": "amd",
    "ati": "amd",
    "intel": "intel",
    "nvidia": "nvidia",
}


def apple_bandwidth_gbps(chip_name: str, gpu_cores: int | None) -> float | None:
    """Data-sheet bandwidth of an Apple chip (``"Apple M3 Max"``), by GPU cores where it varies."""
    match = _CHIP.search(chip_name)
    if match is None:
        return None
    key = match.group(1).upper() + (f" {match.group(2).title()}" if match.group(2) else "")
    entry = APPLE_BANDWIDTH_GBPS.get(key)
    if isinstance(entry, dict):
        # Without a core count, assume the smaller configuration: overestimating misleads more.
        cores = gpu_cores or 0
        return entry[max(threshold for threshold in entry if threshold <= cores)]
    return entry


def usable_gpu_memory_bytes(ram_bytes: int, wired_limit_mb: int | None) -> int:
    """What Metal lets the GPU use: the wired limit when set, else 2/3 of RAM up to 36 GiB, 3/4 above."""
    if wired_limit_mb and wired_limit_mb > 0:
        return wired_limit_mb * MIB
    if ram_bytes <= 36 * GIB:
        return ram_bytes * 2 // 3
    return ram_bytes * 3 // 4


def _memory_from_text(text: str | None) -> int | None:
    """``"16 GB"`` (SPHardwareDataType's physical_memory, binary GB) as bytes."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]B)\s*$", text or "")
    if match is None:
        return None
    factor = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[match.group(2)]
    return int(float(match.group(1)) * factor)


def _chip_name(item: dict[str, Any], hardware: dict[str, Any]) -> str:
    for candidate in (item.get("sppci_model"), hardware.get("chip_type"), item.get("_name")):
        if not candidate:
            continue
        key = _LOCALIZATION_KEY.match(candidate)
        if key:
            return f"Apple {key.group(1)}" + (f" {key.group(2)}" if key.group(2) else "")
        return str(candidate)
    return "Apple GPU"


def _vendor(item: dict[str, Any]) -> GpuVendor:
    raw = str(item.get("spdisplays_vendor") or item.get("sppci_vendor") or "").lower()
    for fragment, vendor in VENDORS.items():
        if fragment in raw:
            return vendor
    return "apple" if "apple" in str(item.get("sppci_model", "")).lower() else "other"


def parse_system_profiler(
    text: str, ram_bytes: int | None = None, wired_limit_mb: int | None = None
) -> list[GpuInfo]:
    """GpuInfo records from ``system_profiler SPDisplaysDataType SPHardwareDataType -json``.

    ``ram_bytes`` comes from ``sysctl hw.memsize``; without it, SPHardwareDataType's physical_memory.
    Raises ProbeError when the text is not system_profiler JSON.
    """
    from velollm_core.api import GpuInfo

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeError(f"system_profiler printed invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProbeError("system_profiler JSON is not an object")
    hardware = next(iter(data.get("SPHardwareDataType") or [{}]), {}) or {}
    ram_bytes = ram_bytes or _memory_from_text(hardware.get("physical_memory"))
    gpus = []
    for index, item in enumerate(data.get("SPDisplaysDataType") or []):
        if not isinstance(item, dict):
            continue
        vendor = _vendor(item)
        name = _chip_name(item, hardware if vendor == "apple" else {})
        cores = int(item["sppci_cores"]) if str(item.get("sppci_cores", "")).isdigit() else None
        if vendor == "apple":
            total = usable_gpu_memory_bytes(ram_bytes, wired_limit_mb) if ram_bytes else None
            bandwidth = apple_bandwidth_gbps(name, cores)
        else:
            # A discrete or Intel GPU of an Intel Mac: its own VRAM, as system_profiler states it.
            total = _memory_from_text(item.get("spdisplays_vram") or item.get("_spdisplays_vram"))
            bandwidth = None
        gpus.append(
            GpuInfo(
                vendor=vendor,
                name=name,
                index=index,
                memory_total_bytes=total,
                gpu_cores=cores,
                unified_memory=vendor == "apple",
                bandwidth_gbps=bandwidth,
                source="system_profiler",
            )
        )
    return gpus


def _sysctl_int(name: str) -> int | None:
    try:
        return int(run_tool(["sysctl", "-n", name]).strip())
    except (ProbeError, ValueError):
        return None  # iogpu.wired_limit_mb exists from macOS 14 on; before, no override is possible


def detect_apple_gpus(warn: Callable[[str], None]) -> list[GpuInfo]:
    """The GPUs system_profiler lists, with Metal's usable share of RAM; only runs on macOS."""
    if platform.system() != "Darwin":
        return []
    try:
        text = run_tool(
            ["system_profiler", "SPDisplaysDataType", "SPHardwareDataType", "-json"],
            timeout=SYSTEM_PROFILER_TIMEOUT_S,
        )
        return parse_system_profiler(text, _sysctl_int("hw.memsize"), _sysctl_int("iogpu.wired_limit_mb"))
    except ProbeError as exc:
        warn(str(exc))
        return []


@hookimpl
def detect_gpu(warn: Callable[[str], None]) -> list[GpuInfo]:
    """Apple silicon GPU: chip, GPU cores, usable unified memory, bandwidth."""
    return detect_apple_gpus(warn)
