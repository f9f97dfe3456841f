"""VeloLLM's memory estimate against what llama-server reports allocating (and, on NVIDIA, what NVML
sees the process take), per model and configuration.

    python benchmarks/estimate_vs_server.py --model gemma3-270m --model smollm2-135m \\
        [--ctx 4096] [--kv-types f16,q8_0] [--parallel 1] [--ngl N] [--nvml] [--output FILE.json]

For each model and KV cache type: start llama-server with ``-c CTX -np P -ctk T -ctv T -fa on`` (and
``-ngl N``), read its ``llama_kv_cache: size``, model, compute and output buffer lines, stop it, and
print a Markdown table of estimate vs server. With ``--nvml`` the GPU's used memory is sampled (peak
over 5 s, minus what was used before) while the server holds its buffers: the CUDA context and
cuBLAS workspaces that llama.cpp does not log show up there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

MIB = 2**20


def nvml_used_bytes() -> int | None:
    """Memory used on GPU 0 right now (None without NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
    except Exception:  # noqa: BLE001 - no NVML: no GPU column
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--kv-types", default="f16,q8_0")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--ngl", type=int, help="Layers to offload (-ngl); the estimate splits by device.")
    parser.add_argument("--nvml", action="store_true", help="Also sample GPU 0's used memory through NVML.")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from velollm_gguf import estimate_memory, read_summary
    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.memlog import server_memory

    from velollm_core.contract.modelfiles import resolve_model_path

    binary = find_program("llama-server")
    rows = []
    for name in args.model:
        path = resolve_model_path(name)
        summary = read_summary(path)
        for kv_type in [t.strip() for t in args.kv_types.split(",") if t.strip()]:
            flags = ["-c", str(args.ctx), "-np", str(args.parallel), "-ctk", kv_type, "-ctv", kv_type, "-fa", "on"]
            if args.ngl is not None:
                flags += ["-ngl", str(args.ngl)]
            before = nvml_used_bytes() if args.nvml else None
            peak: list[int] = []

            def sample(peak: list[int] = peak) -> None:
                for _ in range(10):
                    used = nvml_used_bytes()
                    if used is not None:
                        peak.append(used)
                    time.sleep(0.5)

            started = time.perf_counter()
            logged, _ = server_memory(binary, path, flags, on_ready=sample if args.nvml else None)
            seconds = time.perf_counter() - started
            estimate = estimate_memory(summary, ctx=args.ctx, cache_type_k=kv_type, parallel=args.parallel,
                                       n_gpu_layers=args.ngl)
            row = {
                "model": path.name,
                "flags": flags,
                "kv_estimate": estimate.kv_cache_bytes,
                "kv_server": logged.kv_bytes,
                "kv_caches_server": logged.kv_caches,
                "compute_estimate": estimate.compute_bytes,
                "compute_server": logged.total("compute") + logged.total("output"),
                "weights_estimate": estimate.weights_bytes,
                "model_buffers_server": logged.total("model"),
                "total_estimate": estimate.total_bytes,
                "devices_estimate": {d.name: d.bytes for d in estimate.devices},
                "devices_server": logged.device_bytes(),
                "seconds": seconds,
            }
            if before is not None and peak:
                row["gpu_used_nvml"] = max(peak) - before
            rows.append(row)
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print("| model | flags | KV estimate | KV server | ratio | compute estimate | compute+output server "
          "| weights | model buffers | NVML used |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        nvml = f"{r['gpu_used_nvml'] / MIB:,.0f} MiB" if "gpu_used_nvml" in r else "-"
        print(f"| {r['model']} | `{' '.join(r['flags'])}` | {r['kv_estimate'] / MIB:.2f} MiB | "
              f"{r['kv_server'] / MIB:.2f} MiB | {r['kv_estimate'] / r['kv_server']:.3f} | "
              f"{r['compute_estimate'] / MIB:.1f} MiB | {r['compute_server'] / MIB:.1f} MiB | "
              f"{r['weights_estimate'] / MIB:,.1f} MiB | {r['model_buffers_server'] / MIB:,.1f} MiB | {nvml} |")


if __name__ == "__main__":
    main()
