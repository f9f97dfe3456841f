"""Vanilla vs speculative on the same prompts and seed, interleaved A B A B so drift cancels."""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velollm_core.bench.engine import BenchmarkPlan, BenchmarkRunner
from velollm_core.bench.suites import Suite
from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.files import OutputFile


def is_draftless(draft: str) -> bool:
    """Whether ``draft`` names n-gram drafting (``ngram`` / ``ngram-<kind>``) rather than a model."""
    return draft == "ngram" or draft.startswith("ngram-")


@dataclass
class SpeculativePlan:
    target: str
    draft: str | None  # GGUF path / model name, "ngram" / "ngram-<kind>", or None (types alone, e.g. MTP)
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

    @property
    def draftless(self) -> bool:
        return self.draft is None or is_draftless(self.draft)


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character, None when the texts are identical."""
    if a == b:
        return None
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            return i
    return min(len(a), len(b))


def require_speculative_backend():
    """The installed plugin's speculative backend, or a clear error where none is installed."""
    from velollm_core.contract.plugins import hook

    backend = hook().speculative_backend(backend="llamacpp", kind="llamacpp")
    if backend is None:
        raise UserInputError("no installed plugin runs speculative decoding (install velollm-llamacpp)")
    return backend


def build_types(backend) -> tuple[str, ...] | None:
    """The --spec-type values the backend's build lists, or None where it cannot say."""
    available = getattr(backend, "available_types", None)
    return available() if available else None


def resolve_plan(plan: SpeculativePlan, available: tuple[str, ...] | None = None) -> dict:
    """Target and draft paths and the configurations to run, all checked before anything starts:
    {"target", "draft", "support", "configs", "compatibility"}."""
    from velollm_core.contract.modelfiles import resolve_model_path
    from velollm_core.gguf_meta import read_summary
    from velollm_core.speculative.compat import (
        check_pair,
        combination_problems,
        draft_kind,
        supported_combinations,
        type_support,
    )

    target = resolve_model_path(plan.target)
    draft = None if plan.draftless else resolve_model_path(plan.draft)
    support = type_support(target, draft, available)
    if plan.variants:
        configs = [list(types) for _, types, _ in plan.variants]
    elif plan.types == [["all"]]:
        configs = supported_combinations(support)
    elif plan.types:
        configs = [list(c) for c in plan.types]
    elif draft is None:
        from velollm_core.speculative.compat import parse_types

        configs = [parse_types("ngram-mod" if plan.draft in (None, "ngram") else plan.draft)]
    else:
        configs = [[draft_kind(read_summary(draft))]]
    problems = [f"{','.join(c)}: {p}" for c in configs
                for p in combination_problems(c, support, has_draft=False)]
    if draft is not None and plan.types != [["all"]] and not any(
            t.startswith("draft-") for c in configs for t in c):
        problems.append("a draft model is given but no configuration uses a draft-* type")
    if not configs:
        problems.append("no speculation type runs for this target" + (" and draft" if draft else ""))
    compat = None
    if draft is not None and any("draft-simple" in c for c in configs):
        report = check_pair(target, draft)
        compat = report.to_json()
        if not report.compatible:
            raise VeloError("draft and target are not compatible: " + "; ".join(report.problems))
        if report.facts["draft_size_bytes"] >= report.facts["target_size_bytes"]:
            raise UserInputError(
                f"the draft ({report.facts['draft_size_bytes'] / 2**20:.0f} MiB) is not smaller than the target "
                f"({report.facts['target_size_bytes'] / 2**20:.0f} MiB): speculation cannot be faster"
            )
    if problems:
        raise UserInputError("cannot speculate so:\n  " + "\n  ".join(problems))
    return {"target": target, "draft": draft, "support": support, "configs": configs, "compatibility": compat}


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
        self.backend = require_speculative_backend()
        resolved = resolve_plan(plan, build_types(self.backend))
        self.target, self.draft_path = resolved["target"], resolved["draft"]
        # name -> (types, extra flags of that server)
        self.configs = {name: (list(types), list(extra)) for name, types, extra in plan.variants} or {
            config_name(c): (c, []) for c in resolved["configs"]}
        base = dict(plan.options)
        if plan.threads:
            base["threads"] = plan.threads
        if plan.exact:
            exact = self.backend.exact_options()
            base["server_args"] = " ".join(filter(None, [str(base.get("server_args", "")), exact.pop("server_args")]))
            base.update(exact)
        self.spec_args = {name: [*self._server_args(types), *plan.speculative_args, *extra]
                          for name, (types, extra) in self.configs.items()}
        options = {"vanilla": dict(base)}
        for name, args in self.spec_args.items():
            options[name] = {**base, "server_args": " ".join([str(base.get("server_args", "")),
                                                               *map(_quote, args)]).strip()}
        self.runners = {
            name: BenchmarkRunner(
                BenchmarkPlan(backend=self.backend.backend, model=str(self.target), suites=plan.suites,
                              iterations=plan.iterations, warmup=plan.warmup, options=opts),
                hardware=hardware, on_run=lambda label, record, name=name: self.on_run(f"{name}: {label}", record),
            )
            for name, opts in options.items()
        }
        first = next(iter(self.configs))
        self.report: dict[str, Any] = {
            "status": "running",
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "target": str(self.target),
            "draft": str(self.draft_path) if self.draft_path else (plan.draft or first),
            "settings": {**self._settings(self.configs[first][0]), "threads": plan.threads, "iterations": plan.iterations,
                         "exact": plan.exact, "suites": [s.name for s in plan.suites]},
            "type_support": resolved["support"],
            "speculative_server_args": self.spec_args[first],
            "compatibility": resolved["compatibility"],
        }

    def _uses_draft_file(self, types: list[str]) -> bool:
        from velollm_core.gguf_meta import read_summary
        from velollm_core.speculative.compat import draft_kind

        return self.draft_path is not None and draft_kind(read_summary(self.draft_path)) in types

    def _settings(self, types: list[str], **overrides) -> dict:
        drafter = any(t.startswith("draft-") for t in types)
        settings = {"draft": "model" if drafter else types[0], "types": list(types), **self.plan.settings,
                    **overrides}
        if drafter:
            settings.setdefault("p_min", 0.75)
        return settings

    def _server_args(self, types: list[str], **overrides) -> list[str]:
        draft = self.draft_path if self._uses_draft_file(types) else None
        return self.backend.server_args(draft_path=draft, **self._settings(types, **overrides))

    def total_runs(self) -> int:
        return len(self.runners) * len(self.plan.suites) * (self.plan.warmup + self.plan.iterations)

    def _forced_exit(self, why: str) -> None:
        """A second signal ends the process at once: the report still says why (see interrupt.last_words)."""
        self.report.update(status="interrupted", error=why)
        self._update()

    def _spec_metrics(self, runner) -> dict | None:
        from velollm_core.speculative import metrics

        read = getattr(self.backend, "metrics_text", None)
        return metrics.parse(read(runner.context)) if read else None

    def _measure_speculative(self, runner, suite: Suite, iteration: int) -> None:
        """One counted run, with the server's per-position counters it moved (``extra['spec_metrics']``)."""
        from velollm_core.speculative import metrics

        before = self._spec_metrics(runner) if runner.context.state.get("url") else None
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
        counters = metrics.total([r.extra.get("spec_metrics") for r in spec.runs])
        return {
            "types": self.configs[name][0],
            "server_args": self.spec_args[name],
            "per_suite": per_suite,
            "speedup": statistics.median(speedups) if speedups else None,
            "acceptance_rate": accepted / drafted if drafted else None,
            # Per draft position where the server exports it; otherwise only the totals above.
            "acceptance_by_position": metrics.curve(counters) if counters and counters["steps"] else None,
            "acceptance_source": "server metrics (per position)" if counters else "per-request totals",
            "outputs_identical": not differences,
            "differences": differences,
        }

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
        """llama-bench costs of the target (and the draft model), measured once per comparison."""
        key = "costs_draft" if with_draft else "costs"
        if key not in self.__dict__:
            ngl = self.plan.options.get("n_gpu_layers")
            self.__dict__[key] = self.backend.measure_costs(
                self.target, self.draft_path if with_draft else None, threads=self.plan.threads,
                exact=self.plan.exact, n_gpu_layers=None if ngl is None else int(ngl))
        return self.__dict__[key]

    def _advise(self, name: str, types: list[str]) -> None:
        from velollm_core.speculative.advisor import Observation, advise, calibrate, with_sampling

        spec_runs = self.runners[name].result.runs
        observed = Observation(
            generated=sum(r.completion_tokens or 0 for r in spec_runs),
            drafted=sum(int(r.extra.get("draft_n") or 0) for r in spec_runs),
            accepted=sum(int(r.extra.get("draft_n_accepted") or 0) for r in spec_runs),
        )
        summary = self.report["configs"][name]
        if not observed.drafted:
            summary["advisor"] = {"recommended_draft_max": None, "curve": [], "recommendation":
                                  "off: nothing was drafted in these runs", "measured_speedup": summary["speedup"]}
            return
        simple = "draft-simple" in types and self.draft_path is not None
        vanilla = _median(r.decode_tokens_per_s for r in self.runners["vanilla"].result.runs)
        costs = with_sampling(self._costs(simple), vanilla)
        heads = [t for t in types if t.startswith("draft-") and t != "draft-simple"]
        spec_tps = _median(r.decode_tokens_per_s for r in spec_runs)
        drafter = any(t.startswith("draft-") for t in types)
        early_stop = drafter and float(self._settings(types).get("p_min") or 0) > 0
        if spec_tps:
            # Fitted to the measured step: a head's cost (llama-bench cannot run one alone) and the
            # server's per-step work; the curve then predicts the other draft lengths.
            tokens = observed.generated / observed.steps
            costs = calibrate(costs, 1000 * tokens / spec_tps, observed.drafted / observed.steps, tokens,
                              head=bool(heads), early_stop=early_stop)
        by_position = summary.get("acceptance_by_position")
        advice = advise(costs, observed, early_stop=early_stop, rates=by_position["rates"] if by_position else None,
                        draft_max=self._settings(types).get("draft_max")
                        or (getattr(self.backend, "default_draft_max", None) if drafter else None))
        advice["measured_speedup"] = summary["speedup"]
        if advice["measured_speedup"]:
            advice["prediction_error"] = advice["predicted_speedup_measured_config"] / advice["measured_speedup"] - 1
        summary["advisor"] = advice

    def _ready_command(self) -> None:
        """The llama-server command line that realizes the measured best (None when nothing paid)."""
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
        spec_args = [a for a in self._server_args(types, **overrides) if a != "--metrics"]
        ngl = self.plan.options.get("n_gpu_layers")
        command = self.backend.ready_command(self.target, spec_args, threads=self.plan.threads,
                                             n_gpu_layers=None if ngl is None else int(ngl))
        self.report["ready"] = {
            "types": types, "draft_max": advised or self._settings(types).get("draft_max"),
            "p_min": self._settings(types).get("p_min"), "threads": self.plan.threads,
            "measured_speedup": best["speedup"], "argv": command, "command": shlex.join(command),
        }


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))
