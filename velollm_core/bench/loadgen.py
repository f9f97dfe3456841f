"""The load generator: one asyncio event loop, no thread per stream, timestamps taken on arrival.

A backend that declares ``capabilities.stream`` describes one streamed generation as a ``StreamCall``
(``velollm_core.contract.streamclient``: URL, JSON body, framing and an accumulator that turns events
into a ``GenerationTiming``); this module runs many of them at once
with one small HTTP/1.1 client (``streamclient``: why not httpx there is said there). Every network chunk is stamped with ``perf_counter()`` the moment it
arrives, before any parsing, and each event in it carries that stamp. Backends without streaming
(``generate`` only) run on a thread pool sized to the level instead.

A failed request is one counted failure of its level (``Outcome.error``); ``ServerGone`` (a stream
that cannot connect, or raised by ``generate``) ends the level.

How requests are sent is the level's profile's (``velollm_core.bench.profiles``): it calls
``closed_loop`` (N streams, each sending its next request the moment the previous one ends) or
``open_loop`` with its gaps between arrivals (independent of completions, with at most
``max_concurrency`` requests in flight).

Each level runs ``warmup`` uncounted requests first, then ``requests`` measured ones; requests past
those keep the load steady (cool-down) until the last measured one ends, and are then cancelled.

The client measures itself: each request keeps when it was due (``scheduled``: its arrival time, or
the moment its stream was free) beside when it was sent, and a sampler task records how late the
event loop wakes (``loop_lag_ms``). Late sends or a lagging loop mean the client, not the server, set
the level's latencies (``velollm_core.bench.workers`` judges that and spreads a level over processes).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from velollm_core.bench.profiles import LevelSpec
from velollm_core.contract.deadline import CONNECT_TIMEOUT_S, MAX_LINE_CHARS, Deadlines
from velollm_core.contract.errors import BackendError, ServerGone
from velollm_core.contract.schemas import GenerationRequest, GenerationTiming
from velollm_core.contract.streamclient import (
    ConnectFailed,
    ProtocolError,
    StreamCall,
    StreamClient,
    stream_cut,
)


@dataclass
class Outcome:
    index: int
    measured: bool
    start: float
    end: float
    timing: GenerationTiming | None = None
    error: str | None = None
    token_times: list[float] = field(default_factory=list)
    scheduled: float | None = None  # when it was due: its arrival time, or when its stream was free
    sent: float | None = None  # when the client took it up (before any depth prime)
    queued: bool = False  # an open-loop arrival that waited for a free slot (max_concurrency)
    refused: tuple[int, bytes] | None = None  # an HTTP status and body the backend words later (workers)


@dataclass
class LevelRun:
    spec: LevelSpec
    began: float
    outcomes: list[Outcome]
    peak_concurrency: int  # the most requests that were in flight at once
    queued: int  # open-loop arrivals that waited because max_concurrency requests were in flight
    stopped_by: str  # "requests" | "duration" | "exhausted"
    loop_lag_ms: list[float] = field(default_factory=list)  # how late the event loop woke, sampled
    # stream pieces by where their arrival time came from ("kernel": the socket's receive time, which
    # the client's own lag does not move; "read": when the event loop read them)
    stamps: dict[str, int] = field(default_factory=dict)

    @property
    def measured(self) -> list[Outcome]:
        return sorted((o for o in self.outcomes if o.measured), key=lambda o: o.index)

    def window(self) -> tuple[float, float] | None:
        """From the first measured start to the last measured end (perf_counter seconds)."""
        measured = self.measured
        if not measured:
            return None
        return min(o.start for o in measured), max(o.end for o in measured)

    def tokens_in_window(self) -> int | None:
        """Tokens that arrived inside the window from every stream (warm-up and cool-down included:
        they share the server with the measured requests); None where a backend stamps no tokens."""
        window = self.window()
        if window is None:
            return None
        if any(o.timing is not None and not o.token_times for o in self.outcomes):
            return None
        lo, hi = window
        return sum(lo <= t <= hi for o in self.outcomes for t in o.token_times)


class _Silence:
    """How long the server may say nothing, kept lazily: each chunk only notes its arrival (``last``),
    and one timer per stream, re-armed from the last arrival when it fires early, cancels the stream's
    task once ``seconds`` passed with nothing. (An ``asyncio.timeout`` rescheduled at every chunk
    cost a timer cancel and a heap push per token: 15% of the client's CPU at 1,000 streams.)"""

    __slots__ = ("_handle", "_task", "expired", "last", "seconds")

    def __init__(self, seconds: float, start: float) -> None:
        self.seconds, self.last, self.expired = seconds, start, False
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(seconds, self._check)

    def _check(self) -> None:
        left = self.last + self.seconds - time.perf_counter()
        if left > 0:
            self._handle = asyncio.get_running_loop().call_later(left, self._check)
        else:
            self.expired = True
            self._task.cancel()

    def close(self) -> None:
        self._handle.cancel()


@contextmanager
def _collector_held() -> Iterator[None]:
    """Python's cyclic garbage collector, kept from stopping the event loop mid-level.

    A level holds hundreds of thousands of tracked objects (outcomes, token-time lists, tasks), and
    collections over them stopped the loop for 100-300 ms at a time: every stream's timestamps that
    late. What exists before the level is frozen (never scanned again) and the young generation's
    threshold is raised, so collections are rare and scan only the level's new objects; reference
    counting still frees everything that is not a cycle (a collector switched off instead would let a
    long level's cycles pile up). Measured on a 2-core Xeon, 1,000 streams at 100 ms ITL, TTFT p50
    against the mock's 50 ms: 125 ms with the default collector, 97 ms so, 91 ms with none.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


async def _stream(client: StreamClient, call: StreamCall, deadlines: Deadlines) -> tuple[GenerationTiming, list[float], float]:
    """Run one StreamCall: (timing, token arrival times, start)."""
    parse_sse = call.framing == "sse"
    acc = call.accumulator
    silence = deadlines.silence_s()
    start = time.perf_counter()
    done = False
    quiet = _Silence(silence, start)
    try:
        async with asyncio.timeout(deadlines.total_s), client.post_json(
                call.url, call.body, headers=call.headers, auth=call.auth, params=call.params) as response:
                if response.status != 200:
                    body = await response.read()
                    if call.status_error is not None:
                        raise call.status_error(response.status, body)
                    raise BackendError(f"{call.server} answered HTTP {response.status}: "
                                       f"{body[:200].decode(errors='replace')}")
                page = await _html_page(response, call.server)
                if page is not None:
                    raise page
                pending = b""
                async for chunk, arrived in response.chunks():
                    quiet.last = arrived
                    pending += chunk
                    if b"\n" not in chunk:
                        if len(pending) > MAX_LINE_CHARS:
                            raise BackendError(f"{call.server} sent a stream line over {MAX_LINE_CHARS >> 20} MiB")
                        continue
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if parse_sse:
                            if not line.startswith(b"data:"):
                                continue
                            line = line[5:].strip()
                            if line == b"[DONE]":
                                done = True
                                break
                        elif not line.strip():
                            continue
                        try:
                            event = json.loads(line)
                        except ValueError:
                            raise BackendError(f"{call.server} sent a malformed stream event: "
                                               f"{line[:120]!r}") from None
                        if not isinstance(event, dict):
                            raise BackendError(f"{call.server} sent a stream event that is not an object")
                        if acc.feed(event, arrived):
                            done = True
                            break
                    if done:
                        break
                if done:
                    await _drain(response)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not quiet.expired or task.uncancel() > 0:  # the level's own cancel stands
            raise
        raise BackendError(f"{call.server} sent nothing for {silence:g} s "
                           "(--option first_token_timeout_s=SECONDS)") from None
    except TimeoutError:
        raise BackendError(f"{call.server} did not finish the request within {deadlines.total_s:g} s "
                           "(--option timeout_s=SECONDS)") from None
    except ConnectFailed as exc:
        raise ServerGone(f"{call.server} is not reachable at {call.url} ({exc}); did it die?") from None
    except (ConnectionError, asyncio.IncompleteReadError, ProtocolError, OSError):
        raise stream_cut(call.server, len(acc.token_times)) from None
    finally:
        quiet.close()
    end = time.perf_counter()
    # A stream closed without its end marker: the accumulator knows whether what came is complete.
    return acc.finish(start, end), acc.token_times, start


async def _html_page(response, server: str) -> BackendError | None:
    """The error for an HTML page answered instead of a stream (``contract.pages``), its title read."""
    from velollm_core.contract.pages import html_answer, is_html

    content_type = response.headers.get("content-type")
    if not is_html(content_type):
        return None
    head = b""
    async for head, _ in response.chunks():
        break  # the first piece holds the title, if the page has one
    return html_answer(server, content_type, head)


async def _drain(response) -> None:
    """Read what follows the final event (the ``[DONE]`` line, the last chunk), so the connection
    can serve the next request; a server that keeps talking loses the connection instead."""
    try:
        async with asyncio.timeout(1.0):
            async for _ in response.chunks():
                pass
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ProtocolError):
        response.keep_alive = False


class Refused(BackendError):
    """An HTTP status answered instead of a stream, kept raw for the backend's own wording elsewhere."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"answered HTTP {status}")
        self.answer = (status, body[:4096])


# How often the event loop's lag is sampled: a timer this far ahead, and how late it fired.
LAG_SAMPLE_S = 0.02

Prepare = Callable[[GenerationRequest], "StreamCall | None"]
Generate = Callable[[GenerationRequest], GenerationTiming]


class LevelDriver:
    """Runs one level's requests through StreamCalls (asyncio) or ``generate`` (threads)."""

    def __init__(self, spec: LevelSpec, requests: list[GenerationRequest], *, prepare: Prepare | None,
                 generate: Generate, deadlines: Deadlines, primes: list[GenerationRequest | None] | None = None,
                 on_done: Callable[[Outcome], None] | None = None) -> None:
        self.spec = spec
        self.requests = requests
        self.primes = primes or [None] * len(requests)
        self.prepare = prepare
        self.generate = generate
        self.deadlines = deadlines
        self.on_done = on_done or (lambda outcome: None)
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self.peak_concurrency = 0
        self.queued = 0
        self.measured_done = 0
        self.fatal: BaseException | None = None
        self.stopped_by = "requests"
        self._next = 0
        self._pool: ThreadPoolExecutor | None = None
        self.began = time.perf_counter()
        self._calls: dict[int, StreamCall | None] = {}
        self.loop_lag_ms: list[float] = []
        self.stamps: dict[str, int] = {}

    # -- one request ------------------------------------------------------------------------------
    def _is_measured(self, index: int) -> bool:
        return self.spec.warmup <= index < self.spec.warmup + self.spec.requests

    async def _one(self, client, index: int, scheduled: float | None = None, queued: bool = False) -> None:
        request = self.requests[index]
        measured = self._is_measured(index)
        self.in_flight += 1
        self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
        start = time.perf_counter()
        outcome = Outcome(index, measured, start, start, scheduled=scheduled, sent=start, queued=queued)
        try:
            prime = self.primes[index]
            if prime is not None:  # the depth context, into the cache first; not timed
                await self._run(client, prime)
            timing, token_times, start = await self._run(client, request)
            outcome.start, outcome.timing, outcome.token_times = start, timing, token_times
        except ServerGone as exc:
            outcome.error = _short(exc)
            self.fatal = self.fatal or exc
        except asyncio.CancelledError:
            self.in_flight -= 1
            raise
        except BackendError as exc:
            outcome.error = _short(exc)
            outcome.refused = getattr(exc, "answer", None)
        except Exception as exc:  # noqa: BLE001 - one request's bug is a failed request, named
            outcome.error = f"{type(exc).__name__}: {_short(exc)}"
        outcome.end = time.perf_counter()
        self.in_flight -= 1
        self.outcomes.append(outcome)
        if measured:
            self.measured_done += 1
        self.on_done(outcome)

    async def _run(self, client, request: GenerationRequest) -> tuple[GenerationTiming, list[float], float]:
        call = self._calls.pop(id(request), None) if self.prepare else None
        if call is not None:
            return await _stream(client, call, self.deadlines)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        timing = await loop.run_in_executor(self._pool, self.generate, request)
        return timing, [], start

    # -- sending (the level's profile chooses) ---------------------------------------------------
    def _take(self, began: float) -> int | None:
        """The next request index to send, or None when the level sends no more."""
        if self.fatal is not None or self.measured_done >= self.spec.requests:
            return None
        if self._next >= len(self.requests):
            self.stopped_by = "exhausted"
            return None
        if (self.spec.duration_s is not None and self._is_measured(self._next)
                and time.perf_counter() - began > self.spec.duration_s):
            self.stopped_by = "duration"
            return None
        index, self._next = self._next, self._next + 1
        return index

    def _all_measured_sent_and_done(self) -> bool:
        return self.fatal is not None or self.measured_done >= min(
            self.spec.requests, max(0, self._next - self.spec.warmup))

    async def closed_loop(self, client, began: float) -> None:
        """``concurrency`` streams, each sending its next request when the previous one ends."""
        async def worker() -> None:
            free = began  # when this stream could send: the level's start, then each request's end
            while (index := self._take(began)) is not None:
                await self._one(client, index, scheduled=free)
                free = time.perf_counter()
                if self.measured_done >= self.spec.requests or self.fatal is not None:
                    return

        workers = [asyncio.create_task(worker()) for _ in range(self.spec.concurrency or 1)]
        await self._until_measured(workers, began)

    async def open_loop(self, client, began: float, gaps: Iterator[float], first_s: float = 0.0) -> None:
        """Arrivals ``gaps`` seconds apart (the first ``first_s`` after ``began``), each sent at once
        unless ``max_concurrency`` are in flight."""
        tasks: set[asyncio.Task] = set()
        gate = asyncio.Semaphore(self.spec.max_concurrency)
        due = began + first_s

        async def send(index: int, scheduled: float, queued: bool) -> None:
            async with gate:
                await self._one(client, index, scheduled, queued)

        async def arrivals() -> None:
            nonlocal due
            while (index := self._take(began)) is not None:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                queued = gate.locked()
                self.queued += queued
                task = asyncio.create_task(send(index, due, queued))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += next(gaps)

        producer = asyncio.create_task(arrivals())
        await self._until_measured([producer], began, extra=tasks)

    async def _until_measured(self, tasks: list[asyncio.Task], began: float, extra: set | None = None) -> None:
        """Wait until every measured request sent has ended (or the server is gone), then cancel the rest."""
        try:
            while True:
                live = [t for t in tasks if not t.done()]
                if self.fatal is not None:
                    break
                if not live and not extra:
                    break
                if not live and self._all_measured_sent_and_done():
                    break
                if self.measured_done >= self.spec.requests:
                    break
                await asyncio.sleep(0.005)
        finally:
            pending = [t for t in [*tasks, *(extra or ())] if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            errors = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
            if errors:
                raise errors[0]

    async def drive(self) -> float:
        """Send the level's requests on the running event loop (the calls prepared); its start, perf_counter."""
        client = StreamClient(connect_timeout_s=min(CONNECT_TIMEOUT_S, self.deadlines.total_s))
        self._pool = None if self.prepare else ThreadPoolExecutor(max_workers=self.spec.max_concurrency)
        sampler = asyncio.create_task(self._sample_lag())
        with _collector_held():
            return await self._drive(client, sampler)

    async def _drive(self, client, sampler) -> float:
        try:
            self.began = began = time.perf_counter()
            await self.spec.profile.send(self, client, began)
            return began
        finally:
            sampler.cancel()
            self.stamps = dict(client.stamps)
            await client.aclose()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    async def _sample_lag(self) -> None:
        """How late the loop wakes for a timer: time it spends elsewhere (parsing, accounting) delays
        every stream's timestamps by as much."""
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(LAG_SAMPLE_S)
            self.loop_lag_ms.append(max(0.0, (time.perf_counter() - asked - LAG_SAMPLE_S) * 1000))

    def prepare_calls(self) -> None:
        """Every StreamCall built before the clock starts (a backend may start its server or build a body)."""
        if self.prepare is not None:
            for request in [*self.requests, *(p for p in self.primes if p is not None)]:
                self._calls[id(request)] = self.prepare(request)

    def run(self) -> LevelRun:
        """Run the level in this thread's own event loop; a dead server raises after recording.

        Every StreamCall is built first (a backend may start its server or build a body), so nothing
        blocks the loop once streams are open."""
        self.prepare_calls()
        began = asyncio.run(self.drive())
        if self.fatal is not None:
            raise self.fatal
        return LevelRun(self.spec, began, self.outcomes, self.peak_concurrency, self.queued, self.stopped_by,
                        self.loop_lag_ms, self.stamps)
