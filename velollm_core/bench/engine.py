"""The benchmark engine: warm-up, iterations, concurrency levels, statistics, and a result file that
is rewritten (atomically) after every finished run, so an interruption loses nothing finished."""

from __future__ import annotations

import datetime as _dt
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm_core import __version__
from velollm_core.bench.levels import level_entry
from velollm_core.bench.profiles import LevelSpec, LoadProfile, Sequential, profile_named
from velollm_core.bench.suites import Suite
from velollm_core.bench.workloads import Dataset, PromptBuilder, Workload, build_prompts
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
from velollm_core.history.summary import summarize_runs

# The asyncio load generator holds this many streams (one connection each); a backend without
# StreamCalls runs one thread per stream, and is held to THREAD_STREAMS.
MAX_STREAMS = 4096
THREAD_STREAMS = 1024
_RESERVED_FILES = 64  # descriptors kept for the server's log, result files, the interpreter


def stream_limit(threads: bool = False) -> tuple[int, str]:
    """The most concurrent streams this process can run, and what sets that limit."""
    cap = THREAD_STREAMS if threads else MAX_STREAMS
    limit, why = cap, f"{cap} is the load generator's own cap"
    try:
        import resource
    except ImportError:  # Windows
        return limit, why
    files, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files != resource.RLIM_INFINITY and files - _RESERVED_FILES < limit:
        # The soft limit (often 1024) may rise to the hard one without privileges, as servers do.
        wanted = limit + _RESERVED_FILES if hard == resource.RLIM_INFINITY else min(hard, limit + _RESERVED_FILES)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            files = wanted
        except (ValueError, OSError):
            pass
    if files != resource.RLIM_INFINITY and files - _RESERVED_FILES < limit:
        limit, why = max(1, files - _RESERVED_FILES), f"the open-file limit (ulimit -n) is {files}"
    procs = resource.getrlimit(resource.RLIMIT_NPROC)[0] if hasattr(resource, "RLIMIT_NPROC") else -1
    if threads and procs not in (-1, resource.RLIM_INFINITY) and procs // 2 < limit:
        limit, why = max(1, procs // 2), f"the process/thread limit (ulimit -u) is {procs}"
    return limit, why


def check_streams(concurrency: int, threads: bool = False) -> None:
    limit, why = stream_limit(threads)
    if concurrency > limit:
        kind = "a thread and a connection" if threads else "a connection"
        raise UserInputError(f"--concurrency {concurrency} is more than this machine can run: at most {limit} "
                             f"streams (each stream is {kind}; {why})")


def _stderr_warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


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
    workloads: list[Workload] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    # The load profile (velollm_core.bench.profiles), or its --profile name; None: sequential.
    profile: LoadProfile | str | None = None
    rates: list[float] = field(default_factory=list)
    requests: int | None = None  # measured requests per load level (default: iterations x streams)
    duration_s: float | None = None  # and/or a time limit per level
    slo: dict[str, float] = field(default_factory=dict)
    # False: fixed output length (ignore_eos where the runtime has it). The CLI's default is False;
    # True here keeps callers that compare natural answers (speculative bench) as they were.
    natural_stop: bool = True
    prefix_cache: bool = False  # let requests share a prompt and hit the server's prefix cache
    max_concurrency: int | None = None  # open-loop cap on open streams (and server slots)
    arrivals: str = "constant"  # a sweep's rate levels: constant or poisson

    def __post_init__(self) -> None:
        if not isinstance(self.profile, LoadProfile):
            self.profile = profile_named(self.profile)

    @property
    def jobs(self) -> list[Suite | Workload | Dataset]:
        return [*self.suites, *self.workloads, *self.datasets]


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
        self._builder: PromptBuilder | None = None
        self._saved_at = 0.0
        self.telemetry = None  # a TelemetrySession once started (velollm_core/telemetry), when asked for
        self._want_telemetry = telemetry
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
                "max_tokens": {job.name: self._max_tokens(job) for job in plan.jobs},
            },
        )
        self.result.environment.hardware = hardware
        self.result.environment.velollm_version = __version__
        self.context = BenchmarkContext(
            backend=plan.backend,
            model=plan.model,
            host=plan.host,
            parallel=plan.profile.max_concurrency(plan),
            options=dict(plan.options),
            hardware=hardware,
        )

    # -- requests ---------------------------------------------------------------------------------
    def _max_tokens(self, job: Suite | Workload | Dataset) -> int:
        if isinstance(job, Workload):
            return job.output_tokens
        if isinstance(job, Dataset):
            return job.max_tokens
        return self.plan.max_tokens or job.max_tokens

    def _request(self, job: Suite | Workload, prompt: str | None = None, target: int | None = None) -> GenerationRequest:
        synthetic = isinstance(job, Workload)
        return GenerationRequest(
            benchmark=job.name,
            prompt=prompt if prompt is not None else getattr(job, "prompt", ""),
            max_tokens=self._max_tokens(job),
            seed=self.plan.seed,
            options=dict(self.plan.options),
            ignore_eos=not self.plan.natural_stop,
            raw=synthetic,
            cache_prompt=self.plan.prefix_cache or bool(synthetic and job.depth),
            prompt_tokens_target=target,
        )

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

    def _prompt_builder(self) -> PromptBuilder:
        if self._builder is None:
            builder = PromptBuilder(self._tokenizer())
            if builder.tokenize is None:
                def count(text: str) -> int | None:
                    return self._generate(GenerationRequest(benchmark="calibration", prompt=text, max_tokens=1,
                                                            seed=self.plan.seed, options=dict(self.plan.options),
                                                            raw=True)).prompt_tokens

                builder.calibrate(count, random.Random(self.plan.seed))
                self.result.settings["prompt_sizing"] = {"method": "calibrated", "fit": builder.fit}
            else:
                self.result.settings["prompt_sizing"] = {"method": "tokenizer"}
            self._builder = builder
        return self._builder

    def requests_for(self, job: Suite | Workload, count: int, *, unique: bool) -> list[tuple[GenerationRequest, GenerationRequest | None]]:
        """``count`` requests of ``job``, each with the depth context to prime first (or None).

        Synthetic workloads are unique from their first token unless the plan measures prefix caching;
        a suite's fixed prompt gets a unique first line at load levels (``unique``) for the same reason.
        """
        if isinstance(job, Workload):
            shared = self.plan.prefix_cache
            prompts = build_prompts(job, self._prompt_builder(), count, self.plan.seed + len(self.result.runs),
                                    shared=shared)
            pairs = []
            for prompt in prompts:
                prime = None
                if prompt.depth_text is not None:
                    prime = self._request(job, prompt.depth_text).model_copy(update={"max_tokens": 1, "cache_prompt": True})
                pairs.append((self._request(job, prompt.text, prompt.tokens), prime))
            return pairs
        if isinstance(job, Dataset):
            start = len(self.result.runs)
            return [(self._request(job, job.prompt(start + i, self.plan.seed)), None) for i in range(count)]
        if not unique or self.plan.prefix_cache:
            return [(self._request(job), None) for _ in range(count)]
        return [(self._request(job, f"Request {uuid.uuid4().hex[:8]}.\n{job.prompt}"), None) for _ in range(count)]

    def _generate(self, request: GenerationRequest) -> GenerationTiming:
        return self.start().generate(request, self.context)

    # -- the file ---------------------------------------------------------------------------------
    def save(self) -> None:
        self.result.summary = summarize_runs(self.result.runs)
        if self.result.environment.backend is not None:
            self._annotate_roofline()
        if self.output is not None:
            self.output.write_json(self.result.model_dump(mode="json"))
            self.saved_runs = len(self.result.runs)
        self._saved_at = time.monotonic()

    def _record(self, timing: GenerationTiming, job: Suite | Workload, iteration: int, concurrency: int,
                request: GenerationRequest | None = None, **fields: Any) -> RunRecord:
        record = RunRecord(**timing.model_dump(), benchmark=job.name, iteration=iteration, concurrency=concurrency,
                           **fields)
        if request is not None and request.ignore_eos and (record.completion_tokens or 0) < request.max_tokens:
            record.short_output = True
        self.result.runs.append(record)
        return record

    # -- sequential levels (the hook path: verify and speculative bench use these too) -------------
    def _one_sequential(self, job: Suite | Workload, index: int) -> tuple[GenerationTiming, GenerationRequest]:
        if isinstance(job, (Workload, Dataset)):
            request, prime = self.requests_for(job, 1, unique=True)[0]
        else:
            request, prime = self._request(job), None
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
        first = len(self.result.runs)
        self.warm_up(job)
        if (telemetry := self._telemetry()) is not None:
            telemetry.begin_level(Sequential.key, job.name)
        for iteration in range(1, self.plan.iterations + 1):
            self.measure(job, iteration)
        if telemetry is not None:  # cache primes of a @dN workload are served but not counted
            telemetry.end_level(Sequential.key, self.result.runs[first:], other_requests=isinstance(job, Workload) and job.depth > 0)
        target = job.depth + job.prompt_tokens if isinstance(job, Workload) else None
        self._add_level(level_entry(key=Sequential.key, profile=Sequential.name, workload=job.name,
                                    runs=self.result.runs[first:], window_s=None, concurrency=1,
                                    max_concurrency=1, slo=self.plan.slo, prompt_requested=target))

    # -- load levels (the asyncio load generator) -------------------------------------------------
    def run_load(self, job: Suite | Workload, spec: LevelSpec) -> dict[str, Any]:
        """``job`` at the load level ``spec`` through the load generator; its level entry."""
        from velollm_core.bench.loadgen import LevelDriver

        pairs = self.requests_for(job, spec.warmup + spec.requests + spec.profile.cool_down(spec), unique=True)
        backend = self.start()
        prepare = (lambda request: backend.stream(request, self.context)) if backend.capabilities.stream else None
        if prepare is None:
            check_streams(spec.max_concurrency, threads=True)
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

        driver = LevelDriver(spec, [p[0] for p in pairs], primes=[p[1] for p in pairs], prepare=prepare,
                             generate=self._generate, deadlines=Deadlines.from_settings(self.context.settings),
                             on_done=on_done)
        if (telemetry := self._telemetry()) is not None:
            telemetry.begin_level(spec.key, job.name)
        cpu_before = time.process_time()
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
                            rate=spec.rate, max_concurrency=run.max_in_flight, slo=self.plan.slo,
                            prompt_requested=target, queued=run.queued)
        entry["stopped_by"] = run.stopped_by
        # This process's CPU over the level (the load generator, with any thread-run backend): a client
        # that needs a large share of a core competes with a server on the same machine.
        cpu_s = time.process_time() - cpu_before
        streamed = sum(len(outcome.token_times) for outcome in run.outcomes)
        entry["client_cpu_s"] = round(cpu_s, 3)
        entry["client_cpu_ms_per_token"] = round(cpu_s * 1000 / streamed, 4) if streamed else None
        self._add_level(entry)
        return entry

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
        check_streams(self.plan.profile.max_concurrency(self.plan))
        backend = self._backend()
        # One request per job as it will be sent; a synthetic workload's with its prompt size (depth
        # included) as prompt_tokens_target, so a backend can add the answer and check its context.
        requests = [self._request(suite) for suite in self.plan.suites]
        requests += [self._request(w, target=w.depth + w.prompt_tokens) for w in self.plan.workloads]
        requests += [self._request(d, max(d.prompts, key=len)) for d in self.plan.datasets]
        try:
            backend.check(self.context, requests)
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
