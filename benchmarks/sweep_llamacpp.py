"""How good is VeloLLM's llama.cpp proposal? Against an exhaustive llama-bench sweep.

    python benchmarks/sweep_llamacpp.py --model gemma3-270m [--threads 1,2] [--ubatch 128,256,512]
        [--batch 2048] [--fa off,on] [--ctk f16,q8_0] [--ngl 99] [--n-prompt 512] [--n-gen 64]
        [--reps 3] [--rounds 5] [--output sweep.json]

1. Sweep: ``--reps`` llama-bench runs over the cartesian product of the lists (``-o json``, ``-r 1``
   each, the lists reversed every other run so no configuration always runs early or late), prefill
   (pp<n-prompt>) and decode (tg<n-gen>) per configuration as the median over the runs: on a shared
   machine, load that comes and goes then hits every configuration alike.
2. The sweep's best is a maximum over noisy measurements, biased upwards (the winner's curse). So the
   best decode configuration, the best prefill configuration, llama-bench's defaults (no flags) and
   VeloLLM's proposal (its -t/-fa/-b/-ub/-ctk/-ctv/-ngl) are measured again, interleaved over
   ``--rounds`` rounds; the ratios come from those rounds.
3. Prints a Markdown report (tables for docs/BENCHMARKS.md) and writes the JSON with every number.

Defaults on a list: -t 1..physical cores (and the logical count if higher); -ngl only where the
build has a GPU device (the proposal's value and half of it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# llama-bench flags VeloLLM's proposal may set; -c, -np and the load mode are server-only.
BENCH_FLAGS = {"-t", "-fa", "-b", "-ub", "-ctk", "-ctv", "-ngl"}
JSON_KEYS = {"-t": "n_threads", "-ub": "n_ubatch", "-b": "n_batch", "-fa": "flash_attn", "-ctk": "type_k",
             "-ctv": "type_v", "-ngl": "n_gpu_layers"}


def llama_bench(binary: Path, model: Path, flags: list[str], n_prompt: int, n_gen: int, reps: int) -> list[dict]:
    """llama-bench's JSON records (one per configuration and test) for these flags."""
    command = [str(binary), "-m", str(model), *flags, "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
               "-o", "json"]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"llama-bench failed ({' '.join(command)}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def config_key(record: dict) -> tuple:
    return tuple((flag, str(record.get(key))) for flag, key in sorted(JSON_KEYS.items()))


def config_flags(record: dict, swept: dict[str, list[str]]) -> list[str]:
    """The flags that reproduce one swept configuration."""
    flags = []
    for flag in swept:
        value = record.get(JSON_KEYS[flag])
        if flag == "-fa":
            value = "on" if value in (1, True, "1", "on") else "off"
        flags += [flag, str(value)]
    return flags


def speeds(records: list[dict]) -> dict[tuple, dict]:
    """Per configuration: its flags' JSON values, prefill tok/s and decode tok/s."""
    out: dict[tuple, dict] = {}
    for record in records:
        entry = out.setdefault(config_key(record), {"record": record})
        if record.get("n_gen", 0) > 0 and record.get("n_prompt", 0) == 0:
            entry["decode"] = record["avg_ts"]
        elif record.get("n_prompt", 0) > 0 and record.get("n_gen", 0) == 0:
            entry["prefill"] = record["avg_ts"]
    return out


def median_table(runs: list[dict[tuple, dict]]) -> dict[tuple, dict]:
    """Per configuration, the median prefill and decode speed over the sweep runs."""
    table: dict[tuple, dict] = {}
    for key in runs[0]:
        entries = [run[key] for run in runs if key in run]
        table[key] = {"record": entries[0]["record"]}
        for metric in ("prefill", "decode"):
            values = [e[metric] for e in entries if metric in e]
            if values:
                table[key][metric] = statistics.median(values)
    return table


def one_config(binary, model, flags, args) -> tuple[float, float]:
    """(prefill, decode) tok/s of one configuration, one repetition each."""
    table = speeds(llama_bench(binary, model, flags, args.n_prompt, args.n_gen, 1))
    (entry,) = table.values()
    return entry["prefill"], entry["decode"]


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--threads", help="Comma list for -t (default: 1..physical cores).")
    parser.add_argument("--ubatch", default="128,256,512")
    parser.add_argument("--batch", default="2048")
    parser.add_argument("--fa", default="off,on")
    parser.add_argument("--ctk", default="f16,q8_0")
    parser.add_argument("--ngl", help="Comma list for -ngl (default on a GPU build: the proposal's and half).")
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3, help="Sweep runs (each configuration once per run).")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds of the final comparison.")
    parser.add_argument("--output", type=Path, default=Path("sweep-llamacpp.json"))
    args = parser.parse_args()

    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.tune import build_devices, local_cpu_limit, propose_llamacpp

    from velollm_core.contract.modelfiles import resolve_model_path
    from velollm_core.hardware.report import detect_hardware

    model = resolve_model_path(args.model)
    binary = find_program("llama-bench")
    server = find_program("llama-server")
    hardware = detect_hardware()
    started = time.perf_counter()
    proposal = propose_llamacpp(hardware, model, binary=server, gpu_devices=build_devices(str(server)),
                                cpu_limit=local_cpu_limit())
    propose_s = time.perf_counter() - started
    proposal_flags = [arg for c in proposal.changes if c.args and c.args[0] in BENCH_FLAGS for arg in c.args]
    physical = hardware.cpu.physical_cores or 1
    threads = _list(args.threads) if args.threads else [str(n) for n in range(1, physical + 1)]
    if not args.threads and (hardware.cpu.logical_cores or 0) > physical:
        threads.append(str(hardware.cpu.logical_cores))
    swept = {"-t": threads, "-b": _list(args.batch), "-ub": _list(args.ubatch), "-fa": _list(args.fa),
             "-ctk": _list(args.ctk)}
    devices = build_devices(str(server))
    if args.ngl or devices:
        full = next((c.args[1] for c in proposal.changes if c.key == "-ngl"), "99")
        swept["-ngl"] = _list(args.ngl) if args.ngl else sorted({str(int(full) // 2), full}, key=int)
    combos = 1
    for values in swept.values():
        combos *= len(values)
    print(f"model {model.name}; sweeping {combos} configurations x (pp{args.n_prompt} + tg{args.n_gen}) "
          f"x {args.reps} runs", file=sys.stderr)

    started = time.perf_counter()
    runs: list[dict[tuple, dict]] = []
    for run in range(args.reps):
        order = (lambda v: v) if run % 2 == 0 else (lambda v: list(reversed(v)))
        sweep_flags = [part for flag, values in swept.items() for part in (flag, ",".join(order(values)))]
        runs.append(speeds(llama_bench(binary, model, sweep_flags, args.n_prompt, args.n_gen, 1)))
        print(f"  sweep run {run + 1}/{args.reps} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    table = median_table(runs)
    sweep_s = time.perf_counter() - started
    best_decode = max(table.values(), key=lambda e: e.get("decode", 0))
    best_prefill = max(table.values(), key=lambda e: e.get("prefill", 0))

    finalists = {"defaults": [], "proposal": proposal_flags}
    decode_flags = config_flags(best_decode["record"], swept)
    prefill_flags = config_flags(best_prefill["record"], swept)
    if decode_flags == prefill_flags:
        finalists["sweep best"] = decode_flags
    else:
        finalists.update({"sweep best decode": decode_flags, "sweep best prefill": prefill_flags})
    print(f"sweep took {sweep_s:.0f} s; measuring {len(finalists)} finalists x {args.rounds} rounds",
          file=sys.stderr)
    measured: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in finalists}
    started = time.perf_counter()
    names = list(finalists)
    for round_no in range(args.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:  # rotate so no configuration always runs first
            prefill, decode = one_config(binary, model, finalists[name], args)
            measured[name]["prefill"].append(prefill)
            measured[name]["decode"].append(decode)
            print(f"  round {round_no + 1} {name}: pp {prefill:.1f}, tg {decode:.1f}", file=sys.stderr)
    finals_s = time.perf_counter() - started

    med = {name: {m: statistics.median(v) for m, v in values.items()} for name, values in measured.items()}
    sweep_names = [name for name in finalists if name.startswith("sweep best")]
    best = {m: max(med[name][m] for name in sweep_names) for m in ("prefill", "decode")}
    report = {
        "model": str(model),
        "hardware": {"cpu": hardware.cpu.model, "physical_cores": physical, "logical_cores": hardware.cpu.logical_cores,
                     "gpus": [g.name for g in hardware.gpus]},
        "llama_bench": {"n_prompt": args.n_prompt, "n_gen": args.n_gen, "reps": args.reps},
        "swept": swept,
        "sweep": [{"flags": config_flags(e["record"], swept), "prefill": e.get("prefill"), "decode": e.get("decode")}
                  for e in table.values()],
        "finalists": {name: {"flags": flags, **measured[name], "median": med[name]}
                      for name, flags in finalists.items()},
        "ratios": {
            "proposal / sweep best": {m: med["proposal"][m] / best[m] for m in best},
            "defaults / sweep best": {m: med["defaults"][m] / best[m] for m in best},
            "proposal / defaults": {m: med["proposal"][m] / med["defaults"][m] for m in best},
        },
        "seconds": {"propose": propose_s, "sweep": sweep_s, "finalists": finals_s},
        "proposal_command": proposal.command,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_markdown(report, args)


def print_markdown(report: dict, args) -> None:
    lists = ", ".join(f"{flag} {','.join(values)}" for flag, values in report["swept"].items())
    print(f"Sweep of {len(report['sweep'])} configurations ({lists}), llama-bench pp{args.n_prompt} / "
          f"tg{args.n_gen}, median of {args.reps} runs, {report['seconds']['sweep']:.0f} s:\n")
    print("| flags | prefill tok/s | decode tok/s |")
    print("|---|---:|---:|")
    for row in sorted(report["sweep"], key=lambda r: -(r["decode"] or 0)):
        print(f"| `{' '.join(row['flags'])}` | {row['prefill']:.1f} | {row['decode']:.2f} |")
    print(f"\nFinalists re-measured interleaved, {args.rounds} rounds (median; {report['seconds']['finalists']:.0f} s):\n")
    print("| configuration | flags | prefill tok/s | decode tok/s |")
    print("|---|---|---:|---:|")
    for name, entry in report["finalists"].items():
        flags = " ".join(entry["flags"]) or "(llama-bench defaults)"
        print(f"| {name} | `{flags}` | {entry['median']['prefill']:.1f} | {entry['median']['decode']:.2f} |")
    print("\n| ratio | prefill | decode |")
    print("|---|---:|---:|")
    for name, ratio in report["ratios"].items():
        print(f"| {name} | {ratio['prefill']:.3f} | {ratio['decode']:.3f} |")
    print(f"\nProposal computed in {report['seconds']['propose'] * 1000:.0f} ms; "
          f"sweep {report['seconds']['sweep']:.0f} s.")


if __name__ == "__main__":
    main()
