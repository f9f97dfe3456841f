"""The decode roofline: tokens/s <= memory bandwidth / bytes read per generated token.

The bytes come from the backend, which knows how its runtime lays the model out: the
``DecodeTraffic`` of the model facts it describes (weights per token, KV cache per token of context).
Bandwidth comes from the GPU record (``bandwidth_gbps`` from detection) or, on the CPU, from a short
multi-threaded copy benchmark, measured once per machine and cached on disk. Without the backend's
figures a result has no roofline.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm_core.contract.schemas import BenchmarkResult, DecodeTraffic, HardwareReport

COPY_BYTES = 256 * 2**20  # per buffer; far beyond any L2 and most L3 slices, short enough to take ~0.1 s
CACHE_VERSION = 2


def max_decode_tokens_per_s(bandwidth_gbps: float, bytes_per_tok: int) -> float:
    """The roofline: how many tokens per second the memory system can feed at best."""
    return bandwidth_gbps * 1e9 / bytes_per_tok if bytes_per_tok > 0 else float("inf")


def _cache_path() -> Path:
    from velollm_core.contract.cachedir import cache_dir

    return cache_dir() / "roofline" / "ram-bandwidth.json"


def _machine_key(hardware: HardwareReport | None) -> str:
    """What the RAM bandwidth depends on: the CPU, its cores and the amount of RAM."""
    import platform

    if hardware is not None:
        cpu, memory = hardware.cpu, hardware.memory.total_bytes
        return f"{cpu.model}|{cpu.physical_cores}|{cpu.logical_cores}|{memory // 2**30}"
    import psutil

    return f"{platform.processor()}|{psutil.cpu_count(logical=False)}|{psutil.cpu_count()}|" \
           f"{psutil.virtual_memory().total // 2**30}"


def _copy_gbps(threads: int, size: int = COPY_BYTES, repeats: int = 5) -> float:
    """Best copy bandwidth (read + write bytes per second, as STREAM counts) with ``threads`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    bounds = np.linspace(0, size, threads + 1, dtype=np.int64)

    def copy_part(i: int) -> None:
        # numpy releases the GIL during a plain copy, so the threads really run side by side.
        np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy_part, range(threads)))  # fault the pages in before timing
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy_part, range(threads)))
            best = min(best, time.perf_counter() - start)
    return 2 * size / best / 1e9


def measure_ram_bandwidth_gbps(threads: int | None = None) -> float:
    """RAM bandwidth in GB/s: the best of one thread and ``threads`` (physical cores) copying."""
    import psutil

    threads = threads or psutil.cpu_count(logical=False) or 1
    counts = sorted({1, threads})
    return max(_copy_gbps(n) for n in counts)


@functools.lru_cache(maxsize=4)
def _cached_ram_bandwidth(key: str) -> tuple[float, str]:
    path = _cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        machines = data.get("machines", {}) if data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, AttributeError):
        machines = {}
    entry = machines.get(key)
    if isinstance(entry, dict) and entry.get("gbps"):
        return float(entry["gbps"]), f"measured copy benchmark ({entry.get('measured_at', 'cached')})"
    gbps = measure_ram_bandwidth_gbps()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    # One entry per machine key: a report loaded from another machine never evicts this one's.
    machines[key] = {"gbps": gbps, "measured_at": stamp}
    try:
        from velollm_core.contract.files import atomic_write_json

        atomic_write_json(path, {"version": CACHE_VERSION, "machines": machines})
    except OSError:
        pass  # an unwritable cache costs a re-measurement next time, nothing else
    return gbps, f"measured copy benchmark ({stamp})"


def ram_bandwidth(hardware: HardwareReport | None = None) -> tuple[float, str]:
    """(GB/s, source) of this machine's RAM, measured once and cached on disk per machine."""
    return _cached_ram_bandwidth(_machine_key(hardware))


@dataclass(frozen=True)
class Bandwidth:
    gbps: float
    source: str
    device: str


def decode_bandwidth(hardware: HardwareReport | None, model_bytes: int, cpu_only: bool = False) -> Bandwidth:
    """The memory the weights stream from: the GPU when one with a known bandwidth holds the model
    (and the run keeps no layer off the GPU's reach: not ``cpu_only``), else the measured RAM."""
    if hardware is not None and not cpu_only:
        for gpu in hardware.gpus:
            fits = gpu.memory_total_bytes is None or gpu.memory_total_bytes >= model_bytes
            if gpu.bandwidth_gbps and fits:
                return Bandwidth(gpu.bandwidth_gbps, f"{gpu.name} ({gpu.source})", "gpu")
    gbps, source = ram_bandwidth(hardware)
    return Bandwidth(gbps, source, "cpu")


def _traffic(result: BenchmarkResult) -> DecodeTraffic | None:
    backend = result.environment.backend
    return backend.model.decode_traffic if backend is not None and backend.model is not None else None


def roofline_for_result(result: BenchmarkResult) -> dict[str, Any] | None:
    """The roofline of a benchmark result and each suite's decode speed as a percentage of it;
    None when the backend did not say what a decode step reads (e.g. a remote server)."""
    traffic = _traffic(result)
    if traffic is None:
        return None
    base = traffic.bytes_per_token()
    bandwidth = decode_bandwidth(result.environment.hardware, traffic.resident_bytes, traffic.cpu_only)
    roofline: dict[str, Any] = {
        "bandwidth_gbps": round(bandwidth.gbps, 2),
        "source": bandwidth.source,
        "device": bandwidth.device,
        "bytes_per_token": base,
        "max_decode_tokens_per_s": round(max_decode_tokens_per_s(bandwidth.gbps, base), 2),
        "suites": {},
    }
    for suite, metrics in result.summary.items():
        decode = metrics.get("decode_tokens_per_s")
        if decode is None:
            continue
        prompt = metrics.get("prompt_tokens")
        completion = metrics.get("completion_tokens")
        # The KV read grows during decode: its mean is at the prompt plus half the answer.
        context = int((prompt.median if prompt else 0) + (completion.median if completion else 0) / 2)
        per_token = traffic.bytes_per_token(context)
        limit = max_decode_tokens_per_s(bandwidth.gbps, per_token)
        roofline["suites"][suite] = {
            "context_tokens": context,
            "bytes_per_token": per_token,
            "max_decode_tokens_per_s": round(limit, 2),
            "decode_tokens_per_s": round(decode.median, 2),
            "pct_of_limit": round(100 * decode.median / limit, 1),
        }
    return roofline


def annotate_result(result: BenchmarkResult) -> None:
    """Set ``result.roofline``; any failure leaves it None (a roofline is never worth a crash)."""
    try:
        result.roofline = roofline_for_result(result)
    except Exception:  # noqa: BLE001 - the benchmark's own numbers matter more than this annotation
        result.roofline = None
