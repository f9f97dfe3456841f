"""Multi-turn conversations (``--turns N``): each turn's prompt is the conversation so far plus a new
user message, as a chat client or an agent sends it, so the server's prefix cache can answer the
history and only the new turn is evaluated.

A ``--dataset`` of conversations (ShareGPT ``conversations``, OpenAI ``messages``) sends each
record's own user turns in order; past them, and for suites, short fixed follow-ups.

Concurrency counts conversations: at ``--concurrency C``, C conversations run at once, each turn sent
when the previous answer has arrived (and ``--think-time`` has passed). Every turn is one run record
with its ``conversation`` and ``turn``; the level entry adds per-turn medians of TTFT and of prompt
tokens, evaluated and answered from the cache where the server says.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from velollm_core.bench.levels import level_entry
from velollm_core.bench.shape import FOLLOW_UPS
from velollm_core.contract.errors import BackendError, ServerGone
from velollm_core.contract.stats import percentile

if TYPE_CHECKING:
    from velollm_core.bench.profiles import LevelSpec
    from velollm_core.bench.runner import BenchmarkRunner
    from velollm_core.contract.schemas import GenerationRequest, RunRecord


def _median(values: list[float | int | None]) -> float | None:
    present = [value for value in values if value is not None]
    return percentile(present, 50) if present else None


def turn_table(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Per turn: how many answered, and the medians of TTFT, prompt tokens and cached prompt tokens."""
    table = []
    for turn in sorted({run.turn for run in runs if run.turn is not None}):
        done = [run for run in runs if run.turn == turn and run.failed is None]
        table.append({"turn": turn, "completed": len(done),
                      "ttft_ms": _median([run.ttft_ms for run in done]),
                      "prompt_tokens": _median([run.prompt_tokens for run in done]),
                      "cached_prompt_tokens": _median([run.cached_prompt_tokens for run in done])})
    return table


class ConversationLevel:
    """One level's conversations of one job, ``streams`` at once, every turn recorded by the runner."""

    def __init__(self, runner: BenchmarkRunner, job, streams: int, spec: LevelSpec | None) -> None:
        self.runner = runner
        self.job = job
        self.streams = streams
        self.spec = spec
        self.lock = threading.Lock()
        self.runs: list[RunRecord] = []
        self.fatal: BaseException | None = None

    def _first_message(self, conversation: int) -> str:
        """The job's prompt behind a line of its own, so no two conversations share a cached prefix."""
        prompt = self.runner.request_builder.pairs(self.job, 1, unique=False, offset=conversation)[0][0].prompt
        return f"Conversation {uuid.uuid4().hex[:8]}.\n{prompt}"

    def _request(self, message: str, history: list[dict[str, str]]) -> GenerationRequest:
        request = self.runner.request_builder.request(self.job, message)
        return request.model_copy(update={"history": list(history), "cache_prompt": True, "chat": True})

    def _later_messages(self, conversation: int) -> tuple[str, ...]:
        """The user turns after the first: a dataset conversation's own, then the fixed follow-ups."""
        from velollm_core.bench.workloads import Dataset

        own = self.job.later_turns(conversation, self.runner.plan.seed) if isinstance(self.job, Dataset) else ()
        count = self.runner.plan.shape.turns - 1
        return (*own, *(FOLLOW_UPS[i % len(FOLLOW_UPS)] for i in range(max(0, count - len(own)))))[:count]

    def conversation(self, number: int, *, measured: bool) -> None:
        """One conversation's turns, each recorded (``measured``) or only sent (warm-up)."""
        plan = self.runner.plan
        history: list[dict[str, str]] = []
        message = self._first_message(number)
        later = self._later_messages(number)
        for turn in range(1, (plan.shape.turns if measured else 1) + 1):
            if self.fatal is not None:
                return
            request = self._request(message, history)
            fields: dict[str, Any] = {"conversation": number, "turn": turn}
            if self.spec is not None:
                fields.update(level=self.spec.key, profile=self.spec.profile.name)
            try:
                timing = self.runner._generate(request)
            except ServerGone as exc:
                self.fatal = exc
                return
            except BackendError as exc:
                if self.spec is None:  # a sequential level stops at a failure, as a single request does
                    self.fatal = exc
                    return
                from velollm_core.contract.schemas import GenerationTiming

                with self.lock:
                    self.runs.append(self.runner._record(GenerationTiming(), self.job, number, self.streams,
                                                         request, failed=str(exc)[:200], **fields))
                return
            if measured:
                with self.lock:
                    record = self.runner._record(timing, self.job, number, self.streams, request, **fields)
                    self.runs.append(record)
                    self.runner.save()
                    if self.runner.result.environment.backend is None:
                        self.runner._describe_backend()
                    self.runner.on_run(f"{self.job.name} conversation {number} turn {turn}", record)
            else:
                self.runner.on_run(f"{self.job.name} warm-up", None)
            answer = timing.text or "".join(call.get("arguments", "") for call in timing.tool_calls)
            history += [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
            message = later[turn - 1] if turn - 1 < len(later) else ""
            if turn < plan.shape.turns and plan.shape.think_time_s:
                time.sleep(plan.shape.think_time_s)

    def run(self, conversations: int, warmup: int) -> dict[str, Any]:
        for number in range(warmup):
            self.conversation(-1 - number, measured=False)
        numbers = itertools.count(1)
        take = threading.Lock()

        def worker() -> None:
            while self.fatal is None:
                with take:
                    number = next(numbers)
                if number > conversations:
                    return
                self.conversation(number, measured=True)

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.streams) as pool:
            for future in [pool.submit(worker) for _ in range(self.streams)]:
                future.result()
        window = time.perf_counter() - began
        if self.fatal is not None:
            self.runner.save()
            raise self.fatal
        key = self.spec.key if self.spec is not None else "seq"
        profile = self.spec.profile.name if self.spec is not None else "sequential"
        entry = level_entry(key=key, profile=profile, workload=self.job.name, runs=self.runs,
                            window_s=window if self.spec is not None else None, concurrency=self.streams,
                            peak_concurrency=self.streams, slo=self.runner.plan.slo)
        entry["conversations"] = conversations
        entry["turns"] = turn_table(self.runs)
        self.runner._add_level(entry)
        return entry


def run_conversations(runner: BenchmarkRunner, job, spec: LevelSpec | None = None) -> dict[str, Any]:
    """``job`` as conversations: at the sequential level ``--iterations`` of them one after another,
    at a concurrent level ``--requests`` (or iterations x C) with C at once."""
    plan = runner.plan
    if spec is None:
        return ConversationLevel(runner, job, 1, None).run(plan.iterations, plan.warmup)
    streams = spec.concurrency or 1
    return ConversationLevel(runner, job, streams, spec).run(spec.requests, min(plan.warmup, 1))
