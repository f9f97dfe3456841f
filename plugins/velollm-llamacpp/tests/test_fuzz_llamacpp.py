"""Property-based fuzzing of the llamacpp plugin's readers of outside bytes: a model file's facts
(``model_facts``, on the core's seed GGUF models mutated) and llama-server's completion stream.

Each must answer or fail with VeloError (UserInputError, BackendError), one line, within the deadline;
anything else is a crash to fix in the reader. The strategies and seed fixtures are the test kit's
(velollm_testkit/fuzz.py); the stream seed is in tests/data/fuzz. Derandomized: CI sees the same
examples every time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_testkit.fuzz import (
    FUZZ,
    answer_next,
    fuzz_request,
    gguf_mutants,
    gguf_value_mutants,
    mock_http,
    one_line,
    seed_body,
    stream_mutants,
)

from velollm_core.contract.errors import VeloError
from velollm_core.contract.schemas import GenerationTiming

COMPLETION = Path(__file__).parent / "data" / "fuzz" / "llamacpp-completion.sse"


# --- GGUF -----------------------------------------------------------------------------------------


def exercise_model_file(path: Path) -> None:
    """What the plugin reads from a GGUF path itself: the model's facts."""
    from velollm_llamacpp.backend import model_facts

    try:
        model_facts(path)
    except VeloError as exc:
        one_line(exc)


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_gguf_mutants_fail_cleanly(gguf_seeds, fuzz_scratch, data):
    exercise_model_file(fuzz_scratch(data.draw(gguf_mutants(gguf_seeds))))


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_gguf_value_mutants_fail_cleanly(gguf_seeds, fuzz_scratch, data):
    exercise_model_file(fuzz_scratch(data.draw(gguf_value_mutants(gguf_seeds))))


# --- the completion stream ------------------------------------------------------------------------


def _generate(answer: tuple[int, bytes]) -> GenerationTiming:
    """One generation as the llamacpp backend streams it, the mock server answering ``answer``."""
    from velollm_llamacpp.client import stream_completion

    answer_next(answer)
    return stream_completion(mock_http(), "http://fuzz.invalid", fuzz_request())


def test_stream_seed_is_a_valid_generation():
    """The seed's four tokens, its prompt count, its server timings and draft counters come through."""
    timing = _generate(seed_body(COMPLETION))
    assert (timing.text, timing.prompt_tokens, timing.completion_tokens) == (" one two three four", 7, 4)
    assert (timing.server_decode_tokens_per_s, timing.prompt_tokens_per_s, timing.stop_reason) == (133.3, 560.0, "limit")
    assert (timing.extra["draft_n"], timing.extra["draft_n_accepted"]) == (2, 1)
    assert 0 < timing.ttft_ms <= timing.total_ms


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_stream_mutants_fail_cleanly(data):
    try:
        _generate(data.draw(stream_mutants(COMPLETION)))
    except VeloError as exc:
        one_line(exc)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------

FOUND = {
    "llama-server: an event that is null": lambda: _generate((200, b"data: null\n\n")),
    "llama-server: tokens_predicted a list": lambda: _generate(
        (200, b'data: {"tokens_predicted": [1], "stop": true}\n\n')),
    "llama-server: an error body that is a list": lambda: _generate((500, b"[1]")),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except VeloError as exc:
        one_line(exc)
