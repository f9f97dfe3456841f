"""Does `velollm speculative search` find the best setting? Its pick against an exhaustive sweep.

    python benchmarks/spec_search_vs_sweep.py --target gemma3-270m --draft ngram --spec-type ngram-mod \
        --draft-max 4,8,16,32 --ngram-match 4,8 --suite code_edit --suite quote_answer --threads 2 \
        --sweep-iterations 3 --output benchmarks/results/cpu/spec-search-vs-sweep.json

1. The search, as a user runs it (the CLI, successive halving from one run per suite).
2. The sweep: every setting of the same grid on one comparison, ``--sweep-iterations`` interleaved runs
   per suite each, against one plain server (so every setting is measured with the same plain runs).

Both picks are then read off the sweep, which measured them on their own: the search's best measured
setting and the advisor's pick (the draft max it predicted fastest), each as a share of the sweep's
best. The goal (issue "Speculation as users run it"): the pick >= 95% of the sweep's best.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from velollm_core.bench.commands import parse_options
from velollm_core.bench.suites import get_suites
from velollm_core.speculative.bench import SpeculativePlan, require_speculative_backend
from velollm_core.speculative.search import _comparison, distinct, grid


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", default="ngram")
    parser.add_argument("--spec-type", action="append", default=[])
    parser.add_argument("--draft-max", default="4,8,16,32")
    parser.add_argument("--ngram-match", default="4,8")
    parser.add_argument("--suite", action="append", default=[])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--option", action="append", default=[])
    parser.add_argument("--sweep-iterations", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("spec-search-vs-sweep.json"))
    args = parser.parse_args()
    suites = args.suite or ["code_edit", "quote_answer"]
    common = [*(["--threads", str(args.threads)] if args.threads else []),
              *(["--max-tokens", str(args.max_tokens)] if args.max_tokens else []),
              *[x for o in args.option for x in ("--option", o)], *[x for s in suites for x in ("--suite", s)]]

    # 1. The search, through the CLI.
    search_file = args.output.with_name(args.output.stem + "-search.json")
    cmd = [sys.executable, "-m", "velollm_core", "speculative", "search", "--target", args.target, "--draft", args.draft,
           *[x for t in args.spec_type for x in ("--spec-type", t)], "--draft-max", args.draft_max,
           "--ngram-match", args.ngram_match, *common, "--output", str(search_file), "--force"]
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, text=True, capture_output=True, check=False)
    print(proc.stdout[-3000:], proc.stderr[-1500:] if proc.returncode else "", flush=True)
    if proc.returncode != 0:
        sys.exit(f"the search failed (exit {proc.returncode})")
    search = json.loads(search_file.read_text())
    search_s = time.perf_counter() - started

    # 2. The sweep: the same grid, every setting with the same plain runs.
    backend = require_speculative_backend("llamacpp", args.target)
    types = [backend.parse_types(t) for t in args.spec_type]
    resolved = backend.resolve(args.target, args.draft, types)
    chosen = get_suites(suites)
    if args.max_tokens:
        chosen = [replace(s, max_tokens=args.max_tokens) for s in chosen]
    plan = SpeculativePlan(target=args.target, draft=args.draft, types=types, suites=chosen,
                           iterations=args.sweep_iterations, threads=args.threads, options=parse_options(tuple(args.option)),
                           advise=False, confirm=False, backend="llamacpp")
    candidates = grid(resolved["configs"], backend.knobs, draft_maxes=_ints(args.draft_max),
                      values={"ngram_match": _ints(args.ngram_match), "p_min": (0.5, 0.75, 0.9)})
    kept, _ = distinct(plan, candidates)
    names = {c.name for c in kept}
    if names != {c["name"] for c in search["candidates"]}:
        sys.exit("the sweep's grid is not the search's: compare like with like")
    print(f"sweep: {len(kept)} settings x {len(chosen)} suites x {args.sweep_iterations} runs, one plain server",
          flush=True)
    started = time.perf_counter()
    comparison = _comparison(plan, kept)  # every setting on one comparison, as a search round sets them
    comparison.on_run = lambda label, record: print(" ", label, flush=True)
    sweep = comparison.run()
    sweep_s = time.perf_counter() - started
    measured = {name: {"speedup": c["speedup"], "speedup_interval": c["speedup_interval"],
                       "acceptance_rate": c["acceptance_rate"]} for name, c in sweep["configs"].items()}
    best = max(measured, key=lambda n: measured[n]["speedup"] or 0)
    best_speedup = measured[best]["speedup"]
    picks = {"search's best measured": search["best"]["name"]}
    if (search.get("advisor") or {}).get("pick"):
        picks["advisor's pick"] = search["advisor"]["pick"]["name"]
    rows = {label: {"name": name, "sweep_speedup": measured[name]["speedup"],
                    "share_of_sweep_best": measured[name]["speedup"] / best_speedup}
            for label, name in picks.items()}

    print(f"\nsweep ({sweep_s:.0f} s) against search ({search_s:.0f} s, {search['servers']} servers):")
    for name in sorted(measured, key=lambda n: measured[n]["speedup"] or 0, reverse=True):
        i = measured[name]["speedup_interval"]
        interval = f"95%: {i['low']:.2f}-{i['high']:.2f}x" if i else "one run: no interval"
        print(f"  {name:<38} {measured[name]['speedup']:.2f}x  ({interval})")
    for label, row in rows.items():
        print(f"{label}: {row['name']}, {row['sweep_speedup']:.2f}x in the sweep = "
              f"{row['share_of_sweep_best']:.0%} of the sweep's best ({best}, {best_speedup:.2f}x)")
    args.output.write_text(json.dumps({
        "target": args.target, "draft": args.draft, "suites": suites, "search_command": cmd,
        "search_file": search_file.name, "search_seconds": search_s, "sweep_seconds": sweep_s,
        "sweep_iterations": args.sweep_iterations, "sweep": measured, "sweep_best": {"name": best, "speedup": best_speedup},
        "picks": rows, "sweep_report": sweep,
    }, indent=2))


if __name__ == "__main__":
    main()
