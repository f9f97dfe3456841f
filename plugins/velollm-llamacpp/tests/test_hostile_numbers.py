"""llama-server's numbers are claims: non-finite ``timings`` name their field, a negative count is refused,
and one event cannot claim more tokens than the client could timestamp (the core's tests run the
whole CLI through such servers: tests/test_faults_numbers.py)."""

from __future__ import annotations

import pytest
from velollm_llamacpp.client import CompletionStream

from velollm_core.api import BackendError


def test_timings_of_1e999_name_the_field():
    stream = CompletionStream()
    stream.feed({"content": "a", "tokens_predicted": 1, "stop": False}, 1.0)
    with pytest.raises(BackendError, match=r"^llama-server sent inf for timings\.predicted_per_second"):
        stream.feed({"content": "", "stop": True, "timings": {"predicted_per_second": float("inf")}}, 1.1)


def test_negative_and_exploding_counts_are_refused():
    stream = CompletionStream()
    stream.feed({"content": "a", "tokens_predicted": 1, "stop": False}, 1.0)
    stream.feed({"content": "", "stop": True, "tokens_predicted": -5}, 1.1)
    with pytest.raises(BackendError, match="completion_tokens = -5"):
        stream.finish(0.0, 1.2)
    # One event claiming 2^62 tokens would cost a timestamp each: refused at once.
    with pytest.raises(BackendError, match="new tokens in one stream event"):
        CompletionStream().feed({"content": "a", "tokens_predicted": 2**62, "stop": False}, 1.0)


def test_fewer_counted_tokens_than_events_with_text_is_flagged():
    stream = CompletionStream()
    for i in range(4):
        stream.feed({"content": f" w{i}", "stop": False}, 1.0 + i / 100)
    stream.feed({"content": "", "stop": True, "tokens_predicted": 2}, 1.1)
    assert "counted 2 completion tokens but streamed 4" in stream.finish(0.9, 1.2).extra["counts_mismatch"]
