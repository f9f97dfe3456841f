"""Load profiles: how a benchmark loads the server, one class per profile.

A profile owns its load levels (``LevelSpec``: key, concurrency or rate, request counts), the most
requests a run has in flight at once (the server's slots are sized to it), how a level's requests
arrive, how a level is run (in this thread or by the load generator), and which ``velollm benchmark``
flags go with it. ``PROFILES`` maps each ``--profile`` name to its class.

- ``sequential`` (the default): one request after another at concurrency 1; the other ``--concurrency``
  levels run as ``concurrent`` ones.
- ``concurrent``: N streams, each sending its next request the moment the previous one ends (closed loop).
- ``constant`` / ``poisson``: open loop at each ``--rate``: arrivals at a fixed interval or exponentially
  distributed (seeded), independent of completions, with at most ``max_concurrency`` requests in flight.
- ``sweep``: one stream, then ``max_concurrency`` streams, then rates between the two throughputs, and
  the knee of that curve.

Runners and load generators are passed in (``BenchmarkRunner``, ``LevelDriver``): this module imports
neither, so both can import it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from velollm_core.bench.levels import find_knee
from velollm_core.contract.errors import UserInputError

if TYPE_CHECKING:
    from velollm_core.bench.loadgen import LevelDriver
    from velollm_core.bench.plan import BenchmarkPlan
    from velollm_core.bench.runner import BenchmarkRunner
    from velollm_core.bench.suites import Suite
    from velollm_core.bench.workloads import Dataset, Workload
    from velollm_core.contract.streamclient import StreamClient

# The fewest measured requests of an open-loop level: too few arrivals say nothing about a rate.
MIN_RATE_REQUESTS = 8
# Requests in flight at once in open-loop levels when --max-concurrency is not given: the largest
# --concurrency level, and at least this many.
MIN_OPEN_LOOP_CONCURRENCY = 8
# A level built without a limit on requests in flight (a direct LevelSpec of an open-loop profile).
DEFAULT_MAX_CONCURRENCY = 256
# A sweep's rates between the sequential rate and saturation, as shares of the distance between them.
SWEEP_SHARES = (0.25, 0.5, 0.75, 0.9, 1.0)


@dataclass
class LevelSpec:
    """One load level of one profile, as the runner and the load generator run it."""

    key: str
    profile: LoadProfile | str  # a --profile name is resolved to its LoadProfile
    concurrency: int | None = None  # closed loop: this many streams
    rate: float | None = None  # open loop: arrivals per second
    requests: int = 10
    warmup: int = 0
    duration_s: float | None = None
    # The most requests in flight at once (open loop: the limit; closed loop: None, the concurrency).
    max_concurrency: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if isinstance(self.profile, str):
            self.profile = profile_named(self.profile)
        if self.max_concurrency is None:
            self.max_concurrency = self.concurrency or DEFAULT_MAX_CONCURRENCY


class LoadProfile:
    """A way to load the server; subclasses say their levels, arrivals and flags."""

    name: ClassVar[str]

    def levels(self, plan: BenchmarkPlan) -> list[LevelSpec]:
        """The levels every job runs at, in order."""
        raise NotImplementedError

    def max_concurrency(self, plan: BenchmarkPlan) -> int:
        """The most requests any level of ``plan`` has in flight at once (server slots are sized to it)."""
        return max(plan.concurrency)

    def total_runs(self, plan: BenchmarkPlan) -> int:
        """Generations the plan makes, warm-ups included (the progress bar's length)."""
        return sum(len(plan.jobs) * (level.warmup + level.requests) for level in self.levels(plan))

    def check(self, *, rates: Sequence[float], workloads: Sequence[Workload]) -> None:
        """Refuse ``velollm benchmark`` flags this profile cannot use (UserInputError)."""
        if rates:
            takers = " or ".join(f"--profile {name}" for name, cls in PROFILES.items() if issubclass(cls, RateProfile))
            raise UserInputError(f"--rate goes with {takers}")

    def cool_down(self, level: LevelSpec) -> int:
        """Requests built past the measured ones, sent to keep the load steady until the last measured
        one ends: one more per stream."""
        return level.concurrency or 1

    def run(self, runner: BenchmarkRunner) -> None:
        """Every job at every level, level by level."""
        for level in self.levels(runner.plan):
            for job in runner.plan.jobs:
                level.profile.run_level(runner, job, level)

    def run_level(self, runner: BenchmarkRunner, job: Suite | Workload | Dataset, level: LevelSpec) -> dict[str, Any] | None:
        """One job at one level: the load generator's (``runner.run_load``), its level entry returned."""
        return runner.run_load(job, level)

    async def send(self, driver: LevelDriver, client: StreamClient, began: float) -> None:
        """Send the level's requests through the load generator: each stream sends its next request
        the moment the previous one ends (closed loop)."""
        await driver.closed_loop(client, began)


class Sequential(LoadProfile):
    """One request after another (concurrency 1, in this thread); other ``--concurrency`` levels
    run as ``concurrent`` ones."""

    name = "sequential"
    key = "seq"

    def level(self, plan: BenchmarkPlan) -> LevelSpec:
        return LevelSpec(self.key, self, concurrency=1, requests=plan.iterations, warmup=plan.warmup, seed=plan.seed)

    def levels(self, plan: BenchmarkPlan) -> list[LevelSpec]:
        return [self.level(plan) if concurrency == 1 else Concurrent().level(plan, concurrency)
                for concurrency in plan.concurrency]

    def run_level(self, runner: BenchmarkRunner, job: Suite | Workload | Dataset, level: LevelSpec) -> None:
        runner.run_sequential(job)


def _load_level(plan: BenchmarkPlan, key: str, profile: LoadProfile, *, per_round: int, min_requests: int,
                max_concurrency: int, concurrency: int | None = None, rate: float | None = None) -> LevelSpec:
    """A load level of ``plan``: ``--iterations`` rounds of ``per_round`` requests (one per stream, or a
    second's arrivals) unless ``--requests`` says, and as many warm-up requests per ``--warmup``."""
    requests = plan.requests or max(plan.iterations * per_round, min_requests)
    return LevelSpec(key, profile, concurrency=concurrency, rate=rate, requests=requests,
                     warmup=plan.warmup * per_round, duration_s=plan.duration_s, max_concurrency=max_concurrency,
                     seed=plan.seed)


class Concurrent(LoadProfile):
    """``--concurrency`` streams, each sending its next request when the previous one ends."""

    name = "concurrent"

    def level(self, plan: BenchmarkPlan, concurrency: int) -> LevelSpec:
        return _load_level(plan, f"c{concurrency}", self, per_round=concurrency, min_requests=concurrency,
                           max_concurrency=concurrency, concurrency=concurrency)

    def levels(self, plan: BenchmarkPlan) -> list[LevelSpec]:
        return [self.level(plan, concurrency) for concurrency in plan.concurrency]


class OpenLoop(LoadProfile):
    """Requests arrive on a clock, independent of completions, at most ``--max-concurrency`` in flight."""

    def max_concurrency(self, plan: BenchmarkPlan) -> int:
        return plan.max_concurrency or max(max(plan.concurrency), MIN_OPEN_LOOP_CONCURRENCY)

    def check(self, *, rates: Sequence[float], workloads: Sequence[Workload]) -> None:
        super().check(rates=rates, workloads=workloads)
        if any(workload.depth for workload in workloads):
            raise UserInputError("a workload at a depth (@dN) primes each request's context first, which an "
                                 "open-loop profile cannot schedule; use --profile concurrent or sequential")


class RateProfile(OpenLoop):
    """Open loop at each ``--rate``; subclasses say the gaps between arrivals."""

    key_prefix: ClassVar[str]

    def level(self, plan: BenchmarkPlan, rate: float) -> LevelSpec:
        return _load_level(plan, f"{self.key_prefix}{rate:.3g}", self, per_round=max(1, math.ceil(rate or 1)),
                           min_requests=MIN_RATE_REQUESTS, max_concurrency=self.max_concurrency(plan), rate=rate)

    def levels(self, plan: BenchmarkPlan) -> list[LevelSpec]:
        return [self.level(plan, rate) for rate in plan.rates]

    def check(self, *, rates: Sequence[float], workloads: Sequence[Workload]) -> None:
        if not rates:
            raise UserInputError(f"--profile {self.name} needs --rate, e.g. --rate 0.5,1,2 (requests per second)")
        super().check(rates=(), workloads=workloads)

    def cool_down(self, level: LevelSpec) -> int:
        """Five seconds of arrivals, at most as many as the measured requests."""
        return min(level.requests, max(1, math.ceil((level.rate or 1) * 5)))

    def gaps(self, level: LevelSpec) -> Iterator[float]:
        """Seconds from one arrival to the next, for ever."""
        raise NotImplementedError

    async def send(self, driver: LevelDriver, client: StreamClient, began: float) -> None:
        await driver.open_loop(client, began, self.gaps(driver.spec))


class ConstantRate(RateProfile):
    """Arrivals at a fixed interval."""

    name = "constant"
    key_prefix = "rate"

    def gaps(self, level: LevelSpec) -> Iterator[float]:
        gap = 1.0 / float(level.rate or 1.0)
        while True:
            yield gap


class Poisson(RateProfile):
    """Exponentially distributed arrivals (a Poisson process), seeded per level."""

    name = "poisson"
    key_prefix = "poisson"

    def gaps(self, level: LevelSpec) -> Iterator[float]:
        rng = random.Random(f"{level.seed}:{level.key}")
        rate = float(level.rate or 1.0)
        while True:
            yield rng.expovariate(rate)


class Sweep(OpenLoop):
    """Per job: one stream and ``max_concurrency`` streams measure the two ends, then rate levels
    (``--arrivals``) between their throughputs find the knee."""

    name = "sweep"

    def levels(self, plan: BenchmarkPlan) -> list[LevelSpec]:
        """The two ends; the rate levels follow once they are measured (``rate_levels``)."""
        concurrent = Concurrent()
        return [concurrent.level(plan, 1), concurrent.level(plan, self.max_concurrency(plan))]

    def rate_levels(self, plan: BenchmarkPlan, low: float, high: float) -> list[LevelSpec]:
        """Rate levels between the sequential rate ``low`` and the saturation rate ``high`` (req/s)."""
        arrivals = profile_named(plan.arrivals)
        rates = sorted({float(f"{low + share * (high - low):.3g}") for share in SWEEP_SHARES} - {0.0})
        return [arrivals.level(plan, rate) for rate in rates]

    def total_runs(self, plan: BenchmarkPlan) -> int:
        rate_runs = len(plan.jobs) * len(SWEEP_SHARES) * max(plan.requests or MIN_RATE_REQUESTS, plan.iterations)
        return super().total_runs(plan) + rate_runs

    def run(self, runner: BenchmarkRunner) -> None:
        plan = runner.plan
        for job in plan.jobs:
            ends = [runner.run_load(job, level) for level in self.levels(plan)]
            low, high = (entry["request_throughput"] or 0 for entry in ends)
            if not high or high <= low:
                runner.result.sweep = {"knee": ends[0]["key"], "workload": job.name,
                                       "why": "more streams added no throughput: the server is saturated "
                                              "by one stream"}
                continue
            for level in self.rate_levels(plan, low, high):
                runner.run_load(job, level)
            measured = [entry for entry in runner.result.levels if entry["workload"] == job.name]
            runner.result.sweep = find_knee(sorted(measured, key=lambda entry: entry["request_throughput"] or 0))


PROFILES: dict[str, type[LoadProfile]] = {cls.name: cls for cls in (Sequential, Concurrent, ConstantRate, Poisson, Sweep)}
# The profiles a sweep's rate levels may arrive by (--arrivals).
ARRIVALS = [name for name, cls in PROFILES.items() if issubclass(cls, RateProfile)]


def profile_named(name: str | None) -> LoadProfile:
    """The profile called ``name`` (``--profile``); None is the default, sequential."""
    cls = PROFILES.get(name or Sequential.name)
    if cls is None:
        raise UserInputError(f"unknown load profile {name!r}; one of {', '.join(PROFILES)}")
    return cls()
