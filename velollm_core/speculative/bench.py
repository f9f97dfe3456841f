"""Vanilla vs speculative on the same prompts and seed, interleaved A B A B so drift cancels.

Whatever is specific to a runtime (its speculation types and their rules, the flags that start them,
what a step costs, how many drafted tokens were accepted) is asked of the backend's speculative object,
found through the ``speculative_backend`` hook; a configuration is a list of that backend's type names.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import Suite
from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.files import OutputFile
from velollm_core.speculative.advisor import WORTH_IT
from velollm_core.speculative.stats import ratio_interval, verdict


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
    # Batch-invariant kernels on both servers, so greedy texts can match; off: the build and kernels the
    # user runs, with any difference in text explained (near-tie or real) instead of refused.
    exact: bool = False
    speculative_args: list[str] = field(default_factory=list)  # extra flags for the speculative server only
    # Configurations to compare, each a list of --spec-type values (["ngram-mod", "draft-mtp"]);
    # [["all"]] = every type the target (and draft) support, alone, and each drafter with ngram-mod.
    # Empty: the one type the draft names (a model's kind, or an n-gram kind).
    types: list[list[str]] = field(default_factory=list)
    # Or named variants, (name, types, extra flags for that server): the same types under different
    # settings, e.g. one per synthetic acceptance rate, all against one vanilla server.
    variants: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    # Settings of a named variant over ``settings`` (draft_max, ngram_match, p_min, ...): a search's candidates.
    variant_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Measure the advisor's recommended draft max (when it is not the measured one) before printing its command.
    confirm: bool = True
    # Draft lengths the advisor predicts beside its own list (a search's candidates).
    predict_draft_lengths: tuple[int, ...] = ()
    # One server up at a time (a target too large for two copies in memory): each configuration's runs
    # in one block, the plain server's last, so runs are paired by iteration but not interleaved.
    one_at_a_time: bool = False
    # Fit the advisor at two draft lengths: the first configuration's own and twice it, measured as one
    # more configuration of the same comparison (one more server), so long drafts are priced from two
    # measured steps (a cost per step and one per drafted token). Opt-in: on this CPU it did not beat
    # one length (docs/BENCHMARKS.md) and costs a third more time.
    second_length: bool = False

    @property
    def order(self) -> str:
        """How the runs are scheduled, as reports say it."""
        return "one server at a time" if self.one_at_a_time else "interleaved"
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


def identity_verdict(differences: list[dict], *, exact: bool) -> dict:
    """The text check of a comparison, on its own: {verdict, why, runs}. "identical"; "near-ties" where
    every differing run parts at a near-tie of the plain server's top two candidates (rounding of the
    fast kernels, not a wrong token); "different" where one parts otherwise; "unexplained" where the
    backend could not say. In ``exact`` mode any difference is a failure of the kernels' promise."""
    if not differences:
        return {"verdict": "identical", "runs": 0, "why": "speculative and plain text are identical in every run"}
    explained = [d for d in differences if "near_tie" in d]
    real = [d for d in explained if not d["near_tie"]]
    first = (real or explained or differences)[0]
    where = f"{first['benchmark']} run {first['iteration']}"
    if "token" in first:
        where += f", token {first['token']}: {first['why']}"
    else:
        where += f", character {first['position']}: {first['vanilla']!r} vs {first['speculative']!r}"
    if real:
        verdict_ = "different"
    elif len(explained) < len(differences):
        verdict_ = "unexplained"
    else:
        verdict_ = "near-ties"
    summary = {"near-ties": "every difference starts at a near-tie (the kernels of a batch and of one token "
                            "round differently)",
               "different": "a difference that is no near-tie",
               "unexplained": "the backend cannot say whether the difference is a near-tie"}[verdict_]
    if exact:
        summary += "; the batch-invariant kernels promised identical text"
    return {"verdict": verdict_, "runs": len(differences), "why": f"{summary}; first in {where}"}


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
        self.variant_settings = {name: dict(values) for name, values in plan.variant_settings.items()}
        self.spec_args = {name: self._variant_args(name) for name in self.configs}
        # configuration -> its second draft length's configuration, measured for the advisor's fit
        self.second_length: dict[str, str] = {}
        if plan.advise and plan.second_length and not plan.variants:
            self._add_second_length(next(iter(self.configs)))
        # (config, suite, iteration) -> why its text parts from vanilla's (explain_difference), once asked
        self.explained: dict[tuple[str, str, int], dict | None] = {}
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
        from velollm_core.contract.schemas import SCHEMA_VERSIONS

        self.measured_costs: dict[str, dict] = {}  # _costs: what the backend timed, by kind
        self.report: dict[str, Any] = {
            "schema_version": SCHEMA_VERSIONS["speculative"],
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

    def _variant_args(self, name: str) -> list[str]:
        types, extra = self.configs[name]
        return [*self._server_args(types, **self.variant_settings.get(name, {})), *self.plan.speculative_args, *extra]

    def _add_second_length(self, name: str) -> None:
        """Configuration ``name`` again at twice its draft length, where the backend's flags carry it."""
        draft_max = self.config_draft_max(name)
        if not draft_max or draft_max * 2 > 256:
            return
        second = f"{name} draft max {draft_max * 2}"
        self.configs[second] = self.configs[name]
        self.variant_settings[second] = {**self.variant_settings.get(name, {}), "draft_max": draft_max * 2}
        self.spec_args[second] = self._variant_args(second)
        if self.config_draft_max(second) != draft_max * 2 or self.spec_args[second] == self.spec_args[name]:
            for table in (self.configs, self.variant_settings, self.spec_args):  # a flag fixes the length
                table.pop(second)
            return
        self.second_length[name] = second

    def _settings(self, types: list[str], **overrides) -> dict:
        return self.backend.settings(types, **{**self.plan.settings, **overrides})

    def config_settings(self, name: str) -> dict:
        """The settings configuration ``name`` runs with (a variant's over the plan's)."""
        return self._settings(self.configs[name][0], **self.variant_settings.get(name, {}))

    def config_draft_max(self, name: str) -> int | None:
        """Tokens configuration ``name`` drafts per step at most, as its backend reads its settings and flags."""
        types = self.configs[name][0]
        return self.backend.draft_max(types, self.config_settings(name), self.spec_args[name])

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
        # Together: every server up at once, runs interleaved A B A B. One at a time: each server's block
        # of runs, the plain one last so it is still up to explain where the texts differ.
        groups = [["vanilla", *names]] if not self.plan.one_at_a_time else [[name] for name in [*names, "vanilla"]]
        self.report["order"] = self.plan.order
        try:
            with interrupt.last_words(self._forced_exit):
                for group in groups:
                    with ExitStack() as stack:
                        for name in group:
                            runner = self.runners[name]
                            stack.enter_context(runner.context.resources)
                            runner.start()
                            self.backend.prepare(runner.context, self.target, self.spec_args.get(name, []))
                        for suite in self.plan.suites:
                            for name in group:
                                self.runners[name].warm_up(suite)
                            for iteration in range(1, self.plan.iterations + 1):
                                for name in group:  # plain first where it is up: A B A B
                                    if name == "vanilla":
                                        self.runners[name].measure(suite, iteration)
                                    else:
                                        self._measure_speculative(self.runners[name], suite, iteration)
                                self._update()
                        if "vanilla" in group:
                            self._explain_differences()  # while the plain server is still up to be asked
            if self.plan.advise:
                for name, (types, _) in self.configs.items():
                    if name not in self.second_length.values():  # a second length is its config's fit
                        self._advise(name, types)
                self._confirm()
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
            for runner in self.runners.values():  # each side's own result says how the comparison ended
                runner.close_result(self.report["status"], self.report.get("error"))
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
                                        "vanilla": v.text[pos:pos + 40], "speculative": s.text[pos:pos + 40],
                                        **(self.explained.get((name, suite.name, v.iteration)) or {})})
            ratios = [s.decode_tokens_per_s / v.decode_tokens_per_s for v, s in zip(v_runs, s_runs)
                      if v.decode_tokens_per_s and s.decode_tokens_per_s]
            if v_runs:
                speedup = s_med / v_med if v_med and s_med else None
                interval = ratio_interval(ratios)
                per_suite[suite.name] = {
                    "vanilla_decode_tokens_per_s": v_med,
                    "speculative_decode_tokens_per_s": s_med,
                    "speedup": speedup,
                    "paired_ratios": ratios,
                    "speedup_interval": interval,
                    "advice": verdict(speedup, interval, WORTH_IT),
                    "vanilla_ttft_ms": _median(r.ttft_ms for r in v_runs),
                    "speculative_ttft_ms": _median(r.ttft_ms for r in s_runs),
                    "drafted": drafted,
                    "accepted": accepted,
                    "acceptance_rate": accepted / drafted if drafted else None,
                    "n": min(len(v_runs), len(s_runs)),
                }
        speedups = [row["speedup"] for row in per_suite.values() if row["speedup"]]
        speedup = statistics.median(speedups) if speedups else None
        # The interval of the whole comparison: every paired run of every suite (their geometric mean).
        interval = ratio_interval([r for row in per_suite.values() for r in row["paired_ratios"]])
        counted = self._acceptance(spec.runs)
        drafted, accepted = counted or (0, 0)
        counters = metrics.total([r.extra.get("spec_metrics") for r in spec.runs])
        types = self.configs[name][0]
        summary = {
            "types": types,
            "uses_draft_file": self.backend.uses_draft_file(types, self.draft_path),
            "server_args": self.spec_args[name],
            "settings": self.config_settings(name),
            "draft_max": self.config_draft_max(name),
            "per_suite": per_suite,
            "speedup": speedup,
            "speedup_interval": interval,
            "acceptance_rate": accepted / drafted if drafted else None,
            # Per draft position where the server exports it; otherwise only the totals above.
            "acceptance_by_position": metrics.curve(counters) if counters and counters["steps"] else None,
            "acceptance_source": "server metrics (per position)" if counters else "per-request totals",
            "outputs_identical": not differences,
            "differences": differences,
            "identity": identity_verdict(differences, exact=self.plan.exact),
        }
        if counted is None and spec.runs:
            summary["acceptance_source"] = f"not counted by {self.backend.runtime}"
            summary["inferred"] = self.backend.infer_acceptance(
                speedup, self.backend.draft_max(types, self._settings(types), self.spec_args[name]))
        return summary

    def _explain_differences(self) -> None:
        """Ask the backend, once per differing run, where and why its text parts from vanilla's."""
        vanilla = self.runners["vanilla"]
        for name in self.configs:
            spec_runs = self.runners[name].result.runs
            for suite in self.plan.suites:
                pairs = zip([r for r in vanilla.result.runs if r.benchmark == suite.name],
                            [r for r in spec_runs if r.benchmark == suite.name])
                for v, s in pairs:
                    key = (name, suite.name, v.iteration)
                    if key in self.explained or first_difference(v.text, s.text) is None:
                        continue
                    prompt = vanilla.request_builder.request(suite).prompt
                    self.explained[key] = self.backend.explain_difference(vanilla.context, prompt, v.text, s.text)
        self._update()

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
            identity=first["identity"] if len(configs) == 1 else identity_verdict(
                [d for c in configs.values() for d in c["differences"]], exact=self.plan.exact),
            speedup_interval=first["speedup_interval"],
            differences=[{**d, "types": name} for name, c in configs.items() for d in c["differences"]],
        )
        if "advisor" in first:
            self.report["advisor"] = first["advisor"]
        if self.output is not None:
            self.output.write_json(self.report)

    def _costs(self, with_draft: bool) -> dict:
        """The backend's measured costs of the target (and the draft model), once per comparison, or once
        for several where they share ``measured_costs`` (a search's rounds)."""
        key = "costs_draft" if with_draft else "costs"
        if key not in self.measured_costs:
            self.measured_costs[key] = self.backend.measure_costs(
                self.target, self.draft_path if with_draft else None, threads=self.plan.threads,
                exact=self.plan.exact, options=self.plan.options)
        return self.measured_costs[key]

    def _advise(self, name: str, types: list[str]) -> None:
        """The advisor of configuration ``name``: its costs fitted to these runs, other draft lengths predicted."""
        from velollm_core.speculative.advisor import DRAFT_LENGTHS, advise

        spec_runs = self.runners[name].result.runs
        summary = self.report["configs"][name]
        roles = self.backend.roles(types)
        early_stop = roles["drafter"] and float(self.config_settings(name).get("p_min") or 0) > 0
        with_draft = roles["draft_model"] and self.draft_path is not None
        measured_draft_max = summary["draft_max"]
        counted = self._acceptance(spec_runs)
        second = self.second_length.get(name)
        second_point = self._step_point(second) if second and counted is not None else None
        fitted = (self._fit_counted(name, with_draft, roles["head"], early_stop, second_point)
                  if counted is not None else self._fit_inferred(summary, spec_runs, with_draft, early_stop))
        if fitted is None:
            return
        costs, observed, rates = fitted
        fitted_lengths = ()
        if second_point is not None and "second" in costs.get("calibrated", {}):
            # The longer draft's acceptance per position reaches further before the curve extrapolates.
            rates = second_point["rates"] or rates
            fitted_lengths = (second_point["draft_max"],)
        lengths = sorted({*DRAFT_LENGTHS, *self.plan.predict_draft_lengths, *fitted_lengths,
                          *([measured_draft_max] if measured_draft_max else [])})
        advice = advise(costs, observed, early_stop=early_stop, rates=rates, draft_max=measured_draft_max,
                        draft_lengths=lengths, fitted_lengths=fitted_lengths)
        if fitted_lengths:
            advice["second_length"] = {"name": second, "draft_max": second_point["draft_max"],
                                       "measured_speedup": self.report["configs"][second]["speedup"]}
        advice["acceptance_inferred"] = counted is None
        if counted is None:
            advice["acceptance_source"] = (f"inferred from the measured speedup through the cost model "
                                           f"({self.backend.runtime} counts no accepted tokens)")
        advice["measured_speedup"] = summary["speedup"]
        advice["measured_draft_max"] = measured_draft_max
        # As the file holds it (batch sizes as text keys), so the history takes the report as it is.
        summary["advisor"] = json.loads(json.dumps(advice))

    def _vanilla_costs(self, with_draft: bool) -> dict:
        from velollm_core.speculative.advisor import with_sampling

        vanilla = _median(r.decode_tokens_per_s for r in self.runners["vanilla"].result.runs)
        return with_sampling(self._costs(with_draft), vanilla)

    def _step_point(self, name: str) -> dict | None:
        """Configuration ``name``'s measured step: {observed (the counted acceptance), step_ms (None without
        a speed), drafted (per drafting step), tokens_per_step, drafting_share (None where the server
        counts no drafting steps), draft_max, rates}; None where the runtime counted nothing drafted."""
        from velollm_core.speculative.advisor import Observation

        summary, runs = self.report["configs"][name], self.runners[name].result.runs
        counted = self._acceptance(runs)
        if not counted or not counted[0]:
            return None
        observed = Observation(generated=sum(r.completion_tokens or 0 for r in runs), drafted=counted[0],
                               accepted=counted[1])
        by_position = summary.get("acceptance_by_position")
        # Steps that drafted at all, of every step: n-gram drafting skips those its context misses.
        share = min(1.0, by_position["steps"] / observed.steps) if by_position and by_position["steps"] else None
        tokens = observed.generated / observed.steps
        tps = _median(r.decode_tokens_per_s for r in runs)
        return {"observed": observed, "step_ms": 1000 * tokens / tps if tps else None,
                "drafted": observed.drafted / observed.steps / (share or 1.0), "tokens_per_step": tokens,
                "drafting_share": share, "draft_max": summary["draft_max"],
                "rates": by_position["rates"] if by_position else None}

    def _fit_counted(self, name: str, with_draft: bool, head: bool, early_stop: bool,
                     second: dict | None = None) -> tuple[dict, Any, list[float] | None] | None:
        """(costs fitted to configuration ``name``'s measured step, and to ``second``'s where given (the
        same configuration at another draft length), the counted acceptance, per-position rates); None
        (advice recorded) where nothing was drafted."""
        from velollm_core.speculative.advisor import calibrate

        summary, point = self.report["configs"][name], self._step_point(name)
        if point is None:
            summary["advisor"] = {"recommended_draft_max": None, "curve": [], "recommendation":
                                  "off: nothing was drafted in these runs", "measured_speedup": summary["speedup"]}
            return None
        costs = self._vanilla_costs(with_draft)
        if point["drafting_share"] is not None:
            costs["drafting_share"] = point["drafting_share"]
            # Of every generated token, the share from steps that drafted nothing (the advisor's u): a
            # property of the text, held for other draft lengths.
            costs["undrafted_share"] = (1 - point["drafting_share"]) / point["tokens_per_step"]
        if point["step_ms"]:
            # Fitted to the measured step: a head's cost (llama-bench cannot run one alone) and the
            # server's per-step work; the curve then predicts the other draft lengths.
            costs = calibrate(costs, point["step_ms"], point["drafted"], point["tokens_per_step"], head=head,
                              early_stop=early_stop,
                              second={"step_ms": second["step_ms"], "drafted": second["drafted"],
                                      "tokens_per_step": second["tokens_per_step"],
                                      "drafting_share": second["drafting_share"] or 1.0}
                              if second and second["step_ms"] else None)
        return costs, point["observed"], point["rates"]

    def _fit_inferred(self, summary: dict, spec_runs, with_draft: bool,
                      early_stop: bool) -> tuple[dict, Any, None] | None:
        """For a runtime that counts no accepted tokens: the measured costs as they are, and the per-token
        acceptance fitted so the model gives the measured speedup at the measured draft max (the one free
        parameter; the step is not fitted too). None (advice recorded) where costs cannot be timed."""
        from velollm_core.speculative.advisor import (
            Observation,
            calibrate,
            expected_accepted,
            fit_alpha_to_speedup,
            plain_ms,
            predicted_speedup,
        )

        draft_max = summary["draft_max"]
        why_not = None
        if not draft_max or not summary["speedup"]:
            why_not = "no draft length or speedup was measured"
        else:
            try:
                costs = self._vanilla_costs(with_draft)
            except VeloError as exc:
                why_not = f"its costs could not be timed ({exc})"
        if why_not is not None:
            summary["advisor"] = {"recommended_draft_max": None, "curve": [], "measured_speedup": summary["speedup"],
                                  "recommendation": f"no advice: {self.backend.runtime} counts no accepted tokens "
                                                    f"and {why_not}"}
            return None
        speedup = summary["speedup"]
        alpha = fit_alpha_to_speedup(costs, speedup, draft_max, early_stop=early_stop)
        tokens = 1 + expected_accepted(alpha, draft_max)
        if predicted_speedup(costs, draft_max, tokens, early_stop=early_stop) < speedup * 0.999:
            # Faster than the timed costs allow even with every draft accepted: they overstate the step
            # (timed apart, under other load); it is fitted to the measured one as for counted runs.
            costs = calibrate(costs, tokens * plain_ms(costs) / speedup, draft_max, tokens, early_stop=early_stop)
        generated = sum(r.completion_tokens or 0 for r in spec_runs) or 1
        return costs, Observation.from_acceptance(generated, alpha, draft_max), None

    def _confirm(self) -> None:
        """Measure the advisor's recommended draft max of the best configuration where it differs from the
        measured one (interleaved against a plain server of its own): its prediction is then checked on
        a point it was not fitted to, and the printed command is one that was measured."""
        from dataclasses import replace

        configs = self.report["configs"]
        advised = [n for n in configs if configs[n].get("advisor")]
        if not advised:
            return
        name = max(advised, key=lambda n: configs[n]["speedup"] or 0)
        advice = configs[name]["advisor"]
        recommended = advice.get("recommended_draft_max")
        measured = {configs[name]["draft_max"], (advice.get("second_length") or {}).get("draft_max")}
        if not self.plan.confirm or recommended is None or recommended in measured:
            return
        types, extra = self.configs[name]
        plan = replace(self.plan, types=[], variants=[(name, types, extra)], advise=False, confirm=False,
                       variant_settings={name: {**self.variant_settings.get(name, {}), "draft_max": recommended}})
        check = SpeculativeComparison(plan, on_run=lambda label, record: self.on_run(
            f"check draft max {recommended}: {label}", record), hardware=self.hardware)
        try:
            measured = check.run()["configs"][name]
        except VeloError as exc:  # the comparison itself was measured: its result stands, the check says why not
            advice["check"] = {"draft_max": recommended, "measured_speedup": None, "error": str(exc)}
            return
        predicted = next(row["predicted_speedup"] for row in advice["curve"] if row["draft_max"] == recommended)
        advice["check"] = {
            "draft_max": recommended, "basis": "held-out", "predicted_speedup": predicted,
            "measured_speedup": measured["speedup"], "speedup_interval": measured["speedup_interval"],
            "per_suite": {suite: {key: row[key] for key in ("speedup", "speedup_interval", "acceptance_rate", "advice")}
                          for suite, row in measured["per_suite"].items()},
            "prediction_error": predicted / measured["speedup"] - 1 if measured["speedup"] else None,
            "server_args": measured["server_args"], "identity": measured["identity"],
        }
        self._update()

    def _ready_command(self) -> None:
        """The server command line of the best measured setting (None when nothing paid): a configuration
        as compared, or the advisor's recommendation where its check measured it faster."""
        import shlex

        configs = self.report["configs"]
        best_name = max(configs, key=lambda n: configs[n]["speedup"] or 0)
        best = configs[best_name]
        measured = {"speedup": best["speedup"], "speedup_interval": best["speedup_interval"],
                    "draft_max": best["draft_max"], "measured_in": "the comparison"}
        overrides = dict(self.variant_settings.get(best_name, {}))
        # A check measured faster than every configuration compared (it checks an advised configuration,
        # which need not be the fastest one compared: a second draft length may be).
        checks = [(name, c["advisor"]["check"]) for name, c in configs.items()
                  if (c.get("advisor") or {}).get("check") and c["advisor"]["check"].get("measured_speedup")]
        if checks:
            name, check = max(checks, key=lambda item: item[1]["measured_speedup"])
            if check["measured_speedup"] > (best["speedup"] or 0):
                best_name, best = name, configs[name]
                measured = {"speedup": check["measured_speedup"], "speedup_interval": check["speedup_interval"],
                            "draft_max": check["draft_max"], "measured_in": "the advisor's check"}
                overrides = {**self.variant_settings.get(name, {}), "draft_max": check["draft_max"]}
        if not measured["speedup"] or measured["speedup"] < WORTH_IT:
            self.report["ready"] = {"types": None, "command": None,
                                    "why": "no configuration measured faster than plain decoding: leave speculation off"}
            return
        types = best["types"]
        spec_args = [*self._server_args(types, **overrides), *self.plan.speculative_args, *self.configs[best_name][1]]
        command = self.backend.ready_command(self.target, spec_args, threads=self.plan.threads,
                                             options=self.plan.options)
        settings = self._settings(types, **overrides)
        self.report["ready"] = {
            "types": types, "draft_max": measured["draft_max"], "p_min": settings.get("p_min"),
            "threads": self.plan.threads, "measured_speedup": measured["speedup"],
            "speedup_interval": measured["speedup_interval"], "measured_in": measured["measured_in"],
            "argv": command, "command": shlex.join(command),
        }
