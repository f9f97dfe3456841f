"""Tiny GGUF model files for tests: ``gguf_writer(path)`` starts one with the fields a reader needs
(the caller adds more), ``finish_gguf(writer)`` writes it."""

from __future__ import annotations

from pathlib import Path


def gguf_writer(path: Path, arch: str = "llama", tokens: list[str] | None = None):
    """A GGUFWriter of a tiny model with the fields one needs; the caller adds more, then
    :func:`finish_gguf` writes it."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_head_count(2)
    writer.add_context_length(256)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens or ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"])
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float16))
    return writer


def finish_gguf(writer) -> Path:
    """Write a :func:`gguf_writer`'s file and return its path."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(writer.path)
