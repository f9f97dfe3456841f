"""Can DRAFT speculate for TARGET? The same rules llama.cpp applies, read from GGUF metadata.

llama-server only logs a mismatch and then silently serves without speculation, so we check first.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from velollm_core.api import UserInputError
from velollm_gguf.meta import TOKENS_DIGEST_START, TOKENS_KEY, GgufSummary, iter_array, read_summary

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


# --- speculation types (llama.cpp's --spec-type, common/speculative.cpp at 0c1e570) -----------------

# A drafting model of its own, in one draft context: llama-server creates one, so at most one of
# these runs at a time. The n-gram types need no model and combine with anything (llama.cpp tries
# them first, in its own order, and the first that drafts wins the step).
DRAFT_TYPES = ("draft-simple", "draft-eagle3", "draft-mtp", "draft-dflash", "draft-dspark")
NGRAM_TYPES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
ALL_TYPES = DRAFT_TYPES + NGRAM_TYPES
# Architectures whose llama.cpp graph has an MTP decoder (LLM_GRAPH_TYPE_DECODER_MTP in
# src/models/*.cpp); others may carry nextn tensors that llama.cpp loads but never runs (glm4, exaone4).
MTP_ARCHS = frozenset({"qwen35", "qwen35moe", "qwen3next", "deepseek2", "deepseek32", "deepseek4", "glm4moe",
                       "glm-dsa", "glm5-next", "mimo2", "step35", "bailingmoe3", "cohere2moe", "hy_v3",
                       "nemotron_h_moe"})
# Draft-only architectures: they read the target's hidden states, so they cannot run as draft-simple.
HEAD_ARCHS = {"eagle3": "draft-eagle3", "dflash": "draft-dflash", "gemma4-assistant": "draft-mtp"}


def mtp_layers(summary: GgufSummary) -> int:
    """MTP heads a model file carries: llama.cpp looks for the last block's ``nextn.eh_proj``."""
    blocks = summary.arch_value("block_count")
    if not isinstance(blocks, int) or blocks < 1:
        return 0
    names = {t.name for t in summary.tensors}
    if f"blk.{blocks - 1}.nextn.eh_proj.weight" not in names:
        return 0
    declared = summary.arch_value("nextn_predict_layers")
    return declared if isinstance(declared, int) and declared > 0 else 1


def draft_kind(summary: GgufSummary) -> str:
    """The speculation type a draft file serves, as llama.cpp infers it from the file."""
    arch = summary.architecture
    if arch == "dflash":
        return "draft-dspark" if any(t.name == "markov_w1.weight" for t in summary.tensors) else "draft-dflash"
    if arch in HEAD_ARCHS:
        return HEAD_ARCHS[arch]
    if mtp_layers(summary) and not any(t.name == "blk.0.attn_norm.weight" for t in summary.tensors):
        return "draft-mtp"  # an MTP head alone (a sidecar), no trunk
    return "draft-simple"


# Architectures whose graph also records the output of the last layer (index n_layer), so a head
# may read it (src/models/deepseek4.cpp, nemotron-h.cpp at 0c1e570); every other graph stops at n_layer-1.
LAST_OUTPUT_ARCHS = frozenset({"deepseek4", "nemotron_h", "nemotron_h_moe"})


def _head_problems(tgt: GgufSummary, dft: GgufSummary) -> list[str]:
    """Why an EAGLE-3 / DFlash head cannot read this target's hidden states (empty: it can)."""
    arch = dft.architecture
    layers = dft.arch_value("target_layers")
    n_layer, n_embd = tgt.arch_value("block_count"), tgt.arch_value("embedding_length")
    problems = []
    if not isinstance(layers, list) or not layers:
        problems.append(f"the {arch} head has no {arch}.target_layers")
    else:
        if arch == "eagle3" and len(layers) != 3:
            problems.append(f"an EAGLE-3 head reads 3 target layers, this one lists {len(layers)}")
        # Graphs record each layer's input (0 .. n_layer-1); a few also record the last layer's output.
        if isinstance(n_layer, int):
            last = n_layer if tgt.architecture in LAST_OUTPUT_ARCHS else n_layer - 1
            if max(layers) > last or min(layers) < 0:
                problems.append(f"the head reads target layers {layers}; the target's are 0-{last}")
    hidden = dft.arch_value("target_hidden_size")
    fc = next((t for t in dft.tensors if t.name == "fc.weight"), None)
    if hidden is None and fc is not None and isinstance(layers, list) and layers and fc.shape[0] % len(layers) == 0:
        hidden = fc.shape[0] // len(layers)  # fc takes the target layers' hidden states side by side
    if isinstance(hidden, int) and isinstance(n_embd, int) and hidden != n_embd:
        problems.append(f"the head was trained on hidden size {hidden}, the target's is {n_embd}")
    n_t, n_d = _vocab_size(tgt), _vocab_size(dft)
    if n_t and n_d and abs(n_t - n_d) > MAX_VOCAB_SIZE_DIFFERENCE:
        problems.append(f"vocabulary sizes differ: target {n_t}, head {n_d}")
    return problems


def type_support(target: Path, draft: Path | None = None, available: tuple[str, ...] | None = None) -> dict:
    """Which speculation types run for ``target`` (and ``draft``): {type: reason or None}, None = runs.

    ``available``: the types this llama-server build lists (``--spec-type`` in its help); None = all."""
    tgt = read_summary(target)
    dft = read_summary(draft) if draft is not None else None
    kind = draft_kind(dft) if dft is not None else None
    support: dict[str, str | None] = {}
    pair = None
    for spec_type in ALL_TYPES:
        if available is not None and spec_type not in available:
            support[spec_type] = "this llama-server build does not have it"
        elif spec_type in NGRAM_TYPES:
            support[spec_type] = None
        elif spec_type == "draft-mtp":
            if kind == "draft-mtp":
                support[spec_type] = "; ".join(_head_problems_mtp(tgt, dft)) or None
            elif tgt.architecture not in MTP_ARCHS:
                support[spec_type] = f"llama.cpp runs no MTP head for architecture {tgt.architecture!r}"
            elif not mtp_layers(tgt):
                support[spec_type] = "the target has no MTP head (no blk.N.nextn.eh_proj tensor)"
            else:
                support[spec_type] = None
        elif dft is None:
            support[spec_type] = "needs a draft model file"
        elif spec_type != kind:
            support[spec_type] = f"the draft file is a {kind} drafter ({dft.architecture})"
        elif kind == "draft-simple":
            pair = pair or check_pair(target, draft)
            support[spec_type] = None if pair.compatible else "; ".join(pair.problems)
        else:
            problems = _head_problems(tgt, dft)
            support[spec_type] = "; ".join(problems) or None
    return support


def _head_problems_mtp(tgt: GgufSummary, dft: GgufSummary) -> list[str]:
    """An MTP sidecar must predict from this target's hidden state: same width."""
    n_t, n_d = tgt.arch_value("embedding_length"), dft.arch_value("embedding_length")
    if isinstance(n_t, int) and isinstance(n_d, int) and n_t != n_d:
        return [f"the MTP head's width is {n_d}, the target's hidden size {n_t}"]
    return []


def parse_types(value: str) -> list[str]:
    """``draft-mtp,ngram-mod`` -> its types, in order; unknown names and repeats refused."""
    types = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in types if t not in ALL_TYPES]
    if unknown or not types:
        raise UserInputError(f"unknown speculation type {', '.join(unknown) or '(none)'}; known: {', '.join(ALL_TYPES)}")
    if len(set(types)) != len(types):
        raise UserInputError(f"a speculation type is named twice in {value!r}")
    return types


def combination_problems(types: list[str], support: dict, *, has_draft: bool) -> list[str]:
    """Why llama-server would not run ``types`` together (empty: it will). llama.cpp itself starts
    and then serves without speculation, or aborts, in these cases."""
    problems = [f"{t}: {support[t]}" for t in types if support.get(t)]
    drafters = [t for t in types if t in DRAFT_TYPES]
    if len(drafters) > 1:
        problems.append(f"{' and '.join(drafters)} cannot run together: llama-server has one draft context")
    if has_draft and not drafters:
        problems.append("a draft model is given but no draft-* type uses it")
    return problems


def supported_combinations(support: dict) -> list[list[str]]:
    """Each supported type alone, then each supported drafter with n-gram drafting (ngram-mod)
    first: llama.cpp tries n-gram types before drafters, so repeated text costs no draft at all."""
    alone = [[t] for t in ALL_TYPES if support.get(t, "missing") is None]
    combos = [["ngram-mod", t] for t in DRAFT_TYPES
              if support.get(t, "missing") is None and support.get("ngram-mod", "missing") is None]
    return alone + combos


def find_pairs(models: list[dict], *, max_ratio: float = 0.5) -> list[dict]:
    """Every compatible (target, draft) pair of ``models`` ({name, path, ...}) whose draft is at most
    ``max_ratio`` of the target's size, smallest ratio first per target."""
    summaries = {}
    for model in models:
        try:
            summaries[model["path"]] = read_summary(model["path"])
        except UserInputError:
            continue  # not a readable GGUF: nothing to pair
    pairs = []
    for target, tgt in summaries.items():
        for draft, dft in summaries.items():
            if draft == target or dft.size_bytes > max_ratio * tgt.size_bytes:
                continue
            if tgt.metadata.get("tokenizer.ggml.model") != dft.metadata.get("tokenizer.ggml.model"):
                continue
            report = check_pair(Path(target), Path(draft))
            if report.compatible:
                pairs.append({"target": target, "draft": draft, "size_ratio": dft.size_bytes / tgt.size_bytes})
    return sorted(pairs, key=lambda p: (p["target"], p["size_ratio"]))
