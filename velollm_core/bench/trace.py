"""Trace replay: ``--trace FILE.jsonl`` sends a recorded arrival pattern again, open loop.

Each line is one request, Mooncake-style: ``{"timestamp": ms, "input_length": tokens,
"output_length": tokens}`` (``input_tokens``/``output_tokens`` are read too). Requests arrive at
their timestamps times ``--time-scale`` (0.5: twice as fast), whatever the server's pace, each with a
prompt of exactly its input tokens (built like a synthetic workload's, with the server's tokenizer or
calibrated) and its output tokens as the fixed answer length. A trace whose timestamps go back, or
whose lengths no model holds, is refused before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_core.bench.profiles import LevelSpec, OpenLoop
from velollm_core.bench.workloads import MAX_TOKENS, MIN_PROMPT_TOKENS, _read_dataset_text
from velollm_core.contract.errors import UserInputError

if TYPE_CHECKING:
    from velollm_core.bench.loadgen import LevelDriver
    from velollm_core.bench.plan import BenchmarkPlan
    from velollm_core.bench.runner import BenchmarkRunner
    from velollm_core.bench.workloads import Workload
    from velollm_core.contract.streamclient import StreamClient

MAX_TRACE_BYTES = 256 << 20
MAX_TRACE_REQUESTS = 100_000
MAX_TIME_SCALE = 1000.0
_KEYS = {"input": ("input_length", "input_tokens", "prompt_tokens"),
         "output": ("output_length", "output_tokens", "completion_tokens")}


@dataclass(frozen=True)
class TraceRecord:
    timestamp_ms: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    """The requests of a trace file, in arrival order: a job the trace profile replays."""

    name: str
    records: tuple[TraceRecord, ...]

    @property
    def prompt_tokens(self) -> int:
        """The longest prompt (what a server's context must hold)."""
        return max(record.input_tokens for record in self.records)

    @property
    def output_tokens(self) -> int:
        return max(record.output_tokens for record in self.records)

    @property
    def context_tokens(self) -> int:
        return max(record.input_tokens + record.output_tokens for record in self.records)

    depth = 0  # no context primed before a request


def _count(record: dict[str, Any], kind: str, where: str) -> int:
    for key in _KEYS[kind]:
        value = record.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserInputError(f"{where}: {key} must be a whole number of tokens, not {value!r}")
            low = MIN_PROMPT_TOKENS if kind == "input" else 1
            if not low <= value <= MAX_TOKENS:
                raise UserInputError(f"{where}: {key} {value} is not a length a request can have "
                                     f"({low} to {MAX_TOKENS:,} tokens)")
            return value
    raise UserInputError(f"{where} has no {' / '.join(_KEYS[kind])}")


def load_trace(path: Path) -> Trace:
    """The trace in ``path``; a line that is not a record, a timestamp that goes back, or an absurd
    length is a UserInputError naming the line."""
    from velollm_core.contract import jsontext

    path = Path(path)
    try:
        text = _read_dataset_text(path, MAX_TRACE_BYTES)
    except FileNotFoundError:
        raise UserInputError(f"--trace {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"--trace {path} cannot be read as UTF-8 text ({exc})") from None
    records: list[TraceRecord] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"--trace {path} line {number}"
        try:
            record = jsontext.loads(line)
        except ValueError:
            raise UserInputError(f"{where} is not JSON: {line[:60]!r}") from None
        if not isinstance(record, dict):
            raise UserInputError(f"{where} is not a JSON object with timestamp, input_length and output_length")
        stamp = record.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 <= stamp < 1e12:
            raise UserInputError(f"{where}: timestamp must be milliseconds from the trace's start, not {stamp!r}")
        if records and stamp < records[-1].timestamp_ms:
            raise UserInputError(f"{where}: timestamp {stamp:g} comes before the previous line's "
                                 f"{records[-1].timestamp_ms:g}; a trace is in arrival order")
        records.append(TraceRecord(float(stamp), _count(record, "input", where), _count(record, "output", where)))
        if len(records) > MAX_TRACE_REQUESTS:
            raise UserInputError(f"--trace {path} holds over {MAX_TRACE_REQUESTS:,} requests; cut it")
    if not records:
        raise UserInputError(f"--trace {path} holds no request")
    return Trace(f"trace:{path.name}", tuple(records))


def check_time_scale(value: float) -> float:
    if not 0 < value <= MAX_TIME_SCALE:
        raise UserInputError(f"--time-scale {value:g} must be above 0 and at most {MAX_TIME_SCALE:g} "
                             "(1: as recorded, 0.5: twice as fast)")
    return value


class TraceReplay(OpenLoop):
    """The trace's arrivals, scaled by ``--time-scale``, one level of all its requests, open loop."""

    name = "trace"

    def __init__(self, trace: Trace, time_scale: float = 1.0) -> None:
        self.trace = trace
        self.time_scale = time_scale

    def levels(self, plan: BenchmarkPlan) -> list[LevelSpec]:
        return [LevelSpec("trace", self, requests=len(self.trace.records), warmup=0,
                          max_concurrency=self.max_concurrency(plan), seed=plan.seed)]

    def check(self, *, rates: Sequence[float], workloads: Sequence[Workload]) -> None:
        if rates or workloads:
            raise UserInputError("--trace replays its own arrivals and lengths: give it without --rate and --workload")

    def cool_down(self, level: LevelSpec) -> int:
        return 0  # the trace ends where it ends

    def gaps(self) -> Iterator[float]:
        stamps = [record.timestamp_ms for record in self.trace.records]
        for earlier, later in pairwise(stamps):
            yield (later - earlier) * self.time_scale / 1000
        while True:  # asked once after the last arrival
            yield 0.0

    async def send(self, driver: LevelDriver, client: StreamClient, began: float) -> None:
        await driver.open_loop(client, began, self.gaps())

    def run_level(self, runner: BenchmarkRunner, job, level: LevelSpec) -> dict[str, Any] | None:
        return runner.run_load(job, level)
