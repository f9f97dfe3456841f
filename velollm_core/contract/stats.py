"""Honest statistics: summaries, percentiles and bootstrap intervals for ratios of medians."""

from __future__ import annotations

import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence

from velollm_core.contract.schemas import MetricStats


def _unbounded(statistic: Callable[[list[float]], float], values: list[float]) -> float:
    """``statistic`` (fmean or stdev) of ``values``, finite for any finite values: where the sums of
    values near 1e308 overflow (fsum's 'intermediate overflow'), it is taken of the values scaled to
    at most 1 and scaled back, saturating at the largest float."""
    try:
        result = statistic(values)
        if math.isfinite(result):
            return result
    except OverflowError:
        pass
    scale = max(abs(v) for v in values)
    result = statistic([v / scale for v in values]) * scale
    return result if math.isfinite(result) else math.copysign(sys.float_info.max, result)


def finite_values(values: Sequence[float | None]) -> list[float]:
    """The finite numbers of ``values`` as floats; None, NaN, infinities and integers beyond the float
    range (a count of 10**400 converts with an OverflowError) are left out."""
    out = []
    for value in values:
        try:
            number = float(value) if value is not None else math.nan
        except OverflowError:
            continue
        if math.isfinite(number):
            out.append(number)
    return out


def middle(data: Sequence[float]) -> float:
    """The median of sorted ``data``; the mean of the two middle values halved first, so it cannot overflow."""
    half = len(data) // 2
    return data[half] if len(data) % 2 else data[half - 1] / 2 + data[half] / 2


def summarize(values: Sequence[float]) -> MetricStats | None:
    """mean, median, stdev (sample; 0 for one value), min, max, n — None when there are no values.

    Non-finite values are left out; finite ones of any size give finite statistics (computed on the
    values scaled to at most 1, a stdev beyond the float range saturates at the largest float).
    """
    clean = sorted(finite_values(values))
    if not clean:
        return None
    return MetricStats(
        mean=_unbounded(statistics.fmean, clean),
        median=middle(clean),
        stdev=_unbounded(statistics.stdev, clean) if len(clean) > 1 else 0.0,
        min=clean[0],
        max=clean[-1],
        n=len(clean),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    data = sorted(finite_values(values))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    value = data[low] + (data[high] - data[low]) * (pos - low)
    if math.isfinite(value):
        return value
    return data[low] * (1 - (pos - low)) + data[high] * (pos - low)  # the difference overflowed near 1e308


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
