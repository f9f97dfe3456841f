"""Can DRAFT speculate for TARGET? The same rules llama.cpp applies, read from GGUF metadata.

llama-server only logs a mismatch and then silently serves without speculation, so we check first.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from velollm_core.gguf_meta import TOKENS_DIGEST_START, TOKENS_KEY, GgufSummary, iter_array, read_summary

# llama.cpp's own limits (common/speculative.cpp).
MAX_VOCAB_SIZE_DIFFERENCE = 128
CHECK_START_TOKEN_ID = 5


@dataclass
class CompatReport:
    target: str
    draft: str
    compatible: bool = True
    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.compatible = False
        self.problems.append(problem)

    def to_json(self) -> dict:
        return {"target": self.target, "draft": self.draft, "compatible": self.compatible,
                "problems": self.problems, **self.facts}


def _vocab_size(summary: GgufSummary) -> int | None:
    return summary.array_lengths.get(TOKENS_KEY) or summary.arch_value("vocab_size")


def _special(summary: GgufSummary, name: str) -> tuple[bool, int | None]:
    meta = summary.metadata
    default_add = name == "bos"  # llama.cpp adds BOS by default for SPM/BPE when unspecified
    return bool(meta.get(f"tokenizer.ggml.add_{name}_token", default_add)), meta.get(f"tokenizer.ggml.{name}_token_id")


def _first_different_token(target: Path, draft: Path) -> tuple[int, str, str] | None:
    """(id, target text, draft text) of the first token from CHECK_START_TOKEN_ID on whose texts differ."""
    # Streamed side by side: two vocabularies of 262k strings never sit in memory as lists.
    with closing(iter_array(target, TOKENS_KEY)) as tokens_t, closing(iter_array(draft, TOKENS_KEY)) as tokens_d:
        for i, (text_t, text_d) in enumerate(zip(tokens_t, tokens_d)):
            if i >= CHECK_START_TOKEN_ID and text_t != text_d:
                return i, text_t, text_d
    return None


def check_pair(target: Path, draft: Path) -> CompatReport:
    """Compare tokenizer model, vocabulary size and texts, BOS/EOS ids and add-flags; sizes too."""
    report = CompatReport(str(target), str(draft))
    tgt, dft = read_summary(target), read_summary(draft)
    report.facts = {
        "target_size_bytes": tgt.size_bytes,
        "draft_size_bytes": dft.size_bytes,
        "size_ratio": round(dft.size_bytes / tgt.size_bytes, 4) if tgt.size_bytes else None,
        "target_vocab": _vocab_size(tgt),
        "draft_vocab": _vocab_size(dft),
    }
    model_t, model_d = tgt.metadata.get("tokenizer.ggml.model"), dft.metadata.get("tokenizer.ggml.model")
    if model_t != model_d:
        report.fail(f"tokenizer models differ: target {model_t!r}, draft {model_d!r}")
    for name in ("bos", "eos"):
        add_t, id_t = _special(tgt, name)
        add_d, id_d = _special(dft, name)
        if add_t != add_d:
            report.fail(f"add_{name}_token differs: target {add_t}, draft {add_d}")
        elif add_t and id_t != id_d:
            report.fail(f"{name.upper()} token ids differ: target {id_t}, draft {id_d}")
    n_t, n_d = report.facts["target_vocab"], report.facts["draft_vocab"]
    if n_t is None or n_d is None:
        report.fail("a model has no tokenizer.ggml.tokens: cannot compare vocabularies")
    elif abs(n_t - n_d) > MAX_VOCAB_SIZE_DIFFERENCE:
        report.fail(f"vocabulary sizes differ by {abs(n_t - n_d)} (target {n_t}, draft {n_d}; "
                    f"llama.cpp allows at most {MAX_VOCAB_SIZE_DIFFERENCE})")
    same_texts = (n_t == n_d and tgt.tokens_digest is not None and tgt.tokens_digest == dft.tokens_digest
                  and CHECK_START_TOKEN_ID == TOKENS_DIGEST_START)
    if report.compatible and not same_texts:
        difference = _first_different_token(target, draft)
        if difference is not None:
            i, text_t, text_d = difference
            report.fail(f"token {i} differs: target {text_t!r}, draft {text_d!r}")
    if dft.size_bytes >= tgt.size_bytes:
        report.facts["warning"] = "the draft is not smaller than the target: speculation cannot pay off"
    return report
