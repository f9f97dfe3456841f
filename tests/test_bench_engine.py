"""The core benchmark engine, driven through a scripted backend plugin registered with pm.register.

The real llama.cpp backend is exercised end to end in plugins/velollm-llamacpp/tests.
"""

from __future__ import annotations

import json
import threading

import pytest

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import SUITES, get_suites
from velollm_core.contract.backends import BackendBase
from velollm_core.contract.errors import BackendError, UserInputError
from velollm_core.contract.plugins import pm
from velollm_core.contract.schemas import GenerationTiming
from velollm_core.contract.stats import bootstrap_ratio_interval, percentile, summarize
from velollm_core.history.compare import compare_results, load_result
from velollm_core.history.summary import summarize_runs
from velollm_core.hookspecs import hookimpl


class ScriptedBackend(BackendBase):
    """Backend 'scripted': timings from a list; may fail at run k. Registered by its own plugin."""

    name = "scripted"

    def __init__(self, speeds, fail_at=None, interrupt_at=None):
        self.speeds = list(speeds)
        self.calls = 0
        self.fail_at = fail_at
        self.interrupt_at = interrupt_at
        self.closed = False
        self.lock = threading.Lock()

    @hookimpl
    def register_backends(self, register):
        register(self)

    def generate(self, request, context):
        with self.lock:
            self.calls += 1
            call = self.calls
        if "opened" not in context.state:
            context.state["opened"] = True
            context.resources.callback(setattr, self, "closed", True)
        if call == self.fail_at:
            raise BackendError("server died")
        if call == self.interrupt_at:
            raise KeyboardInterrupt
        speed = self.speeds[(call - 1) % len(self.speeds)]
        return GenerationTiming(
            ttft_ms=10.0 * call,
            prompt_tokens=12,
            completion_tokens=request.max_tokens,
            prompt_tokens_per_s=100.0,
            decode_tokens_per_s=speed,
            client_decode_tokens_per_s=speed * 0.99,
            total_ms=1000.0,
            text=f"out {request.benchmark}",
        )


@pytest.fixture
def scripted():
    plugins = []

    def register(**kwargs):
        plugin = ScriptedBackend(**kwargs)
        pm.register(plugin, name=f"scripted-{len(plugins)}")
        plugins.append(plugin)
        return plugin

    yield register
    for plugin in plugins:
        if pm.is_registered(plugin):
            pm.unregister(plugin)


def plan(**kwargs):
    defaults = {"backend": "scripted", "model": "m", "suites": get_suites(["short_completion"]), "iterations": 3}
    defaults.update(kwargs)
    return BenchmarkPlan(**defaults)


def test_summarize_basic_statistics():
    stats = summarize([1.0, 2.0, 3.0, 10.0])
    assert stats.median == 2.5 and stats.mean == 4.0 and stats.min == 1.0 and stats.max == 10.0
    assert stats.n == 4 and stats.stdev == pytest.approx(4.0825, rel=1e-3)
    assert summarize([5.0]).stdev == 0.0
    assert summarize([None, None]) is None


def test_percentiles_interpolate():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)
    assert percentile([], 50) is None


def test_bootstrap_interval_separates_real_differences_from_noise():
    a = [100, 101, 99, 100.5, 99.5]
    assert bootstrap_ratio_interval(a, [150, 151, 149, 150.5, 149.5])[0] > 1.4
    low, high = bootstrap_ratio_interval(a, [100.2, 99.8, 100.1, 99.9, 100.4])
    assert low <= 1.0 <= high


def test_unknown_suite_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown suite"):
        get_suites(["nope"])
    assert [s.name for s in get_suites(["all"])] == list(SUITES)
    assert "long_prompt" in SUITES and len(SUITES["long_prompt"].prompt) > 3000


def test_warmup_not_counted_and_summary_written(tmp_path, scripted):
    backend = scripted(speeds=[50.0, 10.0, 20.0, 30.0])
    out = tmp_path / "r.json"
    result = BenchmarkRunner(plan(warmup=1), output=out).run()
    assert backend.calls == 4  # one warm-up + three counted
    assert [r.decode_tokens_per_s for r in result.runs] == [10.0, 20.0, 30.0]
    data = json.loads(out.read_text())
    assert data["status"] == "complete"
    stats = data["summary"]["short_completion"]["decode_tokens_per_s"]
    assert stats == {"mean": 20.0, "median": 20.0, "stdev": 10.0, "min": 10.0, "max": 30.0, "n": 3}
    assert data["runs"][0]["iteration"] == 1 and data["runs"][0]["benchmark"] == "short_completion"
    assert backend.closed, "resources registered by the backend must be closed"


def test_failure_mid_run_keeps_finished_runs(tmp_path, scripted):
    scripted(speeds=[10.0], fail_at=3)
    out = tmp_path / "r.json"
    with pytest.raises(BackendError, match="server died"):
        BenchmarkRunner(plan(warmup=0, iterations=5), output=out).run()
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and data["error"] == "server died"
    assert len(data["runs"]) == 2


def test_ctrl_c_keeps_finished_runs(tmp_path, scripted):
    backend = scripted(speeds=[10.0], interrupt_at=4)
    out = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        BenchmarkRunner(plan(warmup=1, iterations=5), output=out).run()
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted" and len(data["runs"]) == 2
    assert backend.closed


def test_concurrency_levels_are_continuous_streams_with_level_metrics(tmp_path, scripted):
    """A backend with no StreamCalls runs its streams on threads: c3 keeps three requests open until
    iterations x 3 measured ones ended; the cool-down requests keep the load and are not counted."""
    backend = scripted(speeds=[10.0])
    result = BenchmarkRunner(plan(warmup=0, iterations=2, concurrency=[1, 3]), output=tmp_path / "r.json").run()
    assert backend.calls >= 2 + 2 * 3
    assert set(result.summary) == {"short_completion", "short_completion@c3"}
    measured = [run for run in result.runs if run.level == "c3"]
    assert len(measured) == 6 and all(run.failed is None for run in measured)
    seq, c3 = result.levels
    assert (seq["key"], seq["completed"], c3["key"], c3["completed"], c3["max_concurrency"]) == ("seq", 2, "c3", 6, 3)
    assert c3["ttft_ms"]["median"] <= c3["ttft_ms"]["p90"] <= c3["ttft_ms"]["p99"]
    assert c3["output_throughput"] > 0 and c3["request_throughput"] > 0


def test_unknown_backend_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no installed plugin runs backend"):
        BenchmarkRunner(plan(backend="nobody"), output=tmp_path / "r.json").run()


def test_compare_flags_real_change_and_noise(tmp_path, scripted):
    scripted(speeds=[10.0, 10.2, 9.8, 10.1, 9.9])
    a = BenchmarkRunner(plan(warmup=0, iterations=5), output=tmp_path / "a.json").run()
    pm.unregister(name="scripted-0")
    scripted(speeds=[20.0, 20.2, 19.8, 20.1, 19.9])
    b = BenchmarkRunner(plan(warmup=0, iterations=5), output=tmp_path / "b.json").run()
    rows = {row["metric"]: row for row in compare_results(load_result(tmp_path / "a.json"),
                                                          load_result(tmp_path / "b.json"))}
    assert rows["decode_tokens_per_s"]["ratio"] == pytest.approx(2.0, rel=0.02)
    assert rows["decode_tokens_per_s"]["verdict"] == "better"
    assert rows["total_ms"]["verdict"] in ("within noise", "too few runs")
    assert a.summary and b.summary


def test_compare_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_result(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(UserInputError, match="not a VeloLLM benchmark result"):
        load_result(other)


def test_summarize_runs_skips_unknown_metrics(scripted, tmp_path):
    scripted(speeds=[10.0])
    result = BenchmarkRunner(plan(warmup=0, iterations=2), output=tmp_path / "r.json").run()
    for run in result.runs:
        run.prompt_tokens_per_s = None
    assert "prompt_tokens_per_s" not in summarize_runs(result.runs)["short_completion"]
