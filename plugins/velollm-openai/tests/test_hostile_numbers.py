"""``usage`` and ``timings`` are a server's claims: 10^12 completion tokens for a four-chunk answer is
refused in one sentence naming the count, a non-finite rate names its field (the core's tests run the
whole CLI through such servers: tests/test_faults_numbers.py)."""

from __future__ import annotations

import pytest
from velollm_openai.timing import StreamRecord, timing_from_stream

from velollm_core.api import BackendError


def _four_chunks() -> StreamRecord:
    record = StreamRecord(start=0.0)
    for i in range(4):
        record.observe(0.1 + i * 0.01, {"choices": [{"text": f" w{i}"}]})
    return record


def test_usage_of_10_to_the_12_for_four_chunks_is_refused():
    record = _four_chunks()
    record.observe(0.2, {"choices": [{"text": "", "finish_reason": "length"}], "usage": {"completion_tokens": 10**12}})
    with pytest.raises(BackendError, match="1000000000000 completion tokens"):
        timing_from_stream(record, 0.3, endpoint="completions")


@pytest.mark.parametrize("event, field", [
    ({"usage": {"completion_tokens": 10**30}}, "usage.completion_tokens"),
    ({"timings": {"predicted_per_second": float("nan")}}, "timings.predicted_per_second"),
    ({"usage": {"prompt_tokens": float("-inf")}}, "usage.prompt_tokens"),
])
def test_a_non_finite_or_overflowing_number_names_its_field(event, field):
    with pytest.raises(BackendError, match=rf"^the server sent .* for {field.replace('.', '[.]')}"):
        _four_chunks().observe(0.2, {"choices": [], **event})


def test_fewer_usage_tokens_than_content_chunks_is_flagged():
    record = _four_chunks()
    record.observe(0.2, {"choices": [{"text": "", "finish_reason": "stop"}], "usage": {"completion_tokens": 3}})
    timing = timing_from_stream(record, 0.3, endpoint="completions")
    assert "counted 3 completion tokens but streamed 4" in timing.extra["counts_mismatch"]
