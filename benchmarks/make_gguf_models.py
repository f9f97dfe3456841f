"""Random-weight GGUF models in the shapes of real Llama models, for speed measurements.

    python benchmarks/make_gguf_models.py --out DIR [--shapes 1b,3b,8b] [--types f16,q8_0,q4_0]
                                          [--tokenizer GGUF] [--via-quantize] [--force]

Decode and prefill speed depend on tensor shapes and types, not on the weights' values, so a model
with random weights in Llama 3.2 1B / 3B or Llama 3.1 8B shapes measures what the real one would.
Every model gets the same 128,256-token vocabulary: the real BPE tokens and merges of a source GGUF
(default: the bundled SmolLM2 test model, so prompts tokenize to realistic lengths), filler tokens up
to 128,000, and Llama 3's special tokens (``<|begin_of_text|>`` = 128000 as BOS, ``<|eot_id|>`` =
128009 as EOS) with its chat template. Models of one vocabulary pair up for speculative decoding
(their outputs are random, so a draft's acceptance rate is meaningless: use them for speed only).

Tensors are written straight in their type: F16 from a tiled random pool, Q8_0 / Q4_0 blocks with
random quants and one fixed scale (so activations keep a sane magnitude through every layer), norms
F32 ones. ``--via-quantize`` instead writes F16 and converts with llama-quantize (its default layout
keeps some tensors at higher precision, like community Q4_0 files). Files are named
``llama-<shape>-random-<type>.gguf``; existing ones are kept unless --force.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_VOCAB = 128256
FIRST_SPECIAL = 128000
BOS_ID = 128000
EOS_ID = 128009
WEIGHT_STD = 0.02
LLAMA3_SPECIALS = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
    "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of a Llama-architecture model."""

    label: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    tied: bool
    n_ctx: int = 131072
    rope_theta: float = 500000.0


SHAPES = {
    # llama-server loads it in a second: for testing this script, not for measuring.
    "tiny": Shape("tiny", 2, 256, 512, 4, 2, 64, tied=True, n_ctx=8192),
    "1b": Shape("1B", 16, 2048, 8192, 32, 8, 64, tied=True),  # Llama 3.2 1B
    "3b": Shape("3B", 28, 3072, 8192, 24, 8, 128, tied=True),  # Llama 3.2 3B
    "8b": Shape("8B", 32, 4096, 14336, 32, 8, 128, tied=False),  # Llama 3.1 8B
    "70b": Shape("70B", 80, 8192, 28672, 64, 8, 128, tied=False),  # Llama 3.1 70B: more than one GPU at Q8_0+KV
}
TYPES = ("f16", "q8_0", "q4_0")


def load_tokenizer(path: Path) -> tuple[str, list[str], list[int], list[str]]:
    """(pre-tokenizer, tokens, token types, merges) of a GGUF with a BPE (gpt2-style) tokenizer."""
    from velollm_gguf.meta import read_arrays, read_summary

    summary = read_summary(path)
    if summary.metadata.get("tokenizer.ggml.model") != "gpt2":
        sys.exit(f"{path}: its tokenizer is {summary.metadata.get('tokenizer.ggml.model')!r}, not a BPE (gpt2) one")
    arrays = read_arrays(path, ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"))
    tokens = list(arrays["tokenizer.ggml.tokens"])
    if len(tokens) > FIRST_SPECIAL:
        sys.exit(f"{path}: {len(tokens)} tokens do not fit below Llama 3's special tokens ({FIRST_SPECIAL})")
    types = list(arrays.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    return summary.metadata.get("tokenizer.ggml.pre", "default"), tokens, types, list(arrays["tokenizer.ggml.merges"])


def llama3_vocabulary(tokens: list[str], types: list[int]) -> tuple[list[str], list[int]]:
    """The source tokens, fillers up to 128,000, then Llama 3's 256 special tokens (control type)."""
    import gguf

    normal, control = int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL)
    fillers = [f"<|filler_{i}|>" for i in range(len(tokens), FIRST_SPECIAL)]
    specials = [LLAMA3_SPECIALS.get(i, f"<|reserved_special_token_{i - FIRST_SPECIAL}|>")
                for i in range(FIRST_SPECIAL, N_VOCAB)]
    return tokens + fillers + specials, types + [normal] * len(fillers) + [control] * len(specials)


def tensor_plan(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) of every tensor, in llama.cpp's order; 1-D tensors are norms."""
    q, kv = shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    plan = [("token_embd.weight", (N_VOCAB, shape.n_embd))]
    for i in range(shape.n_layer):
        plan += [
            (f"blk.{i}.attn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.attn_q.weight", (q, shape.n_embd)),
            (f"blk.{i}.attn_k.weight", (kv, shape.n_embd)),
            (f"blk.{i}.attn_v.weight", (kv, shape.n_embd)),
            (f"blk.{i}.attn_output.weight", (shape.n_embd, q)),
            (f"blk.{i}.ffn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_up.weight", (shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_down.weight", (shape.n_embd, shape.n_ff)),
        ]
    plan.append(("output_norm.weight", (shape.n_embd,)))
    if not shape.tied:
        plan.append(("output.weight", (N_VOCAB, shape.n_embd)))
    return plan


class RandomWeights:
    """Random tensors, fast: F16 tiled from one random pool, quantized blocks with random quants."""

    POOL = 1 << 22

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.pool = (self.rng.standard_normal(self.POOL, dtype=np.float32) * WEIGHT_STD).astype(np.float16)

    def f16(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        start = int(self.rng.integers(0, self.POOL))
        reps = -(-(count + start) // self.POOL)
        return np.tile(self.pool, reps)[start:start + count].reshape(shape)

    def quantized(self, qtype, shape: tuple[int, ...]) -> np.ndarray:
        """Blocks of random quants and a scale chosen so the weights' std is about WEIGHT_STD."""
        import gguf

        block, size = gguf.GGML_QUANT_SIZES[qtype]
        rows, cols = shape
        data = self.rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
        # Q8_0: int8 quants in [-128, 127] (std ~74); Q4_0: nibbles - 8 in [-8, 7] (std ~4.6).
        quant_std = 74.0 if qtype == gguf.GGMLQuantizationType.Q8_0 else 4.6
        scale = np.frombuffer(np.float16(WEIGHT_STD / quant_std).tobytes(), dtype=np.uint8)
        data[:, :, :2] = scale  # the f16 scale leads every Q8_0 / Q4_0 block
        return data.reshape(rows, cols // block * size)


def write_model(path: Path, shape: Shape, type_name: str, tokenizer: tuple, seed: int = 0) -> None:
    """Write one GGUF, tensor by tensor (never the whole model in memory)."""
    import gguf

    pre, tokens, types, merges = tokenizer
    qtype = gguf.GGMLQuantizationType[type_name.upper()]
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[type_name]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"Llama {shape.label} random weights ({type_name.upper()})")
    writer.add_size_label(shape.label)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(N_VOCAB)
    writer.add_file_type(int(file_type))
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

    plan = tensor_plan(shape)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    for name, dims in plan:
        if len(dims) == 1:
            writer.add_tensor_info(name, dims, np.dtype(np.float32), dims[0] * 4)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor_info(name, dims, np.dtype(np.float16), int(np.prod(dims)) * 2)
        else:
            byte_shape = (dims[0], dims[1] // block * size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    weights = RandomWeights(seed)
    for _, dims in plan:
        if len(dims) == 1:
            writer.write_tensor_data(np.ones(dims, dtype=np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.write_tensor_data(weights.f16(dims))
        else:
            writer.write_tensor_data(weights.quantized(qtype, dims))
    writer.close()


def quantize(llama_quantize: Path, source: Path, target: Path, type_name: str) -> None:
    proc = subprocess.run([str(llama_quantize), str(source), str(target), type_name.upper()],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"llama-quantize failed for {target.name}:\n{proc.stderr[-2000:]}")


def _parse_list(value: str, known, what: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in known]
    if unknown or not items:
        sys.exit(f"unknown {what} {', '.join(unknown) or '(none)'}; known: {', '.join(known)}")
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Directory for the .gguf files.")
    parser.add_argument("--shapes", default="1b,8b", help=f"Comma list of {', '.join(SHAPES)}.")
    parser.add_argument("--types", default="f16,q8_0,q4_0", help=f"Comma list of {', '.join(TYPES)}.")
    parser.add_argument("--tokenizer", help="GGUF whose BPE tokens and merges to use (default: smollm2-135m).")
    parser.add_argument("--via-quantize", action="store_true", help="Write F16, convert with llama-quantize.")
    parser.add_argument("--force", action="store_true", help="Rewrite files that exist.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shapes = _parse_list(args.shapes, SHAPES, "shape")
    types = _parse_list(args.types, TYPES, "type")

    from velollm_core.contract.errors import VeloError
    from velollm_core.contract.modelfiles import resolve_model_path

    try:
        source = resolve_model_path(args.tokenizer or "smollm2-135m")
        tokenizer = load_tokenizer(source)
        llama_quantize = None
        if args.via_quantize:
            from velollm_llamacpp.install import find_program

            llama_quantize = find_program("llama-quantize")
    except VeloError as exc:
        sys.exit(f"error: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"vocabulary: {len(tokenizer[1])} BPE tokens and {len(tokenizer[3])} merges from {source.name}, "
          f"padded to {N_VOCAB}")
    for shape_name in shapes:
        shape = SHAPES[shape_name]
        f16_path = args.out / f"llama-{shape_name}-random-f16.gguf"
        for type_name in types:
            path = args.out / f"llama-{shape_name}-random-{type_name}.gguf"
            if path.exists() and not args.force:
                print(f"kept     {path} (exists; --force rewrites it)")
                continue
            start = time.perf_counter()
            if llama_quantize is not None and type_name != "f16":
                if not f16_path.exists():
                    write_model(f16_path, shape, "f16", tokenizer, args.seed)
                quantize(llama_quantize, f16_path, path, type_name)
            else:
                write_model(path, shape, type_name, tokenizer, args.seed)
            size = path.stat().st_size / 2**30
            print(f"written  {path} ({size:.2f} GiB, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
