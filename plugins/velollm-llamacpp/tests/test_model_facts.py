"""The llamacpp plugin's facts of a GGUF model file (``model_facts``): metadata of the wrong type is
a fact to report, not a crash (what fuzzing found in the readers of model files)."""

from __future__ import annotations

from pathlib import Path


def gguf_writer(path: Path, arch: str = "llama"):
    """A GGUFWriter with the fields a model needs; the caller adds more, then ``finish``es it."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_head_count(2)
    writer.add_context_length(256)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"])
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float16))
    return writer


def finish(writer) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(writer.path)


def test_wrong_types_of_name_architecture_and_file_type_are_not_crashes(tmp_path, monkeypatch):
    from velollm_llamacpp.backend import model_facts

    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))
    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_uint32("general.name", 7)  # ModelFacts(name=7): a pydantic ValidationError before
    writer.add_float32("general.file_type", float("inf"))  # int(inf): OverflowError before
    writer.add_float32("general.fuzz_nan", float("nan"))  # the JSON cache refused it: ValueError before
    path = finish(writer)
    facts = model_facts(path)
    assert facts.name == "m.gguf" and facts.quantization == "inf" and facts.architecture == "llama"
