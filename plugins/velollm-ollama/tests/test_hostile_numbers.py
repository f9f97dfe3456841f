"""Ollama's durations and counts are claims: a non-finite ``load_duration`` names its field, an
``eval_count`` below the token chunks streamed is flagged (the core's tests run the whole CLI through
such servers: tests/test_faults_numbers.py)."""

from __future__ import annotations

import pytest
from velollm_ollama.runner import StreamAccumulator

from velollm_core.api import BackendError


@pytest.mark.parametrize("field, value", [("load_duration", float("inf")), ("eval_duration", float("nan")),
                                          ("eval_count", 10**30), ("prompt_eval_duration", 1.7e308)])
def test_a_non_finite_or_overflowing_number_names_its_field(field, value):
    with pytest.raises(BackendError, match=rf"^Ollama sent .* for {field}"):
        StreamAccumulator().feed({"response": "", "done": True, field: value}, 1.0)


def test_fewer_counted_tokens_than_chunks_is_flagged():
    accumulator = StreamAccumulator()
    for i in range(4):
        accumulator.feed({"response": f" w{i}", "done": False}, 1.0 + i / 100)
    accumulator.feed({"response": "", "done": True, "eval_count": 2, "eval_duration": 10**7}, 1.1)
    assert "counted 2 completion tokens but streamed 4" in accumulator.finish(0.9, 1.2).extra["counts_mismatch"]
