"""GuideLLM and VeloLLM's load generator side by side on one mock LLM server and one offered load: per tool,
the tokens received against those expected (and the mock's own count), TTFT p50 against the mock's
configured TTFT, the gaps between tokens against its configured ITL, and the client's CPU per streamed token.

    python benchmarks/peer_loadgen.py --streams 256,1000 --itl-ms 100 --mock-processes 2 --rounds 3

The mock (velollm_testkit.mock, OpenAI wire format, ``--mock-processes`` processes on one port) sends every
stream's first token ``--ttft-ms`` after the request and the next ones every ``--itl-ms``, ``--tg`` tokens
in all. Each tool runs as its user would run it, with its own defaults for client processes, interleaved
round by round (who goes first alternates): GuideLLM from its own venv (``guidellm run --profile
kind=concurrent,streams=N``: 10 worker processes by default) and ``velollm benchmark --backend openai
--profile concurrent --concurrency N`` (``--workers`` chosen from the streams and the cores). Both send
``--requests`` requests (default: two per stream) to /v1/completions asking for exactly ``--tg`` tokens
(``max_tokens``; GuideLLM adds ``ignore_eos``, VeloLLM's fixed output length does too), with unique
prompts of ``--pp`` tokens: GuideLLM's synthetic text by the Gemma tokenizer (converted from the
bundled GGUF once, no download), VeloLLM's sized by the mock's /tokenize.

Client CPU is the tool's whole process tree (user + system, RUSAGE_CHILDREN around its run), start-up
included, per token the mock sent (its own count: a tool that sends more than it counts, as VeloLLM
does when it cuts the streams still running at a level's end, did that work too). Each level also runs
each tool once with 2 requests (the baseline); the difference per streamed token is the marginal CPU of
measuring, without either tool's start-up (GuideLLM's is seconds: 10 spawned processes that import torch).

What each tool can say about the gaps: VeloLLM stamps every chunk (ITL p50/p99 over all gaps); GuideLLM
keeps each request's first and last token time, so its ITL is a mean gap per request. Both are shown as
"mean gap per request" p50/p99 (VeloLLM's TPOT, GuideLLM's ITL: last - first over tokens - 1), and
VeloLLM's per-gap ITL beside them. Results go to benchmarks/results/peer/: ``loadgen-summary.json`` and each
run's console output and (trimmed) JSON, ``{tool}-loadgen-c{N}-r{round}.{txt,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peer_compare import (
    RESULTS,
    _cpu_name,
    _loadavg,
    guidellm_command,
    guidellm_env,
    hf_tokenizer,
    timed_run,
    velollm_command,
)
from velollm_llamacpp.testmodels import TEST_MODELS
from velollm_testkit.mock import MockLLM, mock_llm

MODEL = "velollm-mock"
TOOLS = ("velollm", "guidellm")
BASELINE_REQUESTS = 2


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def run_velollm(url: str, streams: int, requests: int, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    out = args.results / f"velollm-loadgen-{tag}.json"
    load = ["--profile", "concurrent", "--concurrency", str(streams)]
    cost = timed_run(velollm_command(url, MODEL, load, requests, args.pp, args.tg, out),
                     args.results / f"velollm-loadgen-{tag}.txt")
    document = json.loads(out.read_text())
    level = document["levels"][-1]
    runs = document["runs"]
    received = sum((r.get("extra") or {}).get("content_chunks", r.get("completion_tokens") or 0) for r in runs)
    # The per-request records make the file megabytes at 1,000 streams: the level's figures are kept.
    out.write_text(json.dumps({key: document[key] for key in ("settings", "environment", "levels")}, indent=1))
    client = level.get("client") or {}
    return {**cost, "completed": level["completed"], "failed": level["failed"], "tokens_received": received,
            "tokens_usage": sum(r.get("completion_tokens") or 0 for r in runs),
            "ttft_ms": {"p50": level["ttft_ms"]["median"], "p99": level["ttft_ms"]["p99"]},
            "gap_per_request_ms": {"p50": level["tpot_ms"]["median"], "p99": level["tpot_ms"]["p99"]},
            "itl_ms": {"p50": level["itl_ms"]["median"], "p99": level["itl_ms"]["p99"], "n": level["itl_ms"]["n"]},
            "client_processes": client.get("workers"), "self_reported_cpu_ms_per_token":
                level.get("client_cpu_ms_per_token"), "client_limited": client.get("limited")}


def run_guidellm(url: str, streams: int, requests: int, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    out = args.results / f"guidellm-loadgen-{tag}.json"
    cmd = guidellm_command(args.guidellm, str(args.tokenizer), url, MODEL, f"kind=concurrent,streams={streams}",
                           requests, args.pp, args.tg, out)
    settings = {"max_worker_processes": str(args.guidellm_workers)} if args.guidellm_workers else {}
    cost = timed_run(cmd, args.results / f"guidellm-loadgen-{tag}.txt", env=guidellm_env(**settings))
    benchmark = json.loads(out.read_text())["benchmarks"][-1]
    metrics = benchmark["metrics"]
    # Tokens as the client counted them: the chunks that carried tokens, in every request it kept.
    received = sum(request["info"]["timings"].get("token_iterations") or 0
                   for group in benchmark["requests"].values() for request in group or [])
    out.write_text(json.dumps({"metrics": metrics}, indent=1))

    def percentiles(name: str) -> dict[str, float]:
        values = metrics[name]["successful"]["percentiles"]
        return {"p50": values["p50"], "p99": values["p99"]}

    totals = metrics["request_totals"]
    return {**cost, "completed": int(totals["successful"]), "failed": int(totals["errored"] + totals["incomplete"]),
            "tokens_received": received, "tokens_usage": int(metrics["output_token_count"]["successful"]["total_sum"]),
            "ttft_ms": percentiles("time_to_first_token_ms"),
            "gap_per_request_ms": percentiles("inter_token_latency_ms"),
            "itl_ms": None,  # GuideLLM keeps no time per chunk
            "client_processes": args.guidellm_workers or "default", "self_reported_cpu_ms_per_token": None,
            "client_limited": None}


RUNNERS = {"velollm": run_velollm, "guidellm": run_guidellm}


def mock_account(mock: MockLLM) -> dict[str, Any]:
    """What the mock itself sent and how late (its own clock), since its last reset."""
    stats = mock.stats()
    return {"tokens": stats["tokens"], "completed": stats["completed"], "cancelled": stats["cancelled"],
            "lateness_ms": {"p50": stats["lag_ms"]["p50"], "p99": stats["lag_ms"]["p99"]},
            "connections_opened": stats["accepted"], "cpu_s": round(stats["cpu_s"], 3)}


def run_once(tool: str, mock: MockLLM, streams: int, requests: int, args: argparse.Namespace,
             round_no: int | str) -> dict[str, Any]:
    mock.reset()
    row = RUNNERS[tool](mock.url, streams, requests, args, f"c{streams}-r{round_no}")
    row.update(tool=tool, streams=streams, round=round_no, requests=requests, tokens_expected=requests * args.tg,
               mock=mock_account(mock), load_average=_loadavg())
    row["ttft_error_ms"] = row["ttft_ms"]["p50"] - args.ttft_ms if row["ttft_ms"]["p50"] is not None else None
    # Per token the mock sent: the client read them all, those of streams it cut at the end included.
    streamed = row["mock"]["tokens"]
    row["cpu_ms_per_token"] = row["cpu_s"] / streamed * 1000 if streamed else None
    print(f"c{streams} r{round_no} {tool}: {row['tokens_received']}/{row['tokens_expected']} tokens, TTFT p50 "
          f"{_f(row['ttft_ms']['p50'])} ms (set {args.ttft_ms:g}), mean gap p99 {_f(row['gap_per_request_ms']['p99'])}"
          f" ms (set {args.itl_ms:g}), CPU {row['cpu_s']:.1f} s in {row['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return row


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level and tool: the medians over rounds, and the marginal CPU per token against the baseline."""
    med = statistics.median
    out = []
    for streams in sorted({r["streams"] for r in rows}):
        for tool in TOOLS:
            mine = [r for r in rows if r["streams"] == streams and r["tool"] == tool and r["round"] != "baseline"]
            base = [r for r in rows if r["streams"] == streams and r["tool"] == tool and r["round"] == "baseline"]
            if not mine:
                continue

            def median_of(*keys: str, runs: list[dict[str, Any]] = mine) -> float | None:
                values = []
                for r in runs:
                    value: Any = r
                    for key in keys:
                        value = value.get(key) if isinstance(value, dict) else None
                    if value is not None:
                        values.append(value)
                return med(values) if values else None

            cpu, streamed = median_of("cpu_s"), median_of("mock", "tokens")
            marginal = None
            if base and streamed and streamed > base[0]["mock"]["tokens"]:
                marginal = (cpu - base[0]["cpu_s"]) / (streamed - base[0]["mock"]["tokens"]) * 1000
            out.append({
                "streams": streams, "tool": tool, "rounds": len(mine), "tokens_expected": mine[0]["tokens_expected"],
                "tokens_received": median_of("tokens_received"), "mock_tokens": streamed,
                "mock_requests": median_of("mock", "completed"), "mock_cancelled": median_of("mock", "cancelled"),
                "failed": median_of("failed"), "ttft_p50_ms": median_of("ttft_ms", "p50"),
                "ttft_error_ms": median_of("ttft_error_ms"), "gap_per_request_p50_ms": median_of("gap_per_request_ms", "p50"),
                "gap_per_request_p99_ms": median_of("gap_per_request_ms", "p99"),
                "itl_p50_ms": median_of("itl_ms", "p50"), "itl_p99_ms": median_of("itl_ms", "p99"),
                "mock_lateness_p99_ms": median_of("mock", "lateness_ms", "p99"), "cpu_s": cpu,
                "wall_s": median_of("wall_s"), "cpu_ms_per_token": median_of("cpu_ms_per_token"),
                "marginal_cpu_ms_per_token": marginal, "baseline_cpu_s": base[0]["cpu_s"] if base else None,
                "self_reported_cpu_ms_per_token": median_of("self_reported_cpu_ms_per_token"),
                "client_processes": mine[0]["client_processes"],
            })
    return out


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    heading = (f"mock: TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, {args.tg} tokens per request, "
               f"{args.mock_processes} process(es); medians of rounds; CPU per token the mock sent")
    lines = [heading,
             "| N | tool | tokens got/exp | TTFT p50 | err | gap/req p50/p99 | ITL p99 | CPU ms/tok | marginal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(
            f"| {s['streams']} | {s['tool']} | {_f(s['tokens_received'], 0)}/{s['tokens_expected']} "
            f"| {_f(s['ttft_p50_ms'])} | {_f(s['ttft_error_ms'])} | {_f(s['gap_per_request_p50_ms'])}/"
            f"{_f(s['gap_per_request_p99_ms'])} | {_f(s['itl_p99_ms'])} | {_f(s['cpu_ms_per_token'], 3)} "
            f"| {_f(s['marginal_cpu_ms_per_token'], 3)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="16", help="concurrent streams per level, comma-separated")
    parser.add_argument("--requests", type=int, help="requests per level and tool (default: 2 per stream)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=100.0)
    parser.add_argument("--tg", type=int, default=32, help="output tokens per request")
    parser.add_argument("--pp", type=int, default=64, help="prompt tokens per request")
    parser.add_argument("--mock-processes", type=int, default=2, help="mock processes sharing the port")
    parser.add_argument("--guidellm", default="/tmp/gl/bin/guidellm", help="the guidellm program (its own venv)")
    parser.add_argument("--guidellm-workers", type=int, help="GuideLLM's worker processes (default: its own, 10)")
    parser.add_argument("--tokenizer", type=Path, default=Path("/tmp/tok-gemma3"),
                        help="a Hugging Face tokenizer folder for GuideLLM (made from the Gemma GGUF when missing)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where the files go (default {RESULTS})")
    parser.add_argument("--no-baseline", action="store_true", help="skip the 2-request runs (no marginal CPU)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="which tools, comma-separated")
    args = parser.parse_args()
    try:
        levels = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--streams {args.streams!r}: give numbers of streams, e.g. 256,1000")
    tools = [t for t in args.tools.split(",") if t]
    if not levels or any(n < 1 for n in levels) or not set(tools) <= set(TOOLS) or not tools:
        parser.error(f"--streams takes positive numbers and --tools some of {', '.join(TOOLS)}")
    if "guidellm" in tools:
        if not os.access(args.guidellm, os.X_OK):
            parser.error(f"{args.guidellm} is not a program: install GuideLLM in its own venv, or give --guidellm")
        hf_tokenizer(args.tokenizer, TEST_MODELS["gemma3-270m"](), str(Path(args.guidellm).parent / "python"))
    args.results.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with mock_llm(processes=args.mock_processes, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
                  output_tokens=args.tg) as mock:
        for streams in levels:
            requests = args.requests or 2 * streams
            for round_no in range(1, args.rounds + 1):
                # Alternate who goes first, so neither always runs on the warmer (or busier) machine.
                for tool in tools if round_no % 2 else tools[::-1]:
                    rows.append(run_once(tool, mock, streams, requests, args, round_no))
            if not args.no_baseline:
                for tool in tools:
                    rows.append(run_once(tool, mock, streams, BASELINE_REQUESTS, args, "baseline"))
    summary = summarize(rows)
    text = table(summary, args)
    print(text)
    document = {"command": " ".join(["python", *sys.argv]), "cpu": _cpu_name(), "cores": os.cpu_count(),
                "mock": {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "output_tokens": args.tg,
                         "processes": args.mock_processes},
                "summary": summary, "rows": rows, "table": text}
    (args.results / "loadgen-summary.json").write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
