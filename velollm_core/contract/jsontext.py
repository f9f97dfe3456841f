"""JSON text from outside (a user's file, a server's answer), parsed with its nesting depth bounded.

Python's ``json`` parser recurses once per level: a line of 100,000 ``[`` ends in a RecursionError
deep inside it, and a document a few hundred levels deep parses but breaks whatever walks it next.
No document VeloLLM reads needs more than a handful of levels, so the depth is counted first, over
the text, and a deeper document is refused as a ``ValueError`` (what callers already catch for text
that is not JSON).
"""

from __future__ import annotations

import json
import re
from typing import Any

# Result documents nest about six levels (summary -> suite -> metric -> stats); datasets four.
MAX_JSON_DEPTH = 64

# A JSON string (escapes included) or one bracket: strings are skipped whole, so a "[" inside one
# does not count; the unrolled form stays linear on long strings.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class JSONTooDeep(ValueError):
    """A JSON document nested deeper than the reader allows."""


def nesting_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of ``text`` nest deeper than ``limit`` (stops at the first that does)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of ``text`` nested at most ``max_depth`` deep; deeper raises JSONTooDeep."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    if nesting_depth_exceeds(text, max_depth):
        raise JSONTooDeep(f"nested deeper than {max_depth} levels")
    return json.loads(text)


def dig(node: Any, *keys: str) -> Any:
    """``node[k1][k2]...``, or None where a level is missing or not an object (a parsed document from
    outside may hold anything at any key)."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def json_number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (a bool is not one), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
