"""How much memory llama.cpp needs for a GGUF model: weights, KV cache, compute buffers, per device.

The KV figures follow llama.cpp's own allocation rules, so they can be checked against the
``llama_kv_cache: size = ...`` lines llama-server logs:

- the context is padded to 256 cells (``llama-context.cpp``);
- a unified cache is one stream of ``n_ctx`` cells; otherwise every slot gets its own stream of
  ``pad256(n_ctx / n_seq)`` cells;
- sliding-window layers (``llama-kv-cache-iswa.cpp``) hold
  ``pad256(min(cells, n_swa * (n_seq if unified else 1) + n_ubatch))`` cells per stream;
- a row of ``n`` elements of a block type takes ``n / block_size * block_bytes`` (q8_0: 34 bytes per 32).

The compute-buffer figure is an allowance fitted to llama-server's ``compute buffer size`` lines
(activations per micro-batch token, the attention mask, and without flash attention the KQ matrix),
not an exact replica of the graph allocator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from velollm_core.api import UserInputError
from velollm_gguf.meta import GgufSummary, TensorInfo

CTX_PAD = 256
SPLIT_MODES = ("none", "layer", "row")
# LLAMA_SCHED_MAX_COPIES: with every layer offloaded over several GPUs in layer mode, llama.cpp pipelines
# micro-batches through the GPUs and keeps this many copies of each device's graph inputs.
PIPELINE_COPIES = 4
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS (llama.cpp's src/llama-hparams.h): it refuses models with more
DEFAULT_UBATCH = 512
DEFAULT_BATCH = 2048
CACHE_TYPES = ("f16", "q8_0", "q4_0", "f32", "bf16", "q4_1", "iq4_nl", "q5_0", "q5_1")
INPUT = "input"
OUTPUT = "output"

_LAYER_TENSOR = re.compile(r"^blk\.(\d+)\.")
# Tensors llama.cpp places with the output layer; everything else outside blk.N stays with the input.
_OUTPUT_TENSORS = ("output.", "output_norm.", "cls.", "cls_norm.")


@dataclass(frozen=True)
class SwaRule:
    """How one architecture marks its sliding-window layers (from llama.cpp's ``load_arch_hparams``)."""

    period: int
    dense_first: bool = False
    default_window: int = 0
    needs_window_key: bool = True


# Architectures whose SWA pattern is a period in llama.cpp's code rather than an array in the GGUF.
SWA_RULES: dict[str, SwaRule] = {
    "gemma2": SwaRule(2, default_window=4096, needs_window_key=False),
    "gemma3": SwaRule(6),
    "gemma3n": SwaRule(5, needs_window_key=False),
    "cohere2": SwaRule(4, needs_window_key=False),
    "cohere2moe": SwaRule(4, dense_first=True, needs_window_key=False),
    "llama4": SwaRule(4, default_window=8192, needs_window_key=False),
    "gpt-oss": SwaRule(2, needs_window_key=False),
    "olmo2": SwaRule(4),
    "afmoe": SwaRule(4),
    "mellum": SwaRule(4),
    "plamo3": SwaRule(8),
    "laguna": SwaRule(4, dense_first=True),
    "exaone-moe": SwaRule(4, default_window=128, needs_window_key=False),
}


def cache_type_size(cache_type: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a KV cache type: f16 (1, 2), q8_0 (32, 34)."""
    import gguf

    try:
        qtype = gguf.GGMLQuantizationType[cache_type.upper()]
    except KeyError:
        raise UserInputError(f"unknown KV cache type {cache_type!r}; known: {', '.join(CACHE_TYPES)}") from None
    return gguf.GGML_QUANT_SIZES[qtype]


def row_bytes(cache_type: str, n_elements: int) -> int:
    """Bytes of one row of ``n_elements`` in ``cache_type`` (ggml_row_size)."""
    block, size = cache_type_size(cache_type)
    return -(-n_elements // block) * size


def pad(value: int, multiple: int = CTX_PAD) -> int:
    return -(-value // multiple) * multiple


def _per_layer(value: Any, n_layer: int, default: int = 0) -> tuple[int, ...]:
    """A per-layer field that GGUF stores either as one number or as an array."""
    if value is None:
        return (default,) * n_layer
    if isinstance(value, (list, tuple)):
        values = [int(v) for v in value][:n_layer]
        return tuple(values + [values[-1] if values else default] * (n_layer - len(values)))
    return (int(value),) * n_layer


@dataclass(frozen=True)
class ModelShape:
    """The attention geometry llama.cpp sizes its buffers from."""

    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    head_k: int
    head_v: int
    head_k_swa: int
    head_v_swa: int
    swa_layers: tuple[bool, ...]
    n_swa: int
    n_expert: int = 0
    n_expert_used: int = 0

    @property
    def has_swa(self) -> bool:
        return self.n_swa > 0 and any(self.swa_layers)

    def k_width(self, il: int) -> int:
        """K elements per cell of layer ``il`` (n_embd_k_gqa)."""
        return self.n_head_kv[il] * (self.head_k_swa if self.swa_layers[il] else self.head_k)

    def v_width(self, il: int) -> int:
        return self.n_head_kv[il] * (self.head_v_swa if self.swa_layers[il] else self.head_v)


def _swa_layers(summary: GgufSummary, n_layer: int) -> tuple[tuple[bool, ...], int]:
    """Which layers use a sliding window, and the window, as llama.cpp decides them."""
    arch = summary.architecture or ""
    window_key = summary.arch_value("attention.sliding_window")
    pattern = summary.arch_value("attention.sliding_window_pattern")
    rule = SWA_RULES.get(arch)
    window = int(window_key) if window_key is not None else (rule.default_window if rule else 0)
    if rule is None and not isinstance(pattern, (list, tuple)):
        # An architecture we have no rule for: treating its layers as full attention overestimates,
        # which is the safe side for a memory estimate.
        return (False,) * n_layer, 0
    if window <= 0 or (rule is not None and rule.needs_window_key and window_key is None):
        return (False,) * n_layer, 0
    if isinstance(pattern, (list, tuple)):
        flags = [bool(v) for v in pattern][:n_layer]
        return tuple(flags + [False] * (n_layer - len(flags))), window
    period = int(pattern) if pattern is not None else rule.period
    if rule.dense_first:
        flags = tuple(period == 0 or il % period != 0 for il in range(n_layer))
    else:
        flags = tuple(period == 0 or il % period < period - 1 for il in range(n_layer))
    return flags, window


def _n_vocab(summary: GgufSummary) -> int:
    vocab = summary.arch_value("vocab_size") or summary.array_lengths.get("tokenizer.ggml.tokens")
    if vocab:
        return int(vocab)
    for tensor in summary.tensors:
        if tensor.name == "token_embd.weight" and len(tensor.shape) == 2:
            return int(tensor.shape[1])
    return 0


def model_shape(summary: GgufSummary) -> ModelShape:
    """The attention geometry of a GGUF model; UserInputError when it is not an LLM llama.cpp sizes."""
    try:
        return _model_shape(summary)
    except (ValueError, TypeError, OverflowError) as exc:
        # A damaged or hostile file: text where a count belongs, an infinite float, a negative count.
        raise UserInputError(
            f"{summary.path}: its metadata does not describe a model llama.cpp can load ({exc})"
        ) from None


def _model_shape(summary: GgufSummary) -> ModelShape:
    n_layer = summary.arch_value("block_count")
    n_embd = summary.arch_value("embedding_length")
    if not n_layer or not n_embd:
        raise UserInputError(
            f"{summary.path}: no {summary.architecture}.block_count/embedding_length in its metadata; "
            "not a language model VeloLLM can size"
        )
    n_layer, n_embd = int(n_layer), int(n_embd)
    if not 0 < n_layer <= MAX_LAYERS:  # every per-layer table below has n_layer entries
        raise UserInputError(f"{summary.path}: {summary.architecture}.block_count is {n_layer:,}; "
                             f"llama.cpp loads 1 to {MAX_LAYERS} layers")
    n_head = _per_layer(summary.arch_value("attention.head_count"), n_layer, 1)
    # No head_count_kv means multi-head attention: as many KV heads as query heads.
    kv_raw = summary.arch_value("attention.head_count_kv")
    n_head_kv = n_head if kv_raw is None else _per_layer(kv_raw, n_layer)
    first_head = max(n_head) or 1
    head_k = int(summary.arch_value("attention.key_length") or n_embd // first_head)
    head_v = int(summary.arch_value("attention.value_length") or n_embd // first_head)
    swa_layers, n_swa = _swa_layers(summary, n_layer)
    n_ff = max(_per_layer(summary.arch_value("feed_forward_length"), n_layer))
    n_expert = int(summary.arch_value("expert_count") or 0)
    n_expert_used = int(summary.arch_value("expert_used_count") or 0)
    if n_expert and summary.arch_value("expert_feed_forward_length"):
        n_ff = max(n_ff, int(summary.arch_value("expert_feed_forward_length")) * max(n_expert_used, 1))
    return ModelShape(
        architecture=summary.architecture or "unknown",
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_vocab=_n_vocab(summary),
        n_ctx_train=int(summary.arch_value("context_length") or 4096),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_k=head_k,
        head_v=head_v,
        head_k_swa=int(summary.arch_value("attention.key_length_swa") or head_k),
        head_v_swa=int(summary.arch_value("attention.value_length_swa") or head_v),
        swa_layers=swa_layers,
        n_swa=n_swa,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
    )


@dataclass(frozen=True)
class KvLayout:
    """Cells llama.cpp allocates: per stream for full-attention and for sliding-window layers."""

    n_ctx: int
    cells: int
    swa_cells: int
    n_stream: int


def kv_layout(
    shape: ModelShape,
    ctx: int,
    *,
    parallel: int = 1,
    unified: bool = False,
    n_ubatch: int = DEFAULT_UBATCH,
    n_batch: int = DEFAULT_BATCH,
    swa_full: bool = False,
) -> KvLayout:
    """The cache layout of ``llama_context`` + ``llama_kv_cache_iswa`` for this context and slots."""
    n_ctx = pad(ctx)
    n_ubatch = min(n_batch, n_ubatch)
    if unified or parallel == 1:
        cells, n_stream = n_ctx, 1
    else:
        cells, n_stream = pad(n_ctx // parallel), parallel
        n_ctx = cells * parallel
    swa_cells = 0
    if shape.has_swa:
        swa_cells = cells if swa_full else pad(min(cells, shape.n_swa * (parallel if unified else 1) + n_ubatch))
    return KvLayout(n_ctx=n_ctx, cells=cells, swa_cells=swa_cells, n_stream=n_stream)


@dataclass(frozen=True)
class KvCacheEstimate:
    layout: KvLayout
    cache_type_k: str
    cache_type_v: str
    layer_bytes: tuple[int, ...]
    swa_layers: tuple[bool, ...]

    @property
    def bytes(self) -> int:
        return sum(self.layer_bytes)

    @property
    def full_bytes(self) -> int:
        """Bytes of the full-attention layers' cache (llama-server's non-SWA ``llama_kv_cache`` line)."""
        return sum(b for b, swa in zip(self.layer_bytes, self.swa_layers) if not swa)

    @property
    def swa_bytes(self) -> int:
        return sum(b for b, swa in zip(self.layer_bytes, self.swa_layers) if swa)


def estimate_kv_cache(
    shape: ModelShape,
    ctx: int,
    *,
    cache_type_k: str = "f16",
    cache_type_v: str | None = None,
    parallel: int = 1,
    unified: bool = False,
    n_ubatch: int = DEFAULT_UBATCH,
    n_batch: int = DEFAULT_BATCH,
    swa_full: bool = False,
) -> KvCacheEstimate:
    """KV cache bytes per layer for ``ctx`` tokens in total over ``parallel`` slots."""
    cache_type_v = cache_type_v or cache_type_k
    layout = kv_layout(shape, ctx, parallel=parallel, unified=unified, n_ubatch=n_ubatch, n_batch=n_batch,
                       swa_full=swa_full)
    per_layer = []
    for il in range(shape.n_layer):
        cells = layout.swa_cells if shape.swa_layers[il] and shape.has_swa else layout.cells
        k = row_bytes(cache_type_k, shape.k_width(il)) * cells
        v = row_bytes(cache_type_v, shape.v_width(il)) * cells
        per_layer.append((k + v) * layout.n_stream)
    swa = tuple(flag and shape.has_swa for flag in shape.swa_layers)
    return KvCacheEstimate(layout, cache_type_k, cache_type_v, tuple(per_layer), swa)


def estimate_compute_bytes(
    shape: ModelShape,
    layout: KvLayout,
    *,
    parallel: int = 1,
    n_ubatch: int = DEFAULT_UBATCH,
    n_batch: int = DEFAULT_BATCH,
    flash_attn: bool = True,
) -> int:
    """Allowance for llama.cpp's compute and output buffers (fitted to llama-server's logs)."""
    return sum(compute_parts(shape, layout, parallel=parallel, n_ubatch=n_ubatch, n_batch=n_batch,
                             flash_attn=flash_attn))


def compute_parts(
    shape: ModelShape,
    layout: KvLayout,
    *,
    parallel: int = 1,
    n_ubatch: int = DEFAULT_UBATCH,
    n_batch: int = DEFAULT_BATCH,
    flash_attn: bool = True,
) -> tuple[int, int]:
    """(the graph's buffer, the logits' buffers): every device that runs layers needs the first, the
    device of the output head the second."""
    tokens = min(layout.n_ctx, n_ubatch, n_batch)
    n_head = max(shape.n_head)
    # Activations alive at once per micro-batch token: FFN gate/up/act, a few residual-width
    # tensors, and the query projection (all f32).
    activations = tokens * 4 * (3 * shape.n_ff + 4 * shape.n_embd + n_head * shape.head_k)
    attended = [layout.cells] + ([layout.swa_cells] if layout.swa_cells else [])
    if flash_attn:
        attention = sum(tokens * cells * 2 for cells in attended)  # one f16 mask per cache
    else:
        # The KQ matrix (f32 per head) is reused across layers: the largest cache sizes it.
        attention = tokens * max(attended) * (4 * n_head + 4) + sum(tokens * c * 2 for c in attended[1:])
    logits = shape.n_vocab * 4 * parallel  # the graph's logits plus the host output buffer, per slot
    return activations + attention, 2 * logits


def tensor_layer(name: str, n_layer: int) -> int | str:
    """The layer index a tensor belongs to, or INPUT / OUTPUT for the tensors outside the blocks."""
    match = _LAYER_TENSOR.match(name)
    if match:
        return min(int(match.group(1)), n_layer - 1)
    return OUTPUT if name.startswith(_OUTPUT_TENSORS) else INPUT


def weights_by_layer(summary: GgufSummary, n_layer: int) -> dict[int | str, int]:
    """Weight bytes per layer index, plus INPUT (token embeddings) and OUTPUT (head, final norm)."""
    groups: dict[int | str, int] = {}
    for tensor in summary.tensors:
        key = tensor_layer(tensor.name, n_layer)
        groups[key] = groups.get(key, 0) + tensor.n_bytes
    return groups


def has_output_tensor(summary: GgufSummary) -> bool:
    """False when the output head is tied to the token embeddings (llama.cpp then duplicates them)."""
    return any(t.name == "output.weight" for t in summary.tensors)


@dataclass(frozen=True)
class DeviceMemory:
    """What one device holds: its weights, its layers' KV cache and its compute buffer."""

    name: str
    bytes: int
    layers: int = 0
    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    compute_bytes: int = 0


@dataclass
class MemoryEstimate:
    """What one llama-server configuration needs; ``devices`` only when layers are split."""

    model: str
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    n_ctx: int
    n_layer: int
    parallel: int
    cache_type_k: str
    cache_type_v: str
    flash_attn: bool
    kv: KvCacheEstimate
    n_gpu_layers: int | None = None
    devices: list[DeviceMemory] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # A tied output head offloaded to a GPU is a second copy of the token embeddings.
    duplicated_bytes: int = 0
    split_mode: str = "layer"
    gpu_count: int = 1

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.duplicated_bytes

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "compute_bytes": self.compute_bytes,
            "total_bytes": self.total_bytes,
            "n_ctx": self.n_ctx,
            "n_layer": self.n_layer,
            "parallel": self.parallel,
            "cache_type_k": self.cache_type_k,
            "cache_type_v": self.cache_type_v,
            "flash_attn": self.flash_attn,
            "kv_cells": self.kv.layout.cells,
            "kv_streams": self.kv.layout.n_stream,
            "kv_full_attention_bytes": self.kv.full_bytes,
        }
        if self.kv.layout.swa_cells:
            data["kv_swa_cells"] = self.kv.layout.swa_cells
            data["kv_swa_bytes"] = self.kv.swa_bytes
        if self.duplicated_bytes:
            data["duplicated_bytes"] = self.duplicated_bytes
        if self.n_gpu_layers is not None:
            data["n_gpu_layers"] = self.n_gpu_layers
            data["devices"] = [{"name": d.name, "bytes": d.bytes, "layers": d.layers} for d in self.devices]
            if self.gpu_count > 1:  # over several GPUs, each device's parts and how they were split
                data["split_mode"] = self.split_mode
                for entry, device in zip(data["devices"], self.devices):
                    entry.update(weights_bytes=device.weights_bytes, kv_cache_bytes=device.kv_cache_bytes,
                                 compute_bytes=device.compute_bytes)
        data["notes"] = list(self.notes)
        return data


def _split_gpu_layers(first: int, last: int, split: list[float]) -> list[list[int]]:
    """llama.cpp's layer split: layer il goes to the first device whose cumulative share exceeds it."""
    total = sum(split) or 1.0
    bounds, acc = [], 0.0
    for share in split:
        acc += share / total
        bounds.append(acc)
    count = last - first + 1
    out: list[list[int]] = [[] for _ in split]
    for il in range(first, last + 1):
        position = (il - first) / count
        index = next((i for i, b in enumerate(bounds) if position < b), len(split) - 1)
        out[index].append(il)
    return out


def gpu_layout(names: tuple[str, ...], split: tuple[float, ...] | None, split_mode: str,
               main_gpu: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The GPUs a split uses and their ratios; UserInputError for what llama.cpp would refuse."""
    if split_mode not in SPLIT_MODES:
        raise UserInputError(f"unknown split mode {split_mode!r}; known: {', '.join(SPLIT_MODES)}")
    if not 0 <= main_gpu < len(names):
        raise UserInputError(f"--main-gpu {main_gpu} is not one of the {len(names)} GPU(s) (0 to {len(names) - 1})")
    split = tuple(split) if split is not None else tuple(1.0 for _ in names)
    if len(split) != len(names):
        raise UserInputError(f"--tensor-split gives {len(split)} ratio(s) for {len(names)} GPU(s)")
    if any(not math.isfinite(r) or r < 0 for r in split) or not any(split):
        raise UserInputError("--tensor-split ratios must be non-negative numbers, at least one above zero")
    if split_mode == "none":  # llama.cpp keeps only the main GPU (llama_prepare_model_devices)
        return (names[main_gpu],), (1.0,)
    return names, split


def check_options(ctx: int | None, parallel: int, cache_type_k: str, cache_type_v: str | None) -> None:
    """UserInputError for values llama.cpp would refuse."""
    if ctx is not None and ctx < 1:
        raise UserInputError(f"--ctx must be a positive number of tokens, got {ctx}")
    if parallel < 1:
        raise UserInputError(f"--parallel must be at least 1, got {parallel}")
    for cache_type in (cache_type_k, cache_type_v or cache_type_k):
        if cache_type.lower() not in CACHE_TYPES:
            raise UserInputError(f"unknown KV cache type {cache_type!r}; known: {', '.join(CACHE_TYPES)}")


def estimate_memory(
    summary: GgufSummary,
    *,
    ctx: int | None = None,
    cache_type_k: str = "f16",
    cache_type_v: str | None = None,
    parallel: int = 1,
    unified: bool = False,
    n_ubatch: int = DEFAULT_UBATCH,
    n_batch: int = DEFAULT_BATCH,
    flash_attn: bool = True,
    n_gpu_layers: int | None = None,
    gpu_names: tuple[str, ...] = ("GPU0",),
    gpu_split: tuple[float, ...] | None = None,
    swa_full: bool = False,
    split_mode: str = "layer",
    main_gpu: int = 0,
) -> MemoryEstimate:
    """Weights, KV cache and compute bytes of llama-server with these settings; per device when
    ``n_gpu_layers`` is given (llama.cpp offloads the last layers first and counts the output head
    as layer ``n_layer``; the token embeddings stay on the CPU). Over several ``gpu_names``: the
    ``gpu_split`` ratios (-ts; equal when None), ``split_mode`` (-sm none|layer|row) and ``main_gpu``
    (-mg: the one GPU of ``none``)."""
    cache_type_k = cache_type_k.lower()
    cache_type_v = (cache_type_v or cache_type_k).lower()
    check_options(ctx, parallel, cache_type_k, cache_type_v)
    shape = model_shape(summary)
    ctx = ctx or shape.n_ctx_train
    kv = estimate_kv_cache(shape, ctx, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                           parallel=parallel, unified=unified, n_ubatch=n_ubatch, n_batch=n_batch,
                           swa_full=swa_full)
    parts = compute_parts(shape, kv.layout, parallel=parallel, n_ubatch=n_ubatch, n_batch=n_batch,
                          flash_attn=flash_attn)
    weights = summary.weights_bytes
    notes: list[str] = []
    if cache_type_v not in ("f16", "f32", "bf16") and not flash_attn:
        notes.append("a quantized V cache needs flash attention (-fa on): llama.cpp refuses it otherwise")
    block_k = cache_type_size(cache_type_k)[0]
    if block_k > 1 and any(shape.k_width(il) % block_k for il in range(shape.n_layer)):
        notes.append(f"K rows are not a multiple of {block_k}: llama.cpp cannot use a {cache_type_k} K cache here")
    if shape.architecture not in SWA_RULES and summary.arch_value("attention.sliding_window") and not shape.has_swa:
        notes.append(f"{shape.architecture} declares a sliding window VeloLLM does not model: the KV figure "
                     "assumes full attention on every layer (an overestimate)")
    estimate = MemoryEstimate(
        model=summary.path,
        weights_bytes=weights,
        kv_cache_bytes=kv.bytes,
        compute_bytes=sum(parts),
        n_ctx=kv.layout.n_ctx,
        n_layer=shape.n_layer,
        parallel=parallel,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        flash_attn=flash_attn,
        kv=kv,
        notes=notes,
    )
    if n_gpu_layers is not None:
        estimate.n_gpu_layers = max(0, min(n_gpu_layers, shape.n_layer + 1))
        names, split = gpu_layout(gpu_names, gpu_split, split_mode, main_gpu)
        estimate.split_mode, estimate.gpu_count = split_mode, len(names)
        estimate.devices = split_devices(summary, shape, kv, parts, estimate.n_gpu_layers, names, split, split_mode)
        # Over several GPUs each one holds a graph buffer: the compute total is theirs together.
        estimate.compute_bytes = sum(d.compute_bytes for d in estimate.devices)
        if estimate.n_gpu_layers > 0 and not has_output_tensor(summary):
            estimate.duplicated_bytes = weights_by_layer(summary, shape.n_layer).get(INPUT, 0)
            estimate.notes.append("the output head is tied to the token embeddings: llama.cpp keeps them on "
                                  "the CPU for the input and copies them to the GPU for the head")
    return estimate


def is_split_matrix(tensor: TensorInfo) -> bool:
    """Whether row mode splits ``tensor`` across the GPUs: a 2-D weight matrix (what matrix products
    read); norms, biases and 3-D expert stacks stay whole on their layer's device."""
    return len(tensor.shape) == 2 and min(tensor.shape) > 1


def split_devices(
    summary: GgufSummary,
    shape: ModelShape,
    kv: KvCacheEstimate,
    compute: tuple[int, int],
    n_gpu_layers: int,
    gpu_names: tuple[str, ...],
    gpu_split: tuple[float, ...],
    split_mode: str = "layer",
) -> list[DeviceMemory]:
    """Bytes per device when the last ``n_gpu_layers`` layers (the output head counting as one) are
    offloaded: each layer's weights and KV cache live on its device (``layer``); in ``row`` mode each
    layer's weight matrices are cut by rows over every GPU in the split's ratios while the rest of the
    layer and its KV cache stay on the layer's device (llama-model.cpp's load_tensors gives each layer
    a device by the split in both modes). ``compute`` is (graph, logits) from ``compute_parts``: on one
    GPU the whole buffer goes with the output head; over several, every GPU that runs layers gets a
    graph buffer, with its inputs copied ``PIPELINE_COPIES`` times when every layer is offloaded in
    layer mode (llama.cpp's pipeline parallelism), and the output head's GPU the logits."""
    n_layer = shape.n_layer
    weights = weights_by_layer(summary, n_layer)
    first = n_layer + 1 - n_gpu_layers  # index n_layer is the output head
    placement: dict[int, int] = {}
    if n_gpu_layers > 0:
        for device, layers in enumerate(_split_gpu_layers(first, n_layer, list(gpu_split))):
            for il in layers:
                placement[il] = device
    count = len(gpu_names)
    gpu_weights, gpu_kv, gpu_compute, gpu_layers = [0] * count, [0] * count, [0] * count, [0] * count
    total_share = sum(gpu_split) or 1.0
    shares = [share / total_share for share in gpu_split]

    def place(owner: int, n_bytes: int, matrix: bool) -> None:
        if split_mode == "row" and matrix:
            parts = [int(n_bytes * share) for share in shares]
            parts[owner] += n_bytes - sum(parts)  # the rounding remainder stays with the layer's device
            for device, part in enumerate(parts):
                gpu_weights[device] += part
        else:
            gpu_weights[owner] += n_bytes

    cpu_weights, cpu_kv = weights.get(INPUT, 0), 0
    for tensor in summary.tensors:
        il = tensor_layer(tensor.name, n_layer)
        if il == INPUT:
            continue
        layer = n_layer if il == OUTPUT else il
        if layer in placement:
            place(placement[layer], tensor.n_bytes, is_split_matrix(tensor))
        else:
            cpu_weights += tensor.n_bytes
    for il in range(n_layer):
        if il in placement:
            gpu_kv[placement[il]] += kv.layer_bytes[il]
            gpu_layers[placement[il]] += 1
        else:
            cpu_kv += kv.layer_bytes[il]
    if n_layer in placement:
        gpu_layers[placement[n_layer]] += 1
        if not has_output_tensor(summary):
            # A tied head is a copy of the token embeddings on the output device (TENSOR_DUPLICATED).
            place(placement[n_layer], weights.get(INPUT, 0), True)
    graph, logits = compute
    cpu_compute = 0
    running = [device for device in range(count) if gpu_layers[device]]
    if n_gpu_layers == 0:
        cpu_compute = graph + logits
    elif len(running) == 1:
        # The graph runs where the offloaded layers are; the host keeps a small staging share.
        gpu_compute[placement[n_layer]] += graph + logits
    else:
        pipelined = split_mode == "layer" and n_gpu_layers == n_layer + 1
        for device in running:
            gpu_compute[device] += graph + (pipeline_inputs_bytes(shape, kv.layout) if pipelined else 0)
        gpu_compute[placement[n_layer]] += logits
    devices = [DeviceMemory(name, w + k + c, n, w, k, c)
               for name, w, k, c, n in zip(gpu_names, gpu_weights, gpu_kv, gpu_compute, gpu_layers) if n]
    return [*devices, DeviceMemory("CPU", cpu_weights + cpu_kv + cpu_compute, n_layer + 1 - sum(gpu_layers),
                                   cpu_weights, cpu_kv, cpu_compute)]


def pipeline_inputs_bytes(shape: ModelShape, layout: KvLayout, n_ubatch: int = DEFAULT_UBATCH) -> int:
    """The extra copies of one device's graph inputs under pipeline parallelism: the residual stream
    (f32) and the KQ mask (f16) of a micro-batch, ``PIPELINE_COPIES - 1`` more times."""
    tokens = min(layout.n_ctx, n_ubatch)
    return (PIPELINE_COPIES - 1) * tokens * (shape.n_embd * 4 + layout.cells * 2)


def layer_bytes(summary: GgufSummary, kv: KvCacheEstimate) -> list[int]:
    """Weights plus KV cache of each repeating layer, in layer order (what one -ngl step moves)."""
    n_layer = len(kv.layer_bytes)
    weights = weights_by_layer(summary, n_layer)
    return [weights.get(il, 0) + kv.layer_bytes[il] for il in range(n_layer)]


def output_bytes(summary: GgufSummary) -> int:
    """Bytes the output head adds to its device (a tied head duplicates the token embeddings)."""
    shape_layers = int(summary.arch_value("block_count") or 0)
    weights = weights_by_layer(summary, max(shape_layers, 1))
    return weights.get(OUTPUT, 0) + (0 if has_output_tensor(summary) else weights.get(INPUT, 0))
