"""Peak memory bandwidth of well-known AMD GPUs, for when no tool reports it.

AMD's tools report bandwidth only on recent ROCm (amdsmi ``vram_max_bandwidth``), and the memory clock
they print cannot be turned into bandwidth the way NVML's can (GDDR6 and HBM3 need different
multipliers), so a short table of data-sheet values covers the GPUs people run LLMs on. It stays small
on purpose: a wrong guess is worse than "unknown".
"""

from __future__ import annotations

GIB = 2**30

# (name fragment, GB/s per package, graphics dies per package). Matched in order against the
# lowercased name, so a longer fragment must come before a shorter one that it contains.
AMD_BANDWIDTH_TABLE: tuple[tuple[str, float, int], ...] = (
    ("mi300x", 5300.0, 1),
    ("mi250", 3276.8, 2),  # MI250 and MI250X alike
    ("mi210", 1638.4, 1),
    ("mi100", 1228.8, 1),
    ("7900 xtx", 960.0, 1),
    ("6700 xt", 384.0, 1),
)
# An MI250 die (GCD) holds 64 GiB; a record with less than this much memory is one die, not a package.
_PACKAGE_MIN_MEMORY = 96 * GIB


def known_bandwidth_gbps(name: str, memory_total_bytes: int | None = None) -> float | None:
    """Data-sheet bandwidth of the GPU called ``name``, per device as the AMD tools list devices.

    The tools list each die of an MI250 as a GPU with half the package's memory and half its
    bandwidth (3276.8 GB/s per package -> 1638.4 GB/s per listed GPU).
    """
    lowered = name.lower()
    for fragment, package_gbps, dies in AMD_BANDWIDTH_TABLE:
        if fragment in lowered:
            if dies > 1 and (memory_total_bytes is None or memory_total_bytes < _PACKAGE_MIN_MEMORY):
                return round(package_gbps / dies, 1)
            return package_gbps
    return None
