"""What preparing exact-length prompts costs, before vs after: tokenize round trips, wall seconds and
client CPU seconds to build N prompts of a workload (default 256 x pp512) that the server's own
tokenizer confirms, through the real llamacpp backend against a real llama-server (started here on
the bundled Gemma 3 270M, or attached with --host).

    python benchmarks/prompt_prep.py --prompts 256 --workload pp512 --repeats 3 \\
        --output benchmarks/results/cpu/prompt_prep.json
    python benchmarks/prompt_prep.py --host http://127.0.0.1:8080 --model gemma3-270m   # a running server

"before" is ``velollm_core.bench.workloads.PromptBuilder`` as it was at ``--before REV`` (read with
``git show``, so the old path stays reachable here and nowhere in the product): one tokenize call per
candidate, words added or removed until the count matched, one prompt after another. "after" is the
current one: the words' counts learned once, each prompt confirmed by one call, counts kept by text,
up to PREPARE_THREADS calls in flight. The two run alternately, ``--repeats`` times each, on the same
server and connection pool; every prompt of both is checked against the server's count afterwards
(outside the timing). Medians and the after/before ratio are printed and written with ``--output``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from velollm_core.bench.workloads import PromptBuilder, build_prompts, parse_workload
from velollm_core.contract import backends
from velollm_core.contract.schemas import BenchmarkContext

# The last commit whose PromptBuilder sized each prompt with repeated round trips, one prompt at a time.
BEFORE_REV = "9f80157"


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def old_workloads(rev: str) -> types.ModuleType:
    """velollm_core.bench.workloads as it was at ``rev``, as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:velollm_core/bench/workloads.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"workloads_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:velollm_core/bench/workloads.py", "exec"), module.__dict__)  # noqa: S102
    return module


def measure(side: str, module: Any, workload, count: int, seed: int, tokenize) -> dict[str, Any]:
    """Build ``count`` prompts with ``module``'s PromptBuilder; round trips, wall and CPU seconds."""
    calls = [0]

    def counted(text: str):
        calls[0] += 1
        return tokenize(text)

    builder_class = PromptBuilder if module is None else module.PromptBuilder
    build = build_prompts if module is None else module.build_prompts
    wall, cpu = time.perf_counter(), time.process_time()
    prompts = build(workload, builder_class(counted), count, seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    wanted = workload.depth + workload.prompt_tokens
    exact = sum(len(tokenize(p.text) or []) == wanted for p in prompts)  # the server's word, untimed
    return {"side": side, "prompts": len(prompts), "exact": exact, "round_trips": calls[0],
            "round_trips_per_prompt": round(calls[0] / len(prompts), 3), "wall_s": round(wall, 4),
            "client_cpu_s": round(cpu, 4), "client_cpu_ms_per_prompt": round(cpu * 1000 / len(prompts), 4)}


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    workload = parse_workload(args.workload)
    backend = backends.get("llamacpp")
    context = BenchmarkContext(backend="llamacpp", model=args.model, host=url, max_concurrency=args.concurrency,
                               options={})
    backends.settings(backend, context)
    with context.resources:
        backend.start(context)
        tokenize = lambda text: backend.tokenize(text, context)
        tokenize("hello world")  # the connection open before either side is timed
        old = None if args.after_only else old_workloads(args.before)
        rows = []
        for repeat in range(args.repeats):
            seed = args.seed + repeat
            if old is not None:
                rows.append(measure("before", old, old.parse_workload(args.workload), args.prompts, seed, tokenize))
                print(json.dumps(rows[-1]), flush=True)
            rows.append(measure("after", None, workload, args.prompts, seed, tokenize))
            print(json.dumps(rows[-1]), flush=True)
        backend.close(context)
    summary = {}
    for side in ("before", "after"):
        mine = [row for row in rows if row["side"] == side]
        if mine:
            summary[side] = {key: _median(mine, key) for key in
                             ("round_trips", "round_trips_per_prompt", "wall_s", "client_cpu_s",
                              "client_cpu_ms_per_prompt")}
            summary[side]["all_exact"] = all(row["exact"] == row["prompts"] for row in mine)
    if len(summary) == 2:
        summary["after_over_before"] = {key: round(summary["after"][key] / summary["before"][key], 3)
                                        for key in ("round_trips", "wall_s", "client_cpu_s")
                                        if summary["before"][key]}
    return {"workload": workload.name, "prompts": args.prompts, "repeats": args.repeats, "model": args.model,
            "server": "attached" if args.host else "started here", "before_rev": None if args.after_only else args.before,
            "cpu": _cpu_name(), "python": platform.python_version(), "runs": rows, "median": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="pp512", help="ppN[/tgM][@dD] (default pp512)")
    parser.add_argument("--prompts", type=int, default=256, help="prompts built per side and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="before/after pairs, alternating")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model", default="gemma3-270m", help="a model name velollm resolves (default Gemma 3 270M)")
    parser.add_argument("--host", help="a running llama-server's URL (default: start one here on --model)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="the level's streams: the llamacpp backend's connection pool is sized from it")
    parser.add_argument("--before", default=BEFORE_REV, help=f"git revision of the old path (default {BEFORE_REV})")
    parser.add_argument("--after-only", action="store_true", help="measure the current path only")
    parser.add_argument("--output", type=Path, help="write the raw runs and medians as JSON here")
    args = parser.parse_args()
    if args.host:
        result = run(args, args.host)
    else:
        from velollm_testkit.llama_server import llama_server
        from velollm_testkit.plugin import find_llama_server

        from velollm_core.contract.modelfiles import resolve_model_path

        with llama_server(find_llama_server(), resolve_model_path(args.model), ["-c", "4096"]) as url:
            result = run(args, url)
    print(json.dumps(result["median"], indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
