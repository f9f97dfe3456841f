"""OS, CPU and memory probes; the parsers take text so tests can feed captured files.

Each probe exists twice over one implementation: ``*_facts()`` returns a plain dict holding every
field of its model, in the model's order (what ``velollm detect --json`` prints without loading
pydantic), and ``probe_*()`` returns the model built from it.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_core.contract.probing.tools import ProbeError, run_tool

if TYPE_CHECKING:  # pydantic loads only where a model is asked for: detect --json does without
    from velollm_core.contract.schemas import CpuInfo, MemoryInfo, OsInfo

OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
CPUINFO_PATH = Path("/proc/cpuinfo")
CPUFREQ_MAX_PATH = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")

# --- OS -------------------------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release file, quotes removed."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def _linux_distribution() -> str | None:
    for path in OS_RELEASE_PATHS:
        try:
            release = parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        return (
            release.get("PRETTY_NAME")
            or " ".join(part for part in (release.get("NAME"), release.get("VERSION_ID")) if part)
            or None
        )
    return None


def os_facts() -> dict[str, Any]:
    """Kernel, architecture and distribution of this machine: the fields of ``OsInfo``."""
    system = platform.system() or "unknown"
    distribution = None
    if system == "Linux":
        distribution = _linux_distribution()
    elif system == "Darwin":
        mac_version = platform.mac_ver()[0]
        distribution = f"macOS {mac_version}" if mac_version else "macOS"
    elif system == "Windows":
        distribution = " ".join(
            part for part in ("Windows", platform.release(), platform.win32_edition()) if part
        )
    return {
        "system": system,
        "release": platform.release(),
        "machine": platform.machine(),
        "version": platform.version() or None,
        "distribution": distribution,
    }


def probe_os() -> OsInfo:
    """Kernel, architecture and distribution of this machine."""
    from velollm_core.contract.schemas import OsInfo

    return OsInfo(**os_facts())


# --- CPU ------------------------------------------------------------------------------------------

# Arm CPUs print no "model name": the kernel gives only implementer and part numbers (what lscpu
# decodes with its own table). A small table for the cores found in LLM machines; others show raw ids.
ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x46": "Fujitsu",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}
ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd44"): "Cortex-X1",
    ("0x41", "0xd46"): "Cortex-A510",
    ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd48"): "Cortex-X2",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4b"): "Cortex-A78C",
    ("0x41", "0xd4d"): "Cortex-A715",
    ("0x41", "0xd4e"): "Cortex-X3",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x41", "0xd80"): "Cortex-A520",
    ("0x41", "0xd81"): "Cortex-A720",
    ("0x41", "0xd82"): "Cortex-X4",
    ("0x41", "0xd84"): "Neoverse-V3",
    ("0x41", "0xd8e"): "Neoverse-N3",
    ("0x43", "0x0a1"): "ThunderX 88XX",
    ("0x43", "0x0af"): "ThunderX2 99xx",
    ("0x46", "0x001"): "A64FX",
    ("0x48", "0xd01"): "Kunpeng-920",
    ("0x4e", "0x004"): "Carmel",
    ("0xc0", "0xac3"): "Ampere-1",
    ("0xc0", "0xac4"): "Ampere-1a",
}

# Instruction-set extensions llama.cpp / ggml pick kernels by, as Linux spells them in cpuinfo.
X86_FLAGS = ("sse3", "ssse3", "avx", "avx_vnni", "avx2", "fma", "f16c", "bmi2")
# aarch64 "Features" names -> the names ggml prints in its system info.
ARM_FEATURES = {
    "asimd": "neon",
    "neon": "neon",  # 32-bit Arm kernels print "neon" directly
    "asimdhp": "fp16",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}
# macOS reports extensions through sysctl hw.optional.* instead of cpuinfo.
SYSCTL_FEATURES = {
    "hw.optional.neon": "neon",
    "hw.optional.arm.fp16": "fp16",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.sse3": "sse3",
    "hw.optional.supplementalsse3": "ssse3",
    "hw.optional.avx1_0": "avx",
    "hw.optional.avx2_0": "avx2",
    "hw.optional.fma": "fma",
    "hw.optional.f16c": "f16c",
    "hw.optional.bmi2": "bmi2",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512cd": "avx512cd",
    "hw.optional.avx512dq": "avx512dq",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.avx512vl": "avx512vl",
    "hw.optional.avx512ifma": "avx512ifma",
    "hw.optional.avx512vbmi": "avx512vbmi",
}
FLAG_ORDER = (
    "sse3",
    "ssse3",
    "avx",
    "avx_vnni",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "neon",
    "fp16",
    "dotprod",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",
)


def _order_flags(flags: Iterable[str]) -> list[str]:
    unique = set(flags)
    head = [flag for flag in FLAG_ORDER if flag in unique]
    # avx512 and amx come in many variants; listing all of them keeps ggml's choices explainable.
    tail = sorted(flag for flag in unique if flag not in FLAG_ORDER)
    return head + tail


def relevant_cpu_flags(raw_flags: Iterable[str], arm: bool = False) -> list[str]:
    """The llama.cpp-relevant subset of cpuinfo x86 ``flags`` or Arm ``Features``, in a stable order."""
    picked = []
    for flag in raw_flags:
        flag = flag.lower()
        # The two namespaces clash: x86 "sme" is Secure Memory Encryption, Arm "sme" a matrix unit.
        if arm:
            if flag in ARM_FEATURES:
                picked.append(ARM_FEATURES[flag])
        elif flag == "pni":  # the kernel's name for SSE3
            picked.append("sse3")
        elif flag in X86_FLAGS or flag.startswith(("avx512", "amx")):
            picked.append(flag)
    return _order_flags(picked)


def parse_sysctl_features(text: str) -> list[str]:
    """Flags from ``sysctl hw.optional`` output (``name: 1`` lines), macOS's view of the ISA."""
    picked = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip() == "1" and name.strip() in SYSCTL_FEATURES:
            picked.append(SYSCTL_FEATURES[name.strip()])
    return _order_flags(picked)


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip(), value.strip())
    if current:
        blocks.append(current)
    return blocks


def arm_cpu_name(pairs: Iterable[tuple[str, str]]) -> str | None:
    """A name like ``ARM Cortex-A57`` from (implementer, part) pairs; big.LITTLE lists each core type once."""
    names: list[str] = []
    for implementer, part in pairs:
        implementer, part = implementer.lower(), part.lower()
        vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer}")
        core = ARM_PARTS.get((implementer, part), f"part {part}")
        name = f"{vendor} {core}"
        if name not in names:
            names.append(name)
    return " + ".join(names) or None


def parse_cpuinfo(text: str) -> CpuInfo:
    """CPU facts from /proc/cpuinfo text: model, vendor, flags, core counts, fastest listed MHz."""
    from velollm_core.contract.schemas import CpuInfo

    return CpuInfo(**cpuinfo_facts(text))


def cpuinfo_facts(text: str) -> dict[str, Any]:
    """:func:`parse_cpuinfo` as the fields of ``CpuInfo``."""
    blocks = _cpuinfo_blocks(text)
    processors = [block for block in blocks if "processor" in block]
    machine_wide = {k: v for block in blocks for k, v in block.items()}

    model = next((block["model name"] for block in processors if block.get("model name")), None)
    arm_pairs = [
        (block["CPU implementer"], block["CPU part"])
        for block in processors
        if "CPU implementer" in block and "CPU part" in block
    ]
    vendor = next((block["vendor_id"] for block in processors if "vendor_id" in block), None)
    architecture = None
    if arm_pairs:
        architecture = "aarch64" if machine_wide.get("CPU architecture", "").startswith("8") else "arm"
        if model is None:
            model = arm_cpu_name(arm_pairs)
            board = machine_wide.get("Hardware")
            if board:  # the SoC / board name (e.g. jetson_tx1) tells more than the core type
                model = f"{model} ({board})"
        vendor = vendor or ARM_IMPLEMENTERS.get(arm_pairs[0][0].lower())
    if model is None:
        model = machine_wide.get("Processor") or machine_wide.get("cpu model")

    if "flags" in machine_wide:
        flags = relevant_cpu_flags(machine_wide["flags"].split())
    else:
        flags = relevant_cpu_flags(machine_wide.get("Features", "").split(), arm=True)
    mhz = []
    for block in processors:
        try:
            mhz.append(float(block["cpu MHz"]))
        except (KeyError, ValueError):
            continue
    cores = {(b.get("physical id"), b.get("core id")) for b in processors if "core id" in b}
    return {
        "model": model,
        "vendor": vendor,
        "architecture": architecture,
        "physical_cores": len(cores) or None,
        "logical_cores": len(processors) or None,
        "max_freq_mhz": max(mhz) if mhz else None,
        "flags": flags,
    }


def _max_freq_mhz() -> float | None:
    """Highest clock the CPU may run at: psutil, else cpufreq's cpuinfo_max_freq (kHz)."""
    import psutil

    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, RuntimeError):
        freq = None
    if freq is not None and freq.max:
        return float(freq.max)
    try:
        return int(CPUFREQ_MAX_PATH.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def _darwin_cpu_facts() -> dict[str, Any]:
    model = None
    try:
        model = run_tool(["sysctl", "-n", "machdep.cpu.brand_string"]).strip() or None
    except ProbeError:
        pass
    flags: list[str] = []
    try:
        flags = parse_sysctl_features(run_tool(["sysctl", "hw.optional"]))
    except ProbeError:
        pass
    return {"model": model, "flags": flags}


def cpu_facts() -> dict[str, Any]:
    """CPU model, cores, max clock and ISA flags as the fields of ``CpuInfo``; missing facts are None."""
    import psutil

    system = platform.system()
    if system == "Darwin":
        found = _darwin_cpu_facts()
    else:
        try:
            found = cpuinfo_facts(CPUINFO_PATH.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            found = {}
    model = found.get("model")
    return {
        "model": (platform.processor() or None) if model is None else model,
        "vendor": found.get("vendor"),
        "architecture": platform.machine() or found.get("architecture"),
        "physical_cores": psutil.cpu_count(logical=False) or found.get("physical_cores"),
        "logical_cores": psutil.cpu_count(logical=True) or found.get("logical_cores"),
        # cpuinfo's "cpu MHz" is the current clock, so it is only the last resort for the maximum.
        "max_freq_mhz": _max_freq_mhz() or found.get("max_freq_mhz"),
        "flags": found.get("flags", []),
    }


def probe_cpu() -> CpuInfo:
    """CPU model, cores, max clock and ISA flags; missing facts stay None."""
    from velollm_core.contract.schemas import CpuInfo

    return CpuInfo(**cpu_facts())


# --- memory ---------------------------------------------------------------------------------------


def memory_facts() -> dict[str, Any]:
    """RAM and swap from psutil, as the fields of ``MemoryInfo``."""
    import psutil

    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "total_bytes": vm.total,
        "available_bytes": vm.available,
        "used_bytes": vm.used,
        "swap_total_bytes": swap.total,
        "swap_used_bytes": swap.used,
    }


def probe_memory() -> MemoryInfo:
    """RAM and swap from psutil."""
    from velollm_core.contract.schemas import MemoryInfo

    return MemoryInfo(**memory_facts())
