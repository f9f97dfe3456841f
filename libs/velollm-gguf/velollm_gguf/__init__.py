"""velollm-gguf: what VeloLLM knows about GGUF files and how llama.cpp sizes and reads them.

A library shared by the plugins that run GGUF models (llamacpp, ollama), never a plugin itself: it
imports from the core only ``velollm_core.api``. ``from velollm_gguf import read_summary`` works for
every name in ``__all__``; the modules load on first use, so importing a name costs only its module.

- ``meta``: the bounded GGUF header reader (metadata, tensor table, token-texts digest), cached on disk;
- ``estimate``: the memory llama.cpp allocates (weights, KV cache, compute buffers, per device);
- ``roofline``: the bytes one decode step reads (weights and KV cache per token of context);
- ``compat``: llama.cpp's draft/target compatibility rules and speculation types.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("GgufSummary", "TensorInfo", "read_summary", "read_arrays", "iter_array"), "meta"),
    **dict.fromkeys(("MemoryEstimate", "ModelShape", "CACHE_TYPES", "estimate_compute_bytes", "estimate_kv_cache",
                     "estimate_memory", "model_shape", "SPLIT_MODES"), "estimate"),
    **dict.fromkeys(("bytes_per_token", "decode_traffic", "file_decode_traffic"), "roofline"),
    **dict.fromkeys(("CompatReport", "check_pair", "draft_kind", "find_pairs", "type_support"), "compat"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'velollm_gguf' has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"velollm_gguf.{module}"), name)
