"""What one decode step of a GGUF model reads (``velollm_gguf.roofline``): the weights a token passes
through and the KV cache per token of context, which the benchmark's roofline divides the bandwidth by."""

from __future__ import annotations

from velollm_gguf.meta import GgufSummary, TensorInfo
from velollm_gguf.roofline import bytes_per_token, decode_traffic, file_decode_traffic


def summary(*, tied: bool, moe: bool = False, window: int | None = None) -> GgufSummary:
    arch = "gemma3" if window else "llama"
    metadata = {
        "general.architecture": arch,
        f"{arch}.block_count": 2,
        f"{arch}.embedding_length": 64,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 1,  # K and V rows of 16 elements
        f"{arch}.feed_forward_length": 128,
    }
    if window:
        metadata[f"{arch}.attention.sliding_window"] = window
    tensors = [TensorInfo("token_embd.weight", "F16", (64, 1000), 128_000),
               TensorInfo("blk.0.attn_q.weight", "F16", (64, 64), 8192),
               TensorInfo("blk.1.attn_q.weight", "F16", (64, 64), 8192),
               TensorInfo("output_norm.weight", "F32", (64,), 256)]
    if moe:
        metadata.update({f"{arch}.expert_count": 8, f"{arch}.expert_used_count": 2})
        tensors.append(TensorInfo("blk.0.ffn_up_exps.weight", "Q4_0", (64, 128, 8), 80_000))
    if not tied:
        tensors.append(TensorInfo("output.weight", "F16", (64, 1000), 128_000))
    return GgufSummary("m.gguf", 0, metadata, tuple(tensors), {})


def test_untied_model_reads_layers_head_and_one_embedding_row():
    assert bytes_per_token(summary(tied=False)) == 8192 * 2 + 256 + 128_000 + 128


def test_tied_head_reads_the_whole_embedding_matrix():
    assert bytes_per_token(summary(tied=True)) == 8192 * 2 + 256 + 128_000


def test_moe_reads_only_the_experts_used():
    dense = bytes_per_token(summary(tied=True))
    assert bytes_per_token(summary(tied=True, moe=True)) == dense + 80_000 * 2 // 8


def test_kv_read_grows_with_context_and_stops_at_the_window():
    base = bytes_per_token(summary(tied=True))
    row = 2 * 16 * 2  # K + V, 16 elements, f16
    assert bytes_per_token(summary(tied=True), context_tokens=100) == base + 2 * 100 * row
    windowed = summary(tied=True, window=10)  # gemma3: layer 0 slides, layer 1 too (period 6)
    assert bytes_per_token(windowed, context_tokens=100) == base + 2 * 10 * row
    assert bytes_per_token(summary(tied=True), context_tokens=100, cache_type_k="f32") == base + 2 * 100 * row * 2  # K and V in f32


def test_traffic_splits_full_and_window_layers_and_keeps_the_resident_weights():
    traffic = decode_traffic(summary(tied=False, window=10), cache_type_k="q8_0", cpu_only=True)
    row = 2 * 34  # K + V: one q8_0 block of 32 elements holds a 16-element row
    assert (traffic.kv_bytes_per_token, traffic.window_kv_bytes_per_token, traffic.window_tokens) == (0, 2 * row, 10)
    assert traffic.resident_bytes == 128_000 * 2 + 8192 * 2 + 256 and traffic.cpu_only


def tiny_gguf(path) -> str:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_feed_forward_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((100, 32), dtype=np.float16))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float16))
    writer.add_tensor("output.weight", np.zeros((100, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_a_model_file_reads_its_layer_untied_head_and_one_embedding_row(tmp_path, monkeypatch):
    """The figures tests/test_roofline.py's described backend reports (TINY_TRAFFIC)."""
    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))
    traffic = file_decode_traffic(tiny_gguf(tmp_path / "tiny.gguf"))
    assert traffic.bytes_per_token() == 2048 + 6400 + 64  # layer, untied head, one embedding row
    assert traffic.kv_bytes_per_token == 2 * 16 * 2 and traffic.resident_bytes == 6400 + 2048 + 6400


def test_a_damaged_file_has_no_traffic_and_no_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 40)  # the magic, then garbage
    assert file_decode_traffic(broken) is None
