"""Acceptance per draft position, from counters the backend's speculative object reads off its server.

The object's ``acceptance_counters(context)`` returns ``{steps, drafted, accepted, per_position}``
summed over finished requests (llama-server exports them as Prometheus counters): verification steps,
tokens drafted, tokens accepted, and per draft position the steps in which it was accepted. A position
is accepted only when every earlier one was, so the per-position count over the steps is the
unconditional acceptance rate r_i of position i, and r_i / r_(i-1) the conditional one.
"""

from __future__ import annotations


def delta(after: dict | None, before: dict | None) -> dict | None:
    """What the counters grew by between two readings (one measured request)."""
    if after is None:
        return None
    before = before or {"steps": 0, "drafted": 0, "accepted": 0, "per_position": []}
    grown = {key: after.get(key, 0) - before.get(key, 0) for key in ("steps", "drafted", "accepted")}
    old = before["per_position"]
    grown["per_position"] = [n - (old[i] if i < len(old) else 0) for i, n in enumerate(after["per_position"])]
    return grown


def total(readings: list[dict | None]) -> dict | None:
    """The sum of per-request deltas; None when none of them had counters."""
    readings = [r for r in readings if r is not None]
    if not readings:
        return None
    width = max(len(r["per_position"]) for r in readings)
    return {
        **{key: sum(r[key] for r in readings) for key in ("steps", "drafted", "accepted")},
        "per_position": [sum(r["per_position"][i] for r in readings if i < len(r["per_position"]))
                         for i in range(width)],
    }


def curve(counts: dict) -> dict:
    """Unconditional and conditional acceptance by position, from summed counters."""
    steps = counts["steps"]
    rates = [n / steps for n in counts["per_position"]] if steps else []
    conditional = [rate / (rates[i - 1] if i else 1.0) if (rates[i - 1] if i else 1.0) else 0.0
                   for i, rate in enumerate(rates)]
    return {"steps": steps, "rates": rates, "conditional": conditional,
            "tokens_per_step": 1 + sum(rates) if steps else None}
