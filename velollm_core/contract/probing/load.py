"""Is the machine busy right now? CPU inference slows down sharply when its threads share cores.

llama.cpp's threads meet at a barrier many times per token, so one thread that loses its core to
another process stalls all of them: on a 2-core machine llama-server fell from 43 to 0.6 tok/s beside
one busy process. Numbers measured then describe the contention, not the machine; a benchmark
records how busy the CPUs were when it started and warns.
"""

from __future__ import annotations

import os

BUSY_CPUS = 0.5  # other work using half a CPU or more is worth a warning


def usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity mask), None where the OS cannot say."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return None


def cpu_busy(sample_s: float = 0.3) -> tuple[float, int] | None:
    """(CPUs' worth of work running on our usable CPUs, how many they are), sampled over ``sample_s``."""
    try:
        import psutil

        per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)
    except Exception:  # noqa: BLE001 - a missing /proc or psutil quirk must not stop a benchmark
        return None
    cpus = [i for i in (usable_cpus() or range(len(per_cpu))) if i < len(per_cpu)]
    if not cpus:
        return None
    return sum(per_cpu[i] for i in cpus) / 100.0, len(cpus)


def busy_warning(busy: tuple[float, int] | None) -> str | None:
    """One line for the user when other work was using the CPUs, else None."""
    if busy is None or busy[0] < BUSY_CPUS:
        return None
    used, total = busy
    return (f"other processes were using {used:.1f} of this process's {total} CPU(s) when the benchmark "
            "started: CPU inference slows down sharply when its threads share cores (llama.cpp fell from "
            "43 to 0.6 tok/s on 2 cores beside one busy process), so these numbers may describe the "
            "contention, not the machine")
