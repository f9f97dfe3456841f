"""Property-based fuzzing of the openai plugin's reader of outside bytes: the streamed chat and
completions answers of an OpenAI-compatible server, as the backend streams and times them.

Each generation must answer or fail with VeloError (BackendError), one line, within the deadline;
anything else is a crash to fix in the reader. The strategies are the test kit's
(velollm_testkit/fuzz.py); the stream seeds are in tests/data/fuzz. Derandomized.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_testkit.fuzz import FUZZ, answer_next, mock_http, one_line, seed_body, stream_mutants

from velollm_core.contract.errors import VeloError
from velollm_core.contract.schemas import GenerationTiming

STREAMS = Path(__file__).parent / "data" / "fuzz"


@functools.cache
def _openai_server():
    from velollm_openai.client import OpenAIServer

    server = OpenAIServer("http://fuzz.invalid")
    server._http = mock_http()
    return server


def _openai_generation(path: str) -> GenerationTiming | None:
    """One generation as the openai backend streams and times it (backend._stream, run_generation)."""
    from velollm_openai.timing import StreamRecord, timing_from_stream

    record = StreamRecord(start=time.perf_counter())
    for arrived, event in _openai_server().stream(path, {"model": "m", "stream": True}):
        record.observe(arrived, event)
    if record.finished:
        return timing_from_stream(record, time.perf_counter(), endpoint="chat")
    return None


GENERATIONS = {
    "openai-chat.sse": lambda: _openai_generation("/chat/completions"),
    "openai-completions.sse": lambda: _openai_generation("/completions"),
}


def _generate(name: str, answer: tuple[int, bytes]) -> GenerationTiming | None:
    answer_next(answer)
    return GENERATIONS[name]()


# What each seed says: the text (reasoning apart), the usage counts, the finish reason, the server's speed.
SEED_TIMINGS = {
    "openai-chat.sse": (" one two three four", 7, 5, "length", 125.0),
    "openai-completions.sse": (" one two three four", 7, 4, "stop", None),
}


@pytest.mark.parametrize("name", sorted(GENERATIONS))
def test_stream_seeds_are_valid_generations(name):
    timing = _generate(name, seed_body(STREAMS / name))
    assert (timing.text, timing.prompt_tokens, timing.completion_tokens, timing.stop_reason,
            timing.server_decode_tokens_per_s) == SEED_TIMINGS[name]


@settings(FUZZ, max_examples=200)
@pytest.mark.parametrize("name", sorted(GENERATIONS))
@given(data=st.data())
def test_stream_mutants_fail_cleanly(name, data):
    try:
        _generate(name, data.draw(stream_mutants(STREAMS / name)))
    except VeloError as exc:
        one_line(exc)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------

FOUND = {
    "openai: an event that is a list": lambda: _generate("openai-chat.sse", (200, b"data: []\n\n")),
    "openai: a delta that is text": lambda: _generate("openai-chat.sse",
                                                      (200, b'data: {"choices": [{"delta": "x"}]}\n\n')),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except VeloError as exc:
        one_line(exc)
