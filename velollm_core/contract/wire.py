"""Stream events from servers, taken in with the types their readers expect.

A broken or hostile server can send any JSON, while the code that times a generation reads fields
with a plain ``.get``. One schema per kind of event names the type of every field read; a field of
another type is dropped, as if the runtime had not said (``None`` in a GenerationTiming), and an
event that is not a JSON object at all is a BackendError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from velollm_core.contract.errors import BackendError

# A count must be an int (GenerationTiming refuses 2.5 tokens); times and rates may be either.
NUMBER = (int, float)

# A schema maps a field to a type or tuple of types, to a nested schema (an object), or to a
# one-item list holding the schema of a list's objects; fields it does not name pass unchanged.
Schema = Mapping[str, Any]
_WRONG = object()


def _fits(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, never a count or a time to us
        return kind is bool or isinstance(kind, tuple) and bool in kind
    return isinstance(value, kind)


def _conformed(value: Any, kind: Any) -> Any:
    if isinstance(kind, Mapping):
        return conform(value, kind) if isinstance(value, dict) else _WRONG
    if isinstance(kind, list):
        if not isinstance(value, list):
            return _WRONG
        return [conform(item, kind[0]) for item in value if isinstance(item, dict)]
    return value if _fits(value, kind) else _WRONG


def conform(document: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A copy of ``document`` without the fields whose values do not have the schema's types."""
    out = dict(document)
    for key, kind in schema.items():
        if out.get(key) is None:
            continue
        value = _conformed(out[key], kind)
        if value is _WRONG:
            del out[key]
        else:
            out[key] = value
    return out


def stream_event(document: Any, schema: Schema, server: str) -> dict[str, Any]:
    """``document`` conformed to ``schema``; BackendError when it is no JSON object."""
    if not isinstance(document, dict):
        # Only the type is named: the payload of some servers echoes what it was sent (API keys).
        kind = "null" if document is None else type(document).__name__
        raise BackendError(f"{server} sent a stream event that is not a JSON object (a {kind})")
    return conform(document, schema)
