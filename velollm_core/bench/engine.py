"""The benchmark engine: warm-up, iterations, concurrency levels, statistics, and a result file that
is rewritten (atomically) after every finished run, so an interruption loses nothing finished."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm_core import __version__
from velollm_core.bench.stats import percentile, summarize
from velollm_core.bench.suites import Suite
from velollm_core.errors import BackendError, UserInputError, VeloError
from velollm_core.files import OutputError, OutputFile
from velollm_core.models import (
    BenchmarkContext,
    BenchmarkResult,
    GenerationRequest,
    GenerationTiming,
    HardwareReport,
    RunRecord,
)
from velollm_core.plugins import call_each

# Metrics summarized per suite, in display order.
METRICS = (
    "decode_tokens_per_s",
    "client_decode_tokens_per_s",
    "prompt_tokens_per_s",
    "ttft_ms",
    "total_ms",
    "prompt_tokens",
    "completion_tokens",
)


# One thread and one connection per stream: beyond this the client, not the server, is measured.
MAX_STREAMS = 1024
_RESERVED_FILES = 64  # descriptors kept for the server's log, result files, the interpreter


def stream_limit() -> tuple[int, str]:
    """The most concurrent streams this process can run, and what sets that limit."""
    limit, why = MAX_STREAMS, f"{MAX_STREAMS} is the load generator's own cap"
    try:
        import resource
    except ImportError:  # Windows
        return limit, why
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files != resource.RLIM_INFINITY and files - _RESERVED_FILES < limit:
        limit, why = max(1, files - _RESERVED_FILES), f"the open-file limit (ulimit -n) is {files}"
    procs = resource.getrlimit(resource.RLIMIT_NPROC)[0] if hasattr(resource, "RLIMIT_NPROC") else -1
    if procs not in (-1, resource.RLIM_INFINITY) and procs // 2 < limit:
        limit, why = max(1, procs // 2), f"the process/thread limit (ulimit -u) is {procs}"
    return limit, why


def check_streams(concurrency: int) -> None:
    limit, why = stream_limit()
    if concurrency > limit:
        raise UserInputError(f"--concurrency {concurrency} is more than this machine can run: at most {limit} "
                             f"streams (each stream is a thread and a connection; {why})")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class BenchmarkPlan:
    backend: str
    model: str
    suites: list[Suite]
    iterations: int = 3
    warmup: int = 1
    concurrency: list[int] = field(default_factory=lambda: [1])
    host: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    max_tokens: int | None = None

    def total_runs(self) -> int:
        return len(self.suites) * sum(self.warmup + self.iterations for _ in self.concurrency)


def summary_key(benchmark: str, concurrency: int) -> str:
    return benchmark if concurrency == 1 else f"{benchmark}@c{concurrency}"


def summarize_runs(runs: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per suite (and concurrency level), MetricStats for each metric that has values."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(summary_key(run.benchmark, run.concurrency), []).append(run)
    summary = {}
    for key, group in groups.items():
        metrics = {}
        for metric in METRICS:
            stats = summarize([getattr(run, metric) for run in group])
            if stats is not None:
                metrics[metric] = stats
        summary[key] = metrics
    return summary


def _latency_percentiles(runs: list[RunRecord]) -> dict[str, float | None]:
    """TPOT (per run) and ITL (every gap, pooled) p50/p90/p99, as vllm bench serve reports them,
    from ``extra`` where the backend measured them (``tpot_ms``, ``itl_ms``); empty otherwise."""
    samples = {
        "tpot_ms": [r.extra["tpot_ms"] for r in runs if r.extra.get("tpot_ms") is not None],
        "itl_ms": [gap for r in runs for gap in r.extra.get("itl_ms") or []],
    }
    report: dict[str, float | None] = {}
    for name, values in samples.items():
        if values:
            report.update({f"{name}_p{q}": percentile(values, q) for q in (50, 90, 99)})
    return report


def concurrency_report(runs: list[RunRecord]) -> dict[str, Any]:
    """Per concurrency level and suite: aggregate output tok/s, requests/s, TTFT percentiles."""
    report: dict[str, Any] = {}
    batches: dict[tuple[int, str, int], list[RunRecord]] = {}
    for run in runs:
        batches.setdefault((run.concurrency, run.benchmark, run.iteration), []).append(run)
    per_level: dict[tuple[int, str], list[tuple[float, int, list[RunRecord]]]] = {}
    for (level, bench, _), group in batches.items():
        wall_ms = max((r.extra.get("batch_wall_ms") or 0) for r in group)
        per_level.setdefault((level, bench), []).append((wall_ms, len(group), group))
    for (level, bench), items in sorted(per_level.items()):
        agg = [
            sum(r.completion_tokens or 0 for r in group) / (wall / 1000) for wall, _, group in items if wall
        ]
        rps = [n / (wall / 1000) for wall, n, _ in items if wall]
        ttfts = [r.ttft_ms for _, _, group in items for r in group if r.ttft_ms is not None]
        entry = {
            "aggregate_decode_tokens_per_s": summarize(agg),
            "requests_per_s": summarize(rps),
            "ttft_ms_p50": percentile(ttfts, 50),
            "ttft_ms_p90": percentile(ttfts, 90),
            "ttft_ms_p99": percentile(ttfts, 99),
        }
        entry.update(_latency_percentiles([r for _, _, group in items for r in group]))
        report.setdefault(str(level), {})[bench] = {
            k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in entry.items()
        }
    return report


class BenchmarkRunner:
    """Runs a plan through the plugins' ``run_benchmark`` hook and keeps the result file current."""

    def __init__(
        self,
        plan: BenchmarkPlan,
        *,
        hardware: HardwareReport | None = None,
        output: Path | OutputFile | None = None,
        on_run: Callable[[str, RunRecord | None], None] | None = None,
        hook=None,
    ) -> None:
        from velollm_core.plugins import hook as default_hook

        self.plan = plan
        self.output = OutputFile(Path(output)) if isinstance(output, (str, Path)) else output
        self.saved_runs = 0  # runs in the file as last written: what a failure keeps
        self.checked = False
        self.on_run = on_run or (lambda label, record: None)
        self.hook = hook or default_hook()
        self.result = BenchmarkResult(
            started_at=_now(),
            settings={
                "backend": plan.backend,
                "model": plan.model,
                "host": plan.host,
                "suites": [s.name for s in plan.suites],
                "iterations": plan.iterations,
                "warmup": plan.warmup,
                "concurrency": plan.concurrency,
                "seed": plan.seed,
                "options": plan.options,
                "max_tokens": {s.name: self._max_tokens(s) for s in plan.suites},
            },
        )
        self.result.environment.hardware = hardware
        self.result.environment.velollm_version = __version__
        self.context = BenchmarkContext(
            backend=plan.backend,
            model=plan.model,
            host=plan.host,
            parallel=max(plan.concurrency),
            options=dict(plan.options),
            hardware=hardware,
        )

    def _max_tokens(self, suite: Suite) -> int:
        return self.plan.max_tokens or suite.max_tokens

    def _request(self, suite: Suite) -> GenerationRequest:
        return GenerationRequest(
            benchmark=suite.name,
            prompt=suite.prompt,
            max_tokens=self._max_tokens(suite),
            seed=self.plan.seed,
            options=dict(self.plan.options),
        )

    def _generate(self, request: GenerationRequest) -> GenerationTiming:
        timing = self.hook.run_benchmark(backend=self.plan.backend, request=request, context=self.context)
        if timing is None:
            raise UserInputError(f"no installed plugin runs backend {self.plan.backend!r}")
        return timing

    def save(self) -> None:
        self.result.summary = summarize_runs(self.result.runs)
        if any(run.concurrency > 1 for run in self.result.runs):
            self.result.concurrency = concurrency_report(self.result.runs)
        if self.result.environment.backend is not None:
            self._annotate_roofline()
        if self.output is not None:
            self.output.write_json(self.result.model_dump(mode="json"))
            self.saved_runs = len(self.result.runs)

    def _record(self, timing: GenerationTiming, suite: Suite, iteration: int, level: int) -> RunRecord:
        record = RunRecord(**timing.model_dump(), benchmark=suite.name, iteration=iteration, concurrency=level)
        self.result.runs.append(record)
        return record

    def warm_up(self, suite: Suite, level: int = 1) -> None:
        """The plan's uncounted runs of ``suite`` (the first one also starts any server)."""
        for i in range(self.plan.warmup):
            self._batch(suite, level)
            self.on_run(f"{suite.name} c={level} warm-up {i + 1}", None)

    def measure(self, suite: Suite, iteration: int, level: int = 1) -> list[RunRecord]:
        """One counted batch of ``level`` parallel generations, recorded and saved."""
        timings, wall_ms = self._batch(suite, level)
        records = []
        for timing in timings:
            if level > 1:
                timing.extra["batch_wall_ms"] = wall_ms
            records.append(self._record(timing, suite, iteration, level))
        self.save()
        self.on_run(f"{suite.name} c={level} run {iteration}", records[-1])
        if self.result.environment.backend is None:
            self._describe_backend()
            self.save()
        return records

    def _run_level(self, suite: Suite, level: int) -> None:
        self.warm_up(suite, level)
        for iteration in range(1, self.plan.iterations + 1):
            self.measure(suite, iteration, level)

    def _batch(self, suite: Suite, level: int) -> tuple[list[GenerationTiming], float]:
        request = self._request(suite)
        start = time.perf_counter()
        if level == 1:
            timings = [self._generate(request)]
        else:
            with ThreadPoolExecutor(max_workers=level) as pool:
                timings = list(pool.map(lambda _: self._generate(request), range(level)))
        return timings, (time.perf_counter() - start) * 1000

    def _annotate_roofline(self) -> None:
        """Each suite's decode speed as a share of the memory-bandwidth limit; never fails the run."""
        try:
            from velollm_core.tune.roofline import annotate_result

            annotate_result(self.result)
        except Exception:  # noqa: BLE001 - an annotation must not cost the benchmark
            self.result.roofline = None

    def _describe_backend(self) -> None:
        info = self.hook.describe_backend(backend=self.plan.backend, context=self.context)
        if info is not None:
            self.result.environment.backend = info

    def check(self) -> None:
        """Refuse what this machine, the load generator or the backend cannot hold (UserInputError)."""
        if self.checked:
            return
        check_streams(max(self.plan.concurrency))
        # Every plugin may veto (a refusal is a VeloError, passed on); a plugin's bug is a warning.
        call_each("check_benchmark", reraise=(VeloError,), backend=self.plan.backend, context=self.context,
                  requests=[self._request(suite) for suite in self.plan.suites])
        self.checked = True

    def run(self) -> BenchmarkResult:
        """Run every suite at every concurrency level; on any failure the file keeps finished runs."""
        from velollm_core import interrupt

        write = True
        try:
            self.check()
            with interrupt.last_words(self._forced_exit), self.context.resources:
                for level in self.plan.concurrency:
                    for suite in self.plan.suites:
                        self._run_level(suite, level)
            self.result.status = "complete"
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
            self.result.status = "interrupted"
            self.result.error = interrupt.describe(exc)
            raise
        except VeloError as exc:
            self.result.status = "failed"
            self.result.error = str(exc)
            # Bad input before anything was measured: the output path is left as it was.
            write = bool(self.result.runs) or not isinstance(exc, UserInputError)
            raise
        except Exception as exc:
            self.result.status = "failed"
            self.result.error = f"{type(exc).__name__}: {exc}"
            raise BackendError(f"benchmark failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if write:
                self._final_save()
        return self.result

    def _forced_exit(self, why: str) -> None:
        """A second signal or a stuck cleanup ends the process now: the file still says why."""
        self.result.status, self.result.error = "interrupted", why
        self.result.finished_at = _now()
        self.save()

    def _final_save(self) -> None:
        """The last write, with the final status (and end time)."""
        self.result.finished_at = _now()
        try:
            self.save()
        except OutputError as exc:
            if self.result.error:  # say why the run stopped too, not only that the file failed
                raise OutputError(f"{exc} (the benchmark had stopped: {self.result.error})") from None
            raise


def run_benchmark_suites(plan: BenchmarkPlan, **kwargs) -> BenchmarkResult:
    """Run ``plan`` and return its result (see BenchmarkRunner for the keyword arguments)."""
    return BenchmarkRunner(plan, **kwargs).run()
