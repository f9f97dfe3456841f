"""Server metrics: the Prometheus text exposition format, read into the generic keys a backend maps.

The format (https://prometheus.io/docs/instrumenting/exposition_formats/, version 0.0.4) is one sample
per line: ``name{label="value",...} value [timestamp]``, with ``# HELP`` / ``# TYPE`` comments. We read
it ourselves rather than depend on ``prometheus_client`` for one function: the grammar is a line, and
the servers we read write plain samples.

``server_figures`` maps a server's names onto the generic keys (``velollm_core.contract.metricnames``)
through the ``MetricNames`` its backend declares (``Capabilities.metrics``), so the rest of VeloLLM
asks for ``generated_tokens`` and never for a server's own name; the names live in the backends' plugins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from velollm_core.contract.metricnames import COUNTER_KEYS, GAUGE_KEYS, RATIO_GAUGE_KEYS, MetricNames

__all__ = ["COUNTER_KEYS", "GAUGE_KEYS", "Exposition", "MetricsFormatError", "Sample", "ServerFigures",
           "counter_deltas", "parse", "position_deltas", "server_figures"]


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

    def flavor(self, flavors: dict[str, str]) -> str | None:
        """Which server wrote it, from its metric names' prefix (``MetricNames.flavors``), or None."""
        for sample in self.samples:
            prefix = sample.name.split(":", 1)[0]
            if prefix in flavors:
                return flavors[prefix]
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


def server_figures(exposition: Exposition, names: MetricNames) -> ServerFigures:
    """The generic counters and gauges this scrape holds, by ``names`` (absent ones are left out)."""
    counters = {key: v for key, options in names.counters.items() if (v := _total(exposition, options)) is not None}
    gauges = {key: v for key, options in names.gauges.items()
              if (v := _total(exposition, options, largest=key in RATIO_GAUGE_KEYS)) is not None}
    per_position: dict[int, float] = {}
    for name in names.accepted_per_position:
        for sample in exposition.values(name):
            position = sample.label("position")
            if position is not None and position.isdigit():
                per_position[int(position)] = per_position.get(int(position), 0.0) + sample.value
        if per_position:
            break
    return ServerFigures(exposition.flavor(dict(names.flavors)), counters, gauges, per_position)


def counter_deltas(before: ServerFigures, after: ServerFigures) -> dict[str, float]:
    """``after - before`` for each counter both scrapes hold; a counter that went down (the server
    restarted between them) is left out rather than reported negative."""
    return {key: after.counters[key] - before.counters[key] for key in after.counters
            if key in before.counters and after.counters[key] >= before.counters[key]}


def position_deltas(before: ServerFigures, after: ServerFigures) -> dict[int, float]:
    return {pos: value - before.accepted_per_position.get(pos, 0.0)
            for pos, value in sorted(after.accepted_per_position.items())}
