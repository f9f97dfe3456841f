"""The speculative comparison's own judgements: a speedup's interval from paired runs, the per-suite
advice, and the text check's verdict from explained differences."""

from __future__ import annotations

import math

import pytest

from velollm_core.speculative.bench import identity_verdict
from velollm_core.speculative.stats import ratio_interval, t95, verdict


def test_ratio_interval_is_a_t_interval_of_the_log_ratios():
    assert ratio_interval([2.0]) is None  # one run: no spread measured, no interval
    same = ratio_interval([1.8, 1.8, 1.8])
    assert same["low"] == pytest.approx(1.8) == same["high"] and same["n"] == 3
    spread = ratio_interval([1.6, 2.0])
    logs = [math.log(1.6), math.log(2.0)]
    half = t95(1) * abs(logs[1] - logs[0]) / math.sqrt(2) / math.sqrt(2)  # stdev of two = |a-b|/sqrt(2)
    assert spread["geomean"] == pytest.approx(math.sqrt(3.2))
    assert spread["low"] == pytest.approx(math.exp(sum(logs) / 2 - half))
    assert spread["high"] == pytest.approx(math.exp(sum(logs) / 2 + half))
    assert t95(4) == 2.776 and t95(11) == 2.228 and t95(100) == 1.96


def test_advice_per_suite():
    sure = {"low": 1.2, "high": 1.5}
    assert verdict(1.3, sure, 1.05) == "on"
    assert verdict(1.3, {"low": 0.9, "high": 1.8}, 1.05) == "unsure"
    assert verdict(0.8, None, 1.05) == "off" and verdict(1.3, None, 1.05) == "unsure"  # one run: no interval
    assert verdict(None, None, 1.05) == "unsure"


def _difference(iteration: int, **explained) -> dict:
    return {"benchmark": "code_edit", "iteration": iteration, "position": 40, "vanilla": "x", "speculative": "y",
            **explained}


def test_identity_verdict():
    assert identity_verdict([], exact=False)["verdict"] == "identical"
    tie = {"token": 9, "near_tie": True, "why": "near-tie: ' a' and ' the' are the top two candidates"}
    real = {"token": 3, "near_tie": False, "why": "real difference: ' a' vs ' my', not the top two candidates"}
    ties = identity_verdict([_difference(1, **tie), _difference(2, **tie)], exact=False)
    assert ties["verdict"] == "near-ties" and ties["runs"] == 2 and "token 9: near-tie" in ties["why"]
    mixed = identity_verdict([_difference(1, **tie), _difference(2, **real)], exact=False)
    assert mixed["verdict"] == "different" and "run 2, token 3: real difference" in mixed["why"]
    unknown = identity_verdict([_difference(1)], exact=True)
    assert unknown["verdict"] == "unexplained" and "character 40" in unknown["why"]
    assert "promised identical text" in unknown["why"]
