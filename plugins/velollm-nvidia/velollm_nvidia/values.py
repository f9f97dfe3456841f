"""Values as nvidia-smi prints them (CSV and XML alike): placeholders, numbers with units, sizes.

Sizes go through the core's one unit table (``velollm_core.api.memory_bytes``).
"""

from __future__ import annotations

import math
import re

from velollm_core.api import memory_bytes

_NUMBER = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*([A-Za-z/%]*)$")


def clean(value: str | None) -> str | None:
    """None for the placeholders nvidia-smi prints where it has no value."""
    if value is None:
        return None
    value = value.strip()
    # "[N/A]", "[Not Supported]", "[Requested functionality has been deprecated]", "[Unknown Error]"...
    if not value or (value.startswith("[") and value.endswith("]")) or value in {"N/A", "Not Supported"}:
        return None
    return value


def number(value: str | None) -> tuple[float, str | None] | None:
    value = clean(value)
    if value is None:
        return None
    match = _NUMBER.match(value)
    if match is None:
        return None
    number = float(match.group(1))
    # 400 digits are a float's inf: no size or index, and int() of it raises.
    return (number, match.group(2) or None) if math.isfinite(number) else None


def as_bytes(value: str | None, header_unit: str | None) -> int | None:
    """Memory as bytes: ``"81559 MiB"`` (csv), or ``"81559"`` under a ``[MiB]`` header (nounits)."""
    parsed = number(value)
    if parsed is None:
        return None
    amount, unit = parsed
    size = memory_bytes(amount, unit or header_unit, default_unit="MiB")
    return int(size) if size is not None else None


def as_float(value: str | None) -> float | None:
    parsed = number(value)
    return parsed[0] if parsed else None
