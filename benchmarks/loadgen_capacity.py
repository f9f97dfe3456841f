"""Capacity of VeloLLM's load generator: 1, 64, 256 and 1,000 continuous streams against the mock LLM
server (velollm_testkit.mock, in its own process), measured TTFT and ITL beside the mock's configured
values and its own account of how late it sent each token, client CPU per streamed token, errors, stalls.

    python benchmarks/loadgen_capacity.py                      # the four levels, llama-server's wire format
    python benchmarks/loadgen_capacity.py --levels 256 --format openai-chat --profile-cpu /tmp/lg.pstats

What runs is the engine's own path for a level: the backend's ``stream`` builds each StreamCall
(the llamacpp backend: /completion SSE; openai: /v1/chat/completions SSE; ollama: /api/generate NDJSON)
and ``loadgen.LevelDriver`` runs them on one asyncio loop with one httpx.AsyncClient. The calls are
built before the clock starts, so the client CPU counted (``time.process_time()`` of this process only:
the mock is another process) is the load generator's: sending, receiving, parsing, accounting.

Why the gaps grow with the streams: on 2 cores the client and the mock share the machine, so each level
offers about the same aggregate token rate (~2,000 tok/s), well inside what either process can carry,
and what is measured is how the generator keeps time with N sockets open, not where a core runs out.
``--itl-ms`` sets one gap for every level to find that point instead.

``--workers N`` runs each level in N client processes (``velollm_core.bench.workers``: the streams
dealt out, raw samples merged, percentiles computed once; client CPU is this process's plus every
worker's), and ``--mock-processes M`` runs the mock as M processes on one port (SO_REUSEPORT), so that
the mock is not the limit where the client's capacity is measured:

    python benchmarks/loadgen_capacity.py --levels 1000 --itl-ms 100 --workers 2 --mock-processes 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from velollm_testkit.mock import mock_llm

from velollm_core.bench.loadgen import LevelDriver
from velollm_core.bench.profiles import LevelSpec
from velollm_core.bench.workers import LevelWorkers, client_check
from velollm_core.contract import backends
from velollm_core.contract.deadline import Deadlines
from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest

TTFT_MS = 50.0
AGGREGATE_TOK_S = 2000.0
MIN_ITL_MS = 20.0  # below this the loop's 1 ms timer granularity is a visible share of each gap
# streams -> (output tokens per request, requests measured): every stream sends at least two requests,
# so the level holds N streams through request turnover, not only through one simultaneous start.
LEVELS = {1: (64, 12), 64: (64, 192), 256: (32, 768), 1000: (24, 2000)}
FORMATS = {"llamacpp": ("llamacpp", {}), "openai-chat": ("openai", {"endpoint": "chat"}),
           "ollama": ("ollama", {})}


def itl_for(streams: int) -> float:
    return max(MIN_ITL_MS, streams / AGGREGATE_TOK_S * 1000)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def run_level(streams: int, fmt: str, itl_ms: float | None, profile_cpu: Path | None, workers: int = 1,
              mock_processes: int = 1, warmup_rounds: int = 0) -> dict[str, Any]:
    tokens_out, n_requests = LEVELS.get(streams, (32, 2 * streams))
    itl = itl_ms or itl_for(streams)
    backend_name, options = FORMATS[fmt]
    with mock_llm(processes=mock_processes, ttft_ms=TTFT_MS, itl_ms=itl, output_tokens=tokens_out) as mock:
        context = BenchmarkContext(backend=backend_name, model="velollm-mock", host=mock.url, max_concurrency=streams,
                                   options=options)
        backend = backends.get(backend_name)
        backends.settings(backend, context)
        with context.resources:
            backend.start(context)
            requests = [GenerationRequest(benchmark="capacity", prompt=f"request {i} of the capacity level says",
                                          max_tokens=tokens_out, ignore_eos=True, raw=True)
                        for i in range(n_requests + streams * (1 + warmup_rounds))]
            calls = {id(r): backend.stream(r, context) for r in requests}  # built before the clock
            spec = LevelSpec(key=f"c{streams}", profile="concurrent", concurrency=streams, requests=n_requests,
                             warmup=streams * warmup_rounds)
            if workers > 1:
                driver = LevelWorkers(spec, requests, prepare=lambda r: calls[id(r)], deadlines=Deadlines(),
                                      workers=workers)
            else:
                driver = LevelDriver(spec, requests, prepare=lambda r: calls[id(r)],
                                     generate=lambda r: backend.generate(r, context), deadlines=Deadlines())
            mock.reset()
            profiler = None
            if profile_cpu is not None:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu0 = time.process_time()
            run = driver.run()
            # From the level's start (workers: the moment they were told to go, after they started).
            wall = time.perf_counter() - driver.began
            cpu = time.process_time() - cpu0 + (driver.cpu_s if workers > 1 else 0.0)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile_cpu))
            server = mock.stats()
    row = summarize(run, streams, fmt, itl, tokens_out, cpu, wall, server)
    row["workers"], row["mock_processes"], row["warmup_rounds"] = workers, mock_processes, warmup_rounds
    row["client_check"] = client_check(run, cpu_s=cpu, wall_s=wall, workers=workers)
    if workers > 1:
        row["client_check"]["worker_cpu_s"] = driver.client()["worker_cpu_s"]
    return row


def summarize(run, streams: int, fmt: str, itl: float, tokens_out: int, cpu: float, wall: float,
              server: dict[str, Any]) -> dict[str, Any]:
    done = [o for o in run.outcomes if o.timing is not None and o.error is None]
    errors = [o.error for o in run.outcomes if o.error]
    measured = [o for o in run.measured if o.timing is not None and o.error is None]
    gaps = [(b - a) * 1000 for o in done for a, b in zip(o.token_times, o.token_times[1:], strict=False)]
    ttft = [o.timing.ttft_ms for o in measured if o.timing.ttft_ms is not None]
    # The mock's own prefill time (its clock, from the request parsed to the first token sent): what
    # the client's TTFT adds beyond it is connection, sending and receiving.
    server_ttft = [o.timing.extra["server_prompt_ms"] for o in measured if "server_prompt_ms" in o.timing.extra]
    short = sum(1 for o in measured if (o.timing.completion_tokens or 0) < tokens_out)
    # A stall: a gap the client saw that is more than twice the mock's and 20 ms longer than it.
    stall_ms = 2 * itl + 20
    tokens = sum(len(o.token_times) for o in run.outcomes)
    return {
        "streams": streams, "format": fmt, "itl_ms_configured": itl, "ttft_ms_configured": TTFT_MS,
        "tokens_per_request": tokens_out, "requests_measured": len(run.measured), "requests_ok": len(measured),
        "errors": len(errors), "error_kinds": sorted(set(errors))[:5], "short_outputs": short,
        "max_in_flight": run.peak_concurrency, "wall_s": round(wall, 2), "tokens_streamed": tokens,
        "tok_per_s": round(tokens / wall, 1) if wall else None,
        "itl_ms": {"p50": _pct(gaps, 0.5), "p99": _pct(gaps, 0.99), "max": max(gaps, default=None),
                   "mean": statistics.fmean(gaps) if gaps else None, "n": len(gaps)},
        "ttft_ms": {"p50": _pct(ttft, 0.5), "p99": _pct(ttft, 0.99), "max": max(ttft, default=None), "n": len(ttft)},
        "server_ttft_ms": {"p50": _pct(server_ttft, 0.5), "p99": _pct(server_ttft, 0.99)},
        "load_average": _loadavg(),
        "stalls": sum(1 for g in gaps if g > stall_ms), "stall_threshold_ms": stall_ms,
        "client_cpu_s": round(cpu, 3), "client_cpu_ms_per_token": round(cpu / tokens * 1000, 4) if tokens else None,
        "client_cpu_share": round(cpu / wall, 3) if wall else None,
        # the gaps between a stream's tokens as the mock sent them: the truth the client's ITL is held to
        "mock": {"lateness_ms": server["lag_ms"], "gaps_ms": server["gap_ms"], "cpu_ms_per_token": server["cpu_per_token_ms"],
                 "cpu_s": round(server["cpu_s"], 3), "active_max": server["active_max"],
                 "tokens": server["tokens"], "cancelled": server["cancelled"],
                 "connections_opened": server["accepted"]},
    }


def _loadavg() -> float | None:
    """The 1-minute load average after the level: other work on the 2 cores shows in the gaps."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _machine() -> dict[str, Any]:
    """The CPU, its cores and the load when the run ended (other work on the cores shows in the gaps)."""
    import os
    import platform
    import subprocess

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False,
                            capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "load_average": _loadavg(), "commit": commit,
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| streams | workers | ITL set | ITL p50 | ITL p99 | sent gap p99 | TTFT set | TTFT p50 | TTFT p99 "
            "| client CPU/token | errors | stalls | tok/s |")
    lines = [head, "|" + "|".join("---" for _ in range(13)) + "|"]  # sent gap: the mock's own, per stream
    for r in rows:
        lines.append(
            f"| {r['streams']} | {r.get('workers', 1)} | {_f(r['itl_ms_configured'])} | {_f(r['itl_ms']['p50'])} "
            f"| {_f(r['itl_ms']['p99'])} | {_f(r['mock']['gaps_ms']['p99'])} "
            f"| {_f(r['ttft_ms_configured'])} | {_f(r['ttft_ms']['p50'])} | {_f(r['ttft_ms']['p99'])} "
            f"| {_f(r['client_cpu_ms_per_token'], 3)} ms "
            f"| {r['errors']} | {r['stalls']} | {_f(r['tok_per_s'], 0)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,64,256,1000", help="streams per level, comma-separated")
    parser.add_argument("--format", choices=sorted(FORMATS), default="llamacpp", help="wire format (backend)")
    parser.add_argument("--itl-ms", type=float, help="one gap for every level (default: ~2,000 tok/s in all)")
    parser.add_argument("--profile-cpu", type=Path, help="cProfile the last level's client into this file")
    parser.add_argument("--output", type=Path, help="JSON of every level")
    parser.add_argument("--workers", default="1", help="client processes per level; a list (1,2) runs each level "
                                                       "once per count, side by side")
    parser.add_argument("--mock-processes", type=int, default=1, help="mock processes sharing the port")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="the client's event loop in this process (uvloop: installed apart, no VeloLLM "
                             "dependency; one worker only)")
    parser.add_argument("--warmup-rounds", type=int, default=0,
                        help="uncounted requests per stream first (0: the streams' simultaneous start is measured)")
    args = parser.parse_args()
    try:
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--levels {args.levels!r}: give numbers of streams, e.g. 1,64,256")
    try:
        worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: give numbers of processes, e.g. 1,2")
    if args.loop == "uvloop":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    rows = []
    runs = [(streams, workers) for streams in levels for workers in worker_counts]
    for i, (streams, workers) in enumerate(runs):
        profile = args.profile_cpu if i == len(runs) - 1 else None
        row = run_level(streams, args.format, args.itl_ms, profile, workers, args.mock_processes, args.warmup_rounds)
        row["loop"] = args.loop
        rows.append(row)
        print(f"c{streams} x{workers}: {row['tokens_streamed']} tokens in {row['wall_s']} s, client "
              f"{row['client_cpu_ms_per_token']} ms CPU/token, ITL p50/p99 {_f(row['itl_ms']['p50'])}/"
              f"{_f(row['itl_ms']['p99'])} ms (set {row['itl_ms_configured']:g}), errors {row['errors']}, "
              f"stalls {row['stalls']}", file=sys.stderr, flush=True)
    print(table(rows))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": rows, "command": " ".join(["python", *sys.argv]), "machine": _machine()},
                                  indent=1))
        tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
