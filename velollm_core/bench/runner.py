"""The runner: a plan measured through the ``run_benchmark`` door, every run recorded, and a result
file rewritten (atomically) after every finished run, so an interruption loses nothing finished.

It drives the backend's lifecycle, runs sequential levels in this thread and load levels through the
load generator (``velollm_core.bench.loadgen``), as each level's profile says, and records telemetry,
the backend's description and the roofline annotation with the result.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from velollm_core import __version__
from velollm_core.bench.levels import level_entry
from velollm_core.bench.limits import check_concurrency
from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.profiles import LevelSpec, Sequential
from velollm_core.bench.requests import RequestBuilder, RequestPair
from velollm_core.bench.shape import workload_settings
from velollm_core.bench.suites import Suite
from velollm_core.bench.workloads import Dataset, Workload
from velollm_core.contract.backends import Backend
from velollm_core.contract.deadline import Deadlines
from velollm_core.contract.errors import BackendError, ServerGone, UserInputError, VeloError
from velollm_core.contract.files import OutputError, OutputFile
from velollm_core.contract.schemas import (
    BenchmarkContext,
    BenchmarkResult,
    GenerationRequest,
    GenerationTiming,
    HardwareReport,
    RunRecord,
)
from velollm_core.contract.wire import check_timing
from velollm_core.history.summary import summarize_runs


def _stderr_warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class BenchmarkRunner:
    """Runs a plan through the ``run_benchmark`` door and keeps the result file current.

    The engine's own implementation (``drive``) calls the registered Backend object in the order of its
    lifecycle: ``check`` (``check()``, before anything starts) -> ``start`` (before the first
    generation) -> ``generate`` / ``stream`` / ``tokenize`` as its capabilities declare, ``describe``
    once after the first generation -> ``close``. Sequential levels call ``generate`` in this thread;
    load levels go through the asyncio load generator (``stream``) or a thread per stream.
    """

    # During a load level the file is rewritten at most this often (and after the level): a save
    # holds the event loop for tens of ms at thousands of runs, which shows as stalls in ITL p99.
    SAVE_EVERY_S = 10.0

    def __init__(
        self,
        plan: BenchmarkPlan,
        *,
        hardware: HardwareReport | None = None,
        output: Path | OutputFile | None = None,
        on_run: Callable[[str, RunRecord | None], None] | None = None,
        hook=None,
        telemetry: bool = False,
        warn: Callable[[str], None] | None = None,
        engine_ceiling: bool = False,
    ) -> None:
        from velollm_core.contract.plugins import hook as default_hook

        self.plan = plan
        self.warn = warn or _stderr_warn  # what the user should see once: a backend's warnings, a missing capability
        self.output = OutputFile(Path(output)) if isinstance(output, (str, Path)) else output
        self.saved_runs = 0  # runs in the file as last written: what a failure keeps
        self.checked = False
        self.started: Backend | None = None  # the backend whose start() returned (close() is then due)
        self.on_run = on_run or (lambda label, record: None)
        self.hook = hook or default_hook()
        self.request_builder = RequestBuilder(plan, tokenizer=self._tokenizer, generate=self._generate)
        self._saved_at = 0.0
        self.telemetry = None  # a TelemetrySession once started (velollm_core/telemetry), when asked for
        self._want_telemetry = telemetry
        self.engine_ceiling = engine_ceiling  # measure the engine alone at each level's shape, after the levels
        # A sequential level's workload requests, every prompt sized before its first is sent: taken in order.
        self._prepared: dict[str, list[RequestPair]] = {}
        self.result = BenchmarkResult(
            started_at=_now(),
            settings={
                "backend": plan.backend,
                "model": plan.model,
                "host": plan.host,
                "suites": [s.name for s in plan.suites],
                "workloads": [w.name for w in plan.workloads],
                "datasets": [{"name": d.name, "prompts": len(d.prompts)} for d in plan.datasets],
                "iterations": plan.iterations,
                "warmup": plan.warmup,
                "concurrency": plan.concurrency,
                "profile": plan.profile.name,
                "rates": plan.rates,
                "requests": plan.requests,
                "duration_s": plan.duration_s,
                "slo": plan.slo,
                "output_length": "natural" if plan.natural_stop else "fixed",
                "prefix_cache": plan.prefix_cache,
                "seed": plan.seed,
                "options": plan.options,
                "max_tokens": {job.name: self.request_builder.max_tokens(job) for job in plan.jobs},
                "workers": plan.workers,
                "cluster": plan.cluster,
                **workload_settings(plan),
            },
        )
        self.result.environment.hardware = hardware
        self.result.environment.velollm_version = __version__
        self.context = BenchmarkContext(
            backend=plan.backend,
            model=plan.model,
            host=plan.host,
            max_concurrency=plan.profile.max_concurrency(plan),
            options=dict(plan.options),
            hardware=hardware,
        )

    # -- the backend's lifecycle -------------------------------------------------------------------
    def _backend(self) -> Backend:
        """The registered backend of the plan, its options validated onto ``context.settings``."""
        from velollm_core.contract import backends

        backend = backends.get(self.plan.backend)
        if backend is None:
            raise UserInputError(f"no installed plugin runs backend {self.plan.backend!r}")
        backends.settings(backend, self.context)
        return backend

    def start(self) -> Backend:
        """The backend, started once (``Backend.start``); its ``close`` is then due when resources close."""
        if self.started is None:
            backend = self._backend()
            backend.start(self.context)
            self.started = backend
            # Registered after start's own resources, so close() runs before they are released.
            self.context.resources.callback(self._close, backend)
        return self.started

    def _close(self, backend: Backend) -> None:
        self.started = None
        backend.close(self.context)

    def _telemetry(self):
        """The run's server and hardware telemetry, started once (at the first level), or None."""
        if self.telemetry is None and self._want_telemetry:
            from velollm_core.telemetry.session import TelemetrySession

            backend = self.start()
            names = backend.capabilities.metrics
            self.telemetry = TelemetrySession(backend.metrics_url(self.context) if names else None, names=names)
            self.telemetry.start()
        return self.telemetry

    def _tokenizer(self):
        """The backend's tokenizer as a function of text, or None where it declares none (or it answers None)."""
        backend = self.start()
        if not backend.capabilities.tokenize:
            return None
        probe = backend.tokenize("hello world", self.context)
        return (lambda text: backend.tokenize(text, self.context)) if probe else None

    def requests_for(self, job: Suite | Workload | Dataset, count: int, *, unique: bool) -> list[RequestPair]:
        """``count`` requests of ``job`` with their depth primes (``RequestBuilder.pairs``), past the runs so far."""
        pairs = self.request_builder.pairs(job, count, unique=unique, offset=len(self.result.runs))
        if self.request_builder.prompt_sizing is not None:
            self.result.settings["prompt_sizing"] = self.request_builder.prompt_sizing
        return pairs

    def _generate(self, request: GenerationRequest) -> GenerationTiming:
        return self.start().generate(request, self.context)

    # -- the file ---------------------------------------------------------------------------------
    def save(self) -> None:
        self.result.summary = summarize_runs(self.result.runs)
        if self.result.environment.backend is not None:
            self._annotate_roofline()
        self._annotate_levels()
        if self.output is not None:
            self.output.write_json(self.result.model_dump(mode="json"))
            self.saved_runs = len(self.result.runs)
        self._saved_at = time.monotonic()

    def _record(self, timing: GenerationTiming, job: Suite | Workload, iteration: int, concurrency: int,
                request: GenerationRequest | None = None, **fields: Any) -> RunRecord:
        if fields.get("failed") is None:
            try:  # whatever the backend: no number in the file that compare, history or report refuses
                check_timing(timing, server=self.plan.backend, max_tokens=request.max_tokens if request else None)
            except BackendError as exc:
                if "level" not in fields:  # a sequential run: the benchmark stops, the finished runs kept
                    raise
                timing, fields = GenerationTiming(), {**fields, "failed": str(exc)}
        record = RunRecord(**timing.model_dump(), benchmark=job.name, iteration=iteration, concurrency=concurrency,
                           **fields)
        if request is not None and request.ignore_eos and (record.completion_tokens or 0) < request.max_tokens:
            record.short_output = True
        if request is not None:
            from velollm_core.bench.answers import annotate

            annotate(record, request)
        self.result.runs.append(record)
        return record

    # -- sequential levels (the hook path: verify and speculative bench use these too) -------------
    def _one_sequential(self, job: Suite | Workload, index: int) -> tuple[GenerationTiming, GenerationRequest]:
        if self._prepared.get(job.name):
            request, prime = self._prepared[job.name].pop(0)
        elif isinstance(job, (Workload, Dataset)):
            request, prime = self.requests_for(job, 1, unique=True)[0]
        else:
            request, prime = self.request_builder.request(job), None
        if prime is not None:
            self._generate(prime)
        return self._generate(request), request

    def warm_up(self, suite: Suite | Workload, level: int = 1) -> None:
        """The plan's uncounted runs of ``suite`` (the first one also starts any server)."""
        for i in range(self.plan.warmup):
            self._one_sequential(suite, -1 - i)
            self.on_run(f"{suite.name} warm-up {i + 1}", None)

    def measure(self, suite: Suite | Workload, iteration: int, level: int = 1) -> list[RunRecord]:
        """One counted generation of ``suite``, recorded and saved."""
        timing, request = self._one_sequential(suite, iteration)
        record = self._record(timing, suite, iteration, 1, request)
        if self.telemetry is not None:
            self.telemetry.run_ended(record)
        self.save()
        self.on_run(f"{suite.name} run {iteration}", record)
        if self.result.environment.backend is None:
            self._describe_backend()
            self.save()
        return [record]

    def run_sequential(self, job: Suite | Workload) -> None:
        """``job``'s warm-up and iterations one after another, in this thread, as the sequential level."""
        if self.plan.shape.turns > 1:
            from velollm_core.bench.conversations import run_conversations

            run_conversations(self, job)
            return
        first = len(self.result.runs)
        if isinstance(job, Workload):  # sized together, none between two timed requests
            self._prepared[job.name] = self.requests_for(job, self.plan.warmup + self.plan.iterations, unique=True)
        try:
            self.warm_up(job)
            if (telemetry := self._telemetry()) is not None:
                telemetry.begin_level(Sequential.key, job.name)
            for iteration in range(1, self.plan.iterations + 1):
                self.measure(job, iteration)
        finally:
            self._prepared.pop(job.name, None)
        if telemetry is not None:  # cache primes of a @dN workload are served but not counted
            telemetry.end_level(Sequential.key, self.result.runs[first:], other_requests=isinstance(job, Workload) and job.depth > 0)
        target = job.depth + job.prompt_tokens if isinstance(job, Workload) else None
        self._add_level(level_entry(key=Sequential.key, profile=Sequential.name, workload=job.name,
                                    runs=self.result.runs[first:], window_s=None, concurrency=1,
                                    peak_concurrency=1, slo=self.plan.slo, prompt_requested=target))

    # -- load levels (the asyncio load generator) -------------------------------------------------
    def run_load(self, job: Suite | Workload, spec: LevelSpec) -> dict[str, Any]:
        """``job`` at the load level ``spec`` through the load generator; its level entry."""
        from velollm_core.bench.loadgen import LevelDriver
        from velollm_core.bench.workers import LevelWorkers, choose_workers, client_check

        if self.plan.shape.turns > 1:
            from velollm_core.bench.conversations import run_conversations

            return run_conversations(self, job, spec)
        pairs = self.requests_for(job, spec.warmup + spec.requests + spec.profile.cool_down(spec), unique=True)
        backend = self.start()
        prepare = (lambda request: backend.stream(request, self.context)) if backend.capabilities.stream else None
        if prepare is None:
            check_concurrency(spec.max_concurrency, threads=True)
        if not self.result.runs:  # the server is up (and described) before anything is timed
            self._generate(pairs[0][0].model_copy(update={"max_tokens": 1}))
            self._describe_backend()
        level_runs: list[RunRecord] = []
        began: list[float] = []

        def on_done(outcome) -> None:
            if not began:
                began.append(driver.began)
            request = pairs[outcome.index][0]
            if outcome.measured:
                timing = outcome.timing or GenerationTiming()
                fields = {"level": spec.key, "profile": spec.profile.name, "failed": outcome.error,
                          "started_s": round(outcome.start - driver.began, 6),
                          "ended_s": round(outcome.end - driver.began, 6)}
                level_runs.append(self._record(timing, job, outcome.index - spec.warmup + 1,
                                               spec.concurrency or 0, request, **fields))
                if self.output is not None and time.monotonic() - self._saved_at > self.SAVE_EVERY_S:
                    self.save()
            label = f"{job.name} {spec.key}" + (" warm-up" if outcome.index < spec.warmup else "")
            self.on_run(label, level_runs[-1] if outcome.measured and level_runs else None)

        workers, workers_why = choose_workers(self.plan.workers, spec.max_concurrency or 1, streaming=prepare is not None,
                                              nodes=self._cluster_nodes(), cluster=self.plan.cluster is not None)
        deadlines = Deadlines.from_settings(self.context.settings)
        if workers > 1 or self.plan.cluster is not None:
            prepare, workers, workers_why = self._portable_calls(pairs, prepare, workers, workers_why)
        if workers > 1 or self.plan.cluster is not None:
            driver = LevelWorkers(spec, [p[0] for p in pairs], primes=[p[1] for p in pairs], prepare=prepare,
                                  deadlines=deadlines, on_done=on_done, workers=workers, cluster=self.plan.cluster)
        else:
            driver = LevelDriver(spec, [p[0] for p in pairs], primes=[p[1] for p in pairs], prepare=prepare,
                                 generate=self._generate, deadlines=deadlines, on_done=on_done)
        if (telemetry := self._telemetry()) is not None:
            telemetry.begin_level(spec.key, job.name)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        try:
            run = driver.run()
        except ServerGone as exc:
            self.save()
            raise BackendError(f"the server stopped answering during level {spec.key} of {job.name}: {exc}") from None
        window = run.window()
        if telemetry is not None:  # warm-up and cool-down requests share the server with the measured ones
            telemetry.end_level(spec.key, level_runs, origin=driver.began, window=window,
                                window_tokens=run.tokens_in_window(), other_requests=True)
        target = job.depth + job.prompt_tokens if isinstance(job, Workload) else None
        entry = level_entry(key=spec.key, profile=spec.profile.name, workload=job.name, runs=level_runs,
                            window_s=(window[1] - window[0]) if window else None,
                            tokens_in_window=run.tokens_in_window(), concurrency=spec.concurrency,
                            rate=spec.rate, peak_concurrency=run.peak_concurrency, slo=self.plan.slo,
                            prompt_requested=target, queued=run.queued)
        entry["stopped_by"] = run.stopped_by
        # The client's CPU over the level (this process, with any thread-run backend, and every worker
        # summed): a client that needs a large share of a core competes with a server on the same machine.
        wall_s = (window[1] - window[0]) if window else time.perf_counter() - wall_before
        cpu_s = time.process_time() - cpu_before + (driver.cpu_s if isinstance(driver, LevelWorkers) else 0.0)
        streamed = sum(len(outcome.token_times) for outcome in run.outcomes)
        entry["client_cpu_s"] = round(cpu_s, 3)
        entry["client_cpu_ms_per_token"] = round(cpu_s * 1000 / streamed, 4) if streamed else None
        entry["client_cpu_ms_per_request"] = round(cpu_s * 1000 / len(run.outcomes), 3) if run.outcomes else None
        entry["client"] = {**client_check(run, cpu_s=cpu_s, wall_s=wall_s, workers=workers), "workers_why": workers_why,
                           **(driver.client() if isinstance(driver, LevelWorkers) else {})}
        self._add_level(entry)
        return entry

    def _portable_calls(self, pairs: list[RequestPair], prepare: Callable, workers: int,
                        why: str) -> tuple[Callable, int, str]:
        """Every StreamCall of the level built once, here; where they cannot travel to a worker (a
        backend's stream that keeps state in this process), one worker when the choice was ours."""
        from velollm_core.bench.workers import unportable

        calls = {id(r): prepare(r) for pair in pairs for r in pair if r is not None}
        reason = unportable(next(iter(calls.values()), None))
        if reason is not None:
            if self.plan.workers not in (None, 1) or self.plan.cluster is not None:
                raise UserInputError(f"{'--cluster' if self.plan.cluster else '--workers'}: the {self.plan.backend} "
                                     f"backend's streams keep state in this process ({reason}); run it with --workers 1")
            workers, why = 1, f"the {self.plan.backend} backend's streams keep state in this process: one worker"
        return (lambda request: calls[id(request)]), workers, why

    def _cluster_nodes(self) -> int:
        """The live nodes of ``--cluster`` (1 without one); connects to the cluster on first use."""
        if self.plan.cluster is None:
            return 1
        from velollm_core.bench.workers_ray import cluster_nodes

        return cluster_nodes(self.plan.cluster)

    def _add_level(self, entry: dict[str, Any]) -> None:
        self.result.levels.append(entry)
        self.save()

    def drive(self, backend: Backend) -> BenchmarkResult:
        """The engine's own ``run_benchmark``: every job at every level through ``backend``'s lifecycle."""
        try:
            self.plan.profile.run(self)
        finally:  # while the server still runs: its scraper must not outlive it
            if self.telemetry is not None:
                self.result.telemetry, self.telemetry = self.telemetry.finish(), None
        return self.result

    def _annotate_roofline(self) -> None:
        """Each suite's decode speed as a share of the memory-bandwidth limit; never fails the run."""
        try:
            from velollm_core.bench.roofline import annotate_result

            annotate_result(self.result)
        except Exception:  # noqa: BLE001 - an annotation must not cost the benchmark
            self.result.roofline = None

    def _annotate_levels(self) -> None:
        """Each level's diagnosis (``velollm_core.bench.diagnosis``); never fails the run."""
        from velollm_core.bench.diagnosis import annotate_result

        try:
            annotate_result(self.result)
        except Exception as exc:  # noqa: BLE001 - an annotation must not cost the benchmark
            self.warn(f"no diagnosis of the load levels: {type(exc).__name__}: {exc}")

    def _measure_ceilings(self) -> None:
        """The engine alone at each closed-loop level's shape (``velollm_core.bench.ceiling``), the
        server closed; then the levels' efficiencies are in the file."""
        from velollm_core.bench.ceiling import measure_ceilings

        self.result.settings["engine_ceiling"] = True
        measure_ceilings(self.result, self._backend(), self.context, self.warn,
                         progress=lambda label: self.on_run(label, None))
        self.save()

    def _describe_backend(self) -> None:
        """``Backend.describe``, once; the warnings it carries are said on the console."""
        info = self.start().describe(self.context)
        if info is not None:
            self.result.environment.backend = info
            for warning in info.warnings:
                self.warn(f"{self.plan.backend}: {warning}")

    def check(self) -> None:
        """Refuse what this machine, the load generator or the backend cannot hold (UserInputError)."""
        if self.checked:
            return
        check_concurrency(self.plan.profile.max_concurrency(self.plan))
        self._cluster_nodes()  # Ray missing (exit 2) or the cluster unreachable (exit 1): before any server starts
        backend = self._backend()
        try:
            backend.check(self.context, self.request_builder.one_per_job())
        except BaseException:
            self.context.resources.close()  # what a refusing check() opened is closed with it
            raise
        if self.plan.jobs and not self.plan.natural_stop and not backend.capabilities.ignore_eos:
            self.warn(f"{backend.name} cannot generate past the end-of-sequence token: answers may be shorter "
                      "than asked, and each shorter one is flagged (short_output)")
        self.checked = True

    def run(self) -> BenchmarkResult:
        """Run every suite at every concurrency level; on any failure the file keeps finished runs."""
        from velollm_core.contract import interrupt

        write = True
        try:
            self.check()
            with interrupt.last_words(self._forced_exit), self.context.resources:
                answered = self.hook.run_benchmark(backend=self.plan.backend, plan=self.plan, context=self.context,
                                                   runner=self)
                if answered is None:
                    raise UserInputError(f"no installed plugin runs backend {self.plan.backend!r}")
            if self.engine_ceiling:
                self._measure_ceilings()
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

    def close_result(self, status: str, error: str | None = None) -> None:
        """The result ended by a caller that drove ``measure`` itself (speculative bench): its final
        status, why where it stopped early, and its end time, as ``run`` records its own."""
        self.result.status = status
        if error:
            self.result.error = error
        self.result.finished_at = _now()

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
