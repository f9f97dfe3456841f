"""Numbers and stream events from servers, taken in with the types and ranges their readers expect.

A broken or hostile server can send any JSON, while the code that times a generation reads fields
with a plain ``.get``. One schema per kind of event names the type of every field read; a field of
another type is dropped, as if the runtime had not said (``None`` in a GenerationTiming), and an
event that is not a JSON object at all is a BackendError. A number the schema names that is not
finite (``NaN``, ``1e999``) or needs more than 64 bits is a BackendError naming the field: no
runtime measures such a thing, and every sum, mean and file write downstream would fail on it.

A finished GenerationTiming is checked once more (``check_timing``): counts against the request
and against what was streamed, times and rates against the range any measurement lies in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from velollm_core.contract.errors import BackendError

if TYPE_CHECKING:  # the models import pydantic
    from velollm_core.contract.schemas import GenerationTiming

# A count must be an int (GenerationTiming refuses 2.5 tokens); times and rates may be either.
NUMBER = (int, float)
# A number on the wire beyond 64 bits is no count, duration or rate (Ollama's nanoseconds reach 2^63
# after 292 years); Python reads such integers whole, and they overflow the first float they meet.
WIRE_LIMIT = 2**63
# No measurement comes near these (1e12 ms is 31 years, 1e12 tokens/s a million times any machine,
# 1e-12 ms a thousandth of a nanosecond): beyond them ratios and variances overflow, so a value
# outside is a broken server or a forged file, refused rather than averaged.
MAX_MEASUREMENT = 1e12
MIN_MEASUREMENT = 1e-12
# The fields of a GenerationTiming that are measurements (times, rates, counts), checked by check_timing.
TIMING_FIELDS = ("ttft_ms", "total_ms", "load_ms", "prompt_tokens_per_s", "decode_tokens_per_s",
                 "client_decode_tokens_per_s", "server_decode_tokens_per_s", "prompt_tokens", "completion_tokens",
                 "reasoning_tokens", "answer_tokens", "time_to_first_answer_ms", "cached_prompt_tokens",
                 "tool_args_ms")

# A schema maps a field to a type or tuple of types, to a nested schema (an object), or to a
# one-item list holding the schema of a list's objects; fields it does not name pass unchanged.
Schema = Mapping[str, Any]
_WRONG = object()


def shown_number(value: float) -> str:
    """A number for a message, short even when it is huge ('a 31-digit number')."""
    if isinstance(value, int):
        return f"a {len(str(abs(value)))}-digit number" if abs(value) >= 10**16 else str(value)
    return f"{value:g}"


def within_measurement(value: float) -> bool:
    """Zero, or a magnitude some benchmark could have measured (see MAX_MEASUREMENT)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return not value or MIN_MEASUREMENT <= abs(value) <= MAX_MEASUREMENT  # exact for integers of any size


def _fits(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a count or a time to us
        return kind is bool or isinstance(kind, tuple) and bool in kind
    return isinstance(value, kind)


def _numeric(kind: Any) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return int in kinds or float in kinds


def _check_number(value: Any, where: str, server: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise BackendError(f"{server} sent {value} for {where}, which is no number a runtime measures")
    if abs(value) >= WIRE_LIMIT:
        raise BackendError(f"{server} sent {shown_number(value)} for {where}, beyond any count, time or rate")


def _conformed(value: Any, kind: Any, where: str, server: str) -> Any:
    if isinstance(kind, Mapping):
        return _conform(value, kind, f"{where}.", server) if isinstance(value, dict) else _WRONG
    if isinstance(kind, list):
        if not isinstance(value, list):
            return _WRONG
        return [_conform(item, kind[0], f"{where}[{i}].", server) for i, item in enumerate(value)
                if isinstance(item, dict)]
    if _numeric(kind):  # before the type: a NaN where a count belongs is a broken server, not a missing field
        _check_number(value, where, server)
    return value if _fits(value, kind) else _WRONG


# Each schema's plan, by the schema's id (the schema kept beside it, so a reused id is noticed).
_PLANS: dict[int, tuple[Schema, tuple[tuple[str, Any, frozenset[type] | None, bool], ...]]] = {}


def _plan(schema: Schema) -> tuple[tuple[str, Any, frozenset[type] | None, bool], ...]:
    """Per field of ``schema``: (key, kind, the exact types a plain value of it may have or None for a
    nested kind, whether it is numeric); built once per schema, since every stream event walks it."""
    entry = _PLANS.get(id(schema))
    if entry is None or entry[0] is not schema:
        steps = []
        for key, kind in schema.items():
            if isinstance(kind, (Mapping, list)):
                steps.append((key, kind, None, False))
            else:
                kinds = kind if isinstance(kind, tuple) else (kind,)
                steps.append((key, kind, frozenset(kinds), _numeric(kind)))
        entry = _PLANS[id(schema)] = (schema, tuple(steps))
    return entry[1]


def _conform(document: dict[str, Any], schema: Schema, prefix: str, server: str) -> dict[str, Any]:
    # The common case costs a type lookup per field: a value whose exact type the schema names (a
    # bool is its own type, so it never passes for a count) is kept, its number range checked; the
    # document is copied only when a field must go or change.
    out = document
    for key, kind, exact, numeric in _plan(schema):
        value = document.get(key)
        if value is None:
            continue
        kind_of = type(value)
        if exact is not None and kind_of in exact:
            if numeric and (kind_of is int or kind_of is float) and not -WIRE_LIMIT < value < WIRE_LIMIT:
                _check_number(value, f"{prefix}{key}", server)  # NaN, infinities and past 64 bits: raises
            continue
        conformed = _conformed(value, kind, f"{prefix}{key}", server)
        if conformed is value:
            continue
        if out is document:
            out = dict(document)
        if conformed is _WRONG:
            del out[key]
        else:
            out[key] = conformed
    return out


def conform(document: dict[str, Any], schema: Schema, server: str = "the server") -> dict[str, Any]:
    """``document`` without the fields whose values do not have the schema's types (a copy where one
    goes or changes, ``document`` itself where all conform); a BackendError naming the field when a
    number it names is not finite or beyond 64 bits. ``server`` is the whole label naming the server
    in that message, used as it is ("llama-server at http://h")."""
    return _conform(document, schema, "", server)


def stream_event(document: Any, schema: Schema, server: str) -> dict[str, Any]:
    """``document`` conformed to ``schema``; BackendError when it is no JSON object. ``server`` is the
    whole label naming the server in messages, used as it is ("llama-server at http://h:8080")."""
    if not isinstance(document, dict):
        # Only the type is named: the payload of some servers echoes what it was sent (API keys).
        kind = "null" if document is None else type(document).__name__
        raise BackendError(f"{server} sent a stream event that is not a JSON object (a {kind})")
    return _conform(document, schema, "", server)


def check_timing(timing: GenerationTiming, *, server: str, max_tokens: int | None = None,
                 streamed: int | None = None) -> GenerationTiming:
    """``timing`` when its numbers can be true, else a one-sentence BackendError.

    A server's counts are claims: a negative count, or more completion tokens than ``max_tokens``
    asked for, is refused; fewer completion tokens than the ``streamed`` chunks that carried text
    (each holds at least one token) is flagged as ``extra["counts_mismatch"]``, the run kept. A time
    or rate outside the range of any measurement (or negative) is refused, naming the field.
    ``server`` is the whole label, used as it is ("llama-server at http://h:8080").

    A backend calls it at the end of its accumulator's ``finish``, so its streamed and sequential
    paths both check under its server's name; the engine calls it again on every run it records,
    with the request's ``max_tokens`` (and the backend's name as ``server``).
    """
    for name in TIMING_FIELDS:
        value = getattr(timing, name)
        if value is None:
            continue
        if not within_measurement(value) or value < 0:
            # A decode rate the client derived is only as true as the count it divided.
            source = (f" (from {shown_number(timing.completion_tokens)} completion tokens)"
                      if name.endswith("decode_tokens_per_s") and timing.completion_tokens else "")
            raise BackendError(f"{server} reported {name} = {shown_number(value)}{source}, which no generation "
                               f"measures (a nonzero value lies within {MIN_MEASUREMENT:g}..{MAX_MEASUREMENT:g})")
    claimed = timing.completion_tokens
    if claimed is not None and max_tokens is not None and claimed > max_tokens:
        raise BackendError(f"{server} claimed {shown_number(claimed)} completion tokens for a request of at "
                           f"most {max_tokens}: its token counts cannot be trusted")
    if claimed is not None and streamed is not None and claimed < streamed:
        timing.extra["counts_mismatch"] = (f"{server} counted {claimed} completion tokens but streamed "
                                           f"{streamed} chunks of text")
    return timing
