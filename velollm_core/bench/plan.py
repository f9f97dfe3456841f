"""What a benchmark measures: the plan (backend, model, jobs, iterations, load profile and its settings).

The plan holds what the user asked for; its load profile (``velollm_core.bench.profiles``) turns that
into levels and request counts, and the runner (``velollm_core.bench.runner``) measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from velollm_core.bench.profiles import LoadProfile, profile_named
from velollm_core.bench.shape import RequestShape
from velollm_core.bench.suites import Suite
from velollm_core.bench.trace import Trace
from velollm_core.bench.workloads import Dataset, Workload


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
    requests: int | None = None  # measured requests per load level (default: iterations x concurrency)
    duration_s: float | None = None  # and/or a time limit per level
    slo: dict[str, float] = field(default_factory=dict)
    # False: fixed output length (ignore_eos where the runtime has it). The CLI's default is False;
    # True here keeps callers that compare natural answers (speculative bench) as they were.
    natural_stop: bool = True
    prefix_cache: bool = False  # let requests share a prompt and hit the server's prefix cache
    # --max-concurrency: the most requests in flight at once in open-loop levels (None: the profile's
    # default); the profile's max_concurrency(plan) is the run's, which server slots are sized to.
    max_concurrency: int | None = None
    arrivals: str = "constant"  # how a sweep's rate levels arrive: a rate profile's name
    # Client processes per load level (--workers; None: chosen per level from its streams and the cores)
    # and the Ray cluster they run on (--cluster ADDRESS|auto; None: this host).
    workers: int | None = None
    cluster: str | None = None
    # What every request adds (--think, --json-schema, --tools, --images) and --turns per conversation.
    shape: RequestShape = field(default_factory=RequestShape)
    trace: Trace | None = None  # --trace: replayed by the TraceReplay profile

    def __post_init__(self) -> None:
        if not isinstance(self.profile, LoadProfile):
            self.profile = profile_named(self.profile)

    @property
    def jobs(self) -> list[Suite | Workload | Dataset | Trace]:
        return [*self.suites, *self.workloads, *self.datasets, *([self.trace] if self.trace else [])]
