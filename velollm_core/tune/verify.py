"""Verified tuning: measure the runtime's defaults, the proposal, and the proposal without each speed
change, interleaved round by round on the same prompts; keep a change only when it helps beyond noise.

Each round runs every candidate once (in an order rotated per round), so drift of a shared machine
hits all of them alike; effects are medians of per-round ratios with a bootstrap interval over rounds.
A change is kept when removing it is slower beyond noise on decode or prefill and faster on neither.
When changes are dropped, the remaining configuration is measured again against the defaults, and a
configuration measured slower than the defaults is never proposed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from velollm_core.contract.errors import VeloError
from velollm_core.contract.schemas import ConfigChange, ConfigProposal, HardwareReport

DEFAULT_ROUNDS = 5
DECODE_TOKENS = 64
METRICS = ("decode", "prefill")


def verify_suites():
    """A decode-bound and a prefill-bound suite, short enough for several rounds of every candidate."""
    from velollm_core.bench.suites import SUITES

    decode = dataclasses.replace(SUITES["medium_completion"], name="verify_decode", max_tokens=DECODE_TOKENS)
    prefill = dataclasses.replace(SUITES["long_prompt"], name="verify_prefill", max_tokens=4)
    return decode, prefill


@dataclass
class Candidate:
    """One configuration to measure: the runtime flags it adds and the benchmark options that start it."""

    name: str
    args: list[str]
    options: dict[str, Any]
    decode: list[float] = field(default_factory=list)
    prefill: list[float] = field(default_factory=list)
    error: str | None = None

    def samples(self, metric: str) -> list[float]:
        return self.decode if metric == "decode" else self.prefill


@dataclass
class Effect:
    """b relative to a: median of per-round ratios, its 95% bootstrap interval, and the verdict."""

    ratio: float | None
    interval: tuple[float, float] | None
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "interval_95": list(self.interval) if self.interval else None,
                "verdict": self.verdict}


def paired_effect(a: list[float], b: list[float]) -> Effect:
    """How b compares with a, pair by pair (rounds): better / worse only when the interval excludes 1."""
    import statistics

    from velollm_core.contract.stats import bootstrap_paired_ratio_interval

    ratios = [vb / va for va, vb in zip(a, b) if va and vb]
    if not ratios:
        return Effect(None, None, "not measured")
    interval = bootstrap_paired_ratio_interval(a, b)
    ratio = statistics.median(ratios)
    if interval is None:
        return Effect(ratio, None, "too few rounds")
    if interval[0] > 1.0:
        return Effect(ratio, interval, "better")
    if interval[1] < 1.0:
        return Effect(ratio, interval, "worse")
    return Effect(ratio, interval, "within noise")


class InterleavedBench:
    """Runs candidates round by round through the benchmark engine (one server per candidate)."""

    def __init__(self, backend: str, model: str, hardware: HardwareReport | None, *, keep_alive: bool,
                 progress: Callable[[str], None]) -> None:
        self.backend = backend
        self.model = model
        self.hardware = hardware
        self.keep_alive = keep_alive
        self.progress = progress
        self.suites = verify_suites()

    def _runner(self, candidate: Candidate):
        from velollm_core.bench.plan import BenchmarkPlan
        from velollm_core.bench.runner import BenchmarkRunner

        plan = BenchmarkPlan(backend=self.backend, model=self.model, suites=list(self.suites), iterations=1,
                             warmup=1, options={**candidate.options, "request.ignore_eos": True})
        return BenchmarkRunner(plan, hardware=self.hardware)

    def _start(self, runner, candidate: Candidate, required: bool) -> bool:
        """Warm up (which starts the server); a candidate that cannot start is skipped unless required."""
        try:
            for suite in self.suites:
                runner.warm_up(suite)
        except VeloError as exc:
            if required:
                raise
            candidate.error = str(exc).splitlines()[0]
            self.progress(f"  {candidate.name}: could not run ({candidate.error})")
            return False
        return True

    def _measure(self, runner, candidate: Candidate, iteration: int) -> None:
        decode_suite, prefill_suite = self.suites
        (decode,) = runner.measure(decode_suite, iteration)
        (prefill,) = runner.measure(prefill_suite, iteration)
        candidate.decode.append(decode.decode_tokens_per_s)
        candidate.prefill.append(prefill.prompt_tokens_per_s)
        self.progress(f"  round {iteration} {candidate.name}: decode {decode.decode_tokens_per_s or 0:.1f} tok/s, "
                      f"prefill {prefill.prompt_tokens_per_s or 0:.1f} tok/s")

    def run(self, candidates: list[Candidate], rounds: int, required: tuple[str, ...]) -> None:
        """Measure every candidate ``rounds`` times, rotating the order each round."""
        if self.keep_alive:
            with contextlib.ExitStack() as stack:
                runners = {}
                for candidate in candidates:
                    runner = self._runner(candidate)
                    stack.enter_context(runner.context.resources)
                    if self._start(runner, candidate, candidate.name in required):
                        runners[candidate.name] = runner
                for iteration in range(1, rounds + 1):
                    for candidate in _rotated(candidates, iteration):
                        if candidate.name in runners:
                            self._measure(runners[candidate.name], candidate, iteration)
            return
        for iteration in range(1, rounds + 1):
            for candidate in _rotated(candidates, iteration):
                if candidate.error:
                    continue
                runner = self._runner(candidate)
                with runner.context.resources:
                    if self._start(runner, candidate, candidate.name in required):
                        self._measure(runner, candidate, iteration)


def _rotated(items: list[Candidate], shift: int) -> list[Candidate]:
    shift %= len(items)
    return items[shift:] + items[:shift]


@dataclass
class ChangeVerdict:
    group: str
    args: list[str]
    effects: dict[str, Effect]
    kept: bool
    why: str


@dataclass
class VerifyReport:
    runtime: str
    model: str
    rounds: int
    elapsed_s: float
    candidates: list[Candidate]
    changes: list[ChangeVerdict]
    final: ConfigProposal
    final_args: list[str]
    final_vs_defaults: dict[str, Effect]
    final_measured_as: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from velollm_core.contract.schemas import SCHEMA_VERSIONS

        return {
            "schema_version": SCHEMA_VERSIONS["verify"],
            "runtime": self.runtime,
            "model": self.model,
            "rounds": self.rounds,
            "elapsed_s": round(self.elapsed_s, 1),
            "candidates": [
                {"name": c.name, "args": c.args, "decode_tokens_per_s": c.decode,
                 "prompt_tokens_per_s": c.prefill, "error": c.error}
                for c in self.candidates
            ],
            "changes": [
                {"group": v.group, "args": v.args, "kept": v.kept, "why": v.why,
                 **{metric: effect.to_json() for metric, effect in v.effects.items()}}
                for v in self.changes
            ],
            "final": {"args": self.final_args, "measured_as": self.final_measured_as,
                      "vs_defaults": {m: e.to_json() for m, e in self.final_vs_defaults.items()}},
            "proposal": self.final.model_dump(mode="json"),
            "notes": self.notes,
        }


def _groups(proposal: ConfigProposal) -> dict[str, list[ConfigChange]]:
    groups: dict[str, list[ConfigChange]] = {}
    for change in proposal.changes:
        if change.kind == "flag" and change.args is not None:
            groups.setdefault(change.group or change.key, []).append(change)
    return groups


def _args(changes: list[ConfigChange]) -> list[str]:
    return [arg for change in changes for arg in (change.args or [])]


def _effects(base: Candidate, other: Candidate) -> dict[str, Effect]:
    return {metric: paired_effect(base.samples(metric), other.samples(metric)) for metric in METRICS}


def _judge(group: str, changes: list[ConfigChange], proposal: Candidate, without: Candidate) -> ChangeVerdict:
    args = _args(changes)
    if without.error:
        return ChangeVerdict(group, args, {}, True, f"without it the runtime did not run: {without.error}")
    effects = _effects(without, proposal)
    helps = [m for m, e in effects.items() if e.verdict == "better"]
    hurts = [m for m, e in effects.items() if e.verdict == "worse"]
    if helps and not hurts:
        return ChangeVerdict(group, args, effects, True, f"faster {' and '.join(helps)} beyond noise")
    if hurts:
        return ChangeVerdict(group, args, effects, False, f"slower {' and '.join(hurts)}: dropped")
    return ChangeVerdict(group, args, effects, False, "no effect beyond noise: dropped")


def _final_proposal(proposal: ConfigProposal, keep: set[str], note: str | None) -> ConfigProposal:
    kept = [c for c in proposal.changes if c.kind != "flag" or c.args is None or (c.group or c.key) in keep]
    all_args = _args([c for c in proposal.changes if c.kind == "flag" and c.args is not None])
    command = list(proposal.command or [])
    if all_args and command[len(command) - len(all_args):] == all_args:
        command = command[: len(command) - len(all_args)] + _args([c for c in kept if c.kind == "flag"])
    notes = [*proposal.notes, *([note] if note else [])]
    return proposal.model_copy(update={"changes": kept, "command": command or None, "notes": notes})


def verify_proposal(
    proposal: ConfigProposal,
    model: str,
    hardware: HardwareReport | None,
    options_for: Callable[[list[str]], dict[str, Any]],
    *,
    rounds: int = DEFAULT_ROUNDS,
    keep_alive: bool = True,
    progress: Callable[[str], None] = print,
) -> VerifyReport:
    """Measure defaults, proposal and ablations interleaved; return the verified proposal and why."""
    started = time.monotonic()
    groups = _groups(proposal)
    fixed = [g for g, changes in groups.items() if not any(c.purpose == "speed" for c in changes)]
    speed = [g for g in groups if g not in fixed]

    def candidate(name: str, selected: list[str]) -> Candidate:
        args = _args([c for g in groups if g in selected for c in groups[g]])
        return Candidate(name, args, options_for(args))

    defaults = candidate("defaults", [])
    proposed = candidate("proposal", list(groups))
    ablations = {g: candidate(f"without {g}", [x for x in groups if x != g]) for g in speed}
    bench = InterleavedBench(proposal.runtime, model, hardware, keep_alive=keep_alive, progress=progress)
    progress(f"measuring {2 + len(ablations)} configurations x {rounds} rounds (interleaved)")
    bench.run([defaults, proposed, *ablations.values()], rounds, required=("defaults", "proposal"))

    verdicts = [_judge(g, groups[g], proposed, ablations[g]) for g in speed]
    keep = set(fixed) | {v.group for v in verdicts if v.kept}
    candidates = [defaults, proposed, *ablations.values()]
    final, measured_as = proposed, "proposal"
    if keep != set(groups):
        final = candidate("verified", [g for g in groups if g in keep])
        confirm = Candidate("defaults (again)", [], defaults.options)
        progress(f"confirming the verified configuration against the defaults ({rounds} rounds)")
        bench.run([confirm, final], rounds, required=("defaults (again)", "verified"))
        candidates += [confirm, final]
        base, measured_as = confirm, "verified (confirmation rounds)"
    else:
        base = defaults
    vs_defaults = _effects(base, final)
    note = None
    if any(effect.verdict == "worse" for effect in vs_defaults.values()):
        keep = set()
        note = ("the tuned configuration measured slower than the runtime's defaults, so VeloLLM proposes "
                "the defaults unchanged")
    final_proposal = _final_proposal(proposal, keep, note)
    return VerifyReport(
        runtime=proposal.runtime,
        model=model,
        rounds=rounds,
        elapsed_s=time.monotonic() - started,
        candidates=candidates,
        changes=verdicts,
        final=final_proposal,
        final_args=_args([c for c in final_proposal.changes if c.kind == "flag"]),
        final_vs_defaults=vs_defaults,
        final_measured_as=measured_as,
        notes=[note] if note else [],
    )


def _fmt_effect(effect: Effect | None) -> str:
    if effect is None or effect.ratio is None:
        return "-"
    interval = f" [{effect.interval[0]:.3f}-{effect.interval[1]:.3f}]" if effect.interval else ""
    return f"{effect.ratio:.3f}x{interval} {effect.verdict}"


def render_verify_report(report: VerifyReport, console) -> None:
    """Medians per candidate, each change's measured effect, and the verified configuration."""
    import statistics

    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report.runtime}: measured ({report.rounds} interleaved rounds, "
                        f"{report.elapsed_s:.0f} s)")
    for column in ("configuration", "flags", "decode tok/s", "prefill tok/s"):
        table.add_column(column, overflow="fold")
    for c in report.candidates:
        decode = f"{statistics.median(c.decode):.1f}" if c.decode else (c.error or "-")
        prefill = f"{statistics.median(c.prefill):.1f}" if c.prefill else "-"
        table.add_row(escape(c.name), escape(" ".join(c.args) or "(none)"), decode, prefill)
    console.print(table)
    if report.changes:
        effects = Table(title="each speed change: proposal / proposal without it (median of per-round ratios)")
        for column in ("change", "decode", "prefill", "kept", "why"):
            effects.add_column(column, overflow="fold")
        for v in report.changes:
            effects.add_row(escape(" ".join(v.args)), _fmt_effect(v.effects.get("decode")),
                            _fmt_effect(v.effects.get("prefill")), "yes" if v.kept else "no", escape(v.why))
        console.print(effects)
    console.print(f"verified vs defaults ({report.final_measured_as}): decode "
                  f"{_fmt_effect(report.final_vs_defaults.get('decode'))}, prefill "
                  f"{_fmt_effect(report.final_vs_defaults.get('prefill'))}", highlight=False)
    if report.final.command:
        console.print("command: " + escape(shlex.join(report.final.command)), highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False)
