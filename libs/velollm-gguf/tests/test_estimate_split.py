"""The memory estimate per GPU when llama.cpp splits a model: layer mode (-sm layer, -ts ratios), row mode,
none with a main GPU; on synthetic shapes and on the real bundled Gemma 3 270M."""

from __future__ import annotations

import pytest
from velollm_gguf.estimate import (
    PIPELINE_COPIES,
    compute_parts,
    estimate_memory,
    model_shape,
    pipeline_inputs_bytes,
)
from velollm_gguf.meta import GgufSummary, TensorInfo
from velollm_testkit.real import missing

from velollm_core.api import UserInputError

N_EMBD = 256
MATRIX, NORM, HEAD, EMBD = 4000, 1024, 40_000, 50_000


def summary(n_layer: int = 4) -> GgufSummary:
    """A Llama-style model whose every layer is one weight matrix and one norm, with an untied head."""
    arch = "llama"
    metadata = {"general.architecture": arch, f"{arch}.block_count": n_layer, f"{arch}.embedding_length": N_EMBD,
                f"{arch}.attention.head_count": 8, f"{arch}.attention.head_count_kv": 2,
                f"{arch}.feed_forward_length": 512, f"{arch}.context_length": 4096}
    tensors = [TensorInfo("token_embd.weight", "Q8_0", (N_EMBD, 1000), EMBD)]
    for il in range(n_layer):
        tensors += [TensorInfo(f"blk.{il}.ffn_up.weight", "Q4_0", (N_EMBD, 512), MATRIX),
                    TensorInfo(f"blk.{il}.attn_norm.weight", "F32", (N_EMBD,), NORM)]
    tensors += [TensorInfo("output_norm.weight", "F32", (N_EMBD,), N_EMBD * 4),
                TensorInfo("output.weight", "Q6_K", (N_EMBD, 1000), HEAD)]
    return GgufSummary("synthetic.gguf", 0, metadata, tuple(tensors), {"tokenizer.ggml.tokens": 1000})


def devices(estimate) -> dict:
    return {device.name: device for device in estimate.devices}


def test_layer_mode_puts_each_layers_weights_and_kv_on_its_gpu_and_a_graph_buffer_on_both():
    estimate = estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("A", "B"), gpu_split=(3.0, 1.0))
    a, b, cpu = devices(estimate)["A"], devices(estimate)["B"], devices(estimate)["CPU"]
    kv_layer = estimate.kv.layer_bytes[0]
    # Five offloaded units (4 layers + head) at 3:1: llama.cpp's upper_bound gives A units 0-3 and B the head.
    assert (a.layers, b.layers, cpu.layers) == (4, 1, 0)
    assert a.weights_bytes == 4 * (MATRIX + NORM) and a.kv_cache_bytes == 4 * kv_layer
    assert b.weights_bytes == HEAD + N_EMBD * 4 and b.kv_cache_bytes == 0
    assert cpu.weights_bytes == EMBD
    # Pipelined (every layer offloaded, layer mode): each GPU's graph inputs are kept PIPELINE_COPIES times.
    graph, logits = compute_parts(estimate_shape(), estimate.kv.layout)
    extra = pipeline_inputs_bytes(estimate_shape(), estimate.kv.layout)
    assert extra > 0 and PIPELINE_COPIES == 4
    assert (a.compute_bytes, b.compute_bytes) == (graph + extra, graph + extra + logits)  # logits: the head's GPU
    assert estimate.compute_bytes == 2 * (graph + extra) + logits
    assert sum(d.bytes for d in estimate.devices) == estimate.total_bytes
    assert estimate.to_json()["split_mode"] == "layer"


def estimate_shape():
    return model_shape(summary())


def test_partial_offload_over_two_gpus_is_not_pipelined():
    full = estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("A", "B"))
    partial = estimate_memory(summary(), ctx=512, n_gpu_layers=4, gpu_names=("A", "B"))
    extra = pipeline_inputs_bytes(estimate_shape(), full.kv.layout)
    assert devices(full)["A"].compute_bytes - devices(partial)["A"].compute_bytes == extra


def test_row_mode_cuts_every_matrix_by_the_ratios_and_keeps_norms_and_kv_on_the_layers_gpu():
    layer = estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("A", "B"), gpu_split=(3.0, 1.0))
    row = estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("A", "B"), gpu_split=(3.0, 1.0),
                          split_mode="row")
    a, b = devices(row)["A"], devices(row)["B"]
    assert a.weights_bytes == 4 * (MATRIX * 3 // 4 + NORM) + HEAD * 3 // 4
    assert b.weights_bytes == 4 * (MATRIX // 4) + HEAD // 4 + N_EMBD * 4
    assert (a.kv_cache_bytes, b.kv_cache_bytes) == (devices(layer)["A"].kv_cache_bytes, 0)
    assert a.weights_bytes + b.weights_bytes == devices(layer)["A"].weights_bytes + devices(layer)["B"].weights_bytes
    assert sum(d.bytes for d in row.devices) == row.total_bytes


def test_none_keeps_everything_on_the_main_gpu():
    alone = estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("B",))
    none = estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("A", "B"), split_mode="none", main_gpu=1)
    assert [(d.name, d.bytes, d.layers) for d in none.devices] == [(d.name, d.bytes, d.layers) for d in alone.devices]
    assert "split_mode" not in none.to_json()  # one GPU: nothing was split


@pytest.mark.parametrize(("options", "message"), [
    ({"gpu_split": (1.0,)}, "1 ratio"),
    ({"gpu_split": (1.0, -1.0)}, "non-negative"),
    ({"gpu_split": (0.0, 0.0)}, "above zero"),
    ({"main_gpu": 2}, "--main-gpu 2"),
    ({"split_mode": "tensor"}, "unknown split mode"),
])
def test_a_split_llama_cpp_would_refuse_is_a_user_error(options, message):
    with pytest.raises(UserInputError, match=message):
        estimate_memory(summary(), ctx=512, n_gpu_layers=5, gpu_names=("A", "B"), **options)


# --- the real Gemma 3 270M (18 layers, tied head, sliding-window layers) -----------------------------


@pytest.fixture
def gemma_summary():
    from velollm_gguf import read_summary

    from velollm_core.api import resolve_model_path

    try:
        return read_summary(resolve_model_path("gemma3-270m"))
    except UserInputError as exc:
        missing("the bundled Gemma 3 270M", str(exc))


def test_gemma_split_in_two_equal_halves_by_layer_and_by_row(gemma_summary):
    layer = estimate_memory(gemma_summary, ctx=4096, n_gpu_layers=99, gpu_names=("GPU0", "GPU1"))
    assert [(d.name, d.layers) for d in layer.devices] == [("GPU0", 10), ("GPU1", 9), ("CPU", 0)]
    gpu0, gpu1 = layer.devices[:2]
    # The tied head's copy of the 171 MiB token embeddings lands on the head's GPU.
    assert gpu1.weights_bytes - gpu0.weights_bytes > layer.duplicated_bytes * 0.9
    assert gpu0.kv_cache_bytes + gpu1.kv_cache_bytes == layer.kv_cache_bytes
    assert sum(d.bytes for d in layer.devices) == layer.total_bytes

    row = estimate_memory(gemma_summary, ctx=4096, n_gpu_layers=99, gpu_names=("GPU0", "GPU1"), split_mode="row")
    r0, r1 = row.devices[:2]
    assert abs(r0.weights_bytes - r1.weights_bytes) < 0.02 * (r0.weights_bytes + r1.weights_bytes)
    assert r0.weights_bytes + r1.weights_bytes == gpu0.weights_bytes + gpu1.weights_bytes
    assert sum(d.bytes for d in row.devices) == row.total_bytes


def test_gemma_on_one_of_two_gpus_needs_what_one_gpu_needs(gemma_summary):
    none = estimate_memory(gemma_summary, ctx=4096, n_gpu_layers=99, gpu_names=("GPU0", "GPU1"), split_mode="none")
    one = estimate_memory(gemma_summary, ctx=4096, n_gpu_layers=99)
    assert none.devices[0].bytes == one.devices[0].bytes
    two = estimate_memory(gemma_summary, ctx=4096, n_gpu_layers=99, gpu_names=("GPU0", "GPU1"))
    # Two GPUs together hold more than one: a graph buffer each, and pipelined inputs.
    assert sum(d.bytes for d in two.devices[:2]) > one.devices[0].bytes
