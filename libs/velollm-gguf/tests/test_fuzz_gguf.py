"""Property-based fuzzing of velollm-gguf's readers of outside bytes: model files (the GGUF reader,
the memory estimate, the speculative compatibility check).

Each reader, fed mutations of real or realistic input, must answer or fail with its own documented
error, one line, within the deadline: VeloError (UserInputError). Anything else (a KeyError, a numpy
message, a hang) is a crash to fix in the reader.
Each plugin fuzzes its own readers in its tests (plugins/velollm-*/tests/test_fuzz_*.py); the
strategies, mutations and seed fixtures they share are the test kit's (velollm_testkit/fuzz.py).

Seeds: tests/data/fuzz/gguf (two tiny generated GGUF models, also the llamacpp plugin's). Runs are
derandomized, so CI sees the same examples every time; ``python libs/velollm-gguf/tests/test_fuzz_gguf.py`` rewrites
the generated GGUF seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_testkit.fuzz import FUZZ, GGUF_SEEDS, gguf_mutants, gguf_value_mutants, one_line

from velollm_core.contract.errors import VeloError

# --- GGUF -----------------------------------------------------------------------------------------


def write_seed_gguf(path: Path, arch: str) -> Path:
    """A tiny but complete model: tokenizer arrays, per-layer arrays, every value kind, three tensor types."""
    import gguf
    import numpy as np

    tokens = ["<unk>", "<s>", "</s>", "<pad>", "<mask>"] + [f"t{i}" for i in range(35)]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"fuzz seed {arch}")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_block_count(2)
    writer.add_context_length(2048)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv([2, 1])  # a per-layer array
    writer.add_key_length(8)
    writer.add_value_length(8)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        writer.add_sliding_window(512)
    writer.add_tokenizer_model("gpt2" if arch == "llama" else "llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([float(-i) for i in range(len(tokens))])
    writer.add_token_types([3, 3, 3, 3, 3] + [1] * (len(tokens) - 5))
    if arch == "llama":
        writer.add_token_merges(["t 1", "t 2", "t1 0"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.add_array("general.tags", ["fuzz", "seed"])
    writer.add_uint64("general.fuzz_u64", 2**40)
    writer.add_int8("general.fuzz_i8", -3)
    writer.add_float64("general.fuzz_f64", 0.5)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), dtype=np.float16))
    for layer in range(2):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", np.zeros((32, 34), dtype=np.uint8),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def exercise_model_file(path: Path) -> None:
    """Everything velollm-gguf does with a GGUF path: summary, arrays, estimate, compatibility (the
    llamacpp plugin's model facts are fuzzed in its own tests, on the same mutants)."""
    from velollm_gguf.compat import check_pair
    from velollm_gguf.estimate import estimate_memory
    from velollm_gguf.meta import _BIG_ARRAYS, read_arrays, read_summary

    operations = (
        lambda: read_summary(path),
        lambda: read_arrays(path, _BIG_ARRAYS),
        lambda: estimate_memory(read_summary(path)),
        lambda: estimate_memory(read_summary(path), ctx=4096, parallel=2, n_gpu_layers=1),
        lambda: check_pair(path, GGUF_SEEDS["llama"]),
        lambda: check_pair(GGUF_SEEDS["gemma3"], path),
    )
    for operation in operations:
        try:
            operation()
        except VeloError as exc:
            one_line(exc)


def test_seeds_are_valid_models(gguf_seeds):
    from velollm_gguf.compat import check_pair
    from velollm_gguf.estimate import estimate_memory
    from velollm_gguf.meta import read_summary

    for path in GGUF_SEEDS.values():
        assert path.stat().st_size < 100_000
        estimate = estimate_memory(read_summary(path))
        assert estimate.n_layer == 2 and estimate.weights_bytes == read_summary(path).weights_bytes > 0
    assert check_pair(GGUF_SEEDS["llama"], GGUF_SEEDS["llama"]).compatible


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_gguf_mutants_fail_cleanly(gguf_seeds, fuzz_scratch, data):
    exercise_model_file(fuzz_scratch(data.draw(gguf_mutants(gguf_seeds))))


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_gguf_value_mutants_fail_cleanly(gguf_seeds, fuzz_scratch, data):
    exercise_model_file(fuzz_scratch(data.draw(gguf_value_mutants(gguf_seeds))))


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_every_cut_of_a_gguf_says_truncated(gguf_seeds, fuzz_scratch, data):
    from velollm_gguf.meta import read_summary

    from velollm_core.contract.errors import UserInputError

    seed = gguf_seeds[data.draw(st.sampled_from(sorted(gguf_seeds)))]
    cut = data.draw(st.integers(4, seed["needed"] - 1))
    with pytest.raises(UserInputError, match="truncated") as caught:
        read_summary(fuzz_scratch(seed["bytes"][:cut]))
    one_line(caught.value)


if __name__ == "__main__":
    for arch, seed in GGUF_SEEDS.items():
        seed.parent.mkdir(parents=True, exist_ok=True)
        write_seed_gguf(seed, arch)
        print(f"{seed}: {seed.stat().st_size:,} bytes")
    sys.exit(0)
