"""When does speculation pay on this machine? A cost model fed with measured numbers.

Per verification step the target checks the d drafted tokens in one batch (cost T_v(d)) after the
draft produced them one by one (d * T_d); the step yields the accepted tokens plus one from the
target. With a per-token acceptance probability a, a draft of k tokens yields on average
(1 - a^(k+1)) / (1 - a) tokens per step, so the speedup over plain decoding (T_t per token) is
E(k) * T_t / (T_v(k) + k * T_d).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

WORTH_IT = 1.05  # below this predicted speedup, speculation is not worth its memory and complexity


def verify_ms(costs: dict, k: float) -> float:
    """T_v(k): interpolated between measured batch sizes; a 0-token draft costs one plain step."""
    points = sorted({0: costs["target_token_ms"], **{int(kk): v for kk, v in costs["verify_ms"].items()}}.items())
    if k <= points[0][0]:
        return points[0][1]
    for (k0, v0), (k1, v1) in itertools.pairwise(points):
        if k0 <= k <= k1:
            return v0 + (v1 - v0) * (k - k0) / (k1 - k0)
    (k0, v0), (k1, v1) = points[-2], points[-1]
    return v1 + (v1 - v0) / (k1 - k0) * (k - k1)  # extrapolate linearly past the last measured size


def expected_accepted(alpha: float, k: float) -> float:
    if alpha >= 1.0:
        return k
    return alpha * (1 - alpha**k) / (1 - alpha)


def fit_alpha(mean_accepted: float, mean_drafted: float) -> float:
    """Per-token acceptance probability that explains the accepted tokens per step (bisection)."""
    if mean_drafted <= 0:
        return 0.0
    target = min(mean_accepted, mean_drafted * 0.999)
    lo, hi = 0.0, 0.99999
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_accepted(mid, mean_drafted) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class Observation:
    """What the speculative runs measured, summed over runs."""

    generated: int
    drafted: int
    accepted: int

    @property
    def steps(self) -> float:
        # Each step yields its accepted tokens plus one from the target.
        return max(self.generated - self.accepted, 1)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


def predicted_speedup(costs: dict, mean_drafted: float, tokens_per_step: float) -> float:
    step_ms = verify_ms(costs, mean_drafted) + mean_drafted * costs["draft_token_ms"]
    return tokens_per_step * costs["target_token_ms"] / step_ms


def advise(costs: dict, observed: Observation, draft_lengths=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32)) -> dict:
    """Predicted speedup for the measured configuration and for each draft length; a recommendation."""
    mean_drafted = observed.drafted / observed.steps
    mean_accepted = observed.accepted / observed.steps
    alpha = fit_alpha(mean_accepted, mean_drafted)
    curve = []
    for k in draft_lengths:
        tokens = 1 + expected_accepted(alpha, k)
        curve.append({"draft_max": k, "tokens_per_step": tokens, "predicted_speedup": predicted_speedup(costs, k, tokens)})
    best = max(curve, key=lambda row: row["predicted_speedup"])
    if best["predicted_speedup"] < WORTH_IT:
        recommendation = (f"don't use speculation here: at best {best['predicted_speedup']:.2f}x predicted "
                          f"(draft costs {costs['draft_token_ms'] / costs['target_token_ms']:.0%} of a target token)")
    else:
        recommendation = f"use draft max {best['draft_max']}: {best['predicted_speedup']:.2f}x predicted"
    return {
        "costs_ms": costs,
        "draft_cost_ratio": costs["draft_token_ms"] / costs["target_token_ms"],
        "per_token_acceptance": alpha,
        "mean_drafted_per_step": mean_drafted,
        "mean_accepted_per_step": mean_accepted,
        "predicted_speedup_measured_config": predicted_speedup(costs, mean_drafted, 1 + mean_accepted),
        "curve": curve,
        "recommended_draft_max": best["draft_max"] if best["predicted_speedup"] >= WORTH_IT else None,
        "recommendation": recommendation,
    }
