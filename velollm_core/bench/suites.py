"""The standard benchmark suites: fixed prompts, fixed output lengths, greedy decoding, fixed seed."""

from __future__ import annotations

from dataclasses import dataclass

from velollm_core.contract.errors import UserInputError


@dataclass(frozen=True)
class Suite:
    name: str
    prompt: str
    max_tokens: int
    description: str


# A prefill-heavy prompt: numbered, varied sentences so no two stretches tokenize alike and the
# runtime really processes ~1,500 tokens of input.
_LONG_CONTEXT = "\n".join(
    f"{i}. Measurement log entry {i}: node-{i % 7} reported {100 + 37 * i % 911} requests, "
    f"median latency {(13 * i) % 97 + 3} ms, cache hit ratio {(29 * i) % 100}%, "
    f"and {(i * i) % 13} retries after timeouts on shard {chr(65 + i % 26)}."
    for i in range(1, 41)
)

_CODE = """def summarize_orders(orders):
    total = 0
    count = 0
    largest = None
    for order in orders:
        if order.status != "paid":
            continue
        total += order.amount
        count += 1
        if largest is None or order.amount > largest.amount:
            largest = order
    average = total / count if count else 0
    return {"total": total, "count": count, "average": average, "largest": largest}
"""

_ARTICLE = (
    "The Rhine rises in the Swiss Alps and flows 1,230 kilometres to the North Sea. It passes Basel, "
    "Strasbourg, Mannheim, Cologne and Duisburg, and for centuries it carried more freight than any "
    "other European river. Its delta, shared with the Meuse, holds Rotterdam, the largest port in Europe."
)

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite(
            "short_completion",
            "Write one sentence that explains what a CPU cache is.",
            32,
            "short prompt, short answer: latency-dominated",
        ),
        Suite(
            "medium_completion",
            "Explain in a few paragraphs how a hash table works, including how collisions are "
            "handled and what happens when the table grows.",
            128,
            "short prompt, medium answer: decode speed",
        ),
        Suite(
            "code_generation",
            "Write a Python function `merge_intervals(intervals)` that merges overlapping "
            "intervals, with a docstring and three example calls.",
            192,
            "code answer: decode speed on code tokens",
        ),
        Suite(
            "long_prompt",
            "Here is a service log:\n" + _LONG_CONTEXT + "\n\nWhich node reported the most retries? "
            "Answer in one sentence.",
            16,
            "long prompt, short answer: prefill (prompt processing) speed",
        ),
        Suite(
            "code_edit",
            "Here is a Python function:\n\n```python\n" + _CODE + "```\n\nHere is the same function, "
            "unchanged except that the variable `total` is renamed to `revenue`:\n\n```python\n",
            160,
            "input-grounded: repeat code with one rename (where n-gram speculation pays)",
        ),
        Suite(
            "quote_answer",
            "Article: " + _ARTICLE + "\n\nQuestion: What does the article say about the Rhine? "
            "Answer by quoting the article word for word.\n\nAnswer: \"",
            96,
            "input-grounded: answer by quoting the context (RAG-style)",
        ),
    )
}

INPUT_GROUNDED_SUITES = ("code_edit", "quote_answer")

DEFAULT_SUITES = ("short_completion", "medium_completion", "code_generation")


def get_suites(names: tuple[str, ...] | list[str]) -> list[Suite]:
    """The suites named, in order; all default suites when none are named."""
    chosen = list(names) or list(DEFAULT_SUITES)
    if "all" in chosen:
        return list(SUITES.values())
    unknown = [name for name in chosen if name not in SUITES]
    if unknown:
        raise UserInputError(f"unknown suite {', '.join(unknown)}; known: {', '.join(SUITES)}, all")
    return [SUITES[name] for name in chosen]
