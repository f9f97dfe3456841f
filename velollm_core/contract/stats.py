"""Honest statistics: summaries, percentiles and bootstrap intervals for ratios of medians."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

from velollm_core.contract.schemas import MetricStats


def summarize(values: Sequence[float]) -> MetricStats | None:
    """mean, median, stdev (sample; 0 for one value), min, max, n — None when there are no values."""
    clean = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return None
    return MetricStats(
        mean=statistics.fmean(clean),
        median=statistics.median(clean),
        stdev=statistics.stdev(clean) if len(clean) > 1 else 0.0,
        min=min(clean),
        max=max(clean),
        n=len(clean),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def bootstrap_ratio_interval(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Interval of median(b)/median(a) by resampling each side; None without enough data."""
    a = [v for v in a if v is not None]
    b = [v for v in b if v is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        med_a = statistics.median(rng.choices(a, k=len(a)))
        med_b = statistics.median(rng.choices(b, k=len(b)))
        if med_a:
            ratios.append(med_b / med_a)
    if not ratios:
        return None
    tail = (1 - confidence) / 2 * 100
    return percentile(ratios, tail), percentile(ratios, 100 - tail)


def bootstrap_paired_ratio_interval(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Interval of the median of b[i]/a[i] over pairs measured side by side (interleaved rounds),
    resampling pairs: drift that hits both sides of a pair cancels out. None with fewer than 2 pairs."""
    ratios = [vb / va for va, vb in zip(a, b) if va is not None and vb is not None and va]
    if len(ratios) < 2:
        return None
    rng = random.Random(seed)
    medians = [statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)]
    tail = (1 - confidence) / 2 * 100
    return percentile(medians, tail), percentile(medians, 100 - tail)
