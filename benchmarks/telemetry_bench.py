"""Telemetry on a real llama-server: the sampler's overhead on decode speed, and tokens per joule.

    python benchmarks/telemetry_bench.py overhead [--model smollm2-135m] [--rounds 10] [--n-gen 128]
        [--hz 10] [--server-hz 1] [--server-args "-t 2"] [--output FILE.json]
    python benchmarks/telemetry_bench.py energy --model M [--model M2] [--concurrency 1,8]
        [--min-seconds 8] [--ctx 8192] [--server-args "-ngl 999"] [--output FILE.json]

``overhead``: one server; each round runs one greedy fixed-length generation (prompt of 32 tokens,
``--n-gen`` generated, past EOS) without telemetry and one with a TelemetrySession sampling the
hardware at ``--hz`` and the server's /metrics at ``--server-hz``, in alternating order (ABBA...), so
drift hits both alike. Prints the median server-timed decode tok/s of each, their ratio, and the
sampler threads' CPU seconds per second of sampling. Then one telemetry record of a short level: what
a CPU benchmark records (llama-server counters, RAPL or why not).

``energy``: per model one server (``--parallel`` = the largest concurrency, ``--ctx`` in all), then a
level per concurrency: that many streams of pp512/tg128 (token-id prompts, fixed output length)
until ``--min-seconds`` have passed; prints tok/J (decode and end to end), GPU power, peak memory
used above the idle baseline, and ``velollm estimate`` for the same flags.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from velollm_llamacpp.install import find_program
from velollm_llamacpp.metrics import LLAMACPP_METRICS
from velollm_llamacpp.server import LlamaServer

from velollm_core.contract.modelfiles import resolve_model_path
from velollm_core.contract.telemetry import hardware_sources
from velollm_core.telemetry.session import KEEPALIVE_EXPIRY_S, TelemetrySession

MIB = 2**20


def http_client() -> httpx.Client:
    return httpx.Client(timeout=600, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S))


def stream(client: httpx.Client, url: str, n_prompt: int, n_gen: int, t_level: float) -> dict:
    """One streamed /completion of a token-id prompt; the run dict the session takes, and timings."""
    body = {"prompt": [100 + i % 20000 for i in range(n_prompt)], "n_predict": n_gen, "ignore_eos": True,
            "cache_prompt": False, "temperature": 0, "top_k": 1, "stream": True}
    started = time.perf_counter()
    first = None
    timings: dict = {}
    with client.stream("POST", f"{url}/completion", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if first is None and event.get("content") is not None:
                first = time.perf_counter()
            if event.get("stop"):
                timings = event.get("timings") or {}
    ended = time.perf_counter()
    return {"prompt_tokens": timings.get("prompt_n"), "completion_tokens": timings.get("predicted_n"),
            "started_s": started - t_level, "ttft_ms": ((first or ended) - started) * 1000,
            "ended_s": ended - t_level, "server_decode_tokens_per_s": timings.get("predicted_per_second")}


def run_level(url: str, streams: int, n_prompt: int, n_gen: int, min_seconds: float, min_requests: int,
              t_level: float) -> list[dict]:
    """``streams`` threads issuing requests back to back until both minimums are reached."""
    runs: list[dict] = []
    lock = threading.Lock()
    started = [0]

    def worker() -> None:
        with http_client() as http:
            while True:
                with lock:
                    if time.perf_counter() - t_level >= min_seconds and started[0] >= min_requests:
                        return
                    started[0] += 1
                run = stream(http, url, n_prompt, n_gen, t_level)
                with lock:
                    runs.append(run)

    threads = [threading.Thread(target=worker) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


def overhead(args: argparse.Namespace) -> dict:
    model = resolve_model_path(args.model)
    binary = find_program("llama-server")
    flags = ["-c", "2048", "--metrics", *shlex.split(args.server_args)]
    plain, sampled, cpu_per_s = [], [], []
    with LlamaServer(binary, model, args=flags) as server, http_client() as http:
        url = server.url
        stream(http, url, 32, 16, time.perf_counter())  # warm-up
        for i in range(args.rounds):
            for with_telemetry in ((False, True) if i % 2 == 0 else (True, False)):
                session = None
                if with_telemetry:
                    session = TelemetrySession(f"{url}/metrics", names=LLAMACPP_METRICS, sample_hz=args.hz, server_hz=args.server_hz,
                                               warn=None)
                    session.start()
                run = stream(http, url, 32, args.n_gen, time.perf_counter())
                (sampled if with_telemetry else plain).append(run["server_decode_tokens_per_s"])
                if session is not None:
                    cpu = session.finish()["sampler"]
                    cpu_per_s.append(sum(s["cpu_s"] for s in cpu.values()) / max(s["wall_s"] for s in cpu.values()))
        record = TelemetrySession(f"{url}/metrics", names=LLAMACPP_METRICS, sample_hz=args.hz, server_hz=args.server_hz, warn=print)
        record.start()
        t_level = time.perf_counter()
        record.begin_level("seq")
        runs = run_level(url, 1, 32, args.n_gen, 2.0, 2, t_level)
        record.end_level("seq", runs=runs)
        telemetry = record.finish()
    med = statistics.median
    out = {"model": model.name, "rounds": args.rounds, "n_gen": args.n_gen, "hz": args.hz,
           "server_hz": args.server_hz, "server_args": flags,
           "decode_tok_s_without": plain, "decode_tok_s_with": sampled,
           "median_without": med(plain), "median_with": med(sampled), "ratio": med(sampled) / med(plain),
           "sampler_cpu_s_per_s": med(cpu_per_s), "telemetry_example": telemetry}
    print(f"model {model.name}, {args.rounds} rounds, tg{args.n_gen}, sampler {args.hz:g} Hz + /metrics "
          f"{args.server_hz:g} Hz, server flags {' '.join(flags)}")
    print(f"decode tok/s (server timing) without telemetry: median {med(plain):8.2f}  "
          f"(min {min(plain):.2f}, max {max(plain):.2f})")
    print(f"decode tok/s (server timing) with telemetry:    median {med(sampled):8.2f}  "
          f"(min {min(sampled):.2f}, max {max(sampled):.2f})")
    print(f"with / without: {out['ratio']:.4f}   sampler CPU: {med(cpu_per_s) * 1000:.2f} ms per second")
    level = telemetry["levels"][0]
    print("telemetry of one level:", json.dumps({"server": level["server"], "energy_j": level["energy_j"],
                                                  "tokens_per_joule": level["tokens_per_joule"],
                                                  "client_vs_server": level.get("client_vs_server"),
                                                  "why": telemetry["why"]}, indent=1))
    return out


def gpu_memory_used() -> dict[str, int]:
    """Memory used per GPU now (the idle baseline before a server starts), through the same sources."""
    used: dict[str, int] = {}
    for source in hardware_sources():
        try:
            source.open()
        except Exception:  # noqa: BLE001, S112 - an unreadable source has no baseline to give
            continue
        used.update({r.device: r.memory_used_bytes for r in source.read() if r.memory_used_bytes is not None})
        source.close()
    return used


def estimate(model: Path, ctx: int, parallel: int, ngl: int | None) -> dict:
    command = [sys.executable, "-m", "velollm_core", "estimate", str(model), "--ctx", str(ctx),
               "--parallel", str(parallel), "--json"]
    if ngl is not None:
        command += ["--n-gpu-layers", str(ngl)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip()[-300:]}


def energy(args: argparse.Namespace) -> dict:
    binary = find_program("llama-server")
    levels = [int(c) for c in args.concurrency.split(",")]
    extra = shlex.split(args.server_args)
    ngl = int(extra[extra.index("-ngl") + 1]) if "-ngl" in extra else None
    results = []
    for name in args.model:
        model = resolve_model_path(name)
        baseline = gpu_memory_used()
        flags = ["-c", str(args.ctx), "--parallel", str(max(levels)), "--metrics", *extra]
        with LlamaServer(binary, model, args=flags) as server:
            url = server.url
            with http_client() as http:
                stream(http, url, args.n_prompt, 8, time.perf_counter())  # warm-up
            session = TelemetrySession(f"{url}/metrics", names=LLAMACPP_METRICS, warn=print)
            session.start()
            for streams in levels:
                key = f"c{streams}"
                t_level = time.perf_counter()
                session.begin_level(key)
                runs = run_level(url, streams, args.n_prompt, args.n_gen, args.min_seconds, streams, t_level)
                session.end_level(key, runs=runs)
            telemetry = session.finish()
        est = estimate(model, args.ctx, max(levels), ngl)
        row = {"model": model.name, "server_args": flags, "baseline_used_bytes": baseline, "estimate": est,
               "telemetry": telemetry}
        results.append(row)
        gpu_est = next((d["bytes"] for d in est.get("devices") or [] if d["name"].upper().startswith(("GPU", "CUDA"))),
                       est.get("total_bytes"))
        for level in telemetry["levels"]:
            tpj = level["tokens_per_joule"]
            gpus = {k: v for k, v in level["hardware"].items() if k.startswith("nvml:")}
            peak = [v["memory_used_bytes"]["peak"] - baseline.get(k, 0) for k, v in gpus.items()
                    if isinstance(v["memory_used_bytes"], dict)]
            power = [v["power_w"]["mean"] for v in gpus.values() if isinstance(v["power_w"], dict)]
            out_tps = (level["tokens"]["completion_tokens"] or 0) / level["duration_s"]
            print(f"| {model.name} | {level['key']} | {len(level.get('hardware', {}))} dev | "
                  f"{out_tps:,.0f} tok/s | {', '.join(f'{p:.0f} W' for p in power) or '-'} | "
                  f"gpu tok/J e2e {tpj.get('gpu', {}).get('end_to_end', '-')} decode "
                  f"{tpj.get('gpu', {}).get('decode', '-')} | cpu tok/J {tpj['cpu']['end_to_end']} | "
                  f"peak used above idle {', '.join(f'{p / MIB:,.0f} MiB' for p in peak) or '-'} | "
                  f"estimate {gpu_est / MIB if isinstance(gpu_est, (int, float)) else 0:,.0f} MiB |")
    return {"runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    over = sub.add_parser("overhead")
    over.add_argument("--model", default="smollm2-135m")
    over.add_argument("--rounds", type=int, default=10)
    over.add_argument("--n-gen", type=int, default=128)
    over.add_argument("--hz", type=float, default=10.0)
    over.add_argument("--server-hz", type=float, default=1.0)
    over.add_argument("--server-args", default="")
    over.add_argument("--output")
    en = sub.add_parser("energy")
    en.add_argument("--model", action="append", required=True)
    en.add_argument("--concurrency", default="1,8")
    en.add_argument("--min-seconds", type=float, default=8.0)
    en.add_argument("--n-prompt", type=int, default=512)
    en.add_argument("--n-gen", type=int, default=128)
    en.add_argument("--ctx", type=int, default=8192)
    en.add_argument("--server-args", default="")
    en.add_argument("--output")
    args = parser.parse_args()
    out = overhead(args) if args.mode == "overhead" else energy(args)
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
