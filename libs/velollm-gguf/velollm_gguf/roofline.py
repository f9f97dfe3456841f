"""The bytes one decode step reads from memory, for a GGUF model as llama.cpp lays it out.

Generating one token reads every weight the token passes through (each layer once, the output head,
one row of the token embeddings; for mixture-of-experts only the experts used) plus the KV cache of
the context so far, sliding-window layers only their window of it. The benchmark's roofline divides
the memory bandwidth by these bytes (``velollm_core.api.DecodeTraffic``).
"""

from __future__ import annotations

import os

from velollm_core.api import DecodeTraffic
from velollm_gguf.estimate import INPUT, has_output_tensor, model_shape, row_bytes, tensor_layer
from velollm_gguf.meta import GgufSummary, read_summary


def weights_read_per_token(summary: GgufSummary) -> float:
    """Weight bytes one decode step reads (a fraction where only some experts are used)."""
    shape = model_shape(summary)
    used_share = shape.n_expert_used / shape.n_expert if shape.n_expert and shape.n_expert_used else 1.0
    total = 0.0
    tied = not has_output_tensor(summary)
    for tensor in summary.tensors:
        if tensor_layer(tensor.name, shape.n_layer) == INPUT:
            if tensor.name == "token_embd.weight" and not tied:
                # Only the new token's row is fetched (get_rows).
                rows = tensor.shape[-1] if len(tensor.shape) > 1 else 1
                total += tensor.n_bytes / max(rows, 1)
                continue
            total += tensor.n_bytes  # a tied head multiplies by the whole embedding matrix
        elif "_exps." in tensor.name:
            total += tensor.n_bytes * used_share
        else:
            total += tensor.n_bytes
    return total


def decode_traffic(summary: GgufSummary, *, cache_type_k: str = "f16", cache_type_v: str | None = None,
                   cpu_only: bool = False) -> DecodeTraffic:
    """What one decode step reads: the weights, and the KV cache per token of context."""
    shape = model_shape(summary)
    cache_type_v = cache_type_v or cache_type_k
    full = window = 0
    for il in range(shape.n_layer):
        row = row_bytes(cache_type_k, shape.k_width(il)) + row_bytes(cache_type_v, shape.v_width(il))
        if shape.swa_layers[il] and shape.has_swa:
            window += row
        else:
            full += row
    return DecodeTraffic(weights_bytes=int(weights_read_per_token(summary)), resident_bytes=summary.weights_bytes,
                         kv_bytes_per_token=full, window_kv_bytes_per_token=window,
                         window_tokens=shape.n_swa if shape.has_swa else 0, cpu_only=cpu_only)


def bytes_per_token(summary: GgufSummary, *, context_tokens: int = 0, cache_type_k: str = "f16",
                    cache_type_v: str | None = None) -> int:
    """Bytes one decode step reads: weights used per token plus the KV cache of ``context_tokens``."""
    traffic = decode_traffic(summary, cache_type_k=cache_type_k, cache_type_v=cache_type_v)
    return traffic.bytes_per_token(context_tokens)


def file_decode_traffic(path: str | os.PathLike, *, cache_type_k: str = "f16", cache_type_v: str | None = None,
                        cpu_only: bool = False) -> DecodeTraffic | None:
    """``decode_traffic`` of a GGUF file; None where the file cannot be sized (a roofline is never
    worth a failed ``describe``)."""
    try:
        return decode_traffic(read_summary(path), cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                              cpu_only=cpu_only)
    except Exception:  # noqa: BLE001 - a damaged or unusual file costs the annotation only
        return None
