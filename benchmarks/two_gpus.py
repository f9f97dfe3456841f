"""One GPU or two under llama.cpp: the helpers of benchmarks/gpu/10_two_gpus.sh (a machine with two GPUs).

    python benchmarks/two_gpus.py depth --model M [--margin-gib 0]
        The smallest context depth (4k steps) at which MODEL with every layer offloaded and its f16 KV cache
        no longer fits the smallest GPU (its total memory, per nvidia-smi), by velollm-gguf's estimate: the
        llama-bench ``-d`` that makes a model "need both" cards. Prints 0 when the weights alone do not fit.
    python benchmarks/two_gpus.py memory --model M --ctx N --output FILE.json
        llama-server's own buffers per device (model, KV, compute) for -sm none / layer / row and -ts 1,1 /
        3,1, beside velollm-gguf's per-GPU estimate of the same configuration; a mode the build refuses is
        recorded with its error.
    python benchmarks/two_gpus.py summary FILE.json ...
        llama-bench ``-o json`` files (one per configuration, named <label>.json) as one Markdown table:
        median prefill and decode tokens/s per configuration and the ratio to the first file's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

GIB = 2**30
MEMORY_CONFIGS = [("none", ["-sm", "none", "-mg", "0"], "none", None), ("layer 1:1", ["-sm", "layer", "-ts", "1,1"],
                  "layer", (1.0, 1.0)), ("layer 3:1", ["-sm", "layer", "-ts", "3,1"], "layer", (3.0, 1.0)),
                  ("row 1:1", ["-sm", "row", "-ts", "1,1"], "row", (1.0, 1.0))]


def gpu_totals() -> list[int]:
    """Each GPU's total memory in bytes, from nvidia-smi."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return [int(float(line)) * 2**20 for line in out.split()]


def depth(model: Path, smallest_bytes: int) -> int:
    from velollm_gguf import estimate_memory, read_summary

    summary = read_summary(model)
    for ctx in range(4096, 1_048_577, 4096):
        estimate = estimate_memory(summary, ctx=ctx, n_gpu_layers=999)
        if sum(d.bytes for d in estimate.devices if d.name != "CPU") > smallest_bytes:
            return 0 if ctx == 4096 else ctx
    sys.exit(f"{model} fits one GPU of {smallest_bytes / GIB:.0f} GiB at every context up to 1M tokens")


def memory(model: Path, ctx: int, output: Path) -> None:
    from velollm_gguf import estimate_memory, read_summary
    from velollm_llamacpp.install import find_programs
    from velollm_llamacpp.memlog import server_memory

    binary = find_programs()["llama-server"]
    summary = read_summary(model)
    rows = []
    for label, args, mode, split in MEMORY_CONFIGS:
        entry: dict = {"config": label, "args": args}
        try:
            logged, _ = server_memory(binary, model, ["-c", str(ctx), "-ngl", "999", "-fa", "on", *args])
            entry["logged"] = {f"{device} {kind}": size for (device, kind), size in logged.buffers.items()}
        except Exception as exc:  # noqa: BLE001 - a refused mode (row without split buffers) is a result
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        names = ("CUDA0", "CUDA1")
        estimate = estimate_memory(summary, ctx=ctx, n_gpu_layers=999, gpu_names=names, gpu_split=split,
                                   split_mode=mode)
        entry["estimate"] = estimate.to_json()["devices"]
        rows.append(entry)
        print(f"{label}: " + (entry.get("error") or ", ".join(f"{key} {size / 2**20:,.0f} MiB"
                                                           for key, size in sorted(entry["logged"].items()))))
        print("  estimate: " + ", ".join(f"{d['name']} {d['bytes'] / 2**20:,.0f} MiB" for d in entry["estimate"]))
    output.write_text(json.dumps({"model": str(model), "ctx": ctx, "configs": rows}, indent=2) + "\n")


def summary(paths: list[Path]) -> None:
    """A Markdown table of llama-bench results, one configuration per file."""
    table = []
    for path in paths:
        records = json.loads(path.read_text())
        rate = {}
        for kind, key in (("prefill", "n_prompt"), ("decode", "n_gen")):
            samples = [sample for record in records if record.get(key) and not record.get(
                "n_gen" if kind == "prefill" else "n_prompt") for sample in record.get("samples_ts", [])]
            rate[kind] = statistics.median(samples) if samples else None
        table.append((path.stem, rate["prefill"], rate["decode"]))
    base = table[0]
    print("| configuration | prefill tok/s | decode tok/s | decode vs " + base[0] + " |\n|---|---|---|---|")
    for label, prefill, decode in table:
        ratio = f"{decode / base[2]:.2f}x" if decode and base[2] else "-"
        print(f"| {label} | {prefill or 0:,.0f} | {decode or 0:,.1f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    depth_parser = commands.add_parser("depth")
    depth_parser.add_argument("--model", type=Path, required=True)
    memory_parser = commands.add_parser("memory")
    memory_parser.add_argument("--model", type=Path, required=True)
    memory_parser.add_argument("--ctx", type=int, default=8192)
    memory_parser.add_argument("--output", type=Path, required=True)
    summary_parser = commands.add_parser("summary")
    summary_parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "depth":
        print(depth(args.model, min(gpu_totals())))
    elif args.command == "memory":
        memory(args.model, args.ctx, args.output)
    else:
        summary(args.files)


if __name__ == "__main__":
    main()
