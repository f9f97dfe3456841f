"""Property-based fuzzing of every reader of outside bytes: model files, GPU tools' output, streams.

Each reader, fed mutations of real or realistic input, must answer or fail with its own documented
error, one line, within the deadline: VeloError (UserInputError, BackendError) for model files and
streams, ProbeError for the tool parsers. Anything else (a KeyError, a numpy message, a hang) is a
crash to fix in the reader.

Seeds: tests/data/fuzz/ (two tiny generated GGUF models, stream transcripts in each wire format) and
the captured real tool outputs of shared/testdata/tool-outputs. Runs are derandomized, so CI sees the
same examples every time; ``python tests/test_fuzz_readers.py`` rewrites the generated GGUF seeds.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import struct
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velollm_core.errors import VeloError
from velollm_core.hardware.commands import ProbeError

DATA = Path(__file__).parent / "data" / "fuzz"
GGUF_SEEDS = {arch: DATA / "gguf" / f"{arch}-tiny.gguf" for arch in ("llama", "gemma3")}
STREAMS = DATA / "streams"
NVIDIA_DATA = Path(__file__).parent.parent / "plugins" / "velollm-nvidia" / "tests" / "data"

FUZZ = settings(
    deadline=2000,  # ms per example: every reader must answer well within it
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values that break parsers: numbers too big for a float, odd numbers, placeholders, separators.
NASTY_NUMBERS = ["9" * 400, "9" * 400 + " MiB", "1e999", "-1", "-0.0", "nan", "inf", "0", "0x1f", "0xffffffff",
                 "1.5.6", "12 TB", "12 MiB", "18446744073709551616", "\u0662"]
NASTY_TEXT = ["", " ", "N/A", "[N/A]", "[Not Supported]", "Unknown", "0x", "NaN", "\u00e9\u20ac", "\x00", ",", ";",
              '"', "'", "|", ":", "{", "}", "[", "]", "<", ">", "&", "&amp;", "</gpu>", "\n", "\r\n", "\t",
              "Device ID", "card0", "null", "true"]
NASTY = st.sampled_from(NASTY_NUMBERS) | st.sampled_from(NASTY_TEXT) | st.text(max_size=8)
_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63, 2**64, float("inf"), float("-inf"), float("nan"), 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, NASTY)
JSON_VALUES = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["value", "unit", "error",
                            "content", "text", "delta", "message", "x"]) | st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _one_line(exc: Exception) -> None:
    message = str(exc)
    assert message.strip() and "\n" not in message.strip(), repr(message)


# --- mutations ------------------------------------------------------------------------------------


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) into a JSON document, the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _replace(node: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = node.copy()
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


@st.composite
def json_mutants(draw, document: Any, read: frozenset[str] = frozenset()) -> Any:
    """``document`` with one to four nodes replaced by nasty values, or deleted; half of the time a
    node under one of the keys the parser ``read``s."""
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        focus = [path for path in paths if path and path[-1] in read]
        path = draw(st.sampled_from(focus if focus and draw(st.booleans()) else paths))
        if path and draw(st.integers(0, 3)) == 0:
            parent = document
            for key in path[:-1]:
                parent = parent[key]
            document = _replace(document, path[:-1], _without(parent, path[-1]))
        else:
            document = _replace(document, path, draw(JSON_VALUES))
    return document


def _without(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return {k: v for k, v in node.items() if k != key}
    return [v for i, v in enumerate(node) if i != key]


@st.composite
def text_mutants(draw, text: str) -> str:
    """``text`` cut, with spans deleted, duplicated or replaced by nasty text, lines shuffled."""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "cut", "lines"]))
        start = draw(st.integers(0, len(text)))
        end = min(len(text), start + draw(st.integers(0, 40)))
        if kind == "replace":
            text = text[:start] + draw(NASTY) + text[end:]
        elif kind == "delete":
            text = text[:start] + text[end:]
        elif kind == "duplicate":
            text = text[:end] + text[start:end] * draw(st.integers(2, 5)) + text[end:]
        elif kind == "cut":
            text = text[:start]
        else:
            lines = text.splitlines(keepends=True)
            text = "".join(draw(st.permutations(lines))) if len(lines) < 400 else text
    return text


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


def _field_parts(path: Path) -> dict[str, list[tuple[int, ...]]]:
    """Where the numbers of a GGUF header lie: (offset, size) of every one of them ("numbers":
    counts, lengths, dimensions, types...), of the metadata types ("types") and values ("values");
    and (type offset, value offset, size) of each numeric metadata value ("scalars", array
    elements included), which can be changed or retyped while the file stays well-formed."""
    import gguf

    reader = gguf.GGUFReader(path)
    found: dict[str, list[tuple[int, ...]]] = {"numbers": [], "types": [], "values": [], "scalars": []}
    metadata = [field for name, field in reader.fields.items() if not name.startswith("GGUF.")]
    for field in [*reader.fields.values(), *(tensor.field for tensor in reader.tensors)]:
        offsets = list(itertools.accumulate((part.nbytes for part in field.parts), initial=field.offset))
        for index, part in enumerate(field.parts):
            if part.size == 1 and part.nbytes in NASTY_BY_SIZE:  # one number, not string bytes or an array
                found["numbers"].append((offsets[index], part.nbytes))
                if field in metadata and index >= 2:
                    found["types" if index == 2 else "values"].append((offsets[index], part.nbytes))
        if field in metadata and field.types[-1] not in (gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY):
            type_offset = offsets[2] if len(field.types) == 1 else offsets[3]  # an array's: its element type
            for data_index in field.data:
                part = field.parts[data_index]
                found["scalars"] += [(type_offset, offsets[data_index] + i * part.itemsize, part.itemsize)
                                     for i in range(part.size)]
    return found


def _needed_bytes(path: Path) -> int:
    import gguf

    reader = gguf.GGUFReader(path)
    return max(tensor.data_offset + tensor.n_bytes for tensor in reader.tensors)


class _Seed(dict):
    def __repr__(self) -> str:  # hypothesis prints its arguments: not 7 kB of bytes
        return f"<seed of {len(self['bytes']):,} bytes>"


@pytest.fixture(scope="module")
def gguf_seeds() -> dict[str, dict[str, Any]]:
    return {arch: _Seed(bytes=path.read_bytes(), parts=_field_parts(path), needed=_needed_bytes(path))
            for arch, path in GGUF_SEEDS.items()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder for mutant files, each under a new name (the summary cache keys on path and mtime)."""
    names = itertools.count()
    folder = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VELOLLM_CACHE_DIR", str(folder / "cache"))

        def write(data: bytes, suffix: str = ".gguf") -> Path:
            path = folder / f"mutant-{next(names)}{suffix}"
            path.write_bytes(data)
            return path

        yield write


NASTY_U64 = [0, 1, 7, 255, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
NASTY_U32 = [*range(14), 2**16, 2**31, 2**32 - 1]
# IEEE specials of both widths, as the integers that hold their bits.
_SPECIALS = (float("inf"), float("-inf"), float("nan"), 1e30, -1.0, 0.5)
NASTY_F32 = [int.from_bytes(struct.pack("<f", value), "little") for value in _SPECIALS]
NASTY_F64 = [int.from_bytes(struct.pack("<d", value), "little") for value in _SPECIALS]
NASTY_BY_SIZE = {1: [0, 1, 2, 127, 128, 255], 2: [0, 1, 2**15, 2**16 - 1], 4: NASTY_U32 + NASTY_F32,
                 8: NASTY_U64 + NASTY_F64}


@st.composite
def gguf_mutants(draw, seeds: dict[str, dict[str, Any]]) -> bytes:
    """A seed GGUF with header numbers set to huge counts, metadata given wrong types or nasty
    values, bits flipped, bytes cut or overwritten."""
    seed = seeds[draw(st.sampled_from(sorted(seeds)))]
    data = bytearray(seed["bytes"])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["values", "values", "types", "numbers", "numbers", "flip", "cut", "splice"]))
        if kind in seed["parts"]:
            offset, size = draw(st.sampled_from(seed["parts"][kind]))
            nasty = NASTY_U32 if kind == "types" else NASTY_BY_SIZE[size]
            value = draw(st.sampled_from(nasty) | st.integers(0, 256**size - 1))
            data[offset:offset + size] = value.to_bytes(size, "little")
        elif kind == "flip":
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data))):]
        else:
            start = draw(st.integers(0, len(data)))
            data[start:start + draw(st.integers(0, 16))] = draw(st.binary(max_size=16))
        if not data:
            break
    return bytes(data)


# GGUF value types by width: a value retyped within its width leaves the file well-formed.
SAME_WIDTH_TYPES = {1: [0, 1, 7], 2: [2, 3], 4: [4, 5, 6], 8: [10, 11, 12]}


@st.composite
def gguf_value_mutants(draw, seeds: dict[str, dict[str, Any]]) -> bytes:
    """A seed GGUF, still well-formed, whose numeric metadata holds nasty values or other types of
    the same width (a count read as a float, a float's bits as a count, a flag as a byte)."""
    seed = seeds[draw(st.sampled_from(sorted(seeds)))]
    data = bytearray(seed["bytes"])
    for _ in range(draw(st.integers(1, 4))):
        type_offset, offset, size = draw(st.sampled_from(seed["parts"]["scalars"]))
        if draw(st.integers(0, 3)) == 0:
            data[type_offset:type_offset + 4] = draw(st.sampled_from(SAME_WIDTH_TYPES[size])).to_bytes(4, "little")
        value = draw(st.sampled_from(NASTY_BY_SIZE[size]) | st.integers(0, 256**size - 1))
        data[offset:offset + size] = value.to_bytes(size, "little")
    return bytes(data)


def exercise_model_file(path: Path) -> None:
    """Everything VeloLLM does with a GGUF path: summary, arrays, estimate, facts, compatibility."""
    from velollm_llamacpp.backend import model_facts

    from velollm_core.gguf_meta import _BIG_ARRAYS, read_arrays, read_summary
    from velollm_core.speculative.compat import check_pair
    from velollm_core.tune.estimate import estimate_memory

    operations = (
        lambda: read_summary(path),
        lambda: read_arrays(path, _BIG_ARRAYS),
        lambda: estimate_memory(read_summary(path)),
        lambda: estimate_memory(read_summary(path), ctx=4096, parallel=2, n_gpu_layers=1),
        lambda: model_facts(path),
        lambda: check_pair(path, GGUF_SEEDS["llama"]),
        lambda: check_pair(GGUF_SEEDS["gemma3"], path),
    )
    for operation in operations:
        try:
            operation()
        except VeloError as exc:
            _one_line(exc)


def test_seeds_are_valid_models(gguf_seeds):
    from velollm_core.gguf_meta import read_summary
    from velollm_core.speculative.compat import check_pair
    from velollm_core.tune.estimate import estimate_memory

    for path in GGUF_SEEDS.values():
        assert path.stat().st_size < 100_000
        estimate = estimate_memory(read_summary(path))
        assert estimate.n_layer == 2 and estimate.weights_bytes == read_summary(path).weights_bytes > 0
    assert check_pair(GGUF_SEEDS["llama"], GGUF_SEEDS["llama"]).compatible


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_gguf_mutants_fail_cleanly(gguf_seeds, scratch, data):
    exercise_model_file(scratch(data.draw(gguf_mutants(gguf_seeds))))


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_gguf_value_mutants_fail_cleanly(gguf_seeds, scratch, data):
    exercise_model_file(scratch(data.draw(gguf_value_mutants(gguf_seeds))))


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_every_cut_of_a_gguf_says_truncated(gguf_seeds, scratch, data):
    from velollm_core.errors import UserInputError
    from velollm_core.gguf_meta import read_summary

    seed = gguf_seeds[data.draw(st.sampled_from(sorted(gguf_seeds)))]
    cut = data.draw(st.integers(4, seed["needed"] - 1))
    with pytest.raises(UserInputError, match="truncated") as caught:
        read_summary(scratch(seed["bytes"][:cut]))
    _one_line(caught.value)


# --- GPU tools' output ----------------------------------------------------------------------------


def _tool_seeds(tool_outputs: Path, folder: str) -> dict[str, str]:
    """{file name: text} of one tool's captures (drawn by name: a failing example shows the name)."""
    return {path.name: path.read_text(errors="replace") for path in sorted((tool_outputs / folder).iterdir())
            if path.is_file()}


def _draw_seed(data, seeds: dict[str, str]) -> str:
    return seeds[data.draw(st.sampled_from(sorted(seeds)))]


def _expect_probe_error(parse, text: str) -> Any:
    try:
        return parse(text)
    except ProbeError as exc:
        _one_line(exc)
        return None


def _csv_mutant(draw, text: str, read: tuple[str, ...]) -> str:
    """Cells replaced by nasty values (mostly in the columns the parser ``read``s), rows cut or
    padded: CSV that still parses as CSV."""
    rows = list(csv.reader(io.StringIO(text)))
    header = [cell.split("[")[0].strip().lower() for cell in rows[0]] if rows else []
    columns = [index for index, key in enumerate(header) if key in read]
    for _ in range(draw(st.integers(1, 4))):
        if not rows:
            break
        # Mostly a GPU's row: the header's mutants are mostly refused as a whole.
        row = draw(st.integers(1, len(rows) - 1) if len(rows) > 1 and draw(st.integers(0, 4)) else
                   st.integers(0, len(rows) - 1))
        kind = draw(st.sampled_from(["cell", "cell", "cell", "drop", "extra", "duplicate"]))
        if kind == "cell" and rows[row]:
            column = draw(st.sampled_from(columns) if columns and draw(st.booleans()) else
                          st.integers(0, len(rows[row]) - 1))
            if column < len(rows[row]):
                rows[row][column] = draw(NASTY)
        elif kind == "drop" and rows[row]:
            rows[row] = rows[row][:-1]
        elif kind == "extra":
            rows[row] = [*rows[row], draw(NASTY)]
        else:
            rows.insert(row, list(rows[row]))
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_nvidia_smi_csv_mutants(tool_outputs, data):
    from velollm_nvidia.smi import FULL_FIELDS, parse_smi_csv

    text = _draw_seed(data, _tool_seeds(tool_outputs, "nvidia-smi-csv"))
    read = (*FULL_FIELDS, "mig.mode.current")
    mutant = _csv_mutant(data.draw, text, read) if data.draw(st.booleans()) else data.draw(text_mutants(text))
    _expect_probe_error(parse_smi_csv, mutant)
    _expect_probe_error(lambda t: parse_smi_csv(t, FULL_FIELDS), mutant)


# What parse_smi_xml reads: the elements a mutation aims at half of the time.
SMI_XML_READ = {"gpu", "product_name", "uuid", "pci_bus_id", "pci_device_id", "total", "free", "used",
                "current_power_limit", "power_limit", "mem_clock", "current_mig", "driver_version", "cuda_version"}


def _xml_mutant(draw, text: str) -> str:
    """Elements emptied, removed, duplicated or given nasty text: XML that still parses as XML."""
    root = ET.fromstring(text)
    elements = list(root.iter())
    focus = [element for element in elements if element.tag in SMI_XML_READ]
    for _ in range(draw(st.integers(1, 4))):
        element = draw(st.sampled_from(focus if focus and draw(st.booleans()) else elements))
        kind = draw(st.sampled_from(["text", "text", "remove", "duplicate", "attribute"]))
        children = list(element)
        if kind == "text":
            element.text = draw(NASTY)
        elif kind == "remove" and children:
            element.remove(draw(st.sampled_from(children)))
        elif kind == "duplicate" and children:
            element.append(draw(st.sampled_from(children)))
        else:
            element.set("id", draw(NASTY))
    return ET.tostring(root, encoding="unicode")


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_nvidia_smi_xml_mutants(tool_outputs, data):
    from velollm_nvidia.smi_xml import parse_smi_xml

    seeds = {**_tool_seeds(tool_outputs, "nvidia-smi-xml"), **{p.name: p.read_text() for p in NVIDIA_DATA.glob("*.xml")}}
    text = _draw_seed(data, seeds)
    mutant = _xml_mutant(data.draw, text) if data.draw(st.booleans()) else data.draw(text_mutants(text))
    _expect_probe_error(parse_smi_xml, mutant)


def _json_text_mutant(data, text: str, read: frozenset[str]) -> str:
    """A structural mutant of the JSON in ``text`` (kept after any warning lines), or a text mutant."""
    start = min(i for i in (text.find("{"), text.find("[")) if i >= 0)
    if data.draw(st.integers(0, 3)) == 0:
        return data.draw(text_mutants(text))
    document = data.draw(json_mutants(json.loads(text[start:]), read))
    return text[:start] + json.dumps(document)


# The keys the AMD and xpu-smi parsers read: the nodes a JSON mutation aims at half of the time.
AMD_READ = frozenset({"gpu_data", "gpu", "asic", "market_name", "device_id", "board", "product_name", "bus", "bdf",
                      "vram", "size", "size_mb", "max_bandwidth", "bit_width", "limit", "socket_power", "max_power",
                      "driver", "version", "value", "unit", "uuid", "system", "Card Series", "Card series",
                      "Device Name", "Device ID", "Card SKU", "VRAM Total Memory (B)",
                      "VRAM Total Used Memory (B)", "Unique ID", "PCI Bus", "Driver version"})
XPU_READ = frozenset({"device_list", "device_id", "device_name", "pci_device_id", "pci_vendor_id", "uuid",
                      "driver_version", "kernel_version", "pci_bdf_address", "memory_physical_size_byte",
                      "memory_physical_size", "memory_free_size_byte", "error"})


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_amd_parser_mutants(tool_outputs, data):
    from velollm_amd.parsers import parse_amd_smi_list, parse_amd_smi_static, parse_rocm_smi

    parsers = {"amd-smi": (parse_amd_smi_static, parse_amd_smi_list), "rocm-smi": (parse_rocm_smi,)}
    folder = data.draw(st.sampled_from(sorted(parsers)))
    mutant = _json_text_mutant(data, _draw_seed(data, _tool_seeds(tool_outputs, folder)), AMD_READ)
    for parse in parsers[folder]:
        _expect_probe_error(parse, mutant)


def _table_mutant(draw, text: str) -> str:
    """Values of ``| Label: value |`` rows of a box-drawn table replaced by nasty text."""
    lines = text.splitlines()
    rows = [index for index, line in enumerate(lines) if ": " in line]
    for _ in range(draw(st.integers(1, 4))):
        if not rows:
            break
        index = draw(st.sampled_from(rows))
        label, _, rest = lines[index].partition(": ")
        lines[index] = f"{label}: {draw(NASTY)} |" if rest else label
    return "\n".join(lines)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_xpu_smi_parser_mutants(tool_outputs, data):
    from velollm_core.hardware import xpu

    text = _draw_seed(data, _tool_seeds(tool_outputs, "xpu-smi"))
    if text.lstrip().startswith("{"):
        mutant = _json_text_mutant(data, text, XPU_READ)
        for parse in (xpu.parse_xpu_discovery_json, xpu.parse_xpu_device_json):
            found = _expect_probe_error(parse, mutant)
            for props in found if isinstance(found, list) else [found] if found else []:
                xpu.gpu_from_xpu(props)
    else:
        mutant = _table_mutant(data.draw, text) if data.draw(st.booleans()) else data.draw(text_mutants(text))
        for props in _expect_probe_error(xpu.parse_xpu_table, mutant) or []:
            xpu.gpu_from_xpu(props)
        _expect_probe_error(xpu.parse_xpu_device_text, mutant)


# --- streams --------------------------------------------------------------------------------------


def _stream_seed(name: str) -> list[Any]:
    """The events of a transcript: JSON documents, or the raw payload (``[DONE]``, comments)."""
    text = (STREAMS / name).read_text()
    if name.endswith(".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        elif block:
            events.append(block)
    return events


def _encode(events: list[Any], ndjson: bool) -> bytes:
    lines = [event if isinstance(event, str) else json.dumps(event) for event in events]
    if ndjson:
        return "".join(f"{line}\n" for line in lines).encode()
    return "".join(f"{line}\n\n" if line.startswith(":") else f"data: {line}\n\n" for line in lines).encode()


@st.composite
def stream_mutants(draw, name: str) -> tuple[int, bytes]:
    """(HTTP status, body): a transcript with events changed (nasty values, other JSON types, junk
    lines) or its bytes cut; now and then an error status over an error body of any JSON."""
    if draw(st.integers(0, 5)) == 0:
        error = json.dumps(draw(JSON_VALUES | st.fixed_dictionaries({"error": JSON_VALUES}))).encode()
        return draw(st.sampled_from([400, 401, 404, 422, 429, 500, 503])), draw(st.just(error) | st.binary(max_size=30))
    events = _stream_seed(name)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(events) - 1))
        kind = draw(st.sampled_from(["value", "value", "value", "event", "junk", "drop", "duplicate"]))
        if kind == "value":
            events[index] = draw(json_mutants(events[index]))
        elif kind == "event":
            events[index] = draw(JSON_VALUES)
        elif kind == "junk":
            events[index] = draw(st.sampled_from(["{", "data:", "[DONE", '{"a":', "\ufeff{}", "[]"]) | st.text(max_size=20))
        elif kind == "drop" and len(events) > 1:
            del events[index]
        else:
            events.insert(index, events[index])
    body = _encode(events, name.endswith(".ndjson"))
    if draw(st.integers(0, 4)) == 0:
        body = body[:draw(st.integers(0, len(body)))] + draw(st.sampled_from([b"", b"\xff\xfe", b"\x00", b"\r"]))
    return 200, body


# What the mock server answers next: (HTTP status, body). One client per backend serves every
# example (building an httpx client costs milliseconds: an SSL context each).
_ANSWER: list[tuple[int, bytes]] = [(200, b"")]


@functools.cache
def _mock_http(base_url: str = ""):
    import httpx

    def respond(request):
        status, body = _ANSWER[0]
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    return httpx.Client(base_url=base_url, transport=httpx.MockTransport(respond))


@functools.cache
def _openai_server():
    from velollm_openai.client import OpenAIServer

    server = OpenAIServer("http://fuzz.invalid")
    server._http = _mock_http()
    return server


@functools.cache
def _ollama_client():
    from velollm_ollama.client import OllamaClient

    client = OllamaClient("http://127.0.0.1:9")
    client._http = _mock_http(client.base_url)
    return client


def _request():
    from velollm_core.models import GenerationRequest

    return GenerationRequest(benchmark="fuzz", prompt="Count:", max_tokens=4)


def _openai_generation(path: str) -> None:
    """One generation as the openai backend streams and times it (backend._stream, run_generation)."""
    from velollm_openai.timing import StreamRecord, timing_from_stream

    record = StreamRecord(start=time.perf_counter())
    for arrived, event in _openai_server().stream(path, {"model": "m", "stream": True}):
        record.observe(arrived, event)
    if record.finished:
        timing_from_stream(record, time.perf_counter(), endpoint="chat")


def _llamacpp_generation() -> None:
    from velollm_llamacpp.client import stream_completion

    stream_completion(_mock_http(), "http://fuzz.invalid", _request())


def _ollama_generation() -> None:
    from velollm_ollama.runner import run_generation

    run_generation(_ollama_client(), "m", _request(), {}, {})


def _generate(name: str, answer: tuple[int, bytes]) -> None:
    _ANSWER[0] = answer
    GENERATIONS[name]()


GENERATIONS = {
    "openai-chat.sse": lambda: _openai_generation("/chat/completions"),
    "openai-completions.sse": lambda: _openai_generation("/completions"),
    "llamacpp-completion.sse": _llamacpp_generation,
    "ollama-generate.ndjson": _ollama_generation,
}


@pytest.mark.parametrize("name", sorted(GENERATIONS))
def test_stream_seeds_are_valid_generations(name):
    _generate(name, (200, _encode(_stream_seed(name), name.endswith(".ndjson"))))


@settings(FUZZ, max_examples=200)
@pytest.mark.parametrize("name", sorted(GENERATIONS))
@given(data=st.data())
def test_stream_mutants_fail_cleanly(name, data):
    try:
        _generate(name, data.draw(stream_mutants(name)))
    except VeloError as exc:
        _one_line(exc)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------

_HUGE = "9" * 400  # a float's inf: int() of it raised OverflowError


def _nvidia_csv(text: str):
    from velollm_nvidia.smi import parse_smi_csv

    return parse_smi_csv(text)


def _nvidia_xml(text: str):
    from velollm_nvidia.smi_xml import parse_smi_xml

    return parse_smi_xml(text)


def _amd(parser: str, text: str):
    from velollm_amd import parsers

    return getattr(parsers, parser)(text)


def _xpu(props: dict):
    from velollm_core.hardware.xpu import gpu_from_xpu

    return gpu_from_xpu(props)


FOUND = {
    "nvidia-smi csv: memory of 400 digits": lambda: _nvidia_csv(f"name, memory.total [MiB]\nGPU, {_HUGE}"),
    "nvidia-smi csv: index of 400 digits": lambda: _nvidia_csv(f"index, name\n{_HUGE}, GPU"),
    "nvidia-smi -q -x: memory of 400 digits": lambda: _nvidia_xml(
        f"<nvidia_smi_log><gpu><product_name>G</product_name><fb_memory_usage><total>{_HUGE} MiB</total>"
        "</fb_memory_usage></gpu></nvidia_smi_log>"),
    "amd-smi: asic not an object": lambda: _amd("parse_amd_smi_static", '[{"gpu": 0, "asic": true}]'),
    "amd-smi: unit not a string": lambda: _amd("parse_amd_smi_static",
                                               '[{"gpu": 0, "vram": {"size": {"value": 1, "unit": [1]}}}]'),
    "amd-smi: size 1e999": lambda: _amd("parse_amd_smi_static", '[{"gpu": 0, "vram": {"size": 1e999}}]'),
    "rocm-smi: size 1e999": lambda: _amd("parse_rocm_smi", '{"card0": {"VRAM Total Memory (B)": 1e999}}'),
    "xpu-smi: device id of 400 digits": lambda: _xpu({"device_id": _HUGE}),
    "xpu-smi: memory of 400 digits": lambda: _xpu({"memory_physical_size_byte": _HUGE}),
    "openai: an event that is a list": lambda: _generate("openai-chat.sse", (200, b"data: []\n\n")),
    "openai: a delta that is text": lambda: _generate("openai-chat.sse",
                                                      (200, b'data: {"choices": [{"delta": "x"}]}\n\n')),
    "llama-server: an event that is null": lambda: _generate("llamacpp-completion.sse", (200, b"data: null\n\n")),
    "llama-server: tokens_predicted a list": lambda: _generate(
        "llamacpp-completion.sse", (200, b'data: {"tokens_predicted": [1], "stop": true}\n\n')),
    "llama-server: an error body that is a list": lambda: _generate("llamacpp-completion.sse", (500, b"[1]")),
    "ollama: response a number": lambda: _generate("ollama-generate.ndjson",
                                                   (200, b'{"response": 5}\n{"done": true}\n')),
    "ollama: eval_count 1e999": lambda: _generate("ollama-generate.ndjson",
                                                  (200, b'{"done": true, "eval_count": 1e999}\n')),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except (VeloError, ProbeError) as exc:
        _one_line(exc)


if __name__ == "__main__":
    for arch, seed in GGUF_SEEDS.items():
        seed.parent.mkdir(parents=True, exist_ok=True)
        write_seed_gguf(seed, arch)
        print(f"{seed}: {seed.stat().st_size:,} bytes")
    sys.exit(0)
