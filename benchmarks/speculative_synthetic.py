"""Speculative decoding speedup vs acceptance, with llama.cpp's synthetic acceptance (benchmarking only).

    python benchmarks/speculative_synthetic.py --target T.gguf --draft D.gguf \
        [--acceptance 0.5,0.6,0.7,0.75,0.8,0.9] [--draft-max 4,8] [--iterations 3] [--predict]
        [--option KEY=VALUE ...] [--label NAME] [--output FILE]

Random-weight models accept nothing on their own, so `--spec-synth-rates` makes the server accept
each drafted position i with probability a^(i+1) (a per-token acceptance a, unconditional rates as
the flag wants them). The draft model still runs and the target still verifies every batch, so the
timing is the real system's; only the accept/reject decision is synthetic, and the generated text is
not valid (it is not compared). SYNTHETIC-ACCEPTANCE numbers: label them so wherever they are quoted.

``--predict`` also measures the costs the advisor uses (llama-bench: target and draft per-token decode,
the target's batch of k+1) and prints, per row, the advisor's prediction and the step time the server
really took beyond that model (per-step overhead = measured step time - modelled step time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from velollm_core.bench.commands import parse_options
from velollm_core.bench.suites import get_suites
from velollm_core.speculative.advisor import Observation, predicted_speedup, step_ms, with_sampling
from velollm_core.speculative.bench import SpeculativeComparison, SpeculativePlan, is_draftless


def rates(alpha: float, draft_max: int) -> str:
    return ",".join(f"{alpha ** (i + 1):.6f}" for i in range(draft_max))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--acceptance", default="0.5,0.6,0.7,0.75,0.8,0.9")
    parser.add_argument("--draft-max", default="16", help="Comma list of draft lengths.")
    parser.add_argument("--draft-min", type=int, help="Shortest draft used (n-gram drafting: set it low).")
    parser.add_argument("--ngram-match", type=int, help="N-gram drafting: tokens that must match.")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--suite", default="medium_completion")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for both servers")
    parser.add_argument("--spec-arg", action="append", default=[], help="Extra flag for the speculative server only.")
    parser.add_argument("--predict", action="store_true", help="Measure llama-bench costs, print predictions.")
    parser.add_argument("--label", default="")
    parser.add_argument("--output", type=Path, default=Path("speculative-synthetic.json"))
    args = parser.parse_args()
    options = parse_options(tuple(args.option))
    lengths = [int(k) for k in args.draft_max.split(",")]
    costs = None
    draftless = is_draftless(args.draft)
    if args.predict and draftless:
        parser.error("--predict needs a draft model (n-gram drafting has no draft cost to measure)")
    if args.predict:
        from velollm_core.plugins import hook

        backend = hook().speculative_backend(kind="llamacpp")
        ngl = options.get("n_gpu_layers")
        costs = backend.measure_costs(Path(args.target), Path(args.draft), draft_lengths=tuple(lengths),
                                      n_gpu_layers=int(ngl) if ngl is not None else None)
        print(f"costs (llama-bench, ms): target token {costs['target_token_ms']:.3f}, draft token "
              f"{costs['draft_token_ms']:.3f} ({costs['draft_token_ms'] / costs['target_token_ms']:.0%}), verify "
              + ", ".join(f"k={k}: {v:.3f}" for k, v in sorted(costs["verify_ms"].items())), flush=True)
    rows = []
    for draft_max in lengths:
        for alpha in (float(a) for a in args.acceptance.split(",")):
            plan = SpeculativePlan(
                target=args.target, draft=args.draft, suites=get_suites([args.suite]), iterations=args.iterations,
                settings={"draft_max": draft_max, **({} if draftless else {"p_min": 0.0}),
                          **{k: v for k, v in (("draft_min", args.draft_min), ("ngram_match", args.ngram_match))
                             if v is not None}},
                options=options, advise=False, exact=False,
                speculative_args=["--spec-synth-rates", rates(alpha, draft_max), *args.spec_arg],
            )
            report = SpeculativeComparison(plan).run()
            row = report["per_suite"][args.suite]
            runs = report["speculative"]["runs"]
            generated = sum(r["completion_tokens"] or 0 for r in runs if r["benchmark"] == args.suite)
            steps = Observation(generated=generated, drafted=row["drafted"], accepted=row["accepted"]).steps
            tokens_per_step = generated / steps
            out = {"label": args.label, "draft_max": draft_max, "per_token_acceptance": alpha,
                   "acceptance_rate": row["acceptance_rate"], "tokens_per_step": tokens_per_step,
                   "vanilla_decode_tokens_per_s": row["vanilla_decode_tokens_per_s"],
                   "speculative_decode_tokens_per_s": row["speculative_decode_tokens_per_s"],
                   "speedup": row["speedup"]}
            line = (f"{args.label} k={draft_max} a={alpha:.2f}  accepted/drafted={row['acceptance_rate']:.2f}  "
                    f"tokens/step {tokens_per_step:.2f}  vanilla {row['vanilla_decode_tokens_per_s']:.1f}  speculative "
                    f"{row['speculative_decode_tokens_per_s']:.1f} tok/s  speedup {row['speedup']:.2f}x")
            if costs:
                mean_drafted = row["drafted"] / steps
                measured = with_sampling(costs, row["vanilla_decode_tokens_per_s"])
                predicted = predicted_speedup(measured, mean_drafted, tokens_per_step)
                measured_step = tokens_per_step / row["speculative_decode_tokens_per_s"] * 1000
                modelled_step = step_ms(measured, mean_drafted, tokens_per_step)
                out.update(predicted_speedup=predicted, measured_step_ms=measured_step, modelled_step_ms=modelled_step,
                           sampling_ms=measured["sampling_ms"])
                line += (f"  predicted {predicted:.2f}x  step {measured_step:.2f} ms vs model {modelled_step:.2f} ms "
                         f"(+{measured_step - modelled_step:.2f})")
            rows.append(out)
            print(line + "   (SYNTHETIC acceptance)", flush=True)
    args.output.write_text(json.dumps({"synthetic_acceptance": True, "target": args.target, "draft": args.draft,
                                       "options": options, "spec_args": args.spec_arg, "costs_ms": costs,
                                       "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
