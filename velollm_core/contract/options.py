"""``--option KEY=VALUE`` texts read by the type of the option they set, and dotted keys nested.

The command line gives every value as text. Turning ``123`` into a number before the backend's
``Options`` model is consulted would make a text option unable to hold ``123``, so each text is read
by the field it sets:

- a text field (``str``, a path, a ``Literal`` of strings, any of these or None) keeps the text as typed;
- any other field, and an untyped one (``request.<field>``, a key a model with ``extra="allow"``
  takes), gets the text read as JSON where it parses as JSON (``42``, ``1.5``, ``true``, ``null``,
  ``["\\n"]``, ``{"type": "json_object"}``), else the text itself: the model then converts it
  (``on`` for a bool, ``auto`` for ``int | str``) or refuses it with one sentence.

A key ``head.a.b`` whose ``head`` is a dict field of untyped values (``request``) nests: it sets
``{"a": {"b": value}}`` inside that field, for APIs whose request bodies nest. A dict field of typed
values (``env`` of ``dict[str, str]``) takes the rest of the key whole, dots included.

A backend's ``Options`` model declares its fields with pydantic's ``Field`` (and may check them with
``field_validator``, allow unknown keys with ``ConfigDict(extra="allow")``): this module is where
``velollm_core.api`` exports those three from, so a plugin imports them from the API like the rest.
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator

from velollm_core.contract.errors import UserInputError

# Option keys whose head names a dict field take the rest as the dict's key: request.top_p=0.9.
SEPARATOR = "."

__all__ = ["SEPARATOR", "ConfigDict", "Field", "dict_value_type", "field_validator", "is_text_type",
           "option_type", "place", "read_options", "read_value"]


def _unwrapped(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def is_text_type(annotation: Any) -> bool:
    """Whether a field holds text only: ``str``, a path, a ``Literal`` of strings (or None beside them)."""
    annotation = _unwrapped(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        return bool(members) and all(is_text_type(member) for member in members)
    if origin is Literal:
        return all(isinstance(value, str) for value in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, (str, PurePath))


def dict_value_type(options_model: type[BaseModel], name: str) -> Any | None:
    """The value type of dict field ``name`` (``Any`` when untyped); None when ``name`` is no dict field."""
    annotation = _unwrapped(options_model.model_fields[name].annotation)
    if (get_origin(annotation) or annotation) is not dict:
        return None
    args = get_args(annotation)
    return args[1] if len(args) == 2 else Any


def option_type(options_model: type[BaseModel], key: str) -> Any:
    """The type a flat ``--option`` key's value is read as (``Any`` for a key no field declares)."""
    fields = options_model.model_fields
    if key in fields:
        return fields[key].annotation
    head, sep, _ = key.partition(SEPARATOR)
    value_type = dict_value_type(options_model, head) if sep and head in fields else None
    return Any if value_type is None else value_type


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_holds_non_finite, value.values()))
    if isinstance(value, list):
        return any(map(_holds_non_finite, value))
    return False


def _names_non_finite(text: str) -> bool:
    """Whether ``text`` reads as NaN or an infinity (``nan``, ``inf``, ``1e999``)."""
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def read_value(annotation: Any, text: str) -> Any:
    """``text`` as a value for a field of type ``annotation`` (see the module docstring).

    NaN and the infinities, as JSON (``NaN``, ``1e999``) or as text (``nan``, ``inf``), are refused with
    a UserInputError: no server field takes them, and JSON cannot even carry them."""
    if is_text_type(annotation):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if _holds_non_finite(value) or (value is text and _names_non_finite(text)):
        raise UserInputError(f"{text!r} is not a finite number (NaN and infinity are no value a server takes)")
    return value


def read_options(options_model: type[BaseModel], texts: Mapping[str, str]) -> dict[str, Any]:
    """The flat ``--option`` texts as values, each read by the type of the field its key sets."""
    values = {}
    for key, text in texts.items():
        try:
            values[key] = read_value(option_type(options_model, key), text)
        except UserInputError as exc:
            raise UserInputError(f"--option {key}={text}: {exc}") from None
    return values


def _nests(options_model: type[BaseModel], head: str) -> bool:
    """Whether ``head.a.b`` keys nest inside dict field ``head`` (its values are untyped)."""
    value_type = dict_value_type(options_model, head)
    return value_type is Any or (get_origin(value_type) or value_type) is dict


def place(options_model: type[BaseModel], table: dict[str, Any], head: str, rest: str, value: Any) -> None:
    """Put ``value`` of key ``head.rest`` into ``table`` (dict field ``head``'s value), nesting where it may."""
    *path, leaf = rest.split(SEPARATOR) if _nests(options_model, head) else [rest]
    walked = [head]
    for part in path:
        walked.append(part)
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise UserInputError(f"--option {head}{SEPARATOR}{rest}: {SEPARATOR.join(walked)} is also given "
                                 "as a value; it cannot be both a value and a table of fields")
    if isinstance(table.get(leaf), dict) and not isinstance(value, dict):
        raise UserInputError(f"--option {head}{SEPARATOR}{rest}: its fields are also given "
                             f"({head}{SEPARATOR}{rest}{SEPARATOR}...); it cannot be both a value and a table")
    table[leaf] = value
