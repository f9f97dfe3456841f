"""The engine's ceiling through the core: every closed-loop level's shape goes to a backend that
declares ``engine_ceiling``, its answer becomes the level's efficiency; a backend that cannot, or fails,
leaves the levels measured and the run complete, saying why."""

from __future__ import annotations

import pytest
from velollm_testkit.plugin import BackendPlugin, FakeBackend

from velollm_core.api import BackendError, Capabilities, EngineCeiling
from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.workloads import Workload


class CeilingBackend(FakeBackend):
    """The fake, with an engine that generates ``rate`` tok/s per sequence alone (or fails)."""

    name = "fake-ceiling"
    capabilities = Capabilities(engine_ceiling=True)

    def __init__(self, rate: float = 1000.0, failure: str | None = None) -> None:
        super().__init__()
        self.rate, self.failure, self.asked = rate, failure, []

    def engine_ceiling(self, shapes, context):
        self.asked.append(list(shapes))
        if self.failure:
            raise BackendError(self.failure)
        return [EngineCeiling(shape, output_tokens_per_s=self.rate * shape.sequences, tool="fake-bench")
                for shape in shapes]


def run(backend, register_plugin, **runner) -> tuple[BenchmarkRunner, list[str]]:
    register_plugin(BackendPlugin(backend))
    plan = BenchmarkPlan(backend=backend.name, model="m", suites=[], workloads=[Workload(16, 8)],
                         concurrency=[1, 2], iterations=2, warmup=0, natural_stop=False)
    warnings: list[str] = []
    bench = BenchmarkRunner(plan, warn=warnings.append, **runner)
    bench.run()
    return bench, warnings


def test_every_closed_loop_level_gets_its_ceiling_and_efficiency(register_plugin):
    backend = CeilingBackend()
    bench, _ = run(backend, register_plugin, engine_ceiling=True)
    ((first, second),) = backend.asked
    assert (first.sequences, second.sequences) == (1, 2)
    assert first.output_tokens == 8 and first.prompt_tokens == second.prompt_tokens > 0
    assert bench.result.status == "complete" and bench.result.settings["engine_ceiling"] is True
    for level, sequences in zip(bench.result.levels, (1, 2)):
        assert level["engine_ceiling"]["output_tokens_per_s"] == 1000.0 * sequences
        assert level["engine_ceiling"]["tool"] == "fake-bench"
        assert level["server_efficiency"] == pytest.approx(level["output_throughput"] / (1000.0 * sequences),
                                                           abs=1e-4)


def test_without_the_flag_the_engine_is_not_asked(register_plugin):
    backend = CeilingBackend()
    bench, _ = run(backend, register_plugin)
    assert backend.asked == [] and all("server_efficiency" not in level for level in bench.result.levels)
    assert all("diagnosis" in level for level in bench.result.levels)


def test_a_backend_that_cannot_is_said_once_and_the_run_completes(register_plugin):
    backend = FakeBackend()
    bench, warnings = run(backend, register_plugin, engine_ceiling=True)
    assert bench.result.status == "complete"
    assert [w for w in warnings if "engine" in w] == [
        "fake cannot measure its engine alone: no server efficiency in this result"]


def test_a_failing_ceiling_keeps_the_levels_and_says_why(register_plugin):
    backend = CeilingBackend(failure="fake-bench exited 1")
    bench, warnings = run(backend, register_plugin, engine_ceiling=True)
    assert bench.result.status == "complete" and len(bench.result.levels) == 2
    assert bench.result.settings["engine_ceiling_error"] == "fake-bench exited 1"
    assert [w for w in warnings if "engine" in w] == ["the engine ceiling was not measured: fake-bench exited 1"]
