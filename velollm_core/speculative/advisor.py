"""When does speculation pay on this machine? A cost model fed with measured numbers.

What llama-server does per speculative step, and what each part costs (all measured):

- the target verifies the k drafted tokens plus the last one in one batch: T_v(k) (llama-bench, a
  prompt of k+1 tokens);
- the draft re-evaluates that same batch (llama-server keeps the draft's cache in step with the
  target's by processing every target batch): T_dv(k) (llama-bench on the draft);
- the draft then decodes one token at a time: k decodes when it drafts all k, one more when it stops
  early because its confidence fell below p_min; each costs T_d plus the server's per-token sampling
  work s (a pass over the vocabulary);
- every token the step yields is sampled by the target once, as in plain decoding: s per token.

Plain decoding costs T_t + s per token, where s = (server ms per token) - (llama-bench ms per token)
is measured from the vanilla server run itself. With a per-token acceptance probability a, a draft of
k tokens yields E(k) = (1 - a^(k+1)) / (1 - a) tokens per step, so the predicted speedup is
E(k) * (T_t + s) / step(k).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

WORTH_IT = 1.05  # below this predicted speedup, speculation is not worth its memory and complexity
DRAFT_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # the draft lengths the advisor predicts


def batch_ms(points_ms: dict, k: float, single_ms: float) -> float:
    """Cost of a batch of k+1 tokens, interpolated between measured sizes; k = 0 is one plain step."""
    points = sorted({0: single_ms, **{int(kk): v for kk, v in points_ms.items()}}.items())
    # A larger batch never costs less: noisy timings of small batches are held level, not reversed.
    points = [(k, max(v for _, v in points[:i + 1])) for i, (k, _) in enumerate(points)]
    if k <= points[0][0]:
        return points[0][1]
    for (k0, v0), (k1, v1) in itertools.pairwise(points):
        if k0 <= k <= k1:
            return v0 + (v1 - v0) * (k - k0) / (k1 - k0)
    if len(points) == 1:
        return points[0][1]
    (k0, v0), (k1, v1) = points[-2], points[-1]
    return v1 + (v1 - v0) / (k1 - k0) * (k - k1)  # extrapolate linearly past the last measured size


def verify_ms(costs: dict, k: float) -> float:
    """T_v(k): the target's batch of k+1 tokens."""
    return batch_ms(costs["verify_ms"], k, costs["target_token_ms"])


def draft_verify_ms(costs: dict, k: float) -> float:
    """T_dv(k): the draft's re-evaluation of the target's batch (0 for draftless drafting)."""
    if not costs.get("draft_token_ms"):
        return 0.0
    if costs.get("draft_verify_ms"):
        return batch_ms(costs["draft_verify_ms"], k, costs["draft_token_ms"])
    return verify_ms(costs, k) * costs["draft_token_ms"] / costs["target_token_ms"]


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

    generated: float
    drafted: float
    accepted: float

    @property
    def steps(self) -> float:
        # Each step yields its accepted tokens plus one from the target.
        return max(self.generated - self.accepted, 1)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @classmethod
    def from_acceptance(cls, generated: float, alpha: float, draft_max: int) -> Observation:
        """The runs as a per-token acceptance ``alpha`` at ``draft_max`` would have counted them: for a
        runtime that counts no accepted tokens, once ``alpha`` is inferred from the speed."""
        accepted_per_step = expected_accepted(alpha, draft_max)
        steps = generated / (1 + accepted_per_step)
        return cls(generated=generated, drafted=steps * draft_max, accepted=steps * accepted_per_step)


def step_ms(costs: dict, drafted: float, tokens_per_step: float, *, early_stop: bool = False) -> float:
    """Modelled time of one speculative step (see the module docstring); ``drafted`` per drafting step.

    ``costs["drafting_share"]``: the share of steps that draft at all (n-gram drafting drafts only where
    the context matches); the others are plain steps of one token."""
    share = costs.get("drafting_share", 1.0)
    sampling = costs.get("sampling_ms", 0.0)
    draft_decodes = drafted + (1 if early_stop else 0)
    draft = draft_verify_ms(costs, drafted) + draft_decodes * (costs["draft_token_ms"] + sampling) \
        if costs.get("draft_token_ms") else 0.0
    verify = share * verify_ms(costs, drafted) + (1 - share) * verify_ms(costs, 0)
    modelled = verify + share * draft + tokens_per_step * sampling
    # The server's work that grows with the draft (logits and checks of every verified position),
    # fitted where two draft lengths were measured.
    per_drafted = costs.get("drafted_overhead_ms", 0.0) * share * drafted
    return costs.get("step_scale", 1.0) * modelled + costs.get("step_overhead_ms", 0.0) + per_drafted


def plain_ms(costs: dict) -> float:
    """A plain decoding step: the vanilla server's own time per token where measured."""
    return costs.get("plain_ms") or costs["target_token_ms"] + costs.get("sampling_ms", 0.0)


def predicted_speedup(costs: dict, drafted: float, tokens_per_step: float, *, early_stop: bool = False) -> float:
    plain = plain_ms(costs)
    return tokens_per_step * plain / step_ms(costs, drafted, tokens_per_step, early_stop=early_stop)


def fit_alpha_to_speedup(costs: dict, speedup: float | None, draft_max: int, *, early_stop: bool = False) -> float:
    """The per-token acceptance under which the cost model yields the measured ``speedup`` at ``draft_max``
    (bisection; the predicted speedup grows with acceptance): for a runtime that counts no accepted
    tokens, acceptance inferred from speed. The figure at ``draft_max`` is then a fit by construction;
    the other draft lengths are predictions."""
    def at(alpha: float) -> float:
        return predicted_speedup(costs, draft_max, 1 + expected_accepted(alpha, draft_max), early_stop=early_stop)

    lo, hi = 0.0, 0.99999
    if not speedup or at(lo) >= speedup:
        return lo
    if at(hi) <= speedup:  # faster than the model allows even when every draft is accepted
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        if at(mid) < speedup:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def with_sampling(costs: dict, vanilla_tokens_per_s: float | None) -> dict:
    """The costs plus s, the server's per-token work beyond llama-bench's forward pass."""
    if not vanilla_tokens_per_s:
        return dict(costs)
    plain = 1000.0 / vanilla_tokens_per_s
    return {**costs, "sampling_ms": max(0.0, plain - costs["target_token_ms"]), "plain_ms": plain}


def curve_tokens(rates: list[float], k: float) -> float:
    """Tokens a step yields with a draft of k: 1 + the unconditional acceptance of positions < k,
    measured per position; past the measured positions the last conditional rate goes on."""
    whole = int(k)
    tokens = 1 + sum(rates[:whole])
    if whole < len(rates):
        return tokens + (k - whole) * rates[whole]
    last = rates[-1]
    step = rates[-1] / rates[-2] if len(rates) > 1 and rates[-2] else last
    extra, rate = 0.0, last
    for _ in range(whole - len(rates)):
        rate *= step
        extra += rate
    return tokens + extra


def calibrate(costs: dict, step_ms_measured: float, drafted: float, tokens_per_step: float, *,
              head: bool = False, early_stop: bool = False, second: dict | None = None) -> dict:
    """The costs fitted to one measured step, so other draft lengths are predicted from it.

    ``head``: the drafter is a head llama-bench cannot run alone (MTP, EAGLE-3, DFlash read the
    target's hidden states): its cost per drafted token is solved from the step (the step model is
    linear in it), its pass over the verified batch taken as the same share of the target's. What the
    model still misses (the server's per-step work: batch set-up, synchronisation, the HTTP stream)
    is kept as ``step_overhead_ms``; a step faster than its modelled parts scales them (``step_scale``).

    ``second``: the same configuration measured at another draft length, {step_ms, drafted,
    tokens_per_step, drafting_share}. What the model misses is then split into a part per step and a
    part per drafted token (``drafted_overhead_ms``: the server computes and checks the logits of every
    verified position, which llama-bench's batch, timed for its last token alone, does not), so long
    drafts are priced from two measured steps, not one."""
    fitted = {k: v for k, v in costs.items() if not (head and k == "draft_verify_ms")}
    fitted["step_overhead_ms"] = 0.0
    fitted.pop("drafted_overhead_ms", None)

    def modelled(draft_ms: float, point_costs: dict | None = None, point=(drafted, tokens_per_step)) -> float:
        return step_ms({**(point_costs or fitted), "draft_token_ms": draft_ms}, point[0], point[1],
                       early_stop=early_stop)

    if head:
        slope = modelled(2.0) - modelled(1.0)
        fitted["draft_token_ms"] = max(0.0, 1.0 + (step_ms_measured - modelled(1.0)) / slope) if slope > 0 else 0.0
    draft_ms = fitted.get("draft_token_ms", 0.0)
    gap = step_ms_measured - modelled(draft_ms)
    calibrated = {"step_ms": step_ms_measured, "drafted": drafted, "tokens_per_step": tokens_per_step, "head": head}
    if second is not None:
        share2 = second.get("drafting_share", fitted.get("drafting_share", 1.0))
        gap2 = second["step_ms"] - modelled(draft_ms, {**fitted, "drafting_share": share2},
                                             (second["drafted"], second["tokens_per_step"]))
        x1, x2 = fitted.get("drafting_share", 1.0) * drafted, share2 * second["drafted"]
        if gap >= 0 and gap2 >= 0 and abs(x2 - x1) > 1e-9:
            per_drafted = max(0.0, (gap2 - gap) / (x2 - x1))
            overhead = gap - per_drafted * x1
            if overhead < 0:  # the line through both points crosses zero: all of it grows with the draft
                per_drafted, overhead = (gap + gap2) / (x1 + x2), 0.0
            fitted.update(step_overhead_ms=overhead, drafted_overhead_ms=per_drafted)
            fitted["calibrated"] = {**calibrated, "second": dict(second)}
            return fitted
    if gap >= 0:
        fitted["step_overhead_ms"] = gap
    else:
        # The step ran faster than its parts as llama-bench timed them (the costs were measured under
        # other load): scale the parts, since a negative per-step overhead would make short drafts cost
        # less than nothing.
        fitted["step_scale"] = step_ms_measured / (step_ms_measured - gap)
    fitted["calibrated"] = calibrated
    return fitted


def per_step(costs: dict, accepted: float) -> tuple[float, float]:
    """(tokens per step, share of steps that draft) with ``accepted`` tokens per drafting step.

    ``costs["undrafted_share"]``, u: the share of generated tokens that came from steps which drafted
    nothing (n-gram drafting finds no match there), measured at the fitted draft length and held for
    every other: a drafting step yields 1 + accepted tokens, a plain one 1, so the share of *steps* that
    draft falls as drafts grow (each covers more of the text). Refitted on fourteen stored CPU runs
    (docs/BENCHMARKS.md), holding the share of steps instead was -4 to +43% off at the draft max checked
    (six within 10%), holding u -15 to +23% (ten); a line through u at two lengths, -24 to -27%.
    Without u: the measured share of steps, held."""
    u = costs.get("undrafted_share")
    if u is None:
        share = costs.get("drafting_share", 1.0)
        return 1 + share * accepted, share
    drafting = (1 - u) / (1 + accepted)  # drafting steps per generated token
    return 1 / (u + drafting), drafting / (u + drafting)


def advise(costs: dict, observed: Observation, *, early_stop: bool = False, draft_max: int | None = None,
           draft_lengths=DRAFT_LENGTHS, rates: list[float] | None = None, fitted_lengths: tuple[int, ...] = ()) -> dict:
    """The model's speedup for the measured configuration (a fit) and for each draft length (predicted
    where it is not ``draft_max``, the measured one); a recommendation.

    ``early_stop``: the draft may stop before draft max (model draft with p_min > 0), which costs one
    more draft decode per step. When the measured drafts stayed well below ``draft_max`` (the draft's
    confidence ended them), a larger draft max would not draft more: the curve holds the draft length
    at what was measured from there on. ``rates``: the unconditional acceptance per draft position
    (server metrics); where given, a step's tokens come from that curve instead of one per-token
    probability fitted to the totals. ``fitted_lengths``: other draft lengths the costs were fitted
    at (a second measured length): their figures are fits too."""
    share = costs.get("drafting_share", 1.0)
    mean_drafted = observed.drafted / observed.steps / share  # per drafting step
    mean_accepted = observed.accepted / observed.steps  # per step
    alpha = fit_alpha(mean_accepted / share, mean_drafted)
    confidence_limited = bool(early_stop and draft_max and mean_drafted < 0.9 * draft_max)
    curve = []
    for k in draft_lengths:
        drafted = min(k, mean_drafted) if confidence_limited else k
        accepted = curve_tokens(rates, drafted) - 1 if rates else expected_accepted(alpha, drafted)
        tokens, share_k = per_step(costs, accepted)
        # The measured draft length is where the costs were fitted: its figure is a fit, not a prediction.
        fit = k == draft_max or k in fitted_lengths
        curve.append({"draft_max": k, "tokens_per_step": tokens, "drafting_share": share_k,
                      "basis": "fit" if fit else "predicted",
                      "predicted_speedup": predicted_speedup({**costs, "drafting_share": share_k}, drafted, tokens,
                                                             early_stop=early_stop)})
    best = max(curve, key=lambda row: row["predicted_speedup"])
    draft_ratio = (costs["draft_token_ms"] + costs.get("sampling_ms", 0.0)) / (
        costs["target_token_ms"] + costs.get("sampling_ms", 0.0))
    if best["predicted_speedup"] < WORTH_IT:
        recommendation = (f"off (don't use speculation here): no draft length pays, at best {best['predicted_speedup']:.2f}x predicted "
                          f"(a draft token costs {draft_ratio:.0%} of a target token)")
    else:
        recommendation = f"use draft max {best['draft_max']}: {best['predicted_speedup']:.2f}x predicted"
    return {
        "costs_ms": costs,
        "draft_cost_ratio": draft_ratio,
        "per_token_acceptance": alpha,
        "acceptance_source": "per-position server metrics" if rates else "per-request totals",
        "mean_drafted_per_step": mean_drafted,
        "mean_accepted_per_step": mean_accepted,
        "confidence_limited": confidence_limited,
        # Fitted to the measured runs themselves: how well the model describes them, no prediction.
        "fit_speedup_measured_config": predicted_speedup(costs, mean_drafted, 1 + mean_accepted,
                                                         early_stop=early_stop),
        "curve": curve,
        "recommended_draft_max": best["draft_max"] if best["predicted_speedup"] >= WORTH_IT else None,
        "recommendation": recommendation,
    }
