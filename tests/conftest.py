"""Fixtures shared by the core tests and the plugins' tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def tool_outputs_dir() -> Path | None:
    """Where the real captured tool outputs live (shared/testdata, beside the checkout)."""
    candidates = [
        os.environ.get("VELOLLM_TESTDATA"),
        REPO_ROOT.parent / "shared" / "testdata" / "tool-outputs",
        Path("/work/shared/testdata/tool-outputs"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def tool_outputs() -> Path:
    found = tool_outputs_dir()
    if found is None:
        pytest.skip("captured tool outputs not found (set VELOLLM_TESTDATA)")
    return found
