"""Memory sizes as GPU tools print them: binary units, whatever the spelling.

AMD's tools write "MB" for MiB (65520 MB on a 64 GiB MI210) and xpu-smi writes "MiB"; reading "MB"
as decimal would lose 4.6%. Each parser keeps its own number syntax; this is the one unit table.
"""

from __future__ import annotations

import math

MEMORY_UNIT_BYTES = {"b": 1, "kb": 2**10, "kib": 2**10, "mb": 2**20, "mib": 2**20, "gb": 2**30, "gib": 2**30}


def memory_bytes(amount: float, unit: str | None, default_unit: str = "B") -> float | None:
    """``amount`` of ``unit`` (``default_unit`` when None) in bytes; None for a unit that is no memory size."""
    factor = MEMORY_UNIT_BYTES.get((unit or default_unit).lower())
    # inf or nan ("1e999", 400 digits) is no size: callers turn sizes into ints.
    return amount * factor if factor and math.isfinite(amount) else None
