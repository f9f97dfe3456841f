"""How sure a measured speedup is: paired ratios of interleaved runs and an interval around them.

Each counted speculative run is paired with the plain run of the same suite and iteration, measured
right before it, so slow drift of the machine (another process, the clock) falls on both. The
speedup's interval is a Student t interval of the mean log ratio (ratios multiply, so their logs
average), returned as ratios: it says how far a repeat of the same comparison may land.
"""

from __future__ import annotations

import math
import statistics

# Two-sided 95% Student t quantiles by degrees of freedom; past 30 the normal's 1.96 is close enough.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t95(degrees: int) -> float:
    """The 97.5% quantile of Student's t with ``degrees`` of freedom (the nearest tabled one below)."""
    if degrees > 30:
        return 1.96
    return _T95[max(d for d in _T95 if d <= degrees)]


def ratio_interval(ratios: list[float]) -> dict | None:
    """{geomean, low, high, n} of the paired ``ratios`` (95%); None for fewer than two.

    One ratio has no spread to measure: its interval is unknown, not zero."""
    logs = [math.log(r) for r in ratios if r and r > 0]
    if len(logs) < 2:
        return None
    mean = statistics.fmean(logs)
    half = t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return {"geomean": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half), "n": len(logs)}


def verdict(speedup: float | None, interval: dict | None, worth_it: float) -> str:
    """"on" where the speedup pays (at least ``worth_it``) and its interval stays above 1, "off" where it
    falls below ``worth_it``, "unsure" where the interval reaches both sides of 1 or there is none (one
    paired run says nothing of how far a repeat may land)."""
    if speedup is None:
        return "unsure"
    if speedup < worth_it:
        return "off"
    if interval is None or interval["low"] < 1.0:
        return "unsure"
    return "on"
