"""The speculative advisor's variants refitted on stored `speculative bench` results, each judged at the
draft max its check measured (a point no variant was fitted to).

    python benchmarks/spec_advisor_refit.py benchmarks/results/cpu/spec-idle-ngram-2026-12-06*.json

Each result holds what the advisor was fitted with (llama-bench's costs, the measured step, the
acceptance per draft position) and what the check then measured at the recommended draft max. The
variants differ only in how a step's tokens and the share of drafting steps are carried to other
draft lengths:

- ``steps held``: the share of *steps* that draft, as measured, held at every length (the advisor
  before 6 Dec 2026);
- ``u held``: the share of generated *tokens* from steps that draft nothing, u, held (the advisor
  now); the share of drafting steps then falls as drafts grow;
- where a result has a second measured draft length (``--two-lengths``): ``u held, 2 lengths`` also
  fits a cost per drafted token from both steps and takes the longer draft's acceptance per
  position; ``u line`` draws u through both lengths.

The costs are those the result was measured with (older results timed verify batches up to 17
tokens, so longer ones are extrapolated there, as the advisor did then). Prints one row per result
and variant, and per variant how many errors are within 10%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from velollm_core.speculative.advisor import calibrate, curve_tokens, per_step, predicted_speedup

FITTED = ("calibrated", "step_overhead_ms", "drafted_overhead_ms", "step_scale", "undrafted_share")


def refit(report: dict, variant: str, k: int) -> float:
    """The variant's predicted speedup at draft max ``k``."""
    config = report["configs"]["ngram-mod"]
    advice = config["advisor"]
    calibrated = advice["costs_ms"]["calibrated"]
    base = {key: value for key, value in advice["costs_ms"].items() if key not in FITTED}
    base["verify_ms"] = {int(size): ms for size, ms in base["verify_ms"].items()}
    second = calibrated.get("second") if variant in ("u held, 2 lengths", "u line") else None
    fitted = calibrate(base, calibrated["step_ms"], calibrated["drafted"], calibrated["tokens_per_step"], second=second)
    u_first = (1 - base.get("drafting_share", 1.0)) / calibrated["tokens_per_step"]
    longer = next((c for n, c in report["configs"].items() if n.startswith("ngram-mod draft max")), None)
    rates = (longer if second and longer else config)["acceptance_by_position"]["rates"]
    accepted = curve_tokens(rates, k) - 1
    u = None if variant == "steps held" else u_first
    if variant == "u line":
        u_second = (1 - second["drafting_share"]) / second["tokens_per_step"]
        first_k, second_k = advice["measured_draft_max"], advice["measured_draft_max"] * 2
        u = min(0.95, max(0.0, u_first + (u_second - u_first) * (k - first_k) / (second_k - first_k)))
    tokens, share = per_step({**fitted, "drafting_share": base.get("drafting_share", 1.0), "undrafted_share": u},
                             accepted)
    return predicted_speedup({**fitted, "drafting_share": share}, k, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    within: dict[str, list[bool]] = {}
    for path in sorted(args.results):
        report = json.loads(path.read_text())
        advice = report.get("configs", {}).get("ngram-mod", {}).get("advisor") or {}
        check = advice.get("check")
        if not check or not check.get("measured_speedup"):
            continue
        k, measured = check["draft_max"], check["measured_speedup"]
        variants = ["steps held", "u held"]
        if "second" in advice["costs_ms"]["calibrated"]:
            variants += ["u held, 2 lengths", "u line"]
        for variant in variants:
            predicted = refit(report, variant, k)
            error = predicted / measured - 1
            within.setdefault(variant, []).append(abs(error) <= 0.10)
            print(f"{path.stem:<42} {variant:<18} draft max {k:>2}: predicted {predicted:.2f}x, "
                  f"measured {measured:.2f}x, error {error:+.0%}")
    for variant, hits in within.items():
        print(f"{variant}: {sum(hits)} of {len(hits)} within 10%")


if __name__ == "__main__":
    main()
