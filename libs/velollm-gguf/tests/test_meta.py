"""The GGUF header reader: the same facts as the gguf package's reader, bounded cost, one sentence
per damaged file, and the fixes for what fuzzing found in the readers of model files."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from velollm_gguf.meta import (
    MAX_ARRAY_ENTRIES,
    MAX_INLINE_ARRAY,
    _read_header,
    iter_array,
    read_arrays,
    read_summary,
)
from velollm_testkit.fuzz import GGUF_SEEDS
from velollm_testkit.gguf_writer import finish_gguf, gguf_writer
from velollm_testkit.real import missing

from velollm_core.api import UserInputError

SEEDS = GGUF_SEEDS["llama"].parent  # the test kit's tiny generated models
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, FLOAT64 = 4, 5, 6, 7, 8, 9, 10, 12


@pytest.fixture(scope="module")
def bundled() -> dict[str, Path | str]:
    """The bundled test models' paths (or why not installed), found before VELOLLM_CACHE_DIR moves."""
    from velollm_core.api import resolve_model_path

    found: dict[str, Path | str] = {}
    for name in ("gemma3-270m", "smollm2-135m"):
        try:
            found[name] = resolve_model_path(name)
        except UserInputError as exc:
            found[name] = str(exc)
    return found


def bundled_model(bundled, name: str) -> Path:
    if isinstance(bundled[name], str):
        missing(f"the bundled test model {name}", bundled[name])
    return bundled[name]


@pytest.fixture(autouse=True)
def cache_dir(bundled, tmp_path, monkeypatch):
    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path / "cache"))


# --- files built by hand, for what no writer would write ------------------------------------------


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def kv(key: str, type_id: int, payload: bytes) -> bytes:
    return gguf_string(key.encode()) + struct.pack("<I", type_id) + payload


def array(elem_type: int, count: int, items: bytes = b"") -> bytes:
    return struct.pack("<IQ", elem_type, count) + items


def raw_gguf(*kvs: bytes, n_tensors: int = 0, version: int = 3, rest: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kvs)) + b"".join(kvs) + rest


def written(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def message_of(path: Path) -> str:
    with pytest.raises(UserInputError) as caught:
        read_summary(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# --- the same facts as gguf.GGUFReader --------------------------------------------------------------


def _reference(path: Path) -> tuple[dict, list]:
    """What the gguf package reads: every metadata value and the tensor table."""
    import gguf

    reader = gguf.GGUFReader(path)
    metadata = {}
    for name, field in reader.fields.items():
        value = field.contents()
        metadata[name] = value.tolist() if hasattr(value, "tolist") else value
    tensors = [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape), int(t.n_bytes)) for t in reader.tensors]
    return metadata, tensors


@pytest.mark.parametrize("name", ["llama-tiny.gguf", "gemma3-tiny.gguf", "smollm2-135m"])
def test_summary_holds_what_the_gguf_package_reads(bundled, name):
    path = bundled_model(bundled, name) if name in bundled else SEEDS / name
    summary = read_summary(path)
    metadata, tensors = _reference(path)
    assert set(summary.metadata) | set(summary.array_lengths) == set(metadata)
    for key, value in metadata.items():
        if key in summary.array_lengths:
            assert summary.array_lengths[key] == len(value), key
        else:
            assert summary.metadata[key] == value, key
    assert [(t.name, t.type_name, t.shape, t.n_bytes) for t in summary.tensors] == tensors


def test_big_arrays_are_counted_and_read_on_demand_as_the_gguf_package_reads_them(bundled):
    import gguf

    path = bundled_model(bundled, "smollm2-135m")
    summary = read_summary(path)
    reader = gguf.GGUFReader(path)
    names = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    arrays = read_arrays(path, names)
    for name in names:
        expected = reader.get_field(name).contents()
        assert summary.array_lengths[name] == len(expected) and name not in summary.metadata
        assert arrays[name] == expected
    assert list(iter_array(path, "tokenizer.ggml.merges"))[:3] == reader.get_field("tokenizer.ggml.merges").contents()[:3]
    assert list(iter_array(path, "no.such.array")) == []


def test_a_real_vocabulary_costs_little_time_and_memory(bundled):
    path = bundled_model(bundled, "gemma3-270m")  # 262,144 tokens
    tracemalloc.start()
    started = time.perf_counter()
    data = _read_header(path)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data["array_lengths"]["tokenizer.ggml.tokens"] == 262144 and data["tokens_digest"]
    assert peak < 16 << 20, peak  # the 1 MiB window, not 262,144 Python strings
    assert elapsed < 5, elapsed


# --- damaged files: one sentence each, decided from the header's own sizes --------------------------


def test_magic_only_file_is_truncated_inside_the_header(tmp_path):
    message = message_of(written(tmp_path, b"GGUF"))
    assert message.endswith("is truncated at byte 4, inside the GGUF header")


def test_file_cut_inside_the_tensor_data_says_what_the_tensors_need(tmp_path):
    whole = (SEEDS / "llama-tiny.gguf").read_bytes()
    message = message_of(written(tmp_path, whole[: len(whole) - 100]))
    assert message.endswith(f"is truncated: its tensors need {len(whole):,} bytes but the file has {len(whole) - 100:,}")


def test_file_cut_inside_the_metadata_names_the_key(tmp_path):
    whole = (SEEDS / "llama-tiny.gguf").read_bytes()
    cut = whole.index(b"tokenizer.ggml.tokens") + 40
    assert "truncated at byte" in message_of(written(tmp_path, whole[:cut]))
    assert "metadata key tokenizer.ggml.tokens" in message_of(written(tmp_path, whole[:cut]))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GGML" + bytes(20), "not a GGUF file (it starts with b'GGML', not b'GGUF')"),
        (raw_gguf(version=1), "GGUF version 1, which VeloLLM does not read"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "a big-endian GGUF, which VeloLLM does not read"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "the metadata claims 1,099,511,627,776 entries"),
        (b"GGUF" + struct.pack("<IQQ", 3, 2**62, 0), "the tensor table claims 4,611,686,018,427,387,904 entries"),
        (raw_gguf(kv("tokenizer.ggml.tokens", ARRAY, array(STRING, 2**40))),
         "metadata array tokenizer.ggml.tokens claims 1,099,511,627,776 entries, more than the file can hold"),
        (raw_gguf(kv("general.name", STRING, struct.pack("<Q", 2**62))),
         "metadata value general.name claims 4,611,686,018,427,387,904 bytes, more than the file can hold"),
        (raw_gguf(kv("a.b", 13, b"")), "metadata key a.b has unknown type 13"),
        (raw_gguf(kv("a.b", ARRAY, array(ARRAY, 1))), "metadata array a.b holds arrays, which llama.cpp does not read"),
        (raw_gguf(kv("a.b", ARRAY, array(99, 1))), "metadata array a.b has unknown element type 99"),
        (raw_gguf(kv("a\nb", 13, b"")), "metadata key 'a\\nb' has unknown type 13"),
        (raw_gguf(kv("a.b", UINT32, bytes(4)), kv("a.b", UINT32, bytes(4))), "metadata key a.b appears twice"),
        (raw_gguf(kv("general.alignment", UINT32, struct.pack("<I", 48))), "general.alignment is 48, not a power of two"),
    ],
)
def test_damaged_header_is_one_sentence(tmp_path, data, expected):
    assert expected in message_of(written(tmp_path, data))


def _tensor_info(name: bytes, dims: list[int], type_id: int, offset: int = 0) -> bytes:
    return gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)


@pytest.mark.parametrize(
    ("infos", "expected"),
    [
        ([_tensor_info(b"w", [4, 4, 4, 4, 4], 0)], "tensor w has 5 dimensions (GGML allows 4)"),
        ([_tensor_info(b"w", [4], 4)], "tensor w has unknown type 4"),  # Q4_2: removed from GGML
        ([_tensor_info(b"w", [2**40, 2**40], 0)], "tensor w claims 4,835,703,278,458,516,698,824,704 bytes"),
        ([_tensor_info(b"w", [4], 0), _tensor_info(b"w", [4], 0, 32)], "tensor w appears twice"),
    ],
)
def test_damaged_tensor_table_is_one_sentence(tmp_path, infos, expected):
    data = raw_gguf(n_tensors=len(infos), rest=b"".join(infos) + bytes(64))
    assert expected in message_of(written(tmp_path, data))


# --- bounded: what is kept, walked over, or refused --------------------------------------------------


def test_more_strings_than_any_vocabulary_are_refused_before_they_are_walked(tmp_path):
    count = MAX_ARRAY_ENTRIES + 1
    path = written(tmp_path, raw_gguf(kv("tokenizer.ggml.tokens", ARRAY, array(STRING, count, gguf_string(b"a") * count))))
    started = time.perf_counter()
    message = message_of(path)
    assert "tokenizer.ggml.tokens brings the metadata to more than 2,097,152 strings" in message
    assert time.perf_counter() - started < 0.5


def test_large_arrays_are_counted_not_kept(tmp_path):
    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_array("general.big", list(range(MAX_INLINE_ARRAY + 1)))
    writer.add_array("general.small", [1, 2, 3])
    summary = read_summary(finish_gguf(writer))
    assert summary.array_lengths["general.big"] == MAX_INLINE_ARRAY + 1 and "general.big" not in summary.metadata
    assert summary.metadata["general.small"] == [1, 2, 3]
    assert read_arrays(summary.path, ("general.big",))["general.big"][-1] == MAX_INLINE_ARRAY


def test_a_string_array_across_the_read_window_is_read_back_whole(tmp_path):
    # 3,000 strings of 500 bytes: the window moves on while the array is measured, then steps back.
    texts = [f"{i:04d}" + "x" * 496 for i in range(3000)]
    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_array("general.texts", texts)
    writer.add_uint32("general.after", 7)
    summary = read_summary(finish_gguf(writer))
    assert summary.metadata["general.texts"] == texts and summary.metadata["general.after"] == 7


def test_text_beyond_the_metadata_budget_is_left_out(tmp_path):
    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_string("general.huge", "x" * (17 << 20))
    writer.add_string("general.description", "kept")
    summary = read_summary(finish_gguf(writer))
    assert "general.huge" not in summary.metadata and summary.metadata["general.description"] == "kept"


# --- what the fuzzer found beyond the reader ---------------------------------------------------------


@pytest.mark.parametrize("layers", [2**31, 0xFFFFFFFF])
def test_absurd_layer_count_is_refused_not_allocated(tmp_path, layers):
    from velollm_gguf.estimate import estimate_memory

    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_uint32("general.fuzz", 0)
    path = finish_gguf(writer)
    data = bytearray(path.read_bytes())
    block_count = data.index(b"llama.block_count") + len("llama.block_count") + 4
    data[block_count:block_count + 4] = struct.pack("<I", layers)  # MemoryError before
    path.write_bytes(data)
    with pytest.raises(UserInputError, match="llama.cpp loads 1 to 512 layers"):
        estimate_memory(read_summary(path))


def test_negative_or_non_numeric_sizes_are_one_sentence(tmp_path):
    from velollm_gguf.estimate import estimate_memory

    writer = gguf_writer(tmp_path / "m.gguf")
    writer.add_string("llama.attention.head_count_kv", "many")  # int("many"): ValueError before
    with pytest.raises(UserInputError, match="does not describe a model llama.cpp can load"):
        estimate_memory(read_summary(finish_gguf(writer)))


# --- the tokenizer comparison of speculative check ---------------------------------------------------


def _pair(tmp_path, draft_tokens):
    tmp_path.mkdir(exist_ok=True)
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"]
    target = finish_gguf(gguf_writer(tmp_path / "target.gguf", tokens=tokens))
    writer = gguf_writer(tmp_path / "draft.gguf", tokens=draft_tokens)
    writer.add_string("general.padding", "")  # a different file, so its summary is its own
    return target, finish_gguf(writer)


def test_same_vocabulary_is_compared_by_digest_without_reading_the_tokens(tmp_path, monkeypatch):
    from velollm_gguf import compat

    target, draft = _pair(tmp_path, ["<unk>", "<s>", "</s>", "a", "b", "c", "d", "e"])
    monkeypatch.setattr(compat, "iter_array", lambda *args: pytest.fail("tokens read despite equal digests"))
    assert compat.check_pair(target, draft).compatible


def test_first_differing_token_is_found_by_streaming_both_vocabularies(tmp_path):
    from velollm_gguf.compat import check_pair

    target, draft = _pair(tmp_path, ["<unk>", "<s>", "</s>", "a", "b", "c", "D", "e"])
    report = check_pair(target, draft)
    assert not report.compatible
    assert report.problems == ["token 6 differs: target 'd', draft 'D'"]
    # Ids below 5 are not compared (llama.cpp skips the special tokens there).
    target, draft = _pair(tmp_path / "low", ["<UNK>", "<s>", "</s>", "a", "b", "c", "d", "e"])
    assert check_pair(target, draft).compatible


def test_a_file_of_metadata_alone_is_not_truncated(tmp_path):
    """A tokenizer-only GGUF (no tensors, as the GPU scripts carry) ends right after its metadata."""
    import gguf

    path = tmp_path / "tokenizer.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "ab"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert path.stat().st_size % 32, "the case: the file does not end on the alignment"
    summary = read_summary(path)
    assert summary.metadata["tokenizer.ggml.model"] == "gpt2" and summary.weights_bytes == 0
