"""VeloLLM beside established benchmarks, on the same llama-server (CPU build) and model, interleaved
round by round so that machine drift hits both alike.

    # serving profiles: GuideLLM (its own venv; not a VeloLLM dependency) and VeloLLM's openai backend,
    # both on /v1/completions of one llama-server, fixed output length, unique prompts
    python benchmarks/peer_compare.py serving --guidellm /tmp/guidellm-venv/bin/guidellm \\
        --tokenizer /tmp/tok-gemma3 [--rounds 3] [--concurrency 4] [--rate 1.5]

    # llama-bench -p 512 -n 128 [-d D] beside velollm --workload pp512/tg128[@dD]
    python benchmarks/peer_compare.py llama-bench [--depth 0,512] [--rounds 3]

Client CPU is each tool's process CPU (user + system, RUSAGE_CHILDREN around its run), start-up
included; ``--baseline`` runs each tool once more with 2 requests, and the difference per streamed
token is the marginal CPU of measuring. The GuideLLM tokenizer is the model's own, converted from the
GGUF by transformers (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``; no download).
Results (summaries, each tool's own console table) go to benchmarks/results/peer/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from velollm_llamacpp.testmodels import TEST_MODELS
from velollm_testkit.llama_server import llama_server, llamacpp_where

RESULTS = ROOT / "benchmarks" / "results" / "peer"
VELOLLM = [sys.executable, "-m", "velollm_core"]
ALIAS = "peer-model"


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, float]:
    """Run ``cmd`` to the end, its output into ``log``: its wall time and CPU seconds."""
    cpu0, wall0 = _cpu_children(), time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{cmd[0]} failed with exit code {done.returncode}; {log}:\n{tail}")
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": _cpu_children() - cpu0}


# --- serving profiles --------------------------------------------------------------------------------------


def velollm_command(url: str, model: str, load: list[str], requests: int, pp: int, tg: int, out: Path) -> list[str]:
    """``velollm benchmark`` on an OpenAI-compatible server's /v1/completions: ``load`` is the profile's flags,
    unique prompts of ``pp`` tokens, ``tg`` tokens out, no warm-up, the result into ``out``."""
    return [*VELOLLM, "benchmark", "--backend", "openai", "--host", url, "--model", model, "--endpoint", "completions",
            "--workload", f"pp{pp}/tg{tg}", *load, "--requests", str(requests), "--warmup", "0",
            "--output", str(out), "--force"]


def guidellm_command(guidellm: str, tokenizer: str, url: str, model: str, profile_spec: str, requests: int, pp: int,
                     tg: int, out: Path) -> list[str]:
    """``guidellm run`` on the same endpoint: its synthetic prompts of ``pp`` tokens (by ``tokenizer``), ``tg``
    tokens out (it sends ``max_tokens`` and ``ignore_eos``), ``requests`` requests, its JSON into ``out``."""
    return [guidellm, "run", "--backend", f"kind=openai_http,target={url},model={model},request_format=/v1/completions",
            "--profile", profile_spec, "--constraint", f"kind=max_requests,count={requests}",
            "--data", f"kind=synthetic_text,prompt_tokens={pp},output_tokens={tg}",
            "--tokenizer", f"kind=huggingface_auto,model={tokenizer}", "--output", f"kind=json,path={out}",
            "--disable-console-interactive"]


def guidellm_env(**settings: str) -> dict[str, str]:
    """GuideLLM's environment: no Hugging Face download, and ``settings`` as its ``GUIDELLM__`` variables."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            **{f"GUIDELLM__{name.upper()}": value for name, value in settings.items()}}


def hf_tokenizer(folder: Path, gguf: Path, python: str) -> Path:
    """A Hugging Face tokenizer folder for GuideLLM, converted from ``gguf`` by transformers in the peer's venv
    (``python``) where ``folder`` holds none yet: no download."""
    if (folder / "tokenizer.json").exists():
        return folder
    print(f"converting the tokenizer of {gguf.name} into {folder} (once)", file=sys.stderr, flush=True)
    script = ("import sys; from pathlib import Path; from transformers import AutoTokenizer; "
              "g = Path(sys.argv[1]); AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)"
              ".save_pretrained(sys.argv[2])")
    subprocess.run([python, "-c", script, str(gguf), str(folder)], env=guidellm_env(), check=True)
    return folder



def velollm_serving(url: str, profile: str, value: float, requests: int, pp: int, tg: int, tag: str) -> dict[str, Any]:
    out = RESULTS / f"velollm-{tag}.json"
    load = (["--profile", "concurrent", "--concurrency", str(int(value))] if profile == "concurrent"
            else ["--profile", profile, "--rate", f"{value:g}", "--max-concurrency", "64"])
    cmd = velollm_command(url, ALIAS, load, requests, pp, tg, out)
    cost = timed_run(cmd, RESULTS / f"velollm-{tag}.txt")
    level = json.loads(out.read_text())["levels"][-1]
    tokens = level["completed"] * tg
    return {"tool": "velollm", **cost, "ttft_ms": level["ttft_ms"]["median"], "ttft_p99_ms": level["ttft_ms"]["p99"],
            "itl_ms": level["itl_ms"]["median"], "tpot_ms": level["tpot_ms"]["median"],
            "output_tok_s": level["output_throughput"], "req_s": level["request_throughput"],
            "completed": level["completed"], "failed": level["failed"], "tokens": tokens,
            "prompt_tokens": (level.get("prompt_tokens") or {}).get("reported_median")}


def guidellm_serving(guidellm: str, tokenizer: str, url: str, profile: str, value: float, requests: int, pp: int,
                     tg: int, tag: str) -> dict[str, Any]:
    out = RESULTS / f"guidellm-{tag}.json"
    spec = f"kind=concurrent,streams={int(value)}" if profile == "concurrent" else f"kind={profile},rate={value:g}"
    cmd = guidellm_command(guidellm, tokenizer, url, ALIAS, spec, requests, pp, tg, out)
    cost = timed_run(cmd, RESULTS / f"guidellm-{tag}.txt", env=guidellm_env())
    document = json.loads(out.read_text())
    metrics = document["benchmarks"][-1]["metrics"]
    # Only the aggregate metrics are kept: the per-request records would make the file large.
    out.write_text(json.dumps({"metrics": metrics}, indent=1))

    def ok(name: str, key: str = "median") -> float:
        return metrics[name]["successful"][key]

    completed = metrics["request_totals"]["successful"]
    return {"tool": "guidellm", **cost, "ttft_ms": ok("time_to_first_token_ms"),
            "ttft_p99_ms": metrics["time_to_first_token_ms"]["successful"]["percentiles"]["p99"],
            # GuideLLM's ITL is (latency - TTFT) / (output tokens - 1): vLLM's and VeloLLM's TPOT.
            "itl_ms": None, "tpot_ms": ok("inter_token_latency_ms"),
            "output_tok_s": ok("output_tokens_per_second", "mean"), "req_s": ok("requests_per_second", "mean"),
            "completed": completed, "failed": metrics["request_totals"]["errored"],
            "tokens": int(ok("output_token_count", "total_sum")), "prompt_tokens": ok("prompt_token_count")}


def serving(args: argparse.Namespace) -> list[dict[str, Any]]:
    model = TEST_MODELS[args.model]()
    binary = llamacpp_where()["programs"]["llama-server"]
    profiles = [("concurrent", float(args.concurrency)), (args.rate_profile, args.rate)]
    rows: list[dict[str, Any]] = []
    server_args = ["-c", str(args.ctx), "--parallel", str(args.slots), "-t", str(args.threads), "-a", ALIAS]
    with llama_server(Path(binary), model, server_args) as url:
        for profile, value in profiles:
            for round_no in range(1, args.rounds + 1):
                # Alternate who goes first, so neither always runs on the warmer (or busier) machine.
                order = ["velollm", "guidellm"] if round_no % 2 else ["guidellm", "velollm"]
                for tool in order:
                    tag = f"{profile}{value:g}-r{round_no}"
                    if tool == "velollm":
                        row = velollm_serving(url, profile, value, args.requests, args.pp, args.tg, tag)
                    else:
                        row = guidellm_serving(args.guidellm, args.tokenizer, url, profile, value, args.requests,
                                               args.pp, args.tg, tag)
                    row.update(profile=profile, value=value, round=round_no, load_average=_loadavg())
                    rows.append(row)
                    print(f"{profile}{value:g} r{round_no} {tool}: TTFT {row['ttft_ms']:.1f} ms, TPOT "
                          f"{row['tpot_ms']:.2f} ms, {row['output_tok_s']:.1f} tok/s, CPU {row['cpu_s']:.1f} s",
                          file=sys.stderr, flush=True)
            if args.baseline:
                for tool in ("velollm", "guidellm"):
                    tag = f"{profile}{value:g}-baseline"
                    row = (velollm_serving(url, profile, value, 2, args.pp, args.tg, tag) if tool == "velollm" else
                           guidellm_serving(args.guidellm, args.tokenizer, url, profile, value, 2, args.pp, args.tg, tag))
                    row.update(profile=profile, value=value, round="baseline", load_average=_loadavg())
                    rows.append(row)
    return rows


def serving_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| profile | tool | TTFT p50 ms | TPOT p50 ms | output tok/s | req/s | client CPU s | CPU ms/token |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["profile"], r["value"]) for r in rows}, key=lambda k: (k[0] != "concurrent", k))
    for profile, value in keys:
        for tool in ("velollm", "guidellm"):
            mine = [r for r in rows if (r["profile"], r["value"], r["tool"]) == (profile, value, tool)
                    and r["round"] != "baseline"]
            base = [r for r in rows if (r["profile"], r["value"], r["tool"]) == (profile, value, tool)
                    and r["round"] == "baseline"]
            if not mine:
                continue
            med = statistics.median
            cpu = med(r["cpu_s"] for r in mine)
            per_token = "-"
            if base and mine[0]["tokens"] > base[0]["tokens"]:
                per_token = f"{(cpu - base[0]['cpu_s']) / (mine[0]['tokens'] - base[0]['tokens']) * 1000:.2f}"
            label = f"concurrent {value:g}" if profile == "concurrent" else f"{profile} {value:g}/s"
            lines.append(f"| {label} | {tool} | {med(r['ttft_ms'] for r in mine):.1f} | "
                         f"{med(r['tpot_ms'] for r in mine):.2f} | {med(r['output_tok_s'] for r in mine):.1f} | "
                         f"{med(r['req_s'] for r in mine):.2f} | {cpu:.1f} | {per_token} |")
    return "\n".join(lines)


# --- llama-bench -------------------------------------------------------------------------------------------


def llama_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    model = TEST_MODELS[args.model]()
    programs = llamacpp_where()["programs"]
    depths = [int(d) for d in args.depth.split(",")]
    rows: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        order = ["llama-bench", "velollm"] if round_no % 2 else ["velollm", "llama-bench"]
        for tool in order:
            for depth in depths:
                tag = f"pp{args.pp}-tg{args.tg}-d{depth}-r{round_no}"
                if tool == "llama-bench":
                    row = _llama_bench_once(programs["llama-bench"], model, args, depth, tag)
                else:
                    row = _velollm_workload_once(model, args, depth, tag)
                row.update(tool=tool, depth=depth, round=round_no, load_average=_loadavg())
                rows.append(row)
                print(f"d{depth} r{round_no} {tool}: pp {row['pp_tok_s']:.1f} tok/s, tg {row['tg_tok_s']:.2f} tok/s",
                      file=sys.stderr, flush=True)
    return rows


def _llama_bench_once(binary: str, model: Path, args: argparse.Namespace, depth: int, tag: str) -> dict[str, Any]:
    log = RESULTS / f"llama-bench-{tag}.json"
    cmd = [binary, "-m", str(model), "-t", str(args.threads), "-p", str(args.pp), "-n", str(args.tg),
           "-r", str(args.repetitions), "-o", "json"]
    if depth:
        cmd += ["-d", str(depth)]
    cost = timed_run(cmd, log)
    # llama-bench prints its JSON on stdout and notes on stderr: keep the JSON part only.
    text = log.read_text()
    tests = json.loads(text[text.index("["):text.rindex("]") + 1])
    log.write_text(json.dumps(tests, indent=1))
    pp = next(t for t in tests if t["n_prompt"] == args.pp and t["n_gen"] == 0)
    tg = next(t for t in tests if t["n_gen"] == args.tg and t["n_prompt"] == 0)
    return {**cost, "pp_tok_s": pp["avg_ts"], "tg_tok_s": tg["avg_ts"], "pp_stdev": pp["stddev_ts"],
            "tg_stdev": tg["stddev_ts"], "build": pp.get("build_commit")}


def _velollm_workload_once(model: Path, args: argparse.Namespace, depth: int, tag: str) -> dict[str, Any]:
    out = RESULTS / f"velollm-{tag}.json"
    workload = f"pp{args.pp}/tg{args.tg}" + (f"@d{depth}" if depth else "")
    cmd = [*VELOLLM, "benchmark", "--backend", "llamacpp", "--model", str(model), "--workload", workload,
           "--iterations", str(args.repetitions), "--warmup", "1", "--option", f"threads={args.threads}",
           "--output", str(out), "--force"]
    cost = timed_run(cmd, RESULTS / f"velollm-{tag}.txt")
    result = json.loads(out.read_text())
    runs = [r for r in result["runs"] if not r.get("failed")]
    prompt = statistics.median(r["prompt_tokens_per_s"] for r in runs)
    decode = statistics.median(r["decode_tokens_per_s"] for r in runs)
    return {**cost, "pp_tok_s": prompt, "tg_tok_s": decode,
            "prompt_tokens": statistics.median(r["prompt_tokens"] for r in runs),
            "completion_tokens": statistics.median(r["completion_tokens"] for r in runs)}


def bench_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | tool | pp tok/s | tg tok/s | ratio pp | ratio tg |", "|---|---|---|---|---|---|"]
    med = statistics.median
    for depth in sorted({r["depth"] for r in rows}):
        figures = {}
        for tool in ("llama-bench", "velollm"):
            mine = [r for r in rows if r["tool"] == tool and r["depth"] == depth]
            figures[tool] = (med(r["pp_tok_s"] for r in mine), med(r["tg_tok_s"] for r in mine))
        base_pp, base_tg = figures["llama-bench"]
        for tool, (pp, tg) in figures.items():
            name = "pp512/tg128" + (f"@d{depth}" if depth else "")
            lines.append(f"| {name} | {tool} | {pp:.1f} | {tg:.2f} | {pp / base_pp:.3f} | {tg / base_tg:.3f} |")
    return "\n".join(lines)


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serving", "llama-bench"):
        p = sub.add_parser(name)
        p.add_argument("--model", default="gemma3-270m", choices=sorted(TEST_MODELS))
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--rounds", type=int, default=3)
    s = sub.choices["serving"]
    s.add_argument("--guidellm", required=True, help="the guidellm program (its own venv)")
    s.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer folder of the model")
    s.add_argument("--concurrency", type=int, default=4)
    s.add_argument("--rate", type=float, default=1.5)
    s.add_argument("--rate-profile", choices=["constant", "poisson"], default="constant")
    s.add_argument("--requests", type=int, default=24)
    s.add_argument("--pp", type=int, default=128)
    s.add_argument("--tg", type=int, default=64)
    s.add_argument("--slots", type=int, default=4)
    s.add_argument("--ctx", type=int, default=8192)
    s.add_argument("--baseline", action="store_true", help="also run each tool with 2 requests (start-up CPU)")
    b = sub.choices["llama-bench"]
    b.add_argument("--depth", default="0", help="context depths, e.g. 0,512")
    b.add_argument("--pp", type=int, default=512)
    b.add_argument("--tg", type=int, default=128)
    b.add_argument("--repetitions", type=int, default=3, help="llama-bench -r and VeloLLM --iterations")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = serving(args) if args.command == "serving" else llama_bench(args)
    text = serving_table(rows) if args.command == "serving" else bench_table(rows)
    print(text)
    summary = {"command": " ".join(sys.argv), "cpu": _cpu_name(), "cores": os.cpu_count(), "rows": rows,
               "table": text}
    name = f"{args.command}-summary.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
