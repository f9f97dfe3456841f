"""Pydantic models of everything that crosses a plugin boundary or lands in a file.

Split by concern and imported lazily: `velollm detect` builds only the hardware models, which keeps
the CLI's start-up fast. ``from velollm_core.contract.schemas import GpuInfo`` works for every name below.
"""

from __future__ import annotations

import importlib

# The version of each result kind's published JSON Schema (velollm_core.history.schemas), written into
# every result as ``schema_version``. Bump a kind's number when a model change changes its schema; a
# reader takes every version up to this one. Here, not in pydantic's modules: ``detect --json`` writes
# it without importing pydantic.
SCHEMA_VERSIONS = {"benchmark": 2, "speculative": 2, "verify": 2, "detect": 2}

_SUBMODULE = {
    "OsInfo": "hardware",
    "CpuInfo": "hardware",
    "MemoryInfo": "hardware",
    "GpuInfo": "gpu",
    "HardwareReport": "hardware",
    "GenerationRequest": "bench",
    "GenerationTiming": "bench",
    "RunRecord": "bench",
    "MetricStats": "bench",
    "ModelFacts": "bench",
    "DecodeTraffic": "bench",
    "BackendInfo": "bench",
    "BenchmarkEnvironment": "bench",
    "BenchmarkResult": "bench",
    "ImportedFrom": "bench",
    "BenchmarkContext": "bench",
    "ConfigChange": "config",
    "ConfigProposal": "config",
    "GpuVendor": "gpu",
    "GpuLink": "gpu",
    "GpuLinkKind": "gpu",
}

__all__ = list(_SUBMODULE)


def __getattr__(name: str):
    try:
        module = importlib.import_module(f"velollm_core.contract.schemas.{_SUBMODULE[name]}")
    except KeyError:
        raise AttributeError(f"module 'velollm_core.contract.schemas' has no attribute {name!r}") from None
    return getattr(module, name)
