"""What llama-server says it allocated: the buffer-size lines of its log, per device and kind.

llama.cpp prints, while it loads (at log verbosity 4 in releases that have ``-lv``)::

    load_tensors:   CPU_Mapped model buffer size =   235.16 MiB
    llama_kv_cache:        CPU KV buffer size =    12.00 MiB
    llama_kv_cache: size =   12.00 MiB (  4096 cells,   3 layers,  1/1 seqs), K (f16): 6.00 MiB, V (f16): 6.00 MiB
    llama_context:        CPU  output buffer size =     1.00 MiB
    sched_reserve:      CUDA0 compute buffer size =   258.50 MiB

This is a log, not an API: no library parses it, so the lines are matched by their stable parts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MIB = 2**20
_BUFFER = re.compile(r"\s(\S+)\s+(model|KV|compute|output) buffer size\s*=\s*([\d.]+) MiB")
_KV_CACHE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers")


@dataclass
class ServerMemory:
    """Bytes per (device, kind) and the KV caches llama-server reported (one per attention type)."""

    buffers: dict[tuple[str, str], int] = field(default_factory=dict)
    kv_caches: list[tuple[int, int, int]] = field(default_factory=list)  # (bytes, cells, layers)

    def total(self, kind: str) -> int:
        return sum(size for (_, k), size in self.buffers.items() if k == kind)

    @property
    def kv_bytes(self) -> int:
        """All KV caches together (full-attention and sliding-window caches are logged separately)."""
        return sum(size for size, _, _ in self.kv_caches) or self.total("KV")

    def device_bytes(self) -> dict[str, int]:
        """Bytes per device: ``CPU_Mapped``/``CPU_REPACK`` count as CPU, ``CUDA0`` as itself."""
        out: dict[str, int] = {}
        for (device, _), size in self.buffers.items():
            name = "CPU" if device.startswith("CPU") else device
            out[name] = out.get(name, 0) + size
        return out


def parse_server_memory(text: str) -> ServerMemory:
    """The buffer and KV-cache sizes of one llama-server start (the first of each, if it restarted)."""
    memory = ServerMemory()
    for line in text.splitlines():
        kv = _KV_CACHE.search(line)
        if kv:
            memory.kv_caches.append((round(float(kv.group(1)) * MIB), int(kv.group(2)), int(kv.group(3))))
            continue
        match = _BUFFER.search(line)
        if match:
            key = (match.group(1), match.group(2))
            memory.buffers[key] = memory.buffers.get(key, 0) + round(float(match.group(3)) * MIB)
    return memory


def server_memory(
    binary: Path,
    model: Path,
    args: list[str],
    *,
    timeout_s: float = 120.0,
    on_ready: Callable[[], None] | None = None,
) -> tuple[ServerMemory, str]:
    """Start llama-server with ``args``, read its allocations as soon as they are logged, stop it.

    ``on_ready`` runs while the server still holds its memory (e.g. to read the GPU's used memory).
    """
    import subprocess
    import tempfile
    import time

    from velollm_core.api import BackendError, interrupt
    from velollm_llamacpp.server import free_port, server_flags

    verbosity = ["-lv", "4"] if "-lv" in server_flags(binary) else []
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(free_port()), *verbosity, *args]
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        proc = interrupt.spawn(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            text = ""
            while time.monotonic() < deadline:
                log.seek(0)
                text = log.read()
                # The compute buffers are reserved last, after the model and the KV cache.
                if "compute buffer size" in text and "llama_kv_cache: size" in text:
                    time.sleep(0.2)
                    log.seek(0)
                    text = log.read()
                    if on_ready is not None:
                        on_ready()
                    break
                if proc.poll() is not None:
                    raise BackendError(f"llama-server exited with code {proc.returncode}:\n{text[-1500:]}")
                time.sleep(0.1)
            else:
                raise BackendError(f"llama-server logged no buffer sizes within {timeout_s:g} s")
        finally:
            interrupt.stop(proc, grace_s=10)
    return parse_server_memory(text), text
