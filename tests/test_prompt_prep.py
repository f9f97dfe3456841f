"""What preparing exact-length prompts costs: every prompt of a level sized before its clock starts,
about one tokenize round trip a prompt (the words' own counts learned once, every count kept by text),
and the client's CPU per request beside its CPU per token."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter

import pytest
from velollm_testkit.mock import mock_llm

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.workloads import WORDS, PromptBuilder, Workload, build_prompts
from velollm_core.contract.errors import UserInputError

# A fake tokenizer is enough here: what is under test is how often the builder asks, not how a
# server counts (the real llama-server's counts are held in plugins/velollm-llamacpp/tests).


class CountingTokenizer:
    """BOS, then ``cost(word, first)`` tokens per word; every text asked is counted."""

    def __init__(self, cost=lambda word, first: 1, bos: bool = True) -> None:
        self.cost, self.bos = cost, bos
        self.asked: Counter[str] = Counter()

    def __call__(self, text: str) -> list[int]:
        self.asked[text] += 1
        count = int(self.bos) + sum(self.cost(word, i == 0) for i, word in enumerate(text.split()))
        return [7] * count

    @property
    def calls(self) -> int:
        return sum(self.asked.values())


def _three_letters(word: str, first: bool) -> int:
    """One token per three letters: words of one to four tokens."""
    return -(-len(word) // 3)


def _longer_at_the_start(word: str, first: bool) -> int:
    """SmolLM2's habit: no BOS, and a few words two tokens at the very start of a text only."""
    return 2 if first and len(word) > 6 else 1


@pytest.mark.parametrize(("cost", "bos"), [(lambda w, f: 1, True), (_three_letters, True),
                                           (_longer_at_the_start, False)])
def test_each_prompt_is_exact_after_about_one_round_trip(cost, bos):
    tokenizer = CountingTokenizer(cost, bos)
    builder = PromptBuilder(tokenizer)
    prompts = build_prompts(Workload(512, 8), builder, 256, seed=1)
    assert {len(tokenizer(p.text)) for p in prompts} == {512}
    learning = tokenizer.calls - 256 - 256  # the words' counts (the check above asked 256 more)
    assert builder.round_trips == tokenizer.calls - 256
    assert learning <= 3 * len(WORDS)  # once, however many prompts follow
    # One confirming round trip a prompt, a second only where the first word counts differently at
    # the start of a text (one word in 20 of _longer_at_the_start's, never with a BOS tokenizer).
    assert builder.round_trips - learning <= 256 * (1.15 if not bos else 1.0)


def test_the_words_counts_take_one_round_trip_where_every_word_is_one_token():
    tokenizer = CountingTokenizer()
    builder = PromptBuilder(tokenizer)
    build_prompts(Workload(64, 8), builder, 10, seed=1)
    assert tokenizer.calls == 2 + 10  # one word alone, all of them after it; then one a prompt


def test_no_text_round_trips_twice():
    tokenizer = CountingTokenizer(_three_letters)
    builder = PromptBuilder(tokenizer)
    prompts = build_prompts(Workload(32, 8, depth=200), builder, 20, seed=3)
    assert max(tokenizer.asked.values()) == 1
    # The depth context's count, kept from its own build, sized the prompt that extends it.
    assert all(tokenizer.asked[p.depth_text] == 1 and p.text.startswith(p.depth_text) for p in prompts)
    assert builder.count(prompts[0].text) == 232 and tokenizer.asked[prompts[0].text] == 1
    again = build_prompts(Workload(32, 8, depth=200), builder, 20, seed=3)  # the same prompts asked again
    assert [p.text for p in again] == [p.text for p in prompts] and max(tokenizer.asked.values()) == 1


def test_prompts_are_the_same_whatever_order_the_round_trips_finish_in():
    slow = CountingTokenizer()

    def jittery(text: str) -> list[int]:
        time.sleep(random.random() / 1000)
        return slow(text)

    first = [p.text for p in build_prompts(Workload(40, 8), PromptBuilder(jittery), 12, seed=5)]
    second = [p.text for p in build_prompts(Workload(40, 8), PromptBuilder(CountingTokenizer()), 12, seed=5)]
    assert first == second and len(set(first)) == 12


def test_a_tokenizer_with_no_one_token_word_still_gets_exact_prompts():
    tokenizer = CountingTokenizer(lambda word, first: 2)  # every word two tokens: odd counts need a BOS
    builder = PromptBuilder(tokenizer)
    assert {len(tokenizer(p.text)) for p in build_prompts(Workload(101, 8), builder, 5, seed=2)} == {101}
    with pytest.raises(UserInputError, match="exactly 100 tokens"):
        builder.build(100, random.Random(0))


# --- a level's prompts, against the mock server through the real llamacpp backend ----------------


@pytest.fixture(scope="module")
def mock():
    with mock_llm(ttft_ms=5, itl_ms=2, output_tokens=8) as server:
        yield server


def test_every_prompt_of_a_level_is_sized_before_the_level_starts(mock, monkeypatch):
    """The order of what the backend was asked: all tokenizing of a level before its first request
    (the sequential level's warm-up included), none while a load level runs."""
    from velollm_core.bench.loadgen import LevelDriver
    from velollm_core.contract import backends

    events: list[str] = []
    backend_class = type(backends.get("llamacpp"))
    tokenize, generate, drive = backend_class.tokenize, backend_class.generate, LevelDriver.drive

    def logged(name, call):
        def method(*args, **kwargs):
            events.append(name)
            return call(*args, **kwargs)
        return method

    async def driven(self):
        events.append("load level starts")
        try:
            return await drive(self)
        finally:
            events.append("load level ends")

    monkeypatch.setattr(backend_class, "tokenize", logged("tokenize", tokenize))
    monkeypatch.setattr(backend_class, "generate", logged("generate", generate))
    monkeypatch.setattr(LevelDriver, "drive", driven)
    plan = BenchmarkPlan(backend="llamacpp", model="velollm-mock", suites=[], host=mock.url, iterations=3,
                         warmup=2, natural_stop=False, workloads=[Workload(48, 8, depth=32)],
                         concurrency=[1, 4], requests=12, workers=1)
    result = BenchmarkRunner(plan).run()
    assert [kind for kind, _ in itertools.groupby(events)] == [
        "tokenize", "generate",  # seq: 5 prompts and their depth primes sized, then sent
        "tokenize", "load level starts", "load level ends"]  # c4
    assert events.count("generate") == 2 * 5  # each prompt after its primed depth context
    assert {r.prompt_tokens for r in result.runs} == {80}
    assert [level["prompt_tokens"]["mismatch"] for level in result.levels] == [False, False]
    assert result.levels[1]["prompt_tokens"] == {"requested": 80, "reported_median": 80, "mismatch": False}
    # One probe of the backend's tokenizer, two for the words' counts (every word one token to the mock),
    # then one round trip a text: the 5 depth contexts and the 5 prompts that extend them.
    assert events.index("generate") == 1 + 2 + 2 * 5
    sizing = result.settings["prompt_sizing"]
    assert sizing["method"] == "tokenizer" and sizing["round_trips"] == events.count("tokenize") - 1


def test_the_client_cpu_per_request_is_beside_the_cpu_per_token(mock):
    plan = BenchmarkPlan(backend="llamacpp", model="velollm-mock", suites=[], host=mock.url, iterations=1,
                         warmup=0, natural_stop=False, workloads=[Workload(16, 8)], concurrency=[4],
                         requests=16, workers=1)
    (level,) = BenchmarkRunner(plan).run().levels
    cpu_ms = level["client_cpu_s"] * 1000 + 0.5  # the seconds are rounded to the millisecond
    # Per request sent (a cool-down one too: its CPU is in the level's), per token streamed (8 a request).
    assert 0 < level["client_cpu_ms_per_request"] <= cpu_ms / level["completed"]
    assert level["client_cpu_ms_per_request"] == pytest.approx(level["client_cpu_ms_per_token"] * 8, rel=0.1)

