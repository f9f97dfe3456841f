"""Property-based fuzzing of the ollama plugin's reader of outside bytes: Ollama's NDJSON generate
stream, as the runner reads and times it.

Each generation must answer or fail with VeloError (BackendError), one line, within the deadline;
anything else is a crash to fix in the reader. The strategies are the test kit's
(velollm_testkit/fuzz.py); the stream seed is in tests/data/fuzz. Derandomized.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_testkit.fuzz import (
    FUZZ,
    answer_next,
    fuzz_request,
    mock_http,
    one_line,
    seed_body,
    stream_mutants,
)

from velollm_core.contract.errors import VeloError
from velollm_core.contract.schemas import GenerationTiming

GENERATE = Path(__file__).parent / "data" / "fuzz" / "ollama-generate.ndjson"


@functools.cache
def _ollama_client():
    from velollm_ollama.client import OllamaClient

    client = OllamaClient("http://127.0.0.1:9")
    client._http = mock_http(client.base_url)
    return client


def _generate(answer: tuple[int, bytes]) -> GenerationTiming:
    """One generation as the ollama backend runs it, the mock server answering ``answer``."""
    from velollm_ollama.runner import run_generation

    answer_next(answer)
    return run_generation(_ollama_client(), "m", fuzz_request(), {}, {})


def test_stream_seed_is_a_valid_generation():
    """The seed's text and thinking, its counts and durations (4 tokens in 40 ms: 100 tokens/s) come through."""
    timing = _generate(seed_body(GENERATE))
    assert (timing.text, timing.extra["thinking"]) == (" one two three four", "hm")
    assert (timing.prompt_tokens, timing.completion_tokens, timing.stop_reason) == (7, 4, "length")
    assert (timing.server_decode_tokens_per_s, timing.load_ms) == (100.0, 1.0)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_stream_mutants_fail_cleanly(data):
    try:
        _generate(data.draw(stream_mutants(GENERATE)))
    except VeloError as exc:
        one_line(exc)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------

FOUND = {
    "ollama: response a number": lambda: _generate((200, b'{"response": 5}\n{"done": true}\n')),
    "ollama: eval_count 1e999": lambda: _generate((200, b'{"done": true, "eval_count": 1e999}\n')),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except VeloError as exc:
        one_line(exc)
