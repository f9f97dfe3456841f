"""Speculative decoding speedup vs acceptance, with llama.cpp's synthetic acceptance (benchmarking only).

    python benchmarks/speculative_synthetic.py --target T.gguf --draft D.gguf \
        [--acceptance 0.5,0.6,0.7,0.75,0.8,0.9] [--draft-max 16] [--iterations 3] [--output FILE]

Random-weight models accept nothing on their own, so `--spec-synth-rates` makes the server accept
each drafted position i with probability a^(i+1) (a per-token acceptance a, unconditional rates as
the flag wants them). The draft model still runs and the target still verifies every batch, so the
timing is the real system's; only the accept/reject decision is synthetic, and the generated text is
not valid (it is not compared). SYNTHETIC-ACCEPTANCE numbers: label them so wherever they are quoted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from velollm_core.bench.suites import get_suites
from velollm_core.speculative.bench import SpeculativeComparison, SpeculativePlan


def rates(alpha: float, draft_max: int) -> str:
    return ",".join(f"{alpha ** (i + 1):.6f}" for i in range(draft_max))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--acceptance", default="0.5,0.6,0.7,0.75,0.8,0.9")
    parser.add_argument("--draft-max", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--suite", default="medium_completion")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for both servers")
    parser.add_argument("--output", type=Path, default=Path("speculative-synthetic.json"))
    args = parser.parse_args()
    options = dict(pair.split("=", 1) for pair in args.option)
    rows = []
    for alpha in (float(a) for a in args.acceptance.split(",")):
        plan = SpeculativePlan(
            target=args.target, draft=args.draft, suites=get_suites([args.suite]), iterations=args.iterations,
            settings={"draft_max": args.draft_max, "p_min": 0.0}, options=options, advise=False, exact=False,
            speculative_args=["--spec-synth-rates", rates(alpha, args.draft_max)],
        )
        report = SpeculativeComparison(plan).run()
        row = report["per_suite"][args.suite]
        rows.append({"per_token_acceptance": alpha, "acceptance_rate": report["acceptance_rate"],
                     "vanilla_decode_tokens_per_s": row["vanilla_decode_tokens_per_s"],
                     "speculative_decode_tokens_per_s": row["speculative_decode_tokens_per_s"],
                     "speedup": row["speedup"]})
        print(f"a={alpha:.2f}  accepted/drafted={report['acceptance_rate']:.2f}  vanilla "
              f"{row['vanilla_decode_tokens_per_s']:.1f}  speculative {row['speculative_decode_tokens_per_s']:.1f} "
              f"tok/s  speedup {row['speedup']:.2f}x   (SYNTHETIC acceptance)", flush=True)
    args.output.write_text(json.dumps({"synthetic_acceptance": True, "target": args.target, "draft": args.draft,
                                       "draft_max": args.draft_max, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
