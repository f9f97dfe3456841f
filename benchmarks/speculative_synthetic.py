"""Speculative decoding speedup vs acceptance, with llama.cpp's synthetic acceptance (benchmarking only).

    python benchmarks/speculative_synthetic.py --target T.gguf [--draft D.gguf] [--spec-type TYPES]
        [--acceptance 0.6,0.7,0.75,0.8,0.9] [--draft-max 4,8] [--iterations 3] [--predict]
        [--calibrate-at 0.5] [--option KEY=VALUE ...] [--label NAME] [--output FILE]

Random-weight models accept nothing on their own, so `--spec-synth-rates` makes the server accept
each drafted position i with probability a^(i+1) (a per-token acceptance a, unconditional rates as
the flag wants them). The drafter still runs (a draft model, an MTP or EAGLE-3 head, n-gram lookup)
and the target still verifies every batch, so the timing is the real system's; only the
accept/reject decision is synthetic, and the generated text is not valid (it is not compared).
SYNTHETIC-ACCEPTANCE numbers: label them so wherever they are quoted.

For each draft length one vanilla server runs beside one speculative server per acceptance rate,
interleaved run by run (see velollm_core/speculative/bench.py).

``--predict`` measures the advisor's costs (llama-bench: the target's token and its batches of k+1,
and a draft model's), fits them to the run at ``--calibrate-at`` (a head's cost per drafted token,
which llama-bench cannot measure, and the server's per-step work), and prints the advisor's
prediction beside every other acceptance rate, from that rate and the draft length alone (never from
what that point measured): those are predictions; the calibration point's own figure is a fit. Without a
calibration run (``--calibrate-at none``) it predicts from llama-bench alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from velollm_core.bench.commands import parse_options
from velollm_core.bench.suites import get_suites
from velollm_core.speculative.advisor import (
    Observation,
    calibrate,
    expected_accepted,
    predicted_speedup,
    step_ms,
    with_sampling,
)
from velollm_core.speculative.bench import SpeculativeComparison, SpeculativePlan, require_speculative_backend


def rates(alpha: float, draft_max: int) -> str:
    return ",".join(f"{alpha ** (i + 1):.6f}" for i in range(draft_max))


def measured_row(report: dict, name: str, suite: str) -> dict:
    """Tokens per step, drafted per step and speeds of one configuration of a comparison."""
    config = report["configs"][name]
    row = config["per_suite"][suite]
    runs = report["speculative"]["runs"] if name == next(iter(report["configs"])) else report["others"][name]["runs"]
    generated = sum(r["completion_tokens"] or 0 for r in runs if r["benchmark"] == suite)
    steps = Observation(generated=generated, drafted=row["drafted"], accepted=row["accepted"]).steps
    tokens_per_step = generated / steps
    return {"acceptance_rate": row["acceptance_rate"], "tokens_per_step": tokens_per_step,
            "drafted_per_step": row["drafted"] / steps,
            "vanilla_decode_tokens_per_s": row["vanilla_decode_tokens_per_s"],
            "speculative_decode_tokens_per_s": row["speculative_decode_tokens_per_s"], "speedup": row["speedup"],
            "measured_step_ms": tokens_per_step / row["speculative_decode_tokens_per_s"] * 1000,
            "acceptance_by_position": (config.get("acceptance_by_position") or {}).get("rates")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", help="Draft model or head file, or ngram (default: none, e.g. draft-mtp).")
    parser.add_argument("--spec-type", help="--spec-type value (default: what --draft is).")
    parser.add_argument("--acceptance", default="0.5,0.6,0.7,0.75,0.8,0.9")
    parser.add_argument("--draft-max", default="16", help="Comma list of draft lengths.")
    parser.add_argument("--draft-min", type=int, help="Shortest draft used (n-gram drafting: set it low).")
    parser.add_argument("--ngram-match", type=int, help="N-gram drafting: tokens that must match.")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--suite", default="medium_completion")
    parser.add_argument("--max-tokens", type=int, help="Override the suite's output length.")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for both servers")
    parser.add_argument("--spec-arg", action="append", default=[], help="Extra flag for the speculative server only.")
    parser.add_argument("--predict", action="store_true", help="Measure llama-bench costs, print predictions.")
    parser.add_argument("--calibrate-at", default="0.5",
                        help="Acceptance of the run the advisor is fitted to (added if not listed); 'none'.")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="One server up at a time (a target too large for two copies in memory).")
    parser.add_argument("--label", default="")
    parser.add_argument("--output", type=Path, default=Path("speculative-synthetic.json"))
    args = parser.parse_args()
    options = parse_options(tuple(args.option))
    lengths = [int(k) for k in args.draft_max.split(",")]
    acceptances = [float(a) for a in args.acceptance.split(",")]
    calibrate_at = None if args.calibrate_at == "none" or not args.predict else float(args.calibrate_at)
    if calibrate_at is not None and calibrate_at not in acceptances:
        acceptances = [calibrate_at, *acceptances]
    backend = require_speculative_backend("llamacpp")  # --spec-synth-rates is a llama-server flag
    draft = None if args.draft in (None, "") else args.draft
    # The configuration the runs use: the --spec-type given, else the one type the draft names.
    types = backend.parse_types(args.spec_type) if args.spec_type else None
    resolved = backend.resolve(args.target, draft, [types] if types else [])
    variant_types = resolved["configs"][0]
    roles = backend.roles(variant_types)
    drafter, simple, head = roles["drafter"], roles["draft_model"] and resolved["draft"] is not None, roles["head"]
    suites = get_suites([args.suite])
    if args.max_tokens:
        from dataclasses import replace

        suites = [replace(s, max_tokens=args.max_tokens) for s in suites]
    costs = None
    if args.predict:
        costs = backend.measure_costs(Path(args.target), Path(draft) if simple else None,
                                      draft_lengths=tuple(sorted({*lengths, 1, 2, 4})), options=options)
        print(f"costs (llama-bench, ms): target token {costs['target_token_ms']:.3f}, draft token "
              f"{costs['draft_token_ms']:.3f}, verify "
              + ", ".join(f"k={k}: {v:.3f}" for k, v in sorted(costs["verify_ms"].items())), flush=True)
    rows = []
    for draft_max in lengths:
        settings = {"draft_max": draft_max, **({"p_min": 0.0} if drafter else {}),
                    **{k: v for k, v in (("draft_min", args.draft_min), ("ngram_match", args.ngram_match))
                       if v is not None}}
        plan = SpeculativePlan(
            target=args.target, draft=draft, suites=suites, iterations=args.iterations, settings=settings,
            options=options, advise=False, exact=False, speculative_args=list(args.spec_arg),
            types=[variant_types], backend="llamacpp", one_at_a_time=args.one_at_a_time,
        )
        plan.variants = [(f"a={a:.2f}", variant_types, ["--spec-synth-rates", rates(a, draft_max)]) for a in acceptances]
        report = SpeculativeComparison(plan).run()
        measured = {a: measured_row(report, f"a={a:.2f}", args.suite) for a in acceptances}
        fitted = None
        if costs is not None:
            vanilla_tps = measured[acceptances[0]]["vanilla_decode_tokens_per_s"]
            fitted = with_sampling(costs, vanilla_tps)
            if calibrate_at is not None:
                point = measured[calibrate_at]
                fitted = calibrate(fitted, point["measured_step_ms"], point["drafted_per_step"],
                                   point["tokens_per_step"], head=head)
        for a in acceptances:
            m = measured[a]
            out = {"label": args.label, "types": variant_types, "draft_max": draft_max, "per_token_acceptance": a,
                   **m}
            line = (f"{args.label} {','.join(variant_types)} k={draft_max} a={a:.2f}  accepted/drafted="
                    f"{m['acceptance_rate']:.2f}  tokens/step {m['tokens_per_step']:.2f}  vanilla "
                    f"{m['vanilla_decode_tokens_per_s']:.1f}  speculative {m['speculative_decode_tokens_per_s']:.1f} "
                    f"tok/s  speedup {m['speedup']:.2f}x")
            if fitted is not None:
                # From the set acceptance and draft length alone (a^(i+1) per position, k drafted), never
                # from what this point measured; the calibration point's own figure is a fit.
                tokens = 1 + expected_accepted(a, draft_max)
                predicted = predicted_speedup(fitted, draft_max, tokens)
                basis = "fit" if a == calibrate_at else "predicted"
                out.update(predicted_speedup=predicted, basis=basis, calibration_point=a == calibrate_at,
                           **{f"{basis}_error": predicted / m["speedup"] - 1},
                           modelled_step_ms=step_ms(fitted, draft_max, tokens),
                           fitted_costs={k: v for k, v in fitted.items() if k not in ("verify_ms", "draft_verify_ms")})
                line += f"  {basis} {predicted:.2f}x ({predicted / m['speedup'] - 1:+.0%})"
            rows.append(out)
            print(line + "   (SYNTHETIC acceptance)", flush=True)
        if fitted is not None:
            print(f"  fitted: draft token {fitted['draft_token_ms']:.3f} ms "
                  f"({fitted['draft_token_ms'] / fitted['target_token_ms']:.0%} of the target's), per-step "
                  f"overhead {fitted.get('step_overhead_ms', 0):.3f} ms, plain step {fitted['plain_ms']:.3f} ms",
                  flush=True)
    args.output.write_text(json.dumps({"synthetic_acceptance": True, "target": args.target, "draft": draft,
                                       "types": types, "options": options, "spec_args": args.spec_arg,
                                       "costs_ms": costs, "calibrate_at": calibrate_at, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
