"""The llamacpp plugin's facts of a GGUF model file (``model_facts``): metadata of the wrong type is
a fact to report, not a crash (what fuzzing found in the readers of model files)."""

from __future__ import annotations

from velollm_testkit.gguf_writer import finish_gguf, gguf_writer


def test_wrong_types_of_name_architecture_and_file_type_are_not_crashes(tmp_path, monkeypatch):
    from velollm_llamacpp.backend import model_facts

    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))
    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_uint32("general.name", 7)  # ModelFacts(name=7): a pydantic ValidationError before
    writer.add_float32("general.file_type", float("inf"))  # int(inf): OverflowError before
    writer.add_float32("general.fuzz_nan", float("nan"))  # the JSON cache refused it: ValueError before
    path = finish_gguf(writer)
    facts = model_facts(path)
    assert facts.name == "m.gguf" and facts.quantization == "inf" and facts.architecture == "llama"
