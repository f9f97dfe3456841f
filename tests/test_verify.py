"""Verified tuning, driven through a scripted backend whose speed depends on its flags: a change is
kept only when it helps beyond noise, its effect is reported, and nothing measured slower than the
runtime's defaults is ever proposed."""

from __future__ import annotations

import itertools
import math

import pytest

from velollm_core.contract.backends import BackendBase, BackendOptions
from velollm_core.contract.errors import BackendError
from velollm_core.contract.plugins import pm
from velollm_core.contract.schemas import ConfigChange, ConfigProposal, GenerationTiming
from velollm_core.contract.stats import bootstrap_paired_ratio_interval
from velollm_core.hookspecs import hookimpl
from velollm_core.tune.verify import paired_effect, verify_proposal

# Multipliers each flag applies: (decode, prefill).
EFFECTS = {"-t": (1.3, 1.0), "-ub": (1.0, 1.5), "-slow": (0.8, 1.0), "-noop": (1.0, 1.0), "-c": (1.0, 1.0)}


class FlaggedOptions(BackendOptions):
    server_args: str = ""


class FlaggedBackend(BackendBase):
    """Speeds from the server flags in ``options['server_args']``, with a little deterministic noise."""

    name = "flagged"
    Options = FlaggedOptions

    def __init__(self, slow_capacity: bool = False) -> None:
        self.calls = itertools.count()
        self.starts: list[str] = []
        self.effects = dict(EFFECTS, **({"-c": (0.7, 0.7)} if slow_capacity else {}))

    @hookimpl
    def register_backends(self, register):
        register(self)

    def generate(self, request, context):
        args = context.options.get("server_args", "").split()
        if "started" not in context.state:
            context.state["started"] = True
            self.starts.append(" ".join(args))
            if "--boom" in args or ("-needs-t" in args and "-t" not in args):
                raise BackendError("out of memory")
        decode, prefill = 10.0, 100.0
        for flag in args:
            d, p = self.effects.get(flag, (1.0, 1.0))
            decode, prefill = decode * d, prefill * p
        noise = 1 + 0.005 * math.sin(next(self.calls))
        return GenerationTiming(prompt_tokens=50, completion_tokens=request.max_tokens, ttft_ms=1.0, total_ms=2.0,
                                decode_tokens_per_s=decode * noise, prompt_tokens_per_s=prefill * noise)


@pytest.fixture
def flagged():
    registered = []

    def register(**kwargs):
        plugin = FlaggedBackend(**kwargs)
        pm.register(plugin, name=f"flagged-{len(registered)}")
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        pm.unregister(plugin)


def change(flag: str, purpose: str) -> ConfigChange:
    return ConfigChange(key=flag, current="default", proposed="1", reason=f"{flag} because", kind="flag",
                        args=[flag, "1"], purpose=purpose)


def proposal(*changes: ConfigChange) -> ConfigProposal:
    args = [a for c in changes for a in c.args]
    return ConfigProposal(runtime="flagged", changes=list(changes), command=["server", "-m", "m.gguf", *args])


def options_for(args: list[str]) -> dict:
    return {"server_args": " ".join(args)}


def run(p: ConfigProposal, **kwargs):
    lines: list[str] = []
    report = verify_proposal(p, "m.gguf", None, options_for, rounds=4, progress=lines.append, **kwargs)
    return report, lines


def test_helpful_changes_are_kept_useless_and_harmful_ones_dropped(flagged):
    flagged()
    p = proposal(change("-c", "capacity"), change("-t", "speed"), change("-ub", "speed"), change("-slow", "speed"),
                 change("-noop", "speed"))
    report, lines = run(p)
    verdicts = {v.group: v for v in report.changes}
    assert verdicts["-t"].kept and verdicts["-t"].effects["decode"].verdict == "better"
    assert verdicts["-t"].effects["decode"].ratio == pytest.approx(1.3, rel=0.02)
    assert verdicts["-ub"].kept and verdicts["-ub"].effects["prefill"].verdict == "better"
    assert not verdicts["-slow"].kept and "slower decode" in verdicts["-slow"].why
    assert not verdicts["-noop"].kept and "no effect" in verdicts["-noop"].why
    assert "-c" not in verdicts  # capacity settings are not speed changes: kept, not measured
    assert report.final_args == ["-c", "1", "-t", "1", "-ub", "1"]
    assert report.final.command == ["server", "-m", "m.gguf", "-c", "1", "-t", "1", "-ub", "1"]
    assert report.final_measured_as.startswith("verified")  # dropped changes: measured again
    assert report.final_vs_defaults["decode"].verdict == "better"
    assert report.final_vs_defaults["prefill"].ratio == pytest.approx(1.5, rel=0.02)
    assert any("round 4" in line for line in lines)
    names = [c.name for c in report.candidates]
    assert names[:2] == ["defaults", "proposal"] and "without -slow" in names


def test_a_proposal_that_keeps_everything_is_not_measured_twice(flagged):
    backend = flagged()
    report, _ = run(proposal(change("-t", "speed")))
    assert report.final_measured_as == "proposal"
    assert len(backend.starts) == 3  # defaults, proposal, proposal without -t: one server each


def test_nothing_measured_slower_than_the_defaults_is_proposed(flagged):
    flagged(slow_capacity=True)
    report, _ = run(proposal(change("-c", "capacity"), change("-t", "speed")))
    # -t helps, but -c (capacity) makes the whole configuration slower than the defaults.
    assert report.final_vs_defaults["prefill"].verdict == "worse"
    assert report.final.changes == [] and report.final_args == []
    assert report.final.command == ["server", "-m", "m.gguf"]
    assert report.notes and "defaults" in report.notes[0]


def test_an_ablation_that_cannot_start_keeps_its_change(flagged):
    flagged()
    # "-needs-t" only starts together with -t (as a model that fits only with a change would).
    report, lines = run(proposal(change("-t", "speed"), change("-needs-t", "capacity")), keep_alive=False)
    (verdict,) = report.changes
    assert verdict.kept and "did not run" in verdict.why
    assert any("could not run" in line for line in lines)
    assert report.final_args == ["-t", "1", "-needs-t", "1"]


def test_required_candidates_that_fail_raise(flagged):
    flagged()
    boom = ConfigChange(key="--boom", current=None, proposed="x", reason="r", kind="flag", args=["--boom"],
                        purpose="capacity")
    with pytest.raises(BackendError, match="out of memory"):
        run(proposal(boom))


def test_paired_interval_cancels_drift_that_hits_both_sides():
    drift = [100, 80, 120, 60, 140]
    a = [d * 1.0 for d in drift]
    b = [d * 1.1 for d in drift]
    low, high = bootstrap_paired_ratio_interval(a, b)
    assert low == pytest.approx(1.1) and high == pytest.approx(1.1)
    assert paired_effect(a, b).verdict == "better"
    assert paired_effect(a, a).verdict == "within noise"
    assert paired_effect([1.0], [2.0]).verdict == "too few rounds"
    assert paired_effect([], []).verdict == "not measured"
