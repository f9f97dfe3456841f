"""Acceptance per draft position, from llama-server's Prometheus counters (``--metrics``).

llama-server (0c1e570) exports, summed over finished requests:
  llamacpp:spec_decode_num_drafts_total                    verification steps
  llamacpp:spec_decode_num_draft_tokens_total              tokens drafted
  llamacpp:spec_decode_num_accepted_tokens_total           tokens accepted
  llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="i"}
                                                           steps in which draft position i was accepted
A position is accepted only when every earlier one was, so the per-position count over the steps is
the unconditional acceptance rate r_i of position i, and r_i / r_(i-1) the conditional one.

Read here with a few lines rather than a Prometheus library: only these counters are needed.
"""

from __future__ import annotations

import re

_LINE = re.compile(r'^llamacpp:(spec_decode_[a-z_]+)(?:\{position="(\d+)"\})?\s+([0-9.eE+-]+)\s*$', re.MULTILINE)
_NAMES = {"spec_decode_num_drafts_total": "steps", "spec_decode_num_draft_tokens_total": "drafted",
          "spec_decode_num_accepted_tokens_total": "accepted"}


def parse(text: str | None) -> dict | None:
    """{steps, drafted, accepted, per_position: [count, ...]} from a /metrics page; None without them."""
    if not text:
        return None
    found: dict = {"per_position": []}
    positions: dict[int, int] = {}
    for name, position, value in _LINE.findall(text):
        if name == "spec_decode_num_accepted_tokens_per_pos_total" and position:
            positions[int(position)] = int(float(value))
        elif name in _NAMES:
            found[_NAMES[name]] = int(float(value))
    if "steps" not in found:
        return None
    found["per_position"] = [positions.get(i, 0) for i in range(max(positions) + 1)] if positions else []
    return found


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
