"""Vanilla vs speculative on the same prompts and seed, interleaved A B A B so drift cancels.

Whatever is specific to a runtime (its speculation types and their rules, the flags that start them,
what a step costs, how many drafted tokens were accepted) is asked of the backend's speculative object,
found through the ``speculative_backend`` hook; a configuration is a list of that backend's type names.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import Suite
from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.files import OutputFile


@dataclass
class SpeculativePlan:
    target: str
    draft: str | None  # a model path or name, a draftless drafter the backend names, or None (types alone)
    suites: list[Suite]
    iterations: int = 3
    warmup: int = 1
    threads: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # draft_max, draft_min, p_min, ...
    options: dict[str, Any] = field(default_factory=dict)  # extra backend options for both servers
    advise: bool = True
    exact: bool = True  # batch-invariant kernels on both servers, so greedy texts can match
    speculative_args: list[str] = field(default_factory=list)  # extra flags for the speculative server only
    # Configurations to compare, each a list of --spec-type values (["ngram-mod", "draft-mtp"]);
    # [["all"]] = every type the target (and draft) support, alone, and each drafter with ngram-mod.
    # Empty: the one type the draft names (a model's kind, or an n-gram kind).
    types: list[list[str]] = field(default_factory=list)
    # Or named variants, (name, types, extra flags for that server): the same types under different
    # settings, e.g. one per synthetic acceptance rate, all against one vanilla server.
    variants: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    # The backend that speculates (--backend); None: the one installed backend that can, or among
    # several the one whose speculative object handles the target.
    backend: str | None = None


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character, None when the texts are identical."""
    if a == b:
        return None
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            return i
    return min(len(a), len(b))


def speculative_backends() -> dict[str, Any]:
    """{backend name: its speculative object} for every registered backend that has one."""
    from velollm_core.contract import backends
    from velollm_core.contract.plugins import hook

    found = {}
    for name in backends.registry().names():
        speculative = hook().speculative_backend(backend=name)
        if speculative is not None:
            found[name] = speculative
    return found


def require_speculative_backend(backend: str | None = None, model: str | None = None):
    """The speculative object of ``backend``; where none is named, of the one installed backend that
    has one, or among several the one that ``handles`` ``model``. A UserInputError naming the
    candidates where there is none, or no way to choose."""
    if backend is not None:
        from velollm_core.contract.plugins import hook

        speculative = hook().speculative_backend(backend=backend)
        if speculative is None:
            able = ", ".join(sorted(speculative_backends())) or "none is installed"
            raise UserInputError(f"backend {backend!r} runs no speculative decoding (backends that do: {able})")
        return speculative
    found = speculative_backends()
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise UserInputError("no installed backend runs speculative decoding (install a backend plugin that "
                             "does, such as velollm-llamacpp)")
    claiming = [name for name, speculative in found.items() if model is not None and speculative.handles(model)]
    if len(claiming) == 1:
        return found[claiming[0]]
    if model is not None and not claiming:
        from velollm_core.contract.modelfiles import resolve_model_path

        resolve_model_path(model)  # an unknown model is the news, not the choice of backend
    whose = f" and {model!r} is not one backend's model" if model is not None else ""
    raise UserInputError(f"several backends run speculative decoding ({', '.join(sorted(found))}){whose}: "
                         "choose one with --backend")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def config_name(types: list[str]) -> str:
    return ",".join(types)


class SpeculativeComparison:
    """Vanilla against one or more speculative configurations, interleaved run by run."""

    def __init__(self, plan: SpeculativePlan, *, output: OutputFile | None = None,
                 on_run: Callable[[str, Any], None] | None = None, hardware=None) -> None:
        self.plan = plan
        self.output = output
        self.on_run = on_run or (lambda label, record: None)
        self.hardware = hardware
        self.backend = require_speculative_backend(plan.backend, plan.target)
        configs = [list(types) for _, types, _ in plan.variants] or plan.types
        resolved = self.backend.resolve(plan.target, plan.draft, configs)
        self.target, self.draft_path = resolved["target"], resolved["draft"]
        # name -> (types, extra flags of that server)
        self.configs = {name: (list(types), list(extra)) for name, types, extra in plan.variants} or {
            config_name(c): (c, []) for c in resolved["configs"]}
        base = self.backend.base_options(plan.options, threads=plan.threads, exact=plan.exact)
        self.spec_args = {name: [*self._server_args(types), *plan.speculative_args, *extra]
                          for name, (types, extra) in self.configs.items()}
        # name -> (model, options) of its server; the plain server runs without speculation args.
        servers = {name: self.backend.configure(self.target, base, args)
                   for name, args in {"vanilla": [], **self.spec_args}.items()}
        self.runners = {
            name: BenchmarkRunner(
                BenchmarkPlan(backend=self.backend.backend, model=model, suites=plan.suites,
                              iterations=plan.iterations, warmup=plan.warmup, options=opts),
                hardware=hardware, on_run=lambda label, record, name=name: self.on_run(f"{name}: {label}", record),
            )
            for name, (model, opts) in servers.items()
        }
        first = next(iter(self.configs))
        self.report: dict[str, Any] = {
            "status": "running",
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "target": str(self.target),
            "draft": str(self.draft_path) if self.draft_path else (plan.draft or first),
            "settings": {**self._settings(self.configs[first][0]), "threads": plan.threads, "iterations": plan.iterations,
                         "exact": plan.exact, "suites": [s.name for s in plan.suites],
                         "draft_max": self.backend.draft_max(self.configs[first][0], self._settings(self.configs[first][0]),
                                                             self.spec_args[first])},
            "type_support": resolved["support"],
            "speculative_server_args": self.spec_args[first],
            "compatibility": resolved["compatibility"],
        }

    def _settings(self, types: list[str], **overrides) -> dict:
        return self.backend.settings(types, **{**self.plan.settings, **overrides})

    def _server_args(self, types: list[str], **overrides) -> list[str]:
        draft = self.draft_path if self.backend.uses_draft_file(types, self.draft_path) else None
        return self.backend.server_args(draft_path=draft, **self._settings(types, **overrides))

    def total_runs(self) -> int:
        return len(self.runners) * len(self.plan.suites) * (self.plan.warmup + self.plan.iterations)

    def _forced_exit(self, why: str) -> None:
        """A second signal ends the process at once: the report still says why (see interrupt.last_words)."""
        self.report.update(status="interrupted", error=why)
        self._update()

    def _spec_metrics(self, runner) -> dict | None:
        return self.backend.acceptance_counters(runner.context)

    def _measure_speculative(self, runner, suite: Suite, iteration: int) -> None:
        """One counted run, with the server's per-position counters it moved (``extra['spec_metrics']``)."""
        from velollm_core.speculative import metrics

        before = self._spec_metrics(runner)  # None before the server starts: every count is new
        records = runner.measure(suite, iteration)
        grown = metrics.delta(self._spec_metrics(runner), before)
        if grown is not None:
            records[-1].extra["spec_metrics"] = grown

    def run(self) -> dict:
        from contextlib import ExitStack

        from velollm_core.contract import interrupt

        names = list(self.configs)
        try:
            with interrupt.last_words(self._forced_exit), ExitStack() as stack:
                for runner in self.runners.values():
                    stack.enter_context(runner.context.resources)
                for name, runner in self.runners.items():
                    runner.start()
                    self.backend.prepare(runner.context, self.target, self.spec_args.get(name, []))
                for suite in self.plan.suites:
                    for runner in self.runners.values():
                        runner.warm_up(suite)
                    for iteration in range(1, self.plan.iterations + 1):
                        self.runners["vanilla"].measure(suite, iteration)
                        for name in names:
                            self._measure_speculative(self.runners[name], suite, iteration)
                        self._update()
            if self.plan.advise:
                for name, (types, _) in self.configs.items():
                    self._advise(name, types)
                self._ready_command()
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

    def _summary(self, name: str) -> dict:
        """One configuration against vanilla: per suite, the speedup, acceptance, text differences."""
        from velollm_core.speculative import metrics

        vanilla, spec = self.runners["vanilla"].result, self.runners[name].result
        per_suite, differences = {}, []
        for suite in self.plan.suites:
            v_runs = [r for r in vanilla.runs if r.benchmark == suite.name]
            s_runs = [r for r in spec.runs if r.benchmark == suite.name]
            v_med = _median(r.decode_tokens_per_s for r in v_runs)
            s_med = _median(r.decode_tokens_per_s for r in s_runs)
            counted = self._acceptance(s_runs)
            drafted, accepted = counted or (None, None)
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
        speedup = statistics.median(speedups) if speedups else None
        counted = self._acceptance(spec.runs)
        drafted, accepted = counted or (0, 0)
        counters = metrics.total([r.extra.get("spec_metrics") for r in spec.runs])
        types = self.configs[name][0]
        summary = {
            "types": types,
            "uses_draft_file": self.backend.uses_draft_file(types, self.draft_path),
            "server_args": self.spec_args[name],
            "per_suite": per_suite,
            "speedup": speedup,
            "acceptance_rate": accepted / drafted if drafted else None,
            # Per draft position where the server exports it; otherwise only the totals above.
            "acceptance_by_position": metrics.curve(counters) if counters and counters["steps"] else None,
            "acceptance_source": "server metrics (per position)" if counters else "per-request totals",
            "outputs_identical": not differences,
            "differences": differences,
        }
        if counted is None and spec.runs:
            summary["acceptance_source"] = f"not counted by {self.backend.runtime}"
            summary["inferred"] = self.backend.infer_acceptance(
                speedup, self.backend.draft_max(types, self._settings(types), self.spec_args[name]))
        return summary

    def _acceptance(self, runs) -> tuple[int, int] | None:
        """(drafted, accepted) tokens of ``runs``, as the backend reads them from each run's timings;
        None where the runtime counted none."""
        counts = [c for c in (self.backend.acceptance(r.extra) for r in runs) if c is not None]
        if runs and not counts:
            return None
        return sum(d for d, _ in counts), sum(a for _, a in counts)

    def _update(self) -> None:
        names = list(self.configs)
        configs = {name: {**self.report.get("configs", {}).get(name, {}), **self._summary(name)} for name in names}
        first = configs[names[0]]
        self.report.update(
            vanilla=self.runners["vanilla"].result.model_dump(mode="json"),
            speculative=self.runners[names[0]].result.model_dump(mode="json"),
            others={name: self.runners[name].result.model_dump(mode="json") for name in names[1:]},
            configs=configs,
            # The first configuration's figures at the top level, as before there were several.
            per_suite=first["per_suite"],
            speedup=first["speedup"],
            acceptance_rate=first["acceptance_rate"],
            outputs_identical=all(c["outputs_identical"] for c in configs.values()),
            differences=[{**d, "types": name} for name, c in configs.items() for d in c["differences"]],
        )
        if "advisor" in first:
            self.report["advisor"] = first["advisor"]
        if self.output is not None:
            self.output.write_json(self.report)

    def _costs(self, with_draft: bool) -> dict:
        """The backend's measured costs of the target (and the draft model), once per comparison."""
        key = "costs_draft" if with_draft else "costs"
        if key not in self.__dict__:
            self.__dict__[key] = self.backend.measure_costs(
                self.target, self.draft_path if with_draft else None, threads=self.plan.threads,
                exact=self.plan.exact, options=self.plan.options)
        return self.__dict__[key]

    def _advise(self, name: str, types: list[str]) -> None:
        from velollm_core.speculative.advisor import Observation, advise, calibrate, with_sampling

        spec_runs = self.runners[name].result.runs
        summary = self.report["configs"][name]
        counted = self._acceptance(spec_runs)
        if counted is None:
            summary["advisor"] = {"recommended_draft_max": None, "curve": [], "measured_speedup": summary["speedup"],
                                  "recommendation": f"no advice: {self.backend.runtime} counts no accepted tokens"}
            return
        drafted, accepted = counted
        observed = Observation(generated=sum(r.completion_tokens or 0 for r in spec_runs), drafted=drafted,
                               accepted=accepted)
        if not observed.drafted:
            summary["advisor"] = {"recommended_draft_max": None, "curve": [], "recommendation":
                                  "off: nothing was drafted in these runs", "measured_speedup": summary["speedup"]}
            return
        roles = self.backend.roles(types)
        simple = roles["draft_model"] and self.draft_path is not None
        vanilla = _median(r.decode_tokens_per_s for r in self.runners["vanilla"].result.runs)
        costs = with_sampling(self._costs(simple), vanilla)
        spec_tps = _median(r.decode_tokens_per_s for r in spec_runs)
        drafter = roles["drafter"]
        early_stop = drafter and float(self._settings(types).get("p_min") or 0) > 0
        if spec_tps:
            # Fitted to the measured step: a head's cost (llama-bench cannot run one alone) and the
            # server's per-step work; the curve then predicts the other draft lengths.
            tokens = observed.generated / observed.steps
            costs = calibrate(costs, 1000 * tokens / spec_tps, observed.drafted / observed.steps, tokens,
                              head=roles["head"], early_stop=early_stop)
        by_position = summary.get("acceptance_by_position")
        advice = advise(costs, observed, early_stop=early_stop, rates=by_position["rates"] if by_position else None,
                        draft_max=self._settings(types).get("draft_max")
                        or (self.backend.default_draft_max if drafter else None))
        advice["measured_speedup"] = summary["speedup"]
        if advice["measured_speedup"]:
            advice["prediction_error"] = advice["predicted_speedup_measured_config"] / advice["measured_speedup"] - 1
        summary["advisor"] = advice

    def _ready_command(self) -> None:
        """The server command line that realizes the measured best (None when nothing paid)."""
        import shlex

        from velollm_core.speculative.advisor import WORTH_IT

        configs = self.report["configs"]
        best_name = max(configs, key=lambda n: configs[n]["speedup"] or 0)
        best = configs[best_name]
        if not best["speedup"] or best["speedup"] < WORTH_IT:
            self.report["ready"] = {"types": None, "command": None,
                                    "why": "no configuration measured faster than plain decoding: leave speculation off"}
            return
        types = best["types"]
        advised = (best.get("advisor") or {}).get("recommended_draft_max")
        overrides = {"draft_max": advised} if advised else {}
        spec_args = self._server_args(types, **overrides)
        command = self.backend.ready_command(self.target, spec_args, threads=self.plan.threads,
                                             options=self.plan.options)
        self.report["ready"] = {
            "types": types, "draft_max": advised or self._settings(types).get("draft_max"),
            "p_min": self._settings(types).get("p_min"), "threads": self.plan.threads,
            "measured_speedup": best["speedup"], "argv": command, "command": shlex.join(command),
        }
