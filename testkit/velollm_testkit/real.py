"""Real components in tests: the one place where a test that needs one may skip.

A real component is something a checkout set up by ``./scripts/setup`` has: the llama.cpp build, the
bundled test models (Gemma 3 270M, SmolLM2 135M), headless Chromium, the data of tests/data. Where one
is absent the test is skipped with the reason shown, and fails instead where real components are
required: ``VELOLLM_REQUIRE_REAL=1`` (``scripts/test`` sets it by default, so CI does). A run that sets
``VELOLLM_REQUIRE_LLAMACPP=1``, the switch's name in CI images written for the llama.cpp build alone,
requires them too.

Hardware that a CPU machine cannot have (an NVIDIA GPU, RAPL counters, PowerShell, a live Ollama) is
not a real component in this sense: those tests call ``pytest.skip`` themselves and skip everywhere.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_REAL_ENV = "VELOLLM_REQUIRE_REAL"
REQUIRE_LLAMACPP_ENV = "VELOLLM_REQUIRE_LLAMACPP"


def real_components_required() -> bool:
    """Whether this run turns a missing real component into a failure."""
    return any(os.environ.get(name) == "1" for name in (REQUIRE_REAL_ENV, REQUIRE_LLAMACPP_ENV))


def missing(what: str, why: str) -> NoReturn:
    """Skip the test because ``what`` is absent (``why``: the reason and how to get it), or fail it where
    real components are required."""
    message = f"{what} is not available: {why}"
    if real_components_required():
        pytest.fail(f"{message} ({REQUIRE_REAL_ENV}=1 requires it)", pytrace=False)
    pytest.skip(message)
