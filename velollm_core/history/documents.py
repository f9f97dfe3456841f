"""Result documents from outside (a file, a history row, a finished run about to be recorded): read,
parsed and validated one way, whoever asks: ``history import``, the history's own writes,
``compare``, ``report`` and ``share``.

A document passes when its JSON is well formed and at most MAX_DEPTH levels deep, every number is
finite and fits 64 bits, every text is valid Unicode (no lone surrogate), its ``schema_version`` (absent
in files written before results carried one) is one this VeloLLM reads, it has the shape of its kind's
model in pydantic's strict JSON mode (so exactly what the published JSON Schema, generated from the same
model, accepts: no "3" for an integer), and no run or summary holds a negative measurement or one beyond
what any benchmark measures (``contract.wire.MAX_MEASUREMENT``). Each failure is one UserInputError
sentence naming the place. ``plausibility`` then flags, without refusing, what physics says is
unlikely: a decode rate above the result's own memory-bandwidth roofline by more than a margin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import SCHEMA_VERSIONS, BenchmarkResult
from velollm_core.contract.schemas.base import VeloModel, schema_version_field
from velollm_core.contract.wire import (
    MAX_MEASUREMENT,
    MIN_MEASUREMENT,
    WIRE_LIMIT,
    shown_number,
    within_measurement,
)
from velollm_core.history.summary import METRICS

# A result file VeloLLM writes nests a handful of levels; json's recursive parser gives up with a
# RecursionError near 1000, and anything this deep is no result of ours anyway.
MAX_DEPTH = 64
KINDS = ("benchmark", "speculative", "verify")
# A decode median this much above the result's own roofline is flagged: the bandwidth is measured (a
# copy benchmark, a vendor's figure) and the bytes per token estimated, so a few percent over proves
# nothing, but a quarter over means a wrong model size, a cached answer or a speculating server.
ROOFLINE_MARGIN = 0.25


class SpeculativeDocument(VeloModel):
    """``velollm speculative bench``'s result: a benchmark per side, the figures that compare them."""

    schema_version: int = schema_version_field("speculative")
    status: Literal["running", "complete", "interrupted", "failed"] | None = None
    target: str | None = None
    draft: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    vanilla: BenchmarkResult
    speculative: BenchmarkResult
    others: dict[str, BenchmarkResult] = Field(default_factory=dict)
    per_suite: dict[str, Any] = Field(default_factory=dict)
    speedup: float | None = None
    acceptance_rate: float | None = None


class VerifyCandidate(VeloModel):
    name: str
    args: list[str] = Field(default_factory=list)
    decode_tokens_per_s: list[float | None] = Field(default_factory=list)
    prompt_tokens_per_s: list[float | None] = Field(default_factory=list)
    error: str | None = None


class VerifyFinal(VeloModel):
    args: list[str] = Field(default_factory=list)
    measured_as: str | None = None
    vs_defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)


class VerifyDocument(VeloModel):
    """``velollm optimize --verify``'s result: each candidate's rounds, each change's verdict, the final setting."""

    schema_version: int = schema_version_field("verify")
    runtime: str | None = None
    model: str | None = None
    candidates: list[VerifyCandidate]
    changes: list[dict[str, Any]]
    final: VerifyFinal
    notes: list[str] = Field(default_factory=list)


def kind_of(document: Any) -> str | None:
    """benchmark, speculative, verify or detect by the document's top-level keys; None for anything else."""
    if not isinstance(document, dict):
        return None
    if {"vanilla", "speculative"} <= document.keys():
        return "speculative"
    if {"runs", "settings"} <= document.keys():
        return "benchmark"
    if {"candidates", "changes", "final"} <= document.keys():
        return "verify"
    if {"os", "cpu", "memory"} <= document.keys():
        return "detect"
    return None


def read_document(path: Path) -> tuple[str, object]:
    """(text, parsed JSON) of a result file; a UserInputError when it is missing, unreadable, not JSON,
    nested too deep or holds a value no result holds (see ``check_values``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"result file not found: {path}") from None
    except OSError as exc:
        raise UserInputError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # bytes that are not UTF-8
        raise UserInputError(f"{path} is not valid JSON: {exc}") from None
    return text, parse_document(text, path)


def parse_document(text: str, name: Path | str) -> object:
    """The JSON of ``text``, checked by ``check_values``."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserInputError(f"{name} nests JSON too deeply to be a VeloLLM result") from None
    except ValueError as exc:  # malformed JSON
        raise UserInputError(f"{name} is not valid JSON: {exc}") from None
    check_values(data, name)
    return data


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: json reads "\ud800" without a word
        return False
    return True


def check_text(value: str | None, what: str) -> None:
    """Refuse a text no database or file holds: a lone surrogate, as json reads "\\ud800" and Python
    reads command-line bytes that are not UTF-8 ('\\udcff')."""
    if value is not None and not _valid_text(value):
        raise UserInputError(f"{what} {value!a} is not valid Unicode text (bytes that are not UTF-8?)")


def _json_problem(value: object) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"has {value}"
    if isinstance(value, str) and not _valid_text(value):
        return "has text that is not valid Unicode (a lone surrogate)"
    return None


def _integer_problem(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= WIRE_LIMIT:
        return f"has {shown_number(value)}, beyond 64 bits,"
    return None


def check_values(data: object, name: Path | str, problem: Callable[[object], str | None] = _json_problem) -> None:
    """Refuse NaN and infinities (json reads ``NaN`` and ``1e999`` without a word), lone surrogates in
    texts or keys (or what ``problem`` names), and nesting deeper than MAX_DEPTH; iterative, so depth
    itself cannot crash it."""
    stack: list[tuple[object, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            top = where.split(".")[0].split("[")[0]
            raise UserInputError(f"{name} nests JSON more than {MAX_DEPTH} levels deep (under {top!r}): "
                                 "not a VeloLLM result")
        found = problem(value)
        if found is not None:
            raise UserInputError(f"{name} {found} at {ascii(where)[1:-1] or 'its top level'}, which no "
                                 "VeloLLM result holds")
        if isinstance(value, dict):
            for key in value:
                if not _valid_text(key):
                    raise UserInputError(f"{name} has a key that is not valid Unicode (a lone surrogate) "
                                         f"under {ascii(where)[1:-1] or 'its top level'}")
            items = [(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        stack.extend((v, w, depth + 1) for v, w in reversed(items))  # reversed: the first one is seen first


def check_measurements(result: BenchmarkResult, name: Path | str, side: str = "") -> None:
    """Refuse a metric no benchmark could have measured in a run or a summary (see ``MAX_MEASUREMENT``)."""
    for i, run in enumerate(result.runs):
        for metric in METRICS:
            value = getattr(run, metric)
            if value is not None and (value < 0 or not within_measurement(value)):
                raise UserInputError(
                    f"{name} has {metric} = {shown_number(value)} in {side}runs[{i}], beyond any measurement (a "
                    f"nonzero value lies within {MIN_MEASUREMENT:g}..{MAX_MEASUREMENT:g}): not a VeloLLM result"
                )
    # A summary's statistics of such runs stay below the same bound (a stdev may be tinier than any run).
    for suite, metrics in result.summary.items():
        for metric, stats in metrics.items():
            for stat in ("mean", "median", "stdev", "min", "max"):
                value = getattr(stats, stat)
                if value < 0:
                    raise UserInputError(f"{name} has {shown_number(value)} as the {stat} of {metric} in "
                                         f"{side}summary[{suite!r}]: no measurement is negative")
                if not abs(value) <= MAX_MEASUREMENT:
                    raise UserInputError(f"{name} has {shown_number(value)} as the {stat} of {metric} in "
                                         f"{side}summary[{suite!r}], beyond any measurement: not a VeloLLM result")


def _validation_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, as 'field: message'."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))


def check_schema_version(data: dict, name: Path | str, kind: str) -> None:
    """Refuse a document that follows a newer schema of its kind than this VeloLLM publishes (a file
    without ``schema_version`` predates versioning and is read as the current schema allows)."""
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSIONS[kind]:
        raise UserInputError(f"{name} follows the {kind} result schema v{version}, newer than this VeloLLM reads "
                             f"(up to v{SCHEMA_VERSIONS[kind]}): upgrade velollm to read it")


def _validated(model: type[VeloModel], data: dict, name: Path | str, kind: str) -> Any:
    """``data`` as ``model``, validated as the published schema validates: pydantic's strict JSON mode
    takes a JSON integer for a number but no text for either, and no number for a text."""
    check_schema_version(data, name, kind)
    try:
        return model.model_validate_json(json.dumps(data, allow_nan=False), strict=True)
    except ValidationError as exc:
        raise UserInputError(f"{name} is not a VeloLLM {kind} result ({_validation_problem(exc)})") from None


def benchmark_result(data: object, name: Path | str) -> BenchmarkResult:
    """A parsed, checked document as a BenchmarkResult: a UserInputError when it is no benchmark result
    (a speculative bench, another JSON) or holds numbers no benchmark measured."""
    if not isinstance(data, dict):
        raise UserInputError(f"{name} is not a VeloLLM benchmark result: it holds a JSON {type(data).__name__}, "
                             "not an object")
    if {"vanilla", "speculative"} <= data.keys():
        raise UserInputError(f"{name} is a speculative bench (vanilla vs speculative in one file), not a "
                             "benchmark: `velollm report` shows it")
    if kind_of(data) == "verify":
        raise UserInputError(f"{name} is a verification (velollm optimize --verify), not a benchmark: "
                             "`velollm report` shows it")
    if kind_of(data) == "detect":
        raise UserInputError(f"{name} is a hardware report (velollm detect), not a benchmark")
    result = _validated(BenchmarkResult, data, name, "benchmark")
    check_measurements(result, name)
    # Last, so a run's measurement is named as such: any other integer beyond 64 bits fits no database column.
    check_values(data, name, _integer_problem)
    return result


def validate_document(data: object, name: Path | str, kind: str | None = None) -> str:
    """The kind of a parsed result document (``kind``, or read from its keys) once it passes its kind's
    model and the measurement bounds; one UserInputError sentence otherwise."""
    kind = kind or kind_of(data)
    if kind == "detect":
        raise UserInputError(f"{name} is a hardware report (velollm detect), not a benchmark, speculative bench "
                             "or verification result")
    if kind not in KINDS or not isinstance(data, dict):
        raise UserInputError(f"{name} is not a VeloLLM benchmark, speculative bench or verification result")
    if kind == "benchmark":
        benchmark_result(data, name)
        return kind
    document = _validated(SpeculativeDocument if kind == "speculative" else VerifyDocument, data, name, kind)
    if isinstance(document, SpeculativeDocument):
        sides = {"vanilla": document.vanilla, "speculative": document.speculative, **document.others}
        for side, result in sides.items():
            check_measurements(result, name, f"{side}.")
    check_values(data, name, _integer_problem)
    return kind


def hardware_report(data: object, name: Path | str) -> Any:
    """A parsed, checked ``velollm detect`` document as a HardwareReport; one sentence when it is none."""
    from velollm_core.contract.schemas import HardwareReport

    if not isinstance(data, dict):
        raise UserInputError(f"{name} is not a VeloLLM hardware report: it holds a JSON {type(data).__name__}")
    report = _validated(HardwareReport, data, name, "detect")
    check_values(data, name, _integer_problem)
    return report


def _roofline_flags(result: dict, where: str) -> list[str]:
    roofline = result.get("roofline")
    if not isinstance(roofline, dict) or not isinstance(roofline.get("suites"), dict):
        return []
    flags = []
    for suite, entry in roofline["suites"].items():
        limit = entry.get("max_decode_tokens_per_s") if isinstance(entry, dict) else None
        stats = (result.get("summary") or {}).get(suite, {}).get("decode_tokens_per_s")
        median = stats.get("median") if isinstance(stats, dict) else None
        if not isinstance(limit, (int, float)) or not isinstance(median, (int, float)) or limit <= 0:
            continue
        if median > limit * (1 + ROOFLINE_MARGIN):
            flags.append(f"{where}{suite}: decode {median:.1f} tok/s is {100 * median / limit:.0f}% of the "
                         f"memory-bandwidth limit ({limit:.1f} tok/s), more than {100 * ROOFLINE_MARGIN:.0f}% "
                         "over it: a wrong model size, answers from a cache, or a server that speculates?")
    return flags


def plausibility(data: dict, kind: str) -> list[str]:
    """What a valid document claims that physics makes unlikely, one sentence each (flagged, not refused).

    A speculative bench's speculative side is left out: beating the one-token-per-pass roofline is what
    speculation is for.
    """
    if kind == "benchmark":
        return _roofline_flags(data, "")
    if kind == "speculative" and isinstance(data.get("vanilla"), dict):
        return _roofline_flags(data["vanilla"], "vanilla ")
    return []
