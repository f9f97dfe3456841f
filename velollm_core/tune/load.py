"""Tuning for a load: the server flags that matter at N streams, each change measured A/B at that load.

``velollm optimize --for-concurrency N --verify`` asks the backend where to start and what to try
(``Backend.tune_for_load`` -> ``LoadTuning``) and tries its ``LoadStep`` s one after another (greedy): the current best flags and the flags
with one change run as two servers side by side, and each round measures both at a closed-loop level
of N streams of one workload (order alternating per round, so drift on a shared machine hits both).
A change is kept when its output tok/s is higher beyond noise (the 95% bootstrap interval of the
per-round ratios above 1, ``velollm_core.tune.verify.paired_effect``); the kept flags are the next
step's baseline. A time budget bounds the search: steps after the first that it cannot afford (at the
pace measured so far) are named, not run. The
runtime's knowledge (which flags, how a change rewrites the command) is the backend's; this module
only measures and decides.
"""

from __future__ import annotations

import contextlib
import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velollm_core.contract.errors import VeloError
from velollm_core.contract.loadtune import LoadTuning
from velollm_core.contract.schemas import HardwareReport
from velollm_core.tune.verify import Effect, paired_effect

DEFAULT_ROUNDS = 3
DEFAULT_BUDGET_S = 1800.0


@dataclass
class StepResult:
    name: str
    why: str
    args: list[str]
    baseline: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    effect: Effect | None = None
    kept: bool = False
    verdict: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "args": self.args,
                "baseline_output_tokens_per_s": self.baseline, "candidate_output_tokens_per_s": self.candidate,
                "effect": self.effect.to_json() if self.effect else None, "kept": self.kept, "verdict": self.verdict}


@dataclass
class LoadTuneReport:
    runtime: str
    model: str
    concurrency: int
    workload: str
    rounds: int
    budget_s: float
    elapsed_s: float
    start_args: list[str]
    final_args: list[str]
    command: list[str]
    steps: list[StepResult]
    untried: list[str] = field(default_factory=list)
    final_vs_start: Effect | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "optimize-load", "runtime": self.runtime, "model": self.model,
                "concurrency": self.concurrency, "workload": self.workload, "rounds": self.rounds,
                "budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 1), "start_args": self.start_args,
                "final_args": self.final_args, "command": self.command,
                "steps": [step.to_json() for step in self.steps], "untried": self.untried,
                "final_vs_start": self.final_vs_start.to_json() if self.final_vs_start else None,
                "notes": self.notes}


class LoadBench:
    """Servers started with given flags, each measured at one closed-loop level of ``concurrency`` streams."""

    def __init__(self, backend: str, model: str, hardware: HardwareReport | None, concurrency: int,
                 workload: Any, requests: int, options_for: Callable[[list[str]], dict[str, Any]]) -> None:
        self.backend, self.model, self.hardware = backend, model, hardware
        self.concurrency, self.workload, self.requests = concurrency, workload, requests
        self.options_for = options_for
        self.seconds: list[float] = []  # how long each measurement took: what a step costs

    def start(self, args: list[str], stack: contextlib.ExitStack):
        """A runner whose server runs with ``args`` (its resources closed with ``stack``)."""
        from velollm_core.bench.plan import BenchmarkPlan
        from velollm_core.bench.runner import BenchmarkRunner

        plan = BenchmarkPlan(backend=self.backend, model=self.model, suites=[], workloads=[self.workload],
                             concurrency=[self.concurrency], iterations=1, warmup=0, requests=self.requests,
                             natural_stop=False, options=self.options_for(args))
        runner = BenchmarkRunner(plan, hardware=self.hardware, warn=lambda message: None)
        runner.check()
        stack.enter_context(runner.context.resources)
        runner.start()
        return runner

    def measure(self, runner) -> float | None:
        """Output tok/s of one level of N streams on ``runner``'s server (None when a request failed)."""
        from velollm_core.bench.profiles import Concurrent

        began = time.monotonic()
        spec = Concurrent().level(runner.plan, self.concurrency)
        entry = runner.run_load(self.workload, spec)
        self.seconds.append(time.monotonic() - began)
        return entry.get("output_throughput") if not entry.get("failed") else None


def _pairs(bench: LoadBench, a, b, rounds: int, progress: Callable[[str], None], label: str
           ) -> tuple[list[float], list[float]]:
    """``rounds`` measurements of each of two servers, the order alternating round by round."""
    first: list[float] = []
    second: list[float] = []
    for round_number in range(1, rounds + 1):
        order = [(a, first), (b, second)] if round_number % 2 else [(b, second), (a, first)]
        for runner, samples in order:
            value = bench.measure(runner)
            samples.append(value or 0.0)
        progress(f"  round {round_number} {label}: {first[-1]:.1f} -> {second[-1]:.1f} output tok/s")
    return first, second


def search_for_load(tuning: LoadTuning, *, runtime: str, hardware: HardwareReport | None, concurrency: int,
                    workload: Any, rounds: int = DEFAULT_ROUNDS, budget_s: float = DEFAULT_BUDGET_S,
                    progress: Callable[[str], None] = print) -> LoadTuneReport:
    """Try ``tuning.steps`` greedily from its start at ``concurrency`` streams of ``workload``; see the module."""
    model, start_args, steps = tuning.model, tuning.start_args, tuning.steps
    options_for, command_for = tuning.options_for, tuning.command_for
    started = time.monotonic()
    bench = LoadBench(runtime, model, hardware, concurrency, workload, max(2 * concurrency, 4), options_for)
    results: list[StepResult] = []
    untried: list[str] = []
    notes: list[str] = []
    current = list(start_args)
    with contextlib.ExitStack() as servers:
        progress(f"starting the server with {shlex.join(current) or 'its defaults'} at {concurrency} streams")
        baseline = bench.start(current, servers)
        bench.measure(baseline)  # the first level on a fresh server is warm-up: not counted
        for step in steps:
            args = step.apply(list(current))
            if args is None or args == current:
                continue
            cost = 2 * rounds * statistics.mean(bench.seconds)
            if results and time.monotonic() - started + cost > budget_s:  # the first step always runs
                untried.append(step.name)
                continue
            progress(f"step {step.name}: {step.why}")
            result = StepResult(step.name, step.why, args)
            results.append(result)
            with contextlib.ExitStack() as trial:
                try:
                    candidate = bench.start(args, trial)
                except VeloError as exc:
                    result.verdict = f"the server did not start: {str(exc).splitlines()[0]}"
                    progress(f"  {result.verdict}")
                    continue
                result.baseline, result.candidate = _pairs(bench, baseline, candidate, rounds, progress, step.name)
                result.effect = paired_effect(result.baseline, result.candidate)
                result.kept = result.effect.verdict == "better"
                result.verdict = (f"kept: {result.effect.ratio:.3f}x output tok/s" if result.kept else
                                  f"dropped: {result.effect.verdict}")
                progress(f"  {result.verdict}")
                if result.kept:  # the candidate's server becomes the baseline; the old one stops
                    servers.close()
                    servers.enter_context(trial.pop_all())
                    baseline, current = candidate, args
        final_vs_start = None
        if current != list(start_args):
            cost = 2 * rounds * statistics.mean(bench.seconds)
            if time.monotonic() - started + cost <= budget_s:
                with contextlib.ExitStack() as again:
                    progress("confirming the tuned flags against the starting ones")
                    start = bench.start(list(start_args), again)
                    a, b = _pairs(bench, start, baseline, rounds, progress, "tuned")
                    final_vs_start = paired_effect(a, b)
            else:
                notes.append("the budget left no time to measure the tuned flags against the starting ones: "
                             "their gain is the kept steps' together, not measured as one")
    if untried:
        notes.append(f"not tried within the {budget_s:g} s budget: {', '.join(untried)}")
    return LoadTuneReport(runtime=runtime, model=model, concurrency=concurrency, workload=workload.name,
                          rounds=rounds, budget_s=budget_s, elapsed_s=time.monotonic() - started,
                          start_args=list(start_args), final_args=current, command=command_for(current),
                          steps=results, untried=untried, final_vs_start=final_vs_start, notes=notes)


def render_load_report(report: LoadTuneReport, console) -> None:
    """Each step's measured effect at the load, the verdict, and the command."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report.runtime} at {report.concurrency} streams of {report.workload}: each change "
                        f"A/B ({report.rounds} rounds, {report.elapsed_s:.0f} s)")
    for column, justify in (("change", "left"), ("before", "right"), ("after", "right"), ("ratio", "right"),
                            ("verdict", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for step in report.steps:
        before = f"{statistics.median(step.baseline):.1f}" if step.baseline else "-"
        after = f"{statistics.median(step.candidate):.1f}" if step.candidate else "-"
        ratio = f"{step.effect.ratio:.3f}x" if step.effect and step.effect.ratio else "-"
        table.add_row(escape(step.name), before, after, ratio, escape(step.verdict))
    console.print(table)
    console.print("output tok/s, medians of the rounds; a change is kept when the 95% interval of its per-round "
                  "ratios lies above 1", highlight=False)
    if report.final_vs_start is not None and report.final_vs_start.ratio is not None:
        effect = report.final_vs_start
        interval = f" [{effect.interval[0]:.3f}-{effect.interval[1]:.3f}]" if effect.interval else ""
        console.print(f"tuned vs starting flags: {effect.ratio:.3f}x{interval} {effect.verdict}", highlight=False)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print("command: " + escape(shlex.join(report.command)), highlight=False, soft_wrap=True)
