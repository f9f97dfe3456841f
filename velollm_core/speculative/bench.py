"""Vanilla vs speculative on the same prompts and seed, interleaved A B A B so drift cancels."""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm_core.bench.engine import BenchmarkPlan, BenchmarkRunner
from velollm_core.bench.suites import Suite
from velollm_core.errors import UserInputError, VeloError
from velollm_core.files import OutputFile


def is_draftless(draft: str) -> bool:
    """Whether ``draft`` names n-gram drafting (``ngram`` / ``ngram-<kind>``) rather than a model."""
    return draft == "ngram" or draft.startswith("ngram-")


@dataclass
class SpeculativePlan:
    target: str
    draft: str  # GGUF path / model name, or "ngram" / "ngram-<kind>"
    suites: list[Suite]
    iterations: int = 3
    warmup: int = 1
    threads: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # draft_max, draft_min, p_min, ...
    options: dict[str, Any] = field(default_factory=dict)  # extra backend options for both servers
    advise: bool = True
    exact: bool = True  # batch-invariant kernels on both servers, so greedy texts can match
    speculative_args: list[str] = field(default_factory=list)  # extra flags for the speculative server only

    @property
    def draftless(self) -> bool:
        return is_draftless(self.draft)


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character, None when the texts are identical."""
    if a == b:
        return None
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            return i
    return min(len(a), len(b))


def _speculative_backend():
    from velollm_core.plugins import hook

    backend = hook().speculative_backend(backend="llamacpp", kind="llamacpp")
    if backend is None:
        raise UserInputError("no installed plugin runs speculative decoding (install velollm-llamacpp)")
    return backend


def resolve_pair(plan: SpeculativePlan) -> tuple[Path, Path | None, dict | None]:
    """Paths of target and draft, checked for compatibility before anything starts."""
    from velollm_core.modelfiles import resolve_model_path
    from velollm_core.speculative.compat import check_pair

    target = resolve_model_path(plan.target)
    if plan.draftless:
        return target, None, None
    draft = resolve_model_path(plan.draft)
    report = check_pair(target, draft)
    if not report.compatible:
        raise VeloError("draft and target are not compatible: " + "; ".join(report.problems))
    if report.facts["draft_size_bytes"] >= report.facts["target_size_bytes"]:
        raise UserInputError(
            f"the draft ({report.facts['draft_size_bytes'] / 2**20:.0f} MiB) is not smaller than the target "
            f"({report.facts['target_size_bytes'] / 2**20:.0f} MiB): speculation cannot be faster"
        )
    return target, draft, report.to_json()


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class SpeculativeComparison:
    def __init__(self, plan: SpeculativePlan, *, output: OutputFile | None = None,
                 on_run: Callable[[str, Any], None] | None = None, hardware=None) -> None:
        self.plan = plan
        self.output = output
        self.on_run = on_run or (lambda label, record: None)
        self.hardware = hardware
        self.target, self.draft_path, compat = resolve_pair(plan)
        self.backend = _speculative_backend()
        spec_args = [*self.backend.server_args(draft_path=self.draft_path, **self._settings()),
                     *plan.speculative_args]
        base = dict(plan.options)
        if plan.threads:
            base["threads"] = plan.threads
        if plan.exact:
            exact = self.backend.exact_options()
            base["server_args"] = " ".join(filter(None, [str(base.get("server_args", "")), exact.pop("server_args")]))
            base.update(exact)
        vanilla_opts = dict(base)
        spec_opts = {**base, "server_args": " ".join([str(base.get("server_args", "")), *map(_quote, spec_args)]).strip()}
        self.runners = {
            name: BenchmarkRunner(
                BenchmarkPlan(backend=self.backend.backend, model=str(self.target), suites=plan.suites,
                              iterations=plan.iterations, warmup=plan.warmup, options=opts),
                hardware=hardware, on_run=lambda label, record, name=name: self.on_run(f"{name}: {label}", record),
            )
            for name, opts in (("vanilla", vanilla_opts), ("speculative", spec_opts))
        }
        self.report: dict[str, Any] = {
            "status": "running",
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "target": str(self.target),
            "draft": str(self.draft_path) if self.draft_path else plan.draft,
            "settings": {**self._settings(), "threads": plan.threads, "iterations": plan.iterations,
                         "exact": plan.exact,
                         "suites": [s.name for s in plan.suites]},
            "speculative_server_args": spec_args,
            "compatibility": compat,
        }

    def _settings(self) -> dict:
        settings = {"draft": "model" if not self.plan.draftless else self.plan.draft, **self.plan.settings}
        if not self.plan.draftless:
            settings.setdefault("p_min", 0.75)
        return settings

    def total_runs(self) -> int:
        return 2 * len(self.plan.suites) * (self.plan.warmup + self.plan.iterations)

    def _forced_exit(self, why: str) -> None:
        """A second signal ends the process at once: the report still says why (see interrupt.last_words)."""
        self.report.update(status="interrupted", error=why)
        self._update()

    def run(self) -> dict:
        from velollm_core import interrupt

        vanilla, spec = self.runners["vanilla"], self.runners["speculative"]
        try:
            with interrupt.last_words(self._forced_exit), vanilla.context.resources, spec.context.resources:
                for suite in self.plan.suites:
                    vanilla.warm_up(suite)
                    spec.warm_up(suite)
                    for iteration in range(1, self.plan.iterations + 1):
                        vanilla.measure(suite, iteration)
                        spec.measure(suite, iteration)
                        self._update()
            if self.plan.advise:
                self._advise()
            self.report["status"] = "complete"
        except KeyboardInterrupt as exc:
            self.report["status"] = "interrupted"
            self.report["error"] = interrupt.describe(exc)
            raise
        except VeloError as exc:
            self.report["status"] = "failed"
            self.report["error"] = str(exc)
            raise
        finally:
            self._update()
        return self.report

    def _update(self) -> None:
        vanilla, spec = (self.runners[n].result for n in ("vanilla", "speculative"))
        per_suite, differences = {}, []
        for suite in self.plan.suites:
            v_runs = [r for r in vanilla.runs if r.benchmark == suite.name]
            s_runs = [r for r in spec.runs if r.benchmark == suite.name]
            v_med = _median(r.decode_tokens_per_s for r in v_runs)
            s_med = _median(r.decode_tokens_per_s for r in s_runs)
            drafted = sum(int(r.extra.get("draft_n") or 0) for r in s_runs)
            accepted = sum(int(r.extra.get("draft_n_accepted") or 0) for r in s_runs)
            for v, s in zip(v_runs, s_runs):
                pos = first_difference(v.text, s.text)
                if pos is not None:
                    differences.append({"benchmark": suite.name, "iteration": v.iteration, "position": pos,
                                        "vanilla": v.text[pos:pos + 40], "speculative": s.text[pos:pos + 40]})
            if v_runs:
                per_suite[suite.name] = {
                    "vanilla_decode_tokens_per_s": v_med,
                    "speculative_decode_tokens_per_s": s_med,
                    "speedup": s_med / v_med if v_med and s_med else None,
                    "vanilla_ttft_ms": _median(r.ttft_ms for r in v_runs),
                    "speculative_ttft_ms": _median(r.ttft_ms for r in s_runs),
                    "drafted": drafted,
                    "accepted": accepted,
                    "acceptance_rate": accepted / drafted if drafted else None,
                    "n": min(len(v_runs), len(s_runs)),
                }
        speedups = [row["speedup"] for row in per_suite.values() if row["speedup"]]
        drafted = sum(row["drafted"] for row in per_suite.values())
        accepted = sum(row["accepted"] for row in per_suite.values())
        self.report.update(
            vanilla=vanilla.model_dump(mode="json"),
            speculative=spec.model_dump(mode="json"),
            per_suite=per_suite,
            speedup=statistics.median(speedups) if speedups else None,
            acceptance_rate=accepted / drafted if drafted else None,
            outputs_identical=not differences,
            differences=differences,
        )
        if self.output is not None:
            self.output.write_json(self.report)

    def _advise(self) -> None:
        from velollm_core.speculative.advisor import Observation, advise, with_sampling

        spec_runs = self.runners["speculative"].result.runs
        observed = Observation(
            generated=sum(r.completion_tokens or 0 for r in spec_runs),
            drafted=sum(int(r.extra.get("draft_n") or 0) for r in spec_runs),
            accepted=sum(int(r.extra.get("draft_n_accepted") or 0) for r in spec_runs),
        )
        ngl = self.plan.options.get("n_gpu_layers")
        costs = self.backend.measure_costs(self.target, self.draft_path, threads=self.plan.threads,
                                           exact=self.plan.exact, n_gpu_layers=None if ngl is None else int(ngl))
        vanilla = _median(r.decode_tokens_per_s for r in self.runners["vanilla"].result.runs)
        early_stop = not self.plan.draftless and float(self._settings().get("p_min") or 0) > 0
        advice = advise(with_sampling(costs, vanilla), observed, early_stop=early_stop,
                        draft_max=self._settings().get("draft_max") or getattr(self.backend, "default_draft_max", None))
        advice["measured_speedup"] = self.report.get("speedup")
        if advice["measured_speedup"]:
            advice["prediction_error"] = advice["predicted_speedup_measured_config"] / advice["measured_speedup"] - 1
        self.report["advisor"] = advice


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))
