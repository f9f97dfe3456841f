"""llama-bench's pure decode speed beside llama-server's, on the same model and threads, interleaved.

    python benchmarks/llama_bench_vs_server.py [--model gemma3-270m] [--threads 2] [--rounds 5] [--n-gen 32]

Each round runs `llama-bench -r 1 -p 0 -n N` and then one VeloLLM llama-server generation of N tokens
(greedy), so machine drift hits both alike. Prints medians, their ratio, and the client/server
agreement of VeloLLM's decode timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from velollm_llamacpp.install import find_program

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import Suite
from velollm_core.contract.modelfiles import resolve_model_path


def llama_bench_tg(model, threads: int, n_gen: int) -> float:
    out = subprocess.run(
        [str(find_program("llama-bench")), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(n_gen),
         "-r", "1", "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)[0]["avg_ts"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-gen", type=int, default=32)
    args = parser.parse_args()
    model = resolve_model_path(args.model)
    suite = Suite("tg", "Write one sentence that explains what a CPU cache is.", args.n_gen, "decode")
    plan = BenchmarkPlan(backend="llamacpp", model=str(model), suites=[suite], iterations=1, warmup=0,
                         options={"threads": args.threads, "request.ignore_eos": True})
    runner = BenchmarkRunner(plan)
    bench, server, client = [], [], []
    with runner.context.resources:
        runner.measure(suite, 0)  # warm-up: starts the server and loads the model
        for round_number in range(1, args.rounds + 1):
            bench.append(llama_bench_tg(model, args.threads, args.n_gen))
            (timing,) = runner.measure(suite, round_number)
            server.append(timing.server_decode_tokens_per_s)
            client.append(timing.client_decode_tokens_per_s)
    med = statistics.median
    print(f"model {model.name}, threads {args.threads}, {args.n_gen} generated tokens, {args.rounds} rounds")
    print(f"llama-bench tg{args.n_gen}:          median {med(bench):6.2f} tok/s  (min {min(bench):.2f}, max {max(bench):.2f})")
    print(f"llama-server (server timing): median {med(server):6.2f} tok/s  (min {min(server):.2f}, max {max(server):.2f})")
    print(f"llama-server (client timing): median {med(client):6.2f} tok/s")
    print(f"server / llama-bench: {med(server) / med(bench):.3f}   client / server: "
          f"{med(c / s for c, s in zip(client, server)):.4f}")


if __name__ == "__main__":
    main()
