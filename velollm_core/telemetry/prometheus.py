"""Server metrics: the Prometheus text exposition format, and what llama-server, vLLM and SGLang call things.

The format (https://prometheus.io/docs/instrumenting/exposition_formats/, version 0.0.4) is one sample
per line: ``name{label="value",...} value [timestamp]``, with ``# HELP`` / ``# TYPE`` comments. We read
it ourselves rather than depend on ``prometheus_client`` for one function: the grammar is a line, and
the servers we read (llama-server, vLLM, SGLang) write plain samples.

``server_figures`` maps each server's names onto one vocabulary (``COUNTERS`` and ``GAUGES``), so the
rest of VeloLLM asks for ``generated_tokens`` and never for ``llamacpp:tokens_predicted_total``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Counters: a run's figure is the difference between two scrapes. Each canonical name lists the
# names servers use for it; the first one present wins. Names from llama.cpp's
# tools/server/server-task.cpp (to_metrics), vLLM's docs/design/metrics.md and SGLang's
# production_metrics page.
COUNTERS: dict[str, tuple[str, ...]] = {
    "prompt_tokens": ("llamacpp:prompt_tokens_total", "vllm:prompt_tokens_total", "sglang:prompt_tokens_total"),
    "prompt_tokens_cached": ("llamacpp:prompt_tokens_cached_total", "vllm:prefix_cache_hits_total",
                             "sglang:cached_tokens_total"),
    "prompt_seconds": ("llamacpp:prompt_seconds_total",),
    "generated_tokens": ("llamacpp:tokens_predicted_total", "vllm:generation_tokens_total",
                         "sglang:generation_tokens_total"),
    "generation_seconds": ("llamacpp:tokens_predicted_seconds_total",),
    "decode_calls": ("llamacpp:n_decode_total",),
    "requests": ("vllm:request_success_total", "sglang:num_requests_total"),
    "preemptions": ("vllm:num_preemptions_total",),
    "drafts": ("llamacpp:spec_decode_num_drafts_total", "vllm:spec_decode_num_drafts_total"),
    "draft_tokens": ("llamacpp:spec_decode_num_draft_tokens_total", "vllm:spec_decode_num_draft_tokens_total"),
    "accepted_tokens": ("llamacpp:spec_decode_num_accepted_tokens_total",
                        "vllm:spec_decode_num_accepted_tokens_total"),
}
# Counters with one series per draft position (label ``position``).
ACCEPTED_PER_POSITION = ("llamacpp:spec_decode_num_accepted_tokens_per_pos_total",
                         "vllm:spec_decode_num_accepted_tokens_per_pos_total")

# Gauges: read while the load runs (mean and peak over a level). "ratio" gauges are 0..1 fractions
# (vLLM's *_perc too, despite the name), taken as the largest over label sets; the others are summed
# (requests running on two engines add up).
GAUGES: dict[str, tuple[str, ...]] = {
    "requests_running": ("llamacpp:requests_processing", "vllm:num_requests_running", "sglang:num_running_reqs"),
    "requests_waiting": ("llamacpp:requests_deferred", "vllm:num_requests_waiting", "sglang:num_queue_reqs"),
    "kv_cache_usage": ("llamacpp:kv_cache_usage_ratio", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc",
                       "sglang:token_usage"),
    "generation_tokens_per_s": ("llamacpp:predicted_tokens_seconds", "sglang:gen_throughput"),
    "prompt_tokens_per_s": ("llamacpp:prompt_tokens_seconds",),
    "busy_slots_per_decode": ("llamacpp:n_busy_slots_per_decode",),
    "longest_sequence_tokens": ("llamacpp:n_tokens_max", "llamacpp:n_past_max"),
    "spec_accept_length": ("sglang:spec_accept_length",),
}
RATIO_GAUGES = {"kv_cache_usage"}
FLAVORS = {"llamacpp": "llama.cpp", "vllm": "vLLM", "sglang": "SGLang"}


class MetricsFormatError(ValueError):
    """A line that is not a Prometheus sample."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


@dataclass
class Exposition:
    """One scrape: its samples and the ``# TYPE`` of each metric family."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)

    def values(self, name: str) -> list[Sample]:
        return [sample for sample in self.samples if sample.name == name]

    def flavor(self) -> str | None:
        """Which server wrote it, from its metric names' prefix: "llama.cpp", "vLLM", "SGLang" or None."""
        for sample in self.samples:
            prefix = sample.name.split(":", 1)[0]
            if prefix in FLAVORS:
                return FLAVORS[prefix]
        return None


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _value(text: str, line: str) -> float:
    try:
        return float(text)  # float() reads NaN, +Inf, -Inf and 1.5e+06 as the format writes them
    except ValueError:
        raise MetricsFormatError(f"not a number {text!r} in {line!r}") from None


def _labels(text: str, start: int, line: str) -> tuple[tuple[tuple[str, str], ...], int]:
    """The label set opening at ``text[start] == '{'``; returns it and the index after its ``}``."""
    labels: list[tuple[str, str]] = []
    i = start + 1
    while True:
        while i < len(text) and text[i] in " ,":
            i += 1
        if i < len(text) and text[i] == "}":
            return tuple(labels), i + 1
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= len(text) or text[eq + 1] != '"':
            raise MetricsFormatError(f"bad label set in {line!r}")
        key = text[i:eq].strip()
        value: list[str] = []
        j = eq + 2
        while j < len(text) and text[j] != '"':
            if text[j] == "\\" and j + 1 < len(text):
                value.append(_ESCAPES.get(text[j + 1], "\\" + text[j + 1]))
                j += 2
            else:
                value.append(text[j])
                j += 1
        if j >= len(text):
            raise MetricsFormatError(f"unterminated label value in {line!r}")
        labels.append((key, "".join(value)))
        i = j + 1


def parse(text: str) -> Exposition:
    """Every sample of a Prometheus text exposition; a malformed line raises MetricsFormatError."""
    out = Exposition()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3].strip()
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _labels(line, brace, line)
            rest = line[end:].split()
        else:
            name, labels, rest = line.split()[0], (), line.split()[1:]
        if not rest or len(rest) > 2:
            raise MetricsFormatError(f"expected a value (and an optional timestamp) in {line!r}")
        out.samples.append(Sample(name, labels, _value(rest[0], line)))
    return out


def _total(exposition: Exposition, names: tuple[str, ...], largest: bool = False) -> float | None:
    """The first of ``names`` present, summed (or the largest) over its label sets; NaN is skipped."""
    for name in names:
        values = [s.value for s in exposition.values(name) if not math.isnan(s.value)]
        if values:
            return max(values) if largest else sum(values)
    return None


@dataclass
class ServerFigures:
    """One scrape in our vocabulary: counters, gauges, and accepted draft tokens per position."""

    flavor: str | None
    counters: dict[str, float]
    gauges: dict[str, float]
    accepted_per_position: dict[int, float]


def server_figures(exposition: Exposition) -> ServerFigures:
    """The figures of ``COUNTERS`` and ``GAUGES`` that this scrape holds (absent names are left out)."""
    counters = {key: v for key, names in COUNTERS.items() if (v := _total(exposition, names)) is not None}
    gauges = {key: v for key, names in GAUGES.items()
              if (v := _total(exposition, names, largest=key in RATIO_GAUGES)) is not None}
    per_position: dict[int, float] = {}
    for name in ACCEPTED_PER_POSITION:
        for sample in exposition.values(name):
            position = sample.label("position")
            if position is not None and position.isdigit():
                per_position[int(position)] = per_position.get(int(position), 0.0) + sample.value
        if per_position:
            break
    return ServerFigures(exposition.flavor(), counters, gauges, per_position)


def counter_deltas(before: ServerFigures, after: ServerFigures) -> dict[str, float]:
    """``after - before`` for each counter both scrapes hold; a counter that went down (the server
    restarted between them) is left out rather than reported negative."""
    return {key: after.counters[key] - before.counters[key] for key in after.counters
            if key in before.counters and after.counters[key] >= before.counters[key]}


def position_deltas(before: ServerFigures, after: ServerFigures) -> dict[int, float]:
    return {pos: value - before.accepted_per_position.get(pos, 0.0)
            for pos, value in sorted(after.accepted_per_position.items())}
