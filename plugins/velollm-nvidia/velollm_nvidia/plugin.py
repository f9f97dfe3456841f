"""The NVIDIA probe: NVML first, nvidia-smi when NVML cannot be loaded; never raises."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from velollm_core.api import DEFAULT_TIMEOUT_S, ProbeError, hookimpl

if TYPE_CHECKING:  # every CLI command loads this module: pydantic and pynvml wait until a probe runs
    from velollm_core.api import GpuInfo

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def nvidia_hardware_seen() -> bool:
    """Whether this machine shows an NVIDIA GPU without any NVIDIA tool (PCI bus, kernel driver)."""
    from velollm_core.api import vendor_seen_on_pci

    return DRIVER_VERSION_FILE.exists() or vendor_seen_on_pci("nvidia")


def nvml_library_loadable() -> bool:
    """Whether NVML's library can load: on Linux the same dlopen pynvml does; elsewhere assumed so."""
    if not sys.platform.startswith("linux"):
        return True
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def nvidia_may_be_present(hardware_seen: Callable[[], bool] | None = None) -> bool:
    """False only where NVML would surely find nothing: no pynvml loaded, no nvidia-smi, no device, no library."""
    # Importing pynvml costs ~30 ms (thousands of ctypes definitions), more than the rest of
    # `velollm detect --json`. Without its library, nvidia-smi or a device on the bus, NVML would end
    # where this does: no GPU, nothing to warn about. A pynvml already imported (a test's fake) is asked.
    return ("pynvml" in sys.modules or shutil.which("nvidia-smi") is not None
            or (hardware_seen or nvidia_hardware_seen)() or nvml_library_loadable())


def detect_nvidia_gpus(
    warn: Callable[[str], None],
    timeout: float = DEFAULT_TIMEOUT_S,
    hardware_seen: Callable[[], bool] = nvidia_hardware_seen,
) -> list[GpuInfo]:
    """NVIDIA GPUs from NVML, else nvidia-smi; problems go to ``warn``.

    A machine without NVIDIA hardware gets no warning for missing NVIDIA tools: absence is normal.
    """
    if not nvidia_may_be_present(hardware_seen):
        return []
    from velollm_nvidia.nvml import NvmlUnavailable, probe_nvml

    why_not_nvml = "nvidia-ml-py is not installed"
    nvml_absent = True
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            return probe_nvml(pynvml, warn)
        except NvmlUnavailable as exc:
            why_not_nvml, nvml_absent = str(exc), exc.absent
        except Exception as exc:  # noqa: BLE001 - an NVML binding bug must leave nvidia-smi a chance
            why_not_nvml, nvml_absent = f"NVML failed: {type(exc).__name__}: {exc}", False
    if shutil.which("nvidia-smi") is None:
        if not nvml_absent or hardware_seen():
            warn(f"an NVIDIA GPU seems present but {why_not_nvml}, and nvidia-smi is not on PATH")
        return []
    if not nvml_absent:
        warn(f"{why_not_nvml}; falling back to nvidia-smi")
    from velollm_nvidia.smi import probe_smi

    try:
        return probe_smi(timeout=timeout)
    except ProbeError as exc:
        warn(str(exc))
    return []


@hookimpl
def detect_gpu(warn: Callable[[str], None]) -> list[GpuInfo]:
    """NVIDIA GPUs with memory, driver, CUDA version, compute capability and bandwidth."""
    return detect_nvidia_gpus(warn)


@hookimpl
def detect_gpu_links(gpus: list[GpuInfo], warn: Callable[[str], None]) -> list:
    """How the NVIDIA cards reach each other (NVLink, PCIe switch, host bridge, CPU sockets)."""
    if sum(gpu.vendor == "nvidia" for gpu in gpus) < 2:
        return []
    from velollm_nvidia.topology import detect_links

    return detect_links(gpus, warn)


@hookimpl
def telemetry_sources() -> list:
    """NVML power, energy, memory and utilization per GPU, where an NVIDIA GPU may be present."""
    if not nvidia_may_be_present():
        return []
    from velollm_nvidia.telemetry import NvmlSource

    return [NvmlSource()]
