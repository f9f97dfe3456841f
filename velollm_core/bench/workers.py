"""A load level spread over several client processes: on this host (``LocalWorkers``, one Python process
each, started as children that die with VeloLLM) or as Ray actors across a cluster's nodes
(``velollm_core.bench.workers_ray``). One process and one event loop carry about 8,000 streamed tok/s
on a 2-core machine; past that the client, not the server, sets the latencies.

The level is cut into shares before it starts, and each share runs in its own ``LevelDriver`` (its own
event loop) exactly as a one-process level runs:

- closed loop: the streams are dealt out as evenly as they go, and the warm-up, measured and
  cool-down requests in proportion to each share's streams;
- open loop: the arrival times are computed once from the level's profile (the same seeded gaps one
  process would use) and dealt round-robin, so the shares together are exactly the one-process
  schedule: a Poisson process stays Poisson at the same total rate, constant arrivals interleave.
  ``max_concurrency`` is dealt out like the streams.

Only raw per-request samples come back (``Outcome``: times, the backend's timing, token arrival
times), in batches while the level runs, so a worker that dies mid-level loses only what it had not
sent. The parent merges them into one ``LevelRun``: every percentile is computed once, on all the
samples (percentiles of shares cannot be merged). Every time a worker sends is relative to its own
start of the level on its own clock, and the parent places it from the moment it said go: TTFT, ITL
and end-to-end latency are differences on one worker's clock, never across hosts.

The client judges itself (``client_check``): how late requests were sent against when they were
due, how late each worker's event loop woke, and each worker's CPU. A level whose client was the limit
is flagged, with about how many workers it needed.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from velollm_core.bench.loadgen import LevelDriver, LevelRun, Outcome, Refused, _short
from velollm_core.bench.profiles import LevelSpec, LoadProfile
from velollm_core.contract.deadline import Deadlines
from velollm_core.contract.errors import ServerGone, UserInputError, VeloError
from velollm_core.contract.stats import percentile
from velollm_core.contract.streamclient import StreamCall

# A worker's event loop holds this many streams before the default adds a worker: one loop was on
# time at 256 streams and 2,000 tok/s on 2 cores, and late (TTFT +78 ms) at 1,000.
STREAMS_PER_WORKER = 256
# A client limits a level when its loop wakes, or its requests leave, this late (p99, ms) ...
CLIENT_LATE_MS = 20.0
# ... and the advice sizes workers so that each is busy at most this share of a core.
WORKER_BUSY_SHARE = 0.5
# How often a worker sends its finished samples back while the level runs.
FLUSH_EVERY_S = 0.5
# How long workers may take to start and build their requests before the level gives up.
READY_TIMEOUT_S = 120.0


def choose_workers(asked: int | None, streams: int, *, streaming: bool, cores: int | None = None,
                   nodes: int = 1, cluster: bool = False) -> tuple[int, str]:
    """The client processes for a level of ``streams`` requests in flight at once, and why.

    ``asked`` (``--workers``) wins; else one per ``STREAMS_PER_WORKER`` streams, at most one per core
    on this host (a cluster: at least one per node). A backend without StreamCalls runs threads in
    one process."""
    if not streaming:
        if asked not in (None, 1) or cluster:
            flag = "--cluster" if cluster else f"--workers {asked}"
            raise UserInputError(f"{flag}: this backend streams through threads in one process, not through "
                                 f"the load generator's workers; leave {flag.split()[0]} out")
        return 1, "the backend runs its requests on threads in this process"
    if asked is not None:
        return asked, f"--workers {asked}"
    cores = cores or os.cpu_count() or 1
    wanted = math.ceil(streams / STREAMS_PER_WORKER)
    if nodes > 1:
        return max(wanted, nodes), f"{streams} streams over {nodes} nodes ({STREAMS_PER_WORKER} per worker)"
    if wanted <= 1:
        return 1, f"{streams} stream(s) fit one event loop"
    chosen = min(wanted, cores)
    return chosen, (f"{streams} streams, {STREAMS_PER_WORKER} per worker, at most one per core "
                    f"({cores} cores); --workers N to choose")


# -- the cut: shares of a level ---------------------------------------------------------------------


@dataclass
class PortableCall:
    """A ``StreamCall`` that crosses a process boundary: its ``status_error`` (often a closure over
    the backend's client) stays with the parent, which words a refusal from the raw status and body."""

    url: str
    body: dict[str, Any]
    accumulator: Any
    framing: str
    server: str
    headers: dict[str, str]
    auth: tuple[str, str] | None
    params: Any
    words_refusal: bool

    @classmethod
    def of(cls, call: StreamCall) -> PortableCall:
        return cls(call.url, call.body, call.accumulator, call.framing, call.server, call.headers, call.auth,
                   call.params, call.status_error is not None)

    def stream_call(self) -> StreamCall:
        return StreamCall(url=self.url, body=self.body, accumulator=self.accumulator, framing=self.framing,
                          server=self.server, headers=self.headers, auth=self.auth, params=self.params,
                          status_error=Refused if self.words_refusal else None)


def unportable(call: StreamCall | None) -> str | None:
    """Why ``call`` cannot be sent to a worker process (it holds this process's state), or None."""
    import pickle

    if call is None:
        return None
    try:
        pickle.dumps(PortableCall.of(call))
    except Exception as exc:  # noqa: BLE001 - any object that does not pickle: its words
        return f"{type(exc).__name__}: {_short(exc)}"
    return None


class ScheduledArrivals(LoadProfile):
    """A share of an open-loop level: its own arrival times, in seconds from the level's start."""

    def __init__(self, name: str, offsets: list[float]) -> None:
        self.name = name
        self.offsets = offsets

    async def send(self, driver: LevelDriver, client, began: float) -> None:
        if not self.offsets:
            return
        gaps = itertools.chain((b - a for a, b in itertools.pairwise(self.offsets)), itertools.repeat(0.0))
        await driver.open_loop(client, began, gaps, first_s=self.offsets[0])


@dataclass
class WorkerShare:
    """What one worker runs: its own level (streams, limits, counts), the global index of each of its
    requests, their calls (and depth primes), and the deadlines."""

    worker: int
    spec: LevelSpec
    indices: list[int]
    calls: list[PortableCall]
    primes: list[PortableCall | None]
    deadlines: Deadlines


def deal(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), the parts summing to ``total``."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [math.floor(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: parts[i] - exact[i])[:total - sum(parts)]:
        parts[i] += 1
    return parts


def arrival_offsets(spec: LevelSpec, count: int) -> list[float]:
    """The one-process schedule of an open-loop level: its first arrival at 0, then its profile's gaps."""
    gaps: Iterator[float] = spec.profile.gaps(spec)
    offsets, due = [], 0.0
    for _ in range(count):
        offsets.append(due)
        due += next(gaps)
    return offsets


def split_level(spec: LevelSpec, calls: list[StreamCall], primes: list[StreamCall | None], workers: int,
                deadlines: Deadlines) -> list[WorkerShare]:
    """``workers`` shares of a level (fewer where it has fewer streams or requests than workers)."""
    total = len(calls)
    bounds = [0, min(spec.warmup, total), min(spec.warmup + spec.requests, total), total]
    portable = [PortableCall.of(c) for c in calls]
    portable_primes = [PortableCall.of(p) if p is not None else None for p in primes]
    if spec.rate is None:  # closed loop: each share holds some of the streams
        n = max(1, min(workers, spec.concurrency or 1))
        streams = deal(spec.concurrency or 1, [1] * n)
        picks: list[list[int]] = [[] for _ in range(n)]
        for lo, hi in itertools.pairwise(bounds):  # warm-up, measured, cool-down: each in proportion
            at = lo
            for w, count in enumerate(deal(hi - lo, streams)):
                picks[w].extend(range(at, at + count))
                at += count
        offsets = None
    else:
        n = max(1, min(workers, spec.max_concurrency or 1, total))
        streams = None
        picks = [list(range(w, total, n)) for w in range(n)]
        schedule = arrival_offsets(spec, total)
        offsets = [[schedule[i] for i in pick] for pick in picks]
    limits = deal(spec.max_concurrency or 1, [1] * n)
    shares = []
    for w, pick in enumerate(picks):
        warmup = sum(1 for i in pick if i < bounds[1])
        measured = sum(1 for i in pick if bounds[1] <= i < bounds[2])
        profile = spec.profile if offsets is None else ScheduledArrivals(spec.profile.name, offsets[w])
        own = replace(spec, profile=profile, warmup=warmup, requests=measured,
                      concurrency=streams[w] if streams else None, max_concurrency=limits[w],
                      rate=spec.rate / n if spec.rate else spec.rate)
        shares.append(WorkerShare(w, own, pick, [portable[i] for i in pick], [portable_primes[i] for i in pick],
                                  deadlines))
    return shares


# -- a worker: its side ----------------------------------------------------------------------------------


def _no_generate(request):  # a worker runs StreamCalls only; generate() stays with the parent's backend
    raise RuntimeError("a load worker runs streamed requests only")


def _relative(outcome: Outcome, origin: float, indices: list[int]) -> Outcome:
    """``outcome`` with its global index and its times in seconds from ``origin`` (the worker's start)."""
    def shift(t: float | None) -> float | None:
        return None if t is None else t - origin

    return replace(outcome, index=indices[outcome.index], start=outcome.start - origin, end=outcome.end - origin,
                   scheduled=shift(outcome.scheduled), sent=shift(outcome.sent),
                   token_times=[t - origin for t in outcome.token_times])


def run_share(share: WorkerShare, emit: Callable[[tuple], None], wait_go: Callable[[], bool]) -> None:
    """Run one share in this process: build its calls, say ``ready``, wait for go, then run the level,
    emitting finished samples every ``FLUSH_EVERY_S`` and a ``done`` summary at the end."""
    import asyncio
    import socket

    pending: list[Outcome] = []
    flushed = [time.monotonic()]

    def flush() -> None:
        if pending:
            emit(("outcomes", [_relative(o, driver.began, share.indices) for o in pending]))
            pending.clear()
        flushed[0] = time.monotonic()

    def on_done(outcome: Outcome) -> None:
        pending.append(outcome)
        if time.monotonic() - flushed[0] > FLUSH_EVERY_S:
            flush()

    driver = LevelDriver(share.spec, share.calls, primes=share.primes, prepare=PortableCall.stream_call,
                         generate=_no_generate, deadlines=share.deadlines, on_done=on_done)
    driver.prepare_calls()
    emit(("ready", {"pid": os.getpid(), "host": socket.gethostname()}))
    if not wait_go():
        return
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    error = None
    try:
        asyncio.run(driver.drive())
    except Exception as exc:  # noqa: BLE001 - the parent says it; samples finished so far still go back
        error = f"{type(exc).__name__}: {_short(exc)}"
    flush()
    emit(("done", {"cpu_s": time.process_time() - cpu_before, "wall_s": time.perf_counter() - wall_before,
                   "peak_concurrency": driver.peak_concurrency, "queued": driver.queued,
                   "stopped_by": driver.stopped_by, "loop_lag_ms": driver.loop_lag_ms, "stamps": driver.stamps,
                   "fatal": str(driver.fatal) if driver.fatal is not None else None, "error": error}))


# -- the parent's side -------------------------------------------------------------------------------------


class Workers:
    """Where the shares run: ``start`` them, ``go``, ``poll`` their messages, ``stop`` every one."""

    where = "this host"

    def start(self, shares: list[WorkerShare]) -> None:
        raise NotImplementedError

    def go(self) -> None:
        raise NotImplementedError

    def poll(self, timeout_s: float) -> list[tuple[int, tuple]]:
        """(worker, message) pairs that arrived within ``timeout_s``."""
        raise NotImplementedError

    def lost(self, worker: int) -> str | None:
        """Why ``worker`` can send nothing more (it died), or None while it lives."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class LocalWorkers(Workers):
    """Worker processes on this host: ``python -m velollm_core.bench.workers``, one share each, over
    pipes; started like every child of VeloLLM (``contract.interrupt.spawn``: killed with it, even by
    SIGKILL). They ignore SIGINT: the parent stops them (Ctrl-C reaches the whole process group)."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.inbox: list[Any] = []  # the parent's end of each worker's stdout
        self.outbox: list[Any] = []
        self.logs: list[Any] = []

    def start(self, shares: list[WorkerShare]) -> None:
        import subprocess
        import tempfile
        from multiprocessing.connection import Connection

        from velollm_core.contract import interrupt

        for share in shares:
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop(), with the worker
            proc = interrupt.spawn([sys.executable, "-m", "velollm_core.bench.workers"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=log)
            self.procs.append(proc)
            self.logs.append(log)
            self.inbox.append(Connection(os.dup(proc.stdout.fileno()), writable=False))
            self.outbox.append(Connection(os.dup(proc.stdin.fileno()), readable=False))
            proc.stdout.close()
            proc.stdin.close()
            self.outbox[-1].send(share)

    def go(self) -> None:
        for box in self.outbox:
            box.send("go")

    def poll(self, timeout_s: float) -> list[tuple[int, tuple]]:
        from multiprocessing.connection import wait

        ready = wait([box for box in self.inbox if not box.closed], timeout_s)
        messages = []
        for box in ready:
            worker = self.inbox.index(box)
            try:
                messages.append((worker, box.recv()))
            except (EOFError, OSError):
                box.close()
        return messages

    def lost(self, worker: int) -> str | None:
        proc = self.procs[worker]
        if proc.poll() is None and not self.inbox[worker].closed:
            return None
        proc.wait()
        log = self.logs[worker]
        log.seek(0)
        said = " ".join(log.read().decode(errors="replace").split()[-30:])
        return f"worker {worker} (pid {proc.pid}) ended mid-level (exit code {proc.returncode})" + (
            f": {said}" if said else "")

    def stop(self) -> None:
        from velollm_core.contract import interrupt

        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            interrupt.stop(proc, grace_s=2.0)
        for box in [*self.inbox, *self.outbox]:
            box.close()
        for log in self.logs:
            log.close()


def _worker_main() -> int:
    """A worker process: its share on stdin, ``go``, messages back on stdout (pickled, framed)."""
    import signal
    from multiprocessing.connection import Connection

    from velollm_core.bench.limits import stream_limit

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stream_limit()  # raises this process's open-file limit to what its streams need, where allowed
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print must not corrupt the channel
    try:
        share = inbox.recv()
    except EOFError:
        return 0
    try:
        run_share(share, outbox.send, lambda: inbox.recv() == "go")
    except (EOFError, BrokenPipeError):  # the parent is gone or stopped the level
        return 0
    return 0


@dataclass
class WorkerReport:
    """One worker's summary of its level (its ``done`` message), or why it sent none."""

    ready: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] | None = None
    lost: str | None = None


class LevelWorkers:
    """One level over several workers, with ``LevelDriver``'s interface: ``began``, ``run()``."""

    def __init__(self, spec: LevelSpec, requests: list, *, prepare: Callable, deadlines: Deadlines,
                 primes: list | None = None, on_done: Callable[[Outcome], None] | None = None, workers: int,
                 cluster: str | None = None) -> None:
        self.spec = spec
        self.requests = requests
        self.primes = primes or [None] * len(requests)
        self.prepare = prepare
        self.deadlines = deadlines
        self.on_done = on_done or (lambda outcome: None)
        self.workers = workers
        self.cluster = cluster
        self.began = time.perf_counter()
        self.reports: list[WorkerReport] = []
        self.where = "this host"

    def _transport(self) -> Workers:
        if self.cluster is None:
            return LocalWorkers()
        from velollm_core.bench.workers_ray import RayWorkers

        return RayWorkers(self.cluster)

    def run(self) -> LevelRun:
        calls = [self.prepare(request) for request in self.requests]
        primes = [self.prepare(p) if p is not None else None for p in self.primes]
        shares = split_level(self.spec, calls, primes, self.workers, self.deadlines)
        self.reports = [WorkerReport() for _ in shares]
        outcomes: list[Outcome] = []
        transport = self._transport()
        self.where = transport.where
        try:
            transport.start(shares)
            self._until(transport, lambda: all(r.ready or r.lost for r in self.reports), READY_TIMEOUT_S,
                        outcomes, calls)
            if not all(r.ready for r in self.reports):
                lost = next((r.lost for r in self.reports if r.lost), None)
                raise VeloError(lost or f"the load workers did not start within {READY_TIMEOUT_S:g} s")
            self.began = time.perf_counter()
            transport.go()
            self._until(transport, lambda: all(r.done is not None or r.lost for r in self.reports), None,
                        outcomes, calls)
        finally:
            transport.stop()
        return self._merged(outcomes)

    def _until(self, transport: Workers, finished: Callable[[], bool], timeout_s: float | None,
               outcomes: list[Outcome], calls: list[StreamCall]) -> None:
        """Take the workers' messages until ``finished()``; a worker that dies is reported lost."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not finished():
            if deadline is not None and time.monotonic() > deadline:
                return
            for worker, (kind, body) in transport.poll(0.1):
                report = self.reports[worker]
                if kind == "ready":
                    report.ready = body
                elif kind == "done":
                    report.done = body
                elif kind == "outcomes":
                    for outcome in body:
                        self._take(outcome, calls)
                        outcomes.append(outcome)
            for worker, report in enumerate(self.reports):
                if report.done is None and report.lost is None:
                    report.lost = transport.lost(worker)

    def _take(self, outcome: Outcome, calls: list[StreamCall]) -> None:
        """A worker's sample on this clock, its refusal worded by the backend, handed on."""
        shift = self.began

        def placed(t: float | None) -> float | None:
            return None if t is None else t + shift

        outcome.start, outcome.end = outcome.start + shift, outcome.end + shift
        outcome.scheduled, outcome.sent = placed(outcome.scheduled), placed(outcome.sent)
        outcome.token_times = [t + shift for t in outcome.token_times]
        call = calls[outcome.index]
        if outcome.refused is not None and call.status_error is not None:
            outcome.error = _short(call.status_error(*outcome.refused))
        self.on_done(outcome)

    def _merged(self, outcomes: list[Outcome]) -> LevelRun:
        done = [r.done for r in self.reports if r.done is not None]
        fatal = next((d["fatal"] for d in done if d.get("fatal")), None)
        if fatal is not None:
            raise ServerGone(fatal)
        stopped = [d["stopped_by"] for d in done]
        run = LevelRun(self.spec, self.began, outcomes, sum(d["peak_concurrency"] for d in done),
                       sum(d["queued"] for d in done),
                       "worker lost" if any(r.lost for r in self.reports)
                       else next((s for s in stopped if s != "requests"), "requests"),
                       [lag for d in done for lag in d["loop_lag_ms"]],
                       {kind: sum((d.get("stamps") or {}).get(kind, 0) for d in done) for kind in ("kernel", "read")})
        return run

    @property
    def cpu_s(self) -> float:
        """The workers' CPU seconds over the level, summed."""
        return sum((r.done or {}).get("cpu_s", 0.0) for r in self.reports)

    def client(self) -> dict[str, Any]:
        """The client's side of the level entry: workers, where, each one's CPU and loop lag, losses."""
        return {
            "workers": len(self.reports), "where": self.where,
            "hosts": sorted({r.ready.get("host") for r in self.reports if r.ready.get("host")}),
            "nodes": len({r.ready.get("node") for r in self.reports if r.ready.get("node")}) or None,
            "worker_cpu_s": [round((r.done or {}).get("cpu_s", 0.0), 3) for r in self.reports],
            "worker_loop_lag_p99_ms": [_p99((r.done or {}).get("loop_lag_ms") or []) for r in self.reports],
            "errors": [r.done["error"] for r in self.reports if r.done and r.done.get("error")],
            "lost": [r.lost for r in self.reports if r.lost],
        }


def _p99(values: list[float]) -> float | None:
    return round(percentile(values, 99), 2) if values else None


def client_check(run: LevelRun, *, cpu_s: float, wall_s: float, workers: int, cores: int | None = None) -> dict[str, Any]:
    """Whether the client was the limit of a level, from its own measurements.

    Send lateness: how long after it was due each request was taken up (open-loop arrivals that
    waited for a free slot are the server's queue, not the client's, and are left out); over
    ``CLIENT_LATE_MS`` at p99, the client set the level's pace. Loop lag: how late each worker's
    event loop woke for a timer. Where the stream pieces carry the kernel's receive times
    (``LevelRun.stamps``), lag moves no timestamp until it outlasts a token gap, when a stream's
    tokens come in one read and its gaps merge; so the lag is judged against the level's median gap
    there, and against ``CLIENT_LATE_MS`` where pieces are stamped when the loop reads them. The advice
    sizes the workers so each is busy at most ``WORKER_BUSY_SHARE`` of a core."""
    late = [(o.sent - o.scheduled) * 1000 for o in run.outcomes
            if o.measured and o.sent is not None and o.scheduled is not None and not o.queued]
    lag = run.loop_lag_ms
    late_p99, lag_p99 = _p99(late), _p99(lag)
    busy = cpu_s / wall_s if wall_s else 0.0
    kernel, read = run.stamps.get("kernel", 0), run.stamps.get("read", 0)
    kernel_stamped = kernel + read > 0 and kernel >= 0.99 * (kernel + read)
    gap = _median_gap_ms(run) if kernel_stamped else None
    lag_limit = max(CLIENT_LATE_MS, gap) if gap is not None else CLIENT_LATE_MS
    limited = any(v is not None and v > limit for v, limit in ((late_p99, CLIENT_LATE_MS), (lag_p99, lag_limit)))
    check: dict[str, Any] = {
        "workers": workers,
        "send_late_ms": {"median": round(statistics.median(late), 2) if late else None, "p99": late_p99,
                         "n": len(late)},
        "loop_lag_ms": {"median": round(statistics.median(lag), 2) if lag else None, "p99": lag_p99,
                        "max": round(max(lag), 2) if lag else None, "n": len(lag)},
        "stamps": {"kernel": kernel, "read": read}, "lag_limit_ms": round(lag_limit, 2),
        "cores_busy": round(busy, 3), "limited": limited, "workers_needed": None, "why": None,
    }
    if limited:
        cores = cores or os.cpu_count() or 1
        parts = []
        if lag_p99 is not None and lag_p99 > lag_limit:
            parts.append(f"event loop woke {lag_p99:g} ms late (p99)"
                         + (f", longer than the {gap:g} ms token gap" if gap is not None and gap > CLIENT_LATE_MS
                            else ""))
        if late_p99 is not None and late_p99 > CLIENT_LATE_MS:
            parts.append(f"requests left {late_p99:g} ms after they were due (p99)")
        if busy < WORKER_BUSY_SHARE * workers:  # late without being busy: it waited for a core
            check["why"] = (f"the client's timestamps were late: {', '.join(parts)}; its {workers} process(es) "
                            f"used only {busy:.2f} cores: other work held this machine's {cores} cores (load "
                            f"average {_load_average()}), so more workers would not help")
            return check
        needed = max(workers + 1, math.ceil(busy / WORKER_BUSY_SHARE))
        where = (f"--workers {needed}" if needed <= cores
                 else f"--workers {needed}, more than this host's {cores} cores: add hosts with --cluster")
        check["workers_needed"] = needed
        check["why"] = f"the client was the limit: {', '.join(parts)}; it needed about {where}"
    return check


def _median_gap_ms(run: LevelRun, sample: int = 200) -> float | None:
    """The median gap between a stream's consecutive token arrivals, over the first measured requests."""
    gaps = [(b - a) * 1000 for o in run.measured[:sample] for a, b in zip(o.token_times, o.token_times[1:])
            if b > a]
    return round(statistics.median(gaps), 2) if gaps else None


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(_worker_main())
