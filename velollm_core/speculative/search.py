"""The best speculation setting, found by measuring few runs: successive halving over a grid.

The grid is speculation type x draft max x the type's own knob, as the backend's ``knobs`` names it
(llama.cpp's n-gram drafting: the tokens that must match, ``ngram_match``; its draft model or head: the
confidence floor, ``p_min``; a runtime whose only knob is the draft length: draft max alone). Round one measures
every candidate once per suite, interleaved with plain runs on one comparison; each later round keeps
the best third (at least one) and doubles the runs, so most runs go to the settings that could win.

The advisor is checked on the way, on points it was not fitted to: it is fitted at the reference
setting (the backend's defaults for the first type) in the last round the reference is measured in
(the most runs: one run per suite in round one was no point to fit a model to on a busy machine) and
predicts every other draft max of that type and knob; each prediction is set beside that candidate's
own measurement in the fit's round (the same plain runs), or, for a candidate dropped before it, its
last one. The backend's costs are timed once for the whole search. The advisor's pick (the draft max
it predicts fastest) is then compared with the best setting the search measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from velollm_core.speculative.advisor import WORTH_IT
from velollm_core.speculative.bench import SpeculativeComparison, SpeculativePlan, config_name
from velollm_core.speculative.stats import verdict

KEEP_FRACTION = 3  # each round keeps the best third of its candidates


@dataclass(frozen=True)
class Candidate:
    """One setting of the grid: its types and the settings over the plan's (empty: the backend's defaults)."""

    types: tuple[str, ...]
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        knobs = " ".join(f"{key.replace('_', '-')} {value}" for key, value in self.settings)
        return f"{config_name(list(self.types))} {knobs or 'defaults'}"


def grid(types: list[list[str]], knobs: Callable[[list[str]], tuple[str, ...]], *, draft_maxes: tuple[int, ...],
         values: dict[str, tuple]) -> list[Candidate]:
    """The reference (the first type's defaults) and every type x draft max x the values of its own knob
    (the first the backend's ``knobs`` names that ``values`` holds; none: draft max alone)."""
    found = [Candidate(tuple(types[0]))]
    for config in types:
        knob = next((name for name in knobs(config) if values.get(name)), None)
        for draft_max, value in itertools.product(draft_maxes, values[knob] if knob else (None,)):
            settings = (("draft_max", draft_max), *(((knob, value),) if knob else ()))
            found.append(Candidate(tuple(config), settings))
    return found


def _comparison(plan: SpeculativePlan, candidates: list[Candidate], **changes) -> SpeculativeComparison:
    return SpeculativeComparison(replace(
        plan, types=[], variants=[(c.name, list(c.types), []) for c in candidates],
        variant_settings={c.name: dict(c.settings) for c in candidates}, confirm=False, **changes))


def distinct(plan: SpeculativePlan, candidates: list[Candidate]) -> tuple[list[Candidate], dict[str, list[Candidate]]]:
    """``candidates`` less those whose server would run with the same flags as an earlier one (a grid
    point equal to the defaults, a knob the type ignores), so each setting is measured once; and per
    kept name, the candidates it stands for."""
    args = _comparison(plan, candidates, advise=False).spec_args
    first: dict[tuple[str, ...], Candidate] = {}
    aliases: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        key = tuple(map(str, args[candidate.name]))
        if key in first:
            aliases[first[key].name].append(candidate)
        else:
            first[key] = candidate
            aliases[candidate.name] = []
    return list(first.values()), aliases


class SpeculativeSearch:
    """Successive halving over ``candidates``; ``run`` returns the search's report."""

    def __init__(self, plan: SpeculativePlan, candidates: list[Candidate], *,
                 on_run: Callable[[str, Any], None] | None = None,
                 on_round: Callable[[dict], None] | None = None) -> None:
        self.plan = plan
        # Called with the report so far after each round, so an interrupted search keeps its finished rounds.
        self.on_round = on_round or (lambda report: None)
        self.candidates, self.aliases = distinct(plan, candidates)
        self.on_run = on_run or (lambda label, record: None)
        self.rounds: list[dict] = []

    def total_runs(self) -> int:
        """Runs of every round, as planned (vanilla and each survivor, per suite, warm-up and counted)."""
        total, alive, iterations = 0, len(self.candidates), self.plan.iterations
        while True:
            total += (alive + 1) * len(self.plan.suites) * (self.plan.warmup + iterations)
            if alive <= 1:
                return total
            alive, iterations = math.ceil(alive / KEEP_FRACTION), iterations * 2

    def run(self) -> dict:
        alive, iterations = list(self.candidates), self.plan.iterations
        lengths = tuple(sorted({dict(c.settings).get("draft_max") for c in self.candidates} - {None}))
        latest: dict[str, dict] = {}
        reference = self.candidates[0]
        advisor = None
        costs: dict[str, dict] = {}  # timed by the first round that advises, kept for the others
        while True:
            number = len(self.rounds) + 1
            advising = self.plan.advise and reference in alive
            comparison = _comparison(self.plan, alive, iterations=iterations, predict_draft_lengths=lengths,
                                     advise=advising)
            comparison.measured_costs = costs
            comparison.on_run = lambda label, record, n=number: self.on_run(f"round {n}: {label}", record)
            report = comparison.run()
            measured = {c.name: self._measured(report["configs"][c.name], number, iterations) for c in alive}
            latest.update(measured)
            self.rounds.append({"round": number, "iterations": iterations, "candidates": measured,
                                "identity": report["identity"]})
            if advising and report["configs"][reference.name].get("advisor"):
                advisor = {**report["configs"][reference.name]["advisor"], "round": number}
            ranked = sorted(alive, key=lambda c: measured[c.name]["speedup"] or 0, reverse=True)
            done = len(alive) <= 1
            self.on_round(self._report("complete" if done else "running", latest, ranked[0].name, advisor))
            if done:
                break
            alive, iterations = ranked[:math.ceil(len(alive) / KEEP_FRACTION)], iterations * 2
        report = self._report("complete", latest, alive[0].name, advisor)
        report["ready"] = self._ready(comparison, alive[0], latest[alive[0].name])
        return report

    def _ready(self, comparison: SpeculativeComparison, best: Candidate, measured: dict) -> dict:
        """The command that realizes the best measured setting (its backend's, with the flags it was
        measured with), or why there is none: nothing measured faster than plain decoding."""
        import shlex

        if not measured["speedup"] or measured["speedup"] < WORTH_IT:
            return {"name": None, "command": None,
                    "why": "no setting measured faster than plain decoding: leave speculation off"}
        argv = comparison.backend.ready_command(comparison.target, comparison.spec_args[best.name],
                                                threads=self.plan.threads, options=self.plan.options)
        return {"name": best.name, "measured_speedup": measured["speedup"], "argv": argv,
                "command": shlex.join(argv)}

    def _report(self, status: str, latest: dict[str, dict], best_name: str, advisor: dict | None) -> dict:
        """The search's report: every round so far, the best setting measured, per suite, the advisor."""
        reference = self.candidates[0]
        return {
            "kind": "speculative-search",
            "status": status,
            "target": self.plan.target, "draft": self.plan.draft,
            "settings": {"suites": [s.name for s in self.plan.suites], "first_iterations": self.plan.iterations,
                         "warmup": self.plan.warmup, "threads": self.plan.threads, "exact": self.plan.exact,
                         "order": self.plan.order,
                         "keep_fraction": KEEP_FRACTION, "max_tokens": [s.max_tokens for s in self.plan.suites]},
            "candidates": [{"name": c.name, "types": list(c.types), "settings": dict(c.settings)}
                           for c in self.candidates],
            "rounds": self.rounds,
            "best": {"name": best_name, **latest[best_name]},
            "per_suite": self._per_suite(latest),
            "advisor": self._advisor_check(advisor, reference, latest, best_name),
            # Servers started over the rounds (each round: a plain one and one per candidate).
            "servers": sum(len(r["candidates"]) + 1 for r in self.rounds),
        }

    @staticmethod
    def _measured(config: dict, number: int, iterations: int) -> dict:
        return {"round": number, "iterations": iterations, "speedup": config["speedup"],
                "speedup_interval": config["speedup_interval"], "acceptance_rate": config["acceptance_rate"],
                "draft_max": config["draft_max"], "server_args": config["server_args"],
                "per_suite": {suite: {"speedup": row["speedup"], "speedup_interval": row["speedup_interval"],
                                      "acceptance_rate": row["acceptance_rate"]}
                              for suite, row in config["per_suite"].items()}}

    def _per_suite(self, latest: dict[str, dict]) -> dict:
        """Per suite (a content type): the best setting measured for it, and whether speculation pays there."""
        out = {}
        for suite in self.plan.suites:
            rows = [(name, m["per_suite"].get(suite.name, {})) for name, m in latest.items()]
            name, row = max(rows, key=lambda item: item[1].get("speedup") or 0)
            out[suite.name] = {"best": name, "speedup": row.get("speedup"), "speedup_interval": row.get("speedup_interval"),
                               "advice": verdict(row.get("speedup"), row.get("speedup_interval"), WORTH_IT)}
        return out

    def _advisor_check(self, advisor: dict | None, reference: Candidate, latest: dict[str, dict],
                       best_name: str) -> dict | None:
        """The advisor fitted at ``reference`` against the other draft lengths of its type and knob, each
        measured on its own; its pick's measured speedup over the best measured."""
        if not advisor or not advisor.get("curve"):
            return None
        curve = {row["draft_max"]: row["predicted_speedup"] for row in advisor["curve"]}
        fitted_at = latest[reference.name]["draft_max"]
        # The defaults' own knob, where a grid point turned out to be the same setting.
        same = [dict(c.settings) for c in self.aliases.get(reference.name, [])] or [dict(reference.settings)]
        knobs = {key: value for key, value in same[0].items() if key != "draft_max"}
        held_out = []
        for candidate in self.candidates:
            settings = dict(candidate.settings)
            draft_max = latest[candidate.name]["draft_max"]
            if (candidate.types != reference.types or candidate is reference or draft_max == fitted_at
                    or draft_max not in curve or any(settings.get(k) != v for k, v in knobs.items())
                    or set(settings) - {"draft_max", *knobs}):
                continue
            # Beside the round the advisor was fitted in (the same plain runs), where it was measured there.
            measured = (self.rounds[advisor["round"] - 1]["candidates"].get(candidate.name)
                        or latest[candidate.name])
            held_out.append({"name": candidate.name, "draft_max": draft_max, "basis": "predicted",
                             "predicted_speedup": curve[draft_max], "measured_speedup": measured["speedup"],
                             "measured_in_round": measured["round"],
                             "error": curve[draft_max] / measured["speedup"] - 1 if measured["speedup"] else None})
        pick = max(held_out + [{"name": reference.name, "draft_max": fitted_at,
                                "predicted_speedup": curve.get(fitted_at, 0)}],
                   key=lambda row: row["predicted_speedup"])
        best = latest[best_name]["speedup"]
        pick_measured = latest[pick["name"]]["speedup"]
        return {
            "fitted_at": {"name": reference.name, "draft_max": fitted_at, "basis": "fit", "round": advisor["round"],
                          "iterations": self.rounds[advisor["round"] - 1]["iterations"],
                          "fit_speedup": advisor.get("fit_speedup_measured_config"),
                          "measured_speedup": self.rounds[advisor["round"] - 1]["candidates"][reference.name]["speedup"]},
            "acceptance_inferred": bool(advisor.get("acceptance_inferred")),
            "acceptance_source": advisor.get("acceptance_source"),
            "per_token_acceptance": advisor.get("per_token_acceptance"),
            "held_out": held_out,
            "pick": {"name": pick["name"], "draft_max": pick["draft_max"], "predicted_speedup": pick["predicted_speedup"],
                     "measured_speedup": pick_measured},
            "pick_vs_best": pick_measured / best if pick_measured and best else None,
        }
