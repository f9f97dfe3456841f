"""A model's shape and the memory it needs at a given context, through velollm-gguf's llama.cpp estimator.

The same GGUF keys arrive two ways: ``model_info`` of Ollama's ``/api/show``, or the GGUF file's
metadata read by ``velollm_gguf.meta``. Both become a ``GgufSummary``, so one
estimator (``velollm_gguf.estimate``: KV cache with llama.cpp's padding and sliding-window
layers, compute buffers) sizes models for ``velollm estimate`` and for this optimizer alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_core.api import UserInputError

if TYPE_CHECKING:
    from velollm_gguf import GgufSummary, ModelShape

MIB = 1024**2
GIB = 1024**3


def _shape(summary: GgufSummary) -> ModelShape | None:
    from velollm_gguf import model_shape

    try:
        return model_shape(summary)
    except (UserInputError, ValueError, TypeError):
        return None  # no layer/head counts: the model cannot be sized, only noted


def _layers(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def mtp_layers(path: Path) -> int:
    """``<arch>.nextn_predict_layers`` of a GGUF file (the core's reader), 0 when it has no MTP head."""
    from velollm_gguf import read_summary

    return _layers(read_summary(path).arch_value("nextn_predict_layers"))


@dataclass
class ModelArchitecture:
    """What sizing needs to know about a model: its shape (None when unknown) and weight bytes."""

    name: str
    shape: ModelShape | None = None
    weights_bytes: int | None = None
    embedding_model: bool = False
    path: str | None = None
    # Layers of an embedded multi-token-prediction head (``<arch>.nextn_predict_layers``): Ollama >= 0.30
    # drafts with them (--spec-type draft-mtp) once draft_num_predict is set.
    nextn_predict_layers: int = 0

    @property
    def has_mtp(self) -> bool:
        return self.nextn_predict_layers > 0

    @classmethod
    def from_metadata(cls, name: str, meta: Mapping[str, Any], weights_bytes: int | None = None,
                      path: str | None = None) -> ModelArchitecture:
        """From GGUF-style metadata, e.g. ``/api/show``'s ``model_info``."""
        from velollm_gguf import GgufSummary

        tokens = meta.get("tokenizer.ggml.tokens")
        lengths = {"tokenizer.ggml.tokens": len(tokens)} if isinstance(tokens, list) and tokens else {}
        summary = GgufSummary(path=path or name, size_bytes=weights_bytes or 0, metadata=dict(meta),
                              tensors=(), array_lengths=lengths)
        arch = meta.get("general.architecture")
        return cls(name=name, shape=_shape(summary), weights_bytes=weights_bytes,
                   embedding_model=f"{arch}.pooling_type" in meta, path=path,
                   nextn_predict_layers=_layers(meta.get(f"{arch}.nextn_predict_layers")))

    @classmethod
    def from_gguf(cls, name: str, path: Path, extra_bytes: int = 0) -> ModelArchitecture:
        """From a GGUF file (metadata cached by the core); ``extra_bytes``: projectors loaded beside it."""
        from velollm_gguf import read_summary

        summary = read_summary(path)
        return cls(name=name, shape=_shape(summary), weights_bytes=summary.size_bytes + extra_bytes,
                   embedding_model=summary.arch_value("pooling_type") is not None, path=str(path),
                   nextn_predict_layers=_layers(summary.arch_value("nextn_predict_layers")))

    @property
    def architecture(self) -> str | None:
        return self.shape.architecture if self.shape else None

    @property
    def context_length(self) -> int | None:
        """The context the model was trained for."""
        return self.shape.n_ctx_train if self.shape else None

    def kv_cache_bytes(self, context: int, cache_type: str = "f16", parallel: int = 1) -> int | None:
        """KV cache for ``context`` tokens per slot in ``parallel`` slots (Ollama allocates both)."""
        if self.shape is None:
            return None
        from velollm_gguf import estimate_kv_cache

        return estimate_kv_cache(self.shape, context * parallel, cache_type_k=cache_type,
                                 parallel=parallel).bytes

    def footprint_bytes(self, context: int, *, cache_type: str, flash_attention: bool,
                        parallel: int = 1) -> int | None:
        """Weights + KV cache + compute buffers at ``context`` tokens per slot; None when unknown."""
        if self.shape is None or self.weights_bytes is None:
            return None
        from velollm_gguf import estimate_compute_bytes, estimate_kv_cache

        kv = estimate_kv_cache(self.shape, context * parallel, cache_type_k=cache_type, parallel=parallel)
        compute = estimate_compute_bytes(self.shape, kv.layout, parallel=parallel, flash_attn=flash_attention)
        return self.weights_bytes + kv.bytes + compute

    def supports_flash_attention(self) -> bool:
        """Ollama's own test: not embedding models, not gemma2/grok, equal K and V head sizes."""
        if self.embedding_model or self.architecture in ("gemma2", "grok"):
            return False
        return self.shape is None or self.shape.head_k == self.shape.head_v
