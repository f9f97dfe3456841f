"""The memory estimate: llama.cpp's KV-cache rules on synthetic models.

The KV figure against what the real llama-server logs, and the ``velollm estimate`` command, are
checked in the llamacpp plugin's tests (test_estimate_real.py, test_estimate_command.py).
"""

from __future__ import annotations

import pytest
from velollm_gguf.estimate import estimate_memory, kv_layout, model_shape, row_bytes
from velollm_gguf.meta import GgufSummary, TensorInfo

from velollm_core.api import UserInputError

MIB = 2**20


def make_summary(
    arch: str = "llama",
    *,
    n_layer: int = 4,
    n_embd: int = 256,
    n_head: int | list[int] = 8,
    n_head_kv: int | list[int] | None = 2,
    key_length: int | None = None,
    n_ff: int = 512,
    n_vocab: int = 1000,
    ctx_train: int = 8192,
    tied: bool = True,
    extra: dict | None = None,
    layer_bytes: int = 1000,
    embd_bytes: int = 50_000,
) -> GgufSummary:
    """A GGUF summary of a Llama-style model with round tensor sizes."""
    metadata = {
        "general.architecture": arch,
        f"{arch}.block_count": n_layer,
        f"{arch}.embedding_length": n_embd,
        f"{arch}.attention.head_count": n_head,
        f"{arch}.feed_forward_length": n_ff,
        f"{arch}.context_length": ctx_train,
    }
    if n_head_kv is not None:
        metadata[f"{arch}.attention.head_count_kv"] = n_head_kv
    if key_length is not None:
        metadata[f"{arch}.attention.key_length"] = key_length
        metadata[f"{arch}.attention.value_length"] = key_length
    metadata.update({f"{arch}.{k}": v for k, v in (extra or {}).items()})
    tensors = [TensorInfo("token_embd.weight", "Q8_0", (n_embd, n_vocab), embd_bytes)]
    tensors += [TensorInfo(f"blk.{i}.ffn_up.weight", "Q4_0", (n_embd, n_ff), layer_bytes) for i in range(n_layer)]
    tensors.append(TensorInfo("output_norm.weight", "F32", (n_embd,), n_embd * 4))
    if not tied:
        tensors.append(TensorInfo("output.weight", "Q6_K", (n_embd, n_vocab), 40_000))
    return GgufSummary("synthetic.gguf", 0, metadata, tuple(tensors), {"tokenizer.ggml.tokens": n_vocab})


def test_kv_bytes_follow_layers_heads_head_dim_and_cache_type():
    summary = make_summary(n_layer=4, n_embd=256, n_head=8, n_head_kv=2)  # head dim 32, K/V rows of 64
    estimate = estimate_memory(summary, ctx=1000)  # padded to 1024 cells
    assert estimate.n_ctx == 1024
    assert estimate.kv_cache_bytes == 4 * 2 * 64 * 2 * 1024  # layers x (K+V) x width x f16 x cells
    q8 = estimate_memory(summary, ctx=1024, cache_type_k="q8_0")
    assert q8.kv_cache_bytes == 4 * 2 * (64 // 32 * 34) * 1024  # 34 bytes per 32 elements
    q4 = estimate_memory(summary, ctx=1024, cache_type_k="q4_0", cache_type_v="q4_0")
    assert q4.kv_cache_bytes == 4 * 2 * (64 // 32 * 18) * 1024


def test_row_bytes_of_block_types():
    assert row_bytes("f16", 128) == 256
    assert row_bytes("q8_0", 128) == 136
    assert row_bytes("q4_0", 128) == 72
    assert row_bytes("f32", 10) == 40


def test_explicit_key_length_and_per_layer_kv_heads():
    # Hybrid models store one KV-head count per layer; a layer with none has no KV cache.
    summary = make_summary(n_layer=3, n_head_kv=[4, 0, 2], key_length=128)
    estimate = estimate_memory(summary, ctx=256)
    assert estimate.kv.layer_bytes == (4 * 128 * 2 * 2 * 256, 0, 2 * 128 * 2 * 2 * 256)


def test_missing_kv_head_count_means_multi_head_attention():
    summary = make_summary(n_layer=1, n_embd=64, n_head=4, n_head_kv=None)
    assert model_shape(summary).n_head_kv == (4,)


def test_parallel_slots_split_the_context_into_streams_unless_unified():
    shape = model_shape(make_summary())
    separate = kv_layout(shape, 4096, parallel=4)
    assert (separate.cells, separate.n_stream, separate.n_ctx) == (1024, 4, 4096)
    odd = kv_layout(shape, 4096, parallel=3)  # 4096 / 3 = 1365 -> 1536 cells per stream
    assert (odd.cells, odd.n_stream, odd.n_ctx) == (1536, 3, 4608)
    unified = kv_layout(shape, 4096, parallel=4, unified=True)
    assert (unified.cells, unified.n_stream) == (4096, 1)


def gemma3_like(n_layer: int = 18, window: int | None = 512) -> GgufSummary:
    extra = {"attention.sliding_window": window} if window is not None else {}
    return make_summary("gemma3", n_layer=n_layer, n_embd=640, n_head=4, n_head_kv=1, key_length=256, extra=extra)


def test_gemma3_every_sixth_layer_is_global_and_the_others_hold_the_window():
    shape = model_shape(gemma3_like())
    assert [il for il, swa in enumerate(shape.swa_layers) if not swa] == [5, 11, 17]
    estimate = estimate_memory(gemma3_like(), ctx=4096)
    layout = estimate.kv.layout
    assert (layout.cells, layout.swa_cells) == (4096, 1024)  # 512 window + 512 ubatch
    assert estimate.kv.full_bytes == 3 * 2 * 256 * 2 * 4096
    assert estimate.kv.swa_bytes == 15 * 2 * 256 * 2 * 1024


def test_swa_cache_grows_with_unified_slots_and_never_exceeds_the_context():
    shape = model_shape(gemma3_like())
    assert kv_layout(shape, 4096, parallel=4, unified=True).swa_cells == 2560  # 512 * 4 + 512
    assert kv_layout(shape, 512, parallel=1).swa_cells == 512  # min(512 cells, 1024)
    assert kv_layout(shape, 4096, parallel=1, n_ubatch=100).swa_cells == 768  # 612 padded to 256
    assert kv_layout(shape, 4096, swa_full=True).swa_cells == 4096


def test_gemma3_without_a_window_key_has_no_swa():
    assert not model_shape(gemma3_like(window=None)).has_swa


def test_pattern_array_in_the_gguf_wins_over_the_architecture_rule():
    summary = make_summary("gemma3", n_layer=4, extra={"attention.sliding_window": 128,
                                                       "attention.sliding_window_pattern": [True, False, True, False]})
    assert model_shape(summary).swa_layers == (True, False, True, False)


def test_unknown_architecture_with_a_window_is_sized_as_full_attention_with_a_note():
    summary = make_summary("novel", extra={"attention.sliding_window": 256})
    estimate = estimate_memory(summary, ctx=1024)
    assert not model_shape(summary).has_swa
    assert any("does not model" in note for note in estimate.notes)


def test_compute_allowance_grows_without_flash_attention_and_with_the_context():
    summary = make_summary()
    with_fa = estimate_memory(summary, ctx=4096).compute_bytes
    without = estimate_memory(summary, ctx=4096, flash_attn=False).compute_bytes
    longer = estimate_memory(summary, ctx=16384, flash_attn=False).compute_bytes
    assert with_fa < without < longer


def test_total_is_the_sum_and_defaults_to_the_trained_context():
    summary = make_summary(ctx_train=2048)
    estimate = estimate_memory(summary)
    assert estimate.n_ctx == 2048
    assert estimate.total_bytes == estimate.weights_bytes + estimate.kv_cache_bytes + estimate.compute_bytes
    assert "devices" not in estimate.to_json()


def test_offloaded_layers_are_the_last_ones_and_the_head_counts_as_one():
    summary = make_summary(n_layer=4, tied=False, layer_bytes=1000)
    estimate = estimate_memory(summary, ctx=256, n_gpu_layers=3)  # head + layers 2 and 3
    gpu, cpu = estimate.devices
    kv_layer = estimate.kv.layer_bytes[0]
    assert (gpu.name, gpu.layers, cpu.layers) == ("GPU0", 3, 2)
    assert gpu.bytes == 2 * (1000 + kv_layer) + 40_000 + 256 * 4 + estimate.compute_bytes
    assert cpu.bytes == 50_000 + 2 * (1000 + kv_layer)
    assert sum(d.bytes for d in estimate.devices) == estimate.total_bytes
    data = estimate.to_json()
    assert data["devices"] == [{"name": "GPU0", "bytes": gpu.bytes, "layers": 3},
                               {"name": "CPU", "bytes": cpu.bytes, "layers": 2}]


def test_a_tied_head_on_the_gpu_copies_the_token_embeddings():
    estimate = estimate_memory(make_summary(n_layer=2, tied=True), ctx=256, n_gpu_layers=3)
    assert estimate.duplicated_bytes == 50_000
    assert sum(d.bytes for d in estimate.devices) == estimate.total_bytes
    assert estimate_memory(make_summary(n_layer=2, tied=True), ctx=256, n_gpu_layers=0).duplicated_bytes == 0


def test_layers_split_across_gpus_by_their_share():
    estimate = estimate_memory(make_summary(n_layer=7), ctx=256, n_gpu_layers=8, gpu_names=("A", "B"),
                               gpu_split=(3.0, 1.0))
    layers = {d.name: d.layers for d in estimate.devices}
    assert layers == {"A": 6, "B": 2, "CPU": 0}


def test_bad_values_are_user_errors():
    summary = make_summary()
    with pytest.raises(UserInputError, match="positive"):
        estimate_memory(summary, ctx=0)
    with pytest.raises(UserInputError, match="parallel"):
        estimate_memory(summary, parallel=0)
    with pytest.raises(UserInputError, match="KV cache type"):
        estimate_memory(summary, cache_type_k="q3_x")
    with pytest.raises(UserInputError, match="block_count"):
        model_shape(GgufSummary("x.gguf", 0, {"general.architecture": "clip"}, (), {}))


def test_quantized_v_cache_without_flash_attention_is_flagged():
    estimate = estimate_memory(make_summary(), ctx=256, cache_type_k="q8_0", flash_attn=False)
    assert any("flash attention" in note for note in estimate.notes)
