"""The mock's schedule: one generation's tokens on ``loop.call_at`` callbacks, the slots (llama-server's
``--parallel``: a request beyond them waits), the prefix cache, and the counters of its own account.

Why not a thread per stream: the point is holding 1,000+ streams on a 2-core machine while a load
generator runs beside it, so every token is one ``loop.call_at`` callback and one socket write, and
token texts are encoded once.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import random
import time
from typing import Any, Protocol

from velollm_testkit.mock.config import MockConfig
from velollm_testkit.mock.tokenizer import ANSWER, Tokenizer
from velollm_testkit.mock.wire import Format, Plan

BUCKET_S = 1e-4  # the time histograms' resolution (lateness, gaps): 0.1 ms
BUCKETS = 20_000  # up to 2 s; later times all count in the last bucket


class Stream(Protocol):
    """Where a generation writes: one HTTP connection (``server.Connection``)."""

    def start_stream(self, status: int, content_type: str) -> None: ...
    def write_chunk(self, data: bytes) -> None: ...
    def end_stream(self) -> None: ...
    def send_json(self, status: int, data: Any) -> None: ...


class Generation:
    """One request's tokens, each written at its scheduled time by a ``loop.call_at`` callback."""

    def __init__(self, server: Scheduler, conn: Stream, plan: Plan, body: dict[str, Any],
                 format_cls: type[Format]) -> None:
        self.server, self.conn, self.plan, self.body = server, conn, plan, body
        self.model = body.get("model") if isinstance(body.get("model"), str) else server.config.model
        self.number = next(server.numbers)
        self.t_arrived = server.loop.time()
        self.t_slot = self.t_first = self.t_last = 0.0
        self.slot = -1
        self.cache_n = 0
        self.emitted = 0
        self.due = 0.0
        self.handle: asyncio.TimerHandle | None = None
        self.done = False
        self.format_cls = format_cls
        self.format: Format | None = None

    def start(self, slot: int) -> None:
        """A slot is free: prefill, then the first token."""
        server = self.server
        self.slot = slot
        self.t_slot = server.loop.time()
        self.cache_n = server.cache.lookup(self.plan.prompt) if self.plan.cache_allowed else 0
        server.cache.store(self.plan.prompt)
        self.format = self.format_cls(self)
        if self.plan.stream:
            self.conn.start_stream(200, self.format.content_type)
        config = server.config
        uncached = len(self.plan.prompt) - self.cache_n
        prefill_s = config.prefill_ms_per_token * uncached / 1000
        self.due = self.t_slot + config.ttft_ms / 1000 + prefill_s
        if config.prefill_stalls and prefill_s > 0:
            server.stall_others(self, prefill_s)
        if self.plan.n_out == 0:
            self.handle = server.loop.call_at(self.due, self.finish)
        else:
            self.handle = server.loop.call_at(self.due, self.emit)

    def emit(self) -> None:
        server = self.server
        now = server.loop.time()
        server.stats.lag.add(now - self.due)
        index = self.emitted
        if index == 0:
            self.t_first = now
        else:
            server.stats.gaps.add(now - self.t_last)
        self.t_last = now
        self.emitted += 1
        if self.plan.stream:
            if self.plan.script is not None:
                kind, piece = self.plan.script[index]
                self.conn.write_chunk(self.format.scripted(index, kind, piece))
            else:
                piece_json, token = server.answer[index % len(server.answer)]
                self.conn.write_chunk(self.format.token(index, piece_json, token))
        if self.emitted >= self.plan.n_out:
            self.finish()
            return
        self.due += server.gap()
        self.handle = server.loop.call_at(self.due, self.emit)

    def finish(self) -> None:
        server = self.server
        self.done = True
        self.handle = None
        server.stats.finished(self)
        if self.plan.stream:
            self.conn.write_chunk(self.format.final())
            self.conn.end_stream()
        else:
            self.conn.send_json(200, self.format.whole())
        server.release(self)

    def postpone(self, seconds: float) -> None:
        """Move this stream's next event ``seconds`` later (another request's prefill holds the engine)."""
        if self.handle is None or self.done:
            return
        self.handle.cancel()
        self.due += seconds
        self.handle = self.server.loop.call_at(self.due, self.emit if self.plan.n_out else self.finish)

    def kv_cells(self) -> int:
        """KV cache cells this generation holds now: its prompt and what it has generated."""
        return len(self.plan.prompt) + self.emitted

    def cancel(self) -> None:
        """The client went away mid-stream."""
        if self.done:
            return
        self.done = True
        if self.handle is not None:
            self.handle.cancel()
        self.server.stats.cancelled += 1
        self.server.release(self)

    def tokens(self) -> list[int]:
        answer = self.server.answer
        return [answer[i % len(answer)][1] for i in range(self.emitted)]

    def text(self) -> str:
        if self.plan.script is not None:
            return "".join(piece for kind, piece in self.plan.script[:self.emitted] if kind == "answer")
        tokenizer = self.server.tokenizer
        return "".join(tokenizer.piece(token) for token in self.tokens())


class PrefixCache:
    """The last prompts seen (llama-server keeps one per slot): the longest shared prefix."""

    def __init__(self, size: int) -> None:
        self.prompts: collections.deque[tuple[int, ...]] = collections.deque(maxlen=size)

    def lookup(self, prompt: list[int]) -> int:
        best = 0
        wanted = tuple(prompt)
        for seen in self.prompts:
            # Binary search on the prefix length: each comparison is one C-level tuple compare.
            low, high = best, min(len(seen), len(wanted))
            if high <= best or seen[:best + 1] != wanted[:best + 1]:
                continue
            while low < high:
                mid = (low + high + 1) // 2
                if seen[:mid] == wanted[:mid]:
                    low = mid
                else:
                    high = mid - 1
            best = low
        # The last prompt token is always evaluated again: its logits give the first output token.
        return min(best, max(len(prompt) - 1, 0))

    def store(self, prompt: list[int]) -> None:
        self.prompts.append(tuple(prompt))


class Histogram:
    """Times in 0.1 ms buckets up to 2 s (later ones in the last): cheap to add on the hot path (one
    list index), mergeable across mock processes, quantiles as bucket upper edges."""

    def __init__(self) -> None:
        self.counts = [0] * (BUCKETS + 1)
        self.n = 0
        self.sum = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.n += 1
        self.sum += seconds
        self.max = max(self.max, seconds)
        self.counts[min(int(seconds / BUCKET_S), BUCKETS)] += 1

    def quantile(self, q: float) -> float:
        if not self.n:
            return 0.0
        wanted = q * self.n
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= wanted:
                return (index + 1) * BUCKET_S  # the bucket's upper edge: never flatters the mock
        return self.max

    def account(self) -> dict[str, Any]:
        """In milliseconds: the sparse histogram (what merges) and its summary."""
        return {"histogram": {"bucket_ms": BUCKET_S * 1000, "n": self.n,
                              "counts": {str(i): c for i, c in enumerate(self.counts) if c},  # merge exactly
                              "max_ms": self.max * 1000, "sum_ms": self.sum * 1000},
                "ms": {"mean": self.sum / self.n * 1000 if self.n else 0.0, "p50": self.quantile(0.5) * 1000,
                       "p99": self.quantile(0.99) * 1000, "max": self.max * 1000}}


class Stats:
    """Counters for /metrics and /mock/stats. ``lag``: how late each token left against its due time;
    ``gaps``: the time between a stream's consecutive tokens as the mock sent them (the truth a
    client's inter-token latencies are checked against)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lag = Histogram()
        self.gaps = Histogram()
        self.started = self.completed = self.cancelled = self.failed = self.queued_max = self.active_max = 0
        self.accepted = 0  # connections opened: a client that reuses its connections opens few
        self.prompt_tokens = self.prompt_cached = 0
        self.prompt_seconds = self.predicted_seconds = 0.0
        self.n_tokens_max = 0
        self.cpu_start = time.process_time()
        self.wall_start = time.monotonic()

    @property
    def tokens(self) -> int:
        return self.lag.n

    def finished(self, gen: Generation) -> None:
        self.completed += 1
        self.prompt_tokens += len(gen.plan.prompt) - gen.cache_n
        self.prompt_cached += gen.cache_n
        if gen.t_first:
            self.prompt_seconds += gen.t_first - gen.t_slot
            self.predicted_seconds += gen.t_last - gen.t_first
        self.n_tokens_max = max(self.n_tokens_max, len(gen.plan.prompt) + gen.emitted)


class Scheduler:
    """The model's side of the mock: tokenizer, answer, slots, queue, prefix cache, counters.
    Created inside the running event loop."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.tokenizer = Tokenizer(config.vocab_size)
        # Each answer word's text as a JSON string and its id, encoded once for every stream.
        self.answer = [(json.dumps(f" {w}"), self.tokenizer.id_of(f" {w}")) for w in ANSWER]
        self.numbers = iter(range(1, 1 << 62))
        self.stats = Stats()
        self.cache = PrefixCache(max(config.slots, 16))
        self.active: set[Generation] = set()
        self.waiting: collections.deque[Generation] = collections.deque()
        self.free_slots: list[int] = []
        self.next_slot = 0
        self.random = random.Random(config.seed)

    def gap(self) -> float:
        config = self.config
        if not config.jitter_ms:
            return config.itl_ms / 1000
        return max(config.itl_ms + self.random.uniform(-config.jitter_ms, config.jitter_ms), 0.0) / 1000

    def _fits(self, gen: Generation) -> bool:
        """A free slot, and room in the KV cache for every running request's whole answer and ``gen``'s."""
        config = self.config
        if config.slots and len(self.active) >= config.slots:
            return False
        if not config.kv_cache_tokens or not self.active:
            return True
        reserved = sum(len(g.plan.prompt) + g.plan.n_out for g in self.active)
        return reserved + len(gen.plan.prompt) + gen.plan.n_out <= config.kv_cache_tokens

    def kv_cache_usage(self) -> float | None:
        """Cells in use / cells (llama-server's kv_cache_usage_ratio); None without a KV limit."""
        if not self.config.kv_cache_tokens:
            return None
        return min(sum(g.kv_cells() for g in self.active) / self.config.kv_cache_tokens, 1.0)

    def stall_others(self, gen: Generation, seconds: float) -> None:
        """Every other running stream waits while ``gen``'s prompt is processed."""
        for other in self.active:
            if other is not gen:
                other.postpone(seconds)

    def submit(self, gen: Generation) -> None:
        """Start ``gen`` in a free slot, or queue it ("deferred") while every slot is busy or the KV cache full."""
        self.stats.started += 1
        if self.waiting or not self._fits(gen):
            self.waiting.append(gen)
            self.stats.queued_max = max(self.stats.queued_max, len(self.waiting))
            return
        self._run(gen)

    def _run(self, gen: Generation) -> None:
        self.active.add(gen)
        self.stats.active_max = max(self.stats.active_max, len(self.active))
        if self.free_slots:
            slot = heapq.heappop(self.free_slots)
        else:
            slot, self.next_slot = self.next_slot, self.next_slot + 1
        gen.start(slot)

    def release(self, gen: Generation) -> None:
        if gen in self.active:
            self.active.discard(gen)
            heapq.heappush(self.free_slots, gen.slot)
        else:
            try:
                self.waiting.remove(gen)
            except ValueError:
                pass
        while self.waiting and self._fits(self.waiting[0]):
            self._run(self.waiting.popleft())
