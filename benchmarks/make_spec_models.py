"""Random-weight GGUF drafters for llama.cpp's newer speculation types, for speed and plumbing tests.

    python benchmarks/make_spec_models.py --out DIR [--mtp tiny,4b,9b,27b] [--eagle3 tiny,8b]
                                          [--dflash tiny,8b] [--dspark tiny,8b] [--type q4_0]
                                          [--tokenizer GGUF] [--copy-head] [--force]

Three kinds, in the tensor layout llama.cpp's converter writes (conversion/qwen.py, conversion/llama.py
at 0c1e570) and its loader reads (src/models/qwen35.cpp, src/models/eagle3.cpp, src/models/dflash.cpp):

- ``qwen35-<shape>-mtp-random-<type>.gguf``: a Qwen3.5 dense model (gated delta-net layers with a
  full-attention layer every 4th) whose last block is one MTP head (``qwen35.nextn_predict_layers``
  = 1, ``blk.N.nextn.eh_proj``...), as Qwen3.5 ships it: ``--spec-type draft-mtp`` drafts with the
  model's own head, no draft file. Shapes: ``4b``, ``9b``, ``27b`` are Qwen3.5-4B / -9B / -27B
  (hidden 2560 / 4096 / 5120, 32 / 32 / 64 layers); ``tiny`` loads in a second on a CPU.
- ``eagle3-<shape>-random-<type>.gguf``: an EAGLE-3 head (one decoder layer over the fused hidden
  states of 3 target layers, ``fc``, its own lm_head over a 32,000-token draft vocabulary mapped to
  target ids by ``d2t``) for the Llama target of benchmarks/make_gguf_models.py of the same shape:
  ``8b`` is the shape of yuhuili/EAGLE3-LLaMA3.1-Instruct-8B (hidden 4096, FFN 14336).
- ``dflash-<shape>-random-<type>.gguf``: a DFlash block drafter (GGUF arch ``dflash``) for the Llama
  target of the same shape: ``fc`` fuses the hidden states entering the target layers listed in
  ``dflash.target_layers`` (the converter's HF ``target_layer_ids`` + 1) into K/V of its own
  non-causal decoder layers (Qwen3-style, with q/k norms), which denoise a block of up to
  ``dflash.block_size`` tokens ([last token, mask, mask...]; the mask is
  ``tokenizer.ggml.mask_token_id``) in one pass. llama.cpp's Llama graph records the inputs of
  layers 0..n-1 only, so every target layer listed is below the target's layer count. It ships no
  embeddings or lm_head: llama.cpp uses the target's. ``dspark-<shape>-random-<type>.gguf`` is
  the same plus DSpark's Markov head (``markov_w1`` / ``markov_w2``, rank R) and confidence head
  (``conf_proj``); llama.cpp (and VeloLLM's compat.draft_kind) tell it apart by
  ``markov_w1.weight`` and run it as draft-dspark.
  ``8b`` has the target's layer width (hidden 4096, FFN 14336, 32 / 8 heads) and 5 layers reading
  target layers [2, 9, 16, 23, 30], block size 10 (so 9 drafted tokens, as the model card of
  z-lab/LLaMA3.1-8B-Instruct-DFlash-UltraChat runs it), mask token 128002, Markov rank 256: a
  plausible shape, not a published one: llama.cpp's tree has no config of a Llama DFlash drafter,
  so the layer count and their spread (HF ids 1..n-3, evenly) are modeled on z-lab's Qwen3-8B
  DFlash drafter, and we know of no DSpark drafter for Llama 3.1 8B. ``tiny``: one layer over the
  inputs of the tiny Llama's layers 0 and 1, block size 8, Markov rank 64.

All use the vocabulary of make_gguf_models.py (SmolLM2's BPE padded to Llama 3's 128,256 tokens), so
they pair with its llama-<shape>-random models; the real Qwen3.5 has 248,320 tokens (a larger lm_head).
Random weights accept nothing on their own: drafts are rejected (or accepted by chance), so use
``--spec-synth-rates`` for speed (benchmarks/speculative_synthetic.py) and exact mode for identical text.
``--copy-head`` instead writes heads that repeat a token, as a random-weight target mostly does, so
drafts are accepted for real: ``qwen35-<shape>-mtp-copy-...`` (the MTP head repeats its input token)
and ``dspark-<shape>-copy-...`` (the Markov head repeats the anchor token); DFlash has no such head.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_gguf_models import (
    BOS_ID,
    CHAT_TEMPLATE,
    EOS_ID,
    N_VOCAB,
    SHAPES,
    RandomWeights,
    llama3_vocabulary,
    load_tokenizer,
)

DRAFT_VOCAB = 32000  # EAGLE-3 heads for Llama 3 draft over the 32k most frequent target tokens


@dataclass(frozen=True)
class Qwen35Shape:
    label: str
    n_layer: int  # trunk layers; the MTP head is one more block
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    lin_k_heads: int  # gated delta-net key heads (ssm.group_count)
    lin_v_heads: int  # value heads (ssm.time_step_rank)
    lin_head_dim: int  # key and value head size (ssm.state_size)
    n_ctx: int = 262144


QWEN35 = {
    "tiny": Qwen35Shape("tiny", 4, 256, 512, 4, 2, 64, 2, 4, 32, n_ctx=8192),
    "4b": Qwen35Shape("4B", 32, 2560, 9216, 16, 4, 256, 16, 32, 128),  # Qwen3.5-4B
    "9b": Qwen35Shape("9B", 32, 4096, 12288, 16, 4, 256, 16, 32, 128),  # Qwen3.5-9B
    "27b": Qwen35Shape("27B", 64, 5120, 17408, 24, 4, 256, 16, 48, 128),  # Qwen3.5-27B
}
EAGLE3 = {"tiny": "tiny", "1b": "1b", "3b": "3b", "8b": "8b"}  # the Llama target shape each head reads


@dataclass(frozen=True)
class DFlashShape:
    target: str  # the make_gguf_models.py Llama shape whose hidden states it reads
    n_layer: int
    target_layers: tuple[int, ...]  # dflash.target_layers: inputs of these target layers (each < its n_layer)
    block_size: int  # dflash.block_size: block_size - 1 drafted tokens a step (DSpark: block_size)
    markov_rank: int  # DSpark's Markov head


DFLASH = {
    "tiny": DFlashShape("tiny", 1, (0, 1), 8, 64),
    "8b": DFlashShape("8b", 5, (2, 9, 16, 23, 30), 10, 256),  # plausible, see the module docstring
}
MASK_ID = 128002  # <|reserved_special_token_0|>: Llama 3 has no mask token of its own


class Tensors:
    """Tensor plan and data: 2-D matrices in the chosen type where their rows allow it, the rest F32."""

    def __init__(self, qtype_name: str, seed: int) -> None:
        import gguf

        self.qtype = gguf.GGMLQuantizationType[qtype_name.upper()]
        self.block = gguf.GGML_QUANT_SIZES[self.qtype]
        self.weights = RandomWeights(seed)
        self.plan: list[tuple[str, tuple[int, ...], str]] = []  # name, numpy shape, kind

    def matrix(self, name: str, rows: int, cols: int) -> None:
        """A weight of ``rows`` outputs by ``cols`` inputs (GGUF ne = [cols, rows])."""
        self.plan.append((name, (rows, cols), "matrix"))

    def ones(self, name: str, n: int) -> None:
        self.plan.append((name, (n,), "ones"))

    def const(self, name: str, shape: tuple[int, ...], value: float) -> None:
        self.plan.append((name, shape, f"const:{value}"))

    def small(self, name: str, shape: tuple[int, ...]) -> None:
        self.plan.append((name, shape, "small"))

    def fixed(self, name: str, shape: tuple[int, ...], kind: str) -> None:
        """``zeros``, ``copy`` ([I 0]: the first half of the input passes through), or ``signs`` (random
        +-1, the same for every tensor of one shape), in F32."""
        self.plan.append((name, shape, kind))

    def ids(self, name: str, n: int) -> None:
        self.plan.append((name, (n,), "ids"))

    def _dtype(self, kind: str, shape):
        import gguf

        if kind == "matrix":
            if self.qtype == gguf.GGMLQuantizationType.F16:
                return np.dtype(np.float16), int(np.prod(shape)) * 2, None, shape
            if self.qtype != gguf.GGMLQuantizationType.F32 and shape[1] % self.block[0] == 0:
                byte_shape = (shape[0], shape[1] // self.block[0] * self.block[1])
                return np.dtype(np.uint8), int(np.prod(byte_shape)), self.qtype, byte_shape
            return np.dtype(np.float16), int(np.prod(shape)) * 2, None, shape
        if kind == "ids":
            return np.dtype(np.int64), int(np.prod(shape)) * 8, None, shape
        return np.dtype(np.float32), int(np.prod(shape)) * 4, None, shape

    def write(self, writer) -> None:
        for name, shape, kind in self.plan:
            dtype, nbytes, raw, stored = self._dtype(kind, shape)
            if raw is not None:
                writer.add_tensor_info(name, stored, dtype, nbytes, raw_dtype=raw)
            else:
                writer.add_tensor_info(name, stored, dtype, nbytes)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        rng = np.random.default_rng(1)
        for name, shape, kind in self.plan:
            dtype, _, raw, _ = self._dtype(kind, shape)
            if kind == "matrix":
                data = self.weights.quantized(raw, shape) if raw is not None else self.weights.f16(shape)
            elif kind == "ones":
                data = np.ones(shape, dtype=np.float32)
            elif kind.startswith("const:"):
                data = np.full(shape, float(kind.split(":")[1]), dtype=np.float32)
            elif kind == "ids":
                data = np.arange(shape[0], dtype=np.int64)
            elif kind == "zeros":
                data = np.zeros(shape, dtype=np.float32)
            elif kind == "copy":
                data = np.eye(shape[0], shape[1], dtype=np.float32)
            elif kind == "signs":
                data = np.where(np.random.default_rng(7).random(shape, dtype=np.float32) < 0.5, -1.0, 1.0)
                data = data.astype(np.float32)
            else:
                data = (rng.standard_normal(shape, dtype=np.float32) * 0.1).astype(np.float32)
            writer.write_tensor_data(data)
        writer.close()


def _tokenizer_fields(writer, tokenizer) -> None:
    pre, tokens, types, merges = tokenizer
    vocab, vocab_types = llama3_vocabulary(tokens, types)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab)
    writer.add_token_types(vocab_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_qwen35_mtp(path: Path, shape: Qwen35Shape, type_name: str, tokenizer, seed: int = 0,
                     copy_head: bool = False) -> None:
    """A Qwen3.5 dense model with one MTP head as its last block (see the module docstring).

    ``copy_head``: the head predicts its input token again (eh_proj passes the token's embedding
    through, attention and FFN add nothing, the lm_head is the tied embedding), which is what a
    random-weight target mostly does too; so drafts are accepted for real, not by synthetic rates,
    and exact mode can show accepted tokens give the same text."""
    import gguf

    arch = "qwen35"
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"Qwen3.5 {shape.label} random weights with MTP ({type_name.upper()})")
    n_all = shape.n_layer + 1
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(n_all)
    writer.add_uint32(f"{arch}.nextn_predict_layers", 1)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim // 4)  # partial_rotary_factor 0.25
    writer.add_array(f"{arch}.rope.dimension_sections", [11, 11, 10, 0])
    writer.add_rope_freq_base(10_000_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_uint32(f"{arch}.ssm.conv_kernel", 4)
    writer.add_uint32(f"{arch}.ssm.state_size", shape.lin_head_dim)
    writer.add_uint32(f"{arch}.ssm.group_count", shape.lin_k_heads)
    writer.add_uint32(f"{arch}.ssm.time_step_rank", shape.lin_v_heads)
    writer.add_uint32(f"{arch}.ssm.inner_size", shape.lin_v_heads * shape.lin_head_dim)
    writer.add_uint32(f"{arch}.full_attention_interval", 4)
    writer.add_vocab_size(N_VOCAB)
    _tokenizer_fields(writer, tokenizer)

    t = Tensors(type_name, seed)
    e = shape.n_embd
    key_dim = shape.lin_head_dim * shape.lin_k_heads
    value_dim = shape.lin_head_dim * shape.lin_v_heads
    t.matrix("token_embd.weight", N_VOCAB, e)

    def attention(i: int, silent: bool = False) -> None:
        q = shape.head_dim * shape.n_head
        kv = shape.head_dim * shape.n_head_kv
        t.matrix(f"blk.{i}.attn_q.weight", 2 * q, e)  # query and its output gate
        t.matrix(f"blk.{i}.attn_k.weight", kv, e)
        t.matrix(f"blk.{i}.attn_v.weight", kv, e)
        if silent:
            t.fixed(f"blk.{i}.attn_output.weight", (e, q), "zeros")
        else:
            t.matrix(f"blk.{i}.attn_output.weight", e, q)
        t.ones(f"blk.{i}.attn_q_norm.weight", shape.head_dim)
        t.ones(f"blk.{i}.attn_k_norm.weight", shape.head_dim)

    def ffn(i: int, silent: bool = False) -> None:
        t.matrix(f"blk.{i}.ffn_gate.weight", shape.n_ff, e)
        t.matrix(f"blk.{i}.ffn_up.weight", shape.n_ff, e)
        if silent:
            t.fixed(f"blk.{i}.ffn_down.weight", (e, shape.n_ff), "zeros")
        else:
            t.matrix(f"blk.{i}.ffn_down.weight", e, shape.n_ff)

    for i in range(shape.n_layer):
        t.ones(f"blk.{i}.attn_norm.weight", e)
        t.ones(f"blk.{i}.post_attention_norm.weight", e)
        if (i + 1) % 4 == 0:
            attention(i)
        else:
            t.matrix(f"blk.{i}.attn_qkv.weight", 2 * key_dim + value_dim, e)
            t.matrix(f"blk.{i}.attn_gate.weight", value_dim, e)
            t.small(f"blk.{i}.ssm_conv1d.weight", (2 * key_dim + value_dim, 4))
            t.const(f"blk.{i}.ssm_dt.bias", (shape.lin_v_heads,), 1.0)
            t.const(f"blk.{i}.ssm_a", (shape.lin_v_heads,), -1.0)  # -exp(A_log), a decaying state
            t.matrix(f"blk.{i}.ssm_beta.weight", shape.lin_v_heads, e)
            t.matrix(f"blk.{i}.ssm_alpha.weight", shape.lin_v_heads, e)
            t.ones(f"blk.{i}.ssm_norm.weight", shape.lin_head_dim)
            t.matrix(f"blk.{i}.ssm_out.weight", e, value_dim)
        ffn(i)
    mtp = shape.n_layer  # the MTP head: a full-attention block behind eh_proj([enorm(embd); hnorm(h)])
    t.ones(f"blk.{mtp}.attn_norm.weight", e)
    t.ones(f"blk.{mtp}.post_attention_norm.weight", e)
    attention(mtp, silent=copy_head)
    ffn(mtp, silent=copy_head)
    if copy_head:
        t.fixed(f"blk.{mtp}.nextn.eh_proj.weight", (e, 2 * e), "copy")
    else:
        t.matrix(f"blk.{mtp}.nextn.eh_proj.weight", e, 2 * e)
    t.ones(f"blk.{mtp}.nextn.enorm.weight", e)
    t.ones(f"blk.{mtp}.nextn.hnorm.weight", e)
    t.ones(f"blk.{mtp}.nextn.shared_head_norm.weight", e)
    t.ones("output_norm.weight", e)
    t.write(writer)


def _target_hparams(writer, target, n_layer: int) -> None:
    """A head's attention and FFN sizes: the Llama target's (EAGLE-3 and DFlash heads mirror its layers)."""
    writer.add_context_length(target.n_ctx)
    writer.add_embedding_length(target.n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(target.n_ff)
    writer.add_head_count(target.n_head)
    writer.add_head_count_kv(target.n_head_kv)
    writer.add_key_length(target.head_dim)
    writer.add_value_length(target.head_dim)
    writer.add_rope_dimension_count(target.head_dim)
    writer.add_rope_freq_base(target.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)


def write_eagle3(path: Path, target_shape_name: str, type_name: str, tokenizer, seed: int = 0) -> None:
    """An EAGLE-3 head for the make_gguf_models.py Llama target of ``target_shape_name``."""
    import gguf

    target = SHAPES[target_shape_name]
    arch = "eagle3"
    e = target.n_embd
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(f"EAGLE-3 head for Llama {target.label}, random weights ({type_name.upper()})")
    _target_hparams(writer, target, n_layer=1)
    # The converter's default when the head's config names none: [2, n/2, n-3].
    writer.add_array(f"{arch}.target_layers", [2, target.n_layer // 2, target.n_layer - 3]
                     if target.n_layer > 4 else [0, target.n_layer // 2, target.n_layer - 1])
    writer.add_uint32(f"{arch}.target_hidden_size", e)
    writer.add_bool(f"{arch}.norm_before_residual", False)
    writer.add_vocab_size(N_VOCAB)
    _tokenizer_fields(writer, tokenizer)

    t = Tensors(type_name, seed)
    q, kv = target.n_head * target.head_dim, target.n_head_kv * target.head_dim
    t.ids("d2t", DRAFT_VOCAB)  # draft id i -> target id i: the 32k lowest ids
    t.matrix("fc.weight", e, 3 * e)
    t.ones("blk.0.attn_norm.weight", e)
    t.ones("blk.0.attn_norm_2.weight", e)
    t.matrix("blk.0.attn_q.weight", q, 2 * e)
    t.matrix("blk.0.attn_k.weight", kv, 2 * e)
    t.matrix("blk.0.attn_v.weight", kv, 2 * e)
    t.matrix("blk.0.attn_output.weight", e, q)
    t.ones("blk.0.ffn_norm.weight", e)
    t.matrix("blk.0.ffn_gate.weight", target.n_ff, e)
    t.matrix("blk.0.ffn_up.weight", target.n_ff, e)
    t.matrix("blk.0.ffn_down.weight", e, target.n_ff)
    t.ones("output_norm.weight", e)
    t.matrix("output.weight", DRAFT_VOCAB, e)
    t.write(writer)


def write_dflash(path: Path, shape: DFlashShape, type_name: str, tokenizer, seed: int = 0,
                 dspark: bool = False, copy_head: bool = False) -> None:
    """A DFlash block drafter (``dspark``: with DSpark's Markov and confidence heads) for the
    make_gguf_models.py Llama target of ``shape.target`` (see the module docstring).

    ``copy_head`` (DSpark only): the Markov head repeats the block's anchor token. Its bias for
    token j after token i is the dot product of two rows of one random +-1 matrix (in F32): R when
    j = i, under about 4.5 sqrt(R) for every other j of the vocabulary, and far above the random
    decoder's logits (well under 1), so every drafted token is the last committed one, which is what
    a random-weight target mostly generates too: drafts are accepted for real. The confidence head
    is biased to about 0.98, so a p_min keeps them."""
    import gguf

    target = SHAPES[shape.target]
    arch = "dflash"
    e, n_in = target.n_embd, len(shape.target_layers)
    if max(shape.target_layers) >= target.n_layer:
        raise ValueError(f"target layer {max(shape.target_layers)}: Llama {target.label} has {target.n_layer}")
    writer = gguf.GGUFWriter(path, arch)
    kind = "DSpark" if dspark else "DFlash"
    writer.add_name(f"{kind} drafter for Llama {target.label}, random weights ({type_name.upper()})")
    _target_hparams(writer, target, n_layer=shape.n_layer)
    writer.add_array(f"{arch}.target_layers", list(shape.target_layers))
    writer.add_uint32(f"{arch}.block_size", shape.block_size)
    if dspark:
        writer.add_bool(f"{arch}.sample_from_anchor", True)  # DFlash-lineage export: slot 0 is a prediction
        writer.add_bool(f"{arch}.has_confidence_head", True)
    writer.add_vocab_size(N_VOCAB)
    _tokenizer_fields(writer, tokenizer)
    writer.add_uint32("tokenizer.ggml.mask_token_id", MASK_ID)

    t = Tensors(type_name, seed)
    q, kv = target.n_head * target.head_dim, target.n_head_kv * target.head_dim
    t.matrix("fc.weight", e, n_in * e)
    t.ones("enc.output_norm.weight", e)  # the norm after fc
    for i in range(shape.n_layer):
        t.ones(f"blk.{i}.attn_norm.weight", e)
        t.matrix(f"blk.{i}.attn_q.weight", q, e)
        t.matrix(f"blk.{i}.attn_k.weight", kv, e)
        t.matrix(f"blk.{i}.attn_v.weight", kv, e)
        t.matrix(f"blk.{i}.attn_output.weight", e, q)
        t.ones(f"blk.{i}.attn_q_norm.weight", target.head_dim)
        t.ones(f"blk.{i}.attn_k_norm.weight", target.head_dim)
        t.ones(f"blk.{i}.ffn_norm.weight", e)
        t.matrix(f"blk.{i}.ffn_gate.weight", target.n_ff, e)
        t.matrix(f"blk.{i}.ffn_up.weight", target.n_ff, e)
        t.matrix(f"blk.{i}.ffn_down.weight", e, target.n_ff)
    t.ones("output_norm.weight", e)
    if dspark:
        r = shape.markov_rank
        if copy_head:
            t.fixed("markov_w1.weight", (N_VOCAB, r), "signs")
            t.fixed("markov_w2.weight", (N_VOCAB, r), "signs")
        else:
            t.matrix("markov_w1.weight", N_VOCAB, r)  # the previous token's row
            t.matrix("markov_w2.weight", N_VOCAB, r)  # its bias on every (full-vocabulary) draft logit
        t.matrix("conf_proj.weight", 1, e + r)
        t.const("conf_proj.bias", (1,), 4.0 if copy_head else 0.0)
    t.write(writer)


def _names(value: str, known) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in known]
    if unknown:
        sys.exit(f"unknown shape {', '.join(unknown)}; known: {', '.join(known)}")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mtp", default="", help=f"Qwen3.5+MTP shapes: {', '.join(QWEN35)}.")
    parser.add_argument("--eagle3", default="", help=f"EAGLE-3 heads for Llama shapes: {', '.join(EAGLE3)}.")
    parser.add_argument("--dflash", default="", help=f"DFlash drafters for Llama shapes: {', '.join(DFLASH)}.")
    parser.add_argument("--dspark", default="", help="DSpark drafters (DFlash + Markov head), same shapes.")
    parser.add_argument("--type", default="q4_0", choices=("f16", "q8_0", "q4_0"))
    parser.add_argument("--tokenizer", help="GGUF whose BPE tokens and merges to use (default: smollm2-135m).")
    parser.add_argument("--copy-head", action="store_true",
                        help="MTP head that repeats its input token, DSpark Markov head that repeats the "
                             "anchor token (real acceptance on random weights; --dflash has no such head).")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from velollm_core.contract.errors import VeloError
    from velollm_core.contract.modelfiles import resolve_model_path

    try:
        tokenizer = load_tokenizer(resolve_model_path(args.tokenizer or "smollm2-135m"))
    except VeloError as exc:
        sys.exit(f"error: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    copy = "-copy" if args.copy_head else ""
    jobs = [(args.out / f"qwen35-{s}-mtp{copy}-random-{args.type}.gguf",
             lambda *a, **k: write_qwen35_mtp(*a, **k, copy_head=args.copy_head), QWEN35[s])
            for s in _names(args.mtp, QWEN35)]
    jobs += [(args.out / f"eagle3-{s}-random-{args.type}.gguf", write_eagle3, EAGLE3[s])
             for s in _names(args.eagle3, EAGLE3)]
    jobs += [(args.out / f"dflash-{s}-random-{args.type}.gguf", write_dflash, DFLASH[s])
             for s in _names(args.dflash, DFLASH)]
    jobs += [(args.out / f"dspark-{s}{copy}-random-{args.type}.gguf",
              lambda *a, **k: write_dflash(*a, **k, dspark=True, copy_head=args.copy_head), DFLASH[s])
             for s in _names(args.dspark, DFLASH)]
    for path, write, shape in jobs:
        if path.exists() and not args.force:
            print(f"kept     {path} (exists; --force rewrites it)")
            continue
        start = time.perf_counter()
        write(path, shape, args.type, tokenizer, args.seed)
        print(f"written  {path} ({path.stat().st_size / 2**30:.2f} GiB, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
