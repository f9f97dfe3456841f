"""The fuzzing kit shared by the core's and every plugin's fuzz tests (hypothesis): settings, nasty
values, mutations of JSON documents, text, GGUF files and server streams, the seed files, and an
httpx client that answers what a test tells it to.

Each reader of outside bytes, fed mutations of real or realistic input, must answer or fail with its
own documented error, one line, within the deadline (see tests/test_fuzz_readers.py).
"""

from __future__ import annotations

import functools
import itertools
import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# The seeds shared by the core's and the llamacpp plugin's fuzz tests (a checkout's tests/data/fuzz).
FUZZ_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "fuzz"
GGUF_SEEDS = {arch: FUZZ_DATA / "gguf" / f"{arch}-tiny.gguf" for arch in ("llama", "gemma3")}

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


def one_line(exc: Exception) -> None:
    """A reader's error is one sentence: not empty, no line break."""
    message = str(exc)
    assert message.strip() and "\n" not in message.strip(), repr(message)


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


def _without(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return {k: v for k, v in node.items() if k != key}
    return [v for i, v in enumerate(node) if i != key]


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


def json_text_mutant(data, text: str, read: frozenset[str]) -> str:
    """A structural mutant of the JSON in ``text`` (kept after any warning lines), or a text mutant."""
    start = min(i for i in (text.find("{"), text.find("[")) if i >= 0)
    if data.draw(st.integers(0, 3)) == 0:
        return data.draw(text_mutants(text))
    document = data.draw(json_mutants(json.loads(text[start:]), read))
    return text[:start] + json.dumps(document)


# --- fuzzing: GPU tools' output ---


def tool_seeds(tool_outputs: Path, folder: str) -> dict[str, str]:
    """{file name: text} of one tool's captures (drawn by name: a failing example shows the name)."""
    return {path.name: path.read_text(errors="replace") for path in sorted((tool_outputs / folder).iterdir())
            if path.is_file()}


def draw_seed(data, seeds: dict[str, str]) -> str:
    return seeds[data.draw(st.sampled_from(sorted(seeds)))]


def expect_probe_error(parse, text: str) -> Any:
    """``parse(text)``'s answer, or None where it raised a one-line ProbeError (anything else escapes)."""
    from velollm_core.contract.probing.tools import ProbeError

    try:
        return parse(text)
    except ProbeError as exc:
        one_line(exc)
        return None


# --- fuzzing: GGUF model files ---

NASTY_U64 = [0, 1, 7, 255, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
NASTY_U32 = [*range(14), 2**16, 2**31, 2**32 - 1]
# IEEE specials of both widths, as the integers that hold their bits.
_SPECIALS = (float("inf"), float("-inf"), float("nan"), 1e30, -1.0, 0.5)
NASTY_F32 = [int.from_bytes(struct.pack("<f", value), "little") for value in _SPECIALS]
NASTY_F64 = [int.from_bytes(struct.pack("<d", value), "little") for value in _SPECIALS]
NASTY_BY_SIZE = {1: [0, 1, 2, 127, 128, 255], 2: [0, 1, 2**15, 2**16 - 1], 4: NASTY_U32 + NASTY_F32,
                 8: NASTY_U64 + NASTY_F64}
# GGUF value types by width: a value retyped within its width leaves the file well-formed.
SAME_WIDTH_TYPES = {1: [0, 1, 7], 2: [2, 3], 4: [4, 5, 6], 8: [10, 11, 12]}


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



def read_gguf_seeds() -> dict[str, dict[str, Any]] | None:
    """{architecture: seed}: each seed GGUF's bytes, where its numbers lie, the bytes its tensors need;
    None where the seed files are not there (an installed kit without a checkout's tests/data)."""
    if not all(path.is_file() for path in GGUF_SEEDS.values()):
        return None
    return {arch: _Seed(bytes=path.read_bytes(), parts=_field_parts(path), needed=_needed_bytes(path))
            for arch, path in GGUF_SEEDS.items()}


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


# --- fuzzing: streamed generations ---


def stream_seed(path: Path) -> list[Any]:
    """The events of a transcript: JSON documents, or the raw payload (``[DONE]``, comments)."""
    text = path.read_text()
    if path.name.endswith(".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        elif block:
            events.append(block)
    return events


def encode_stream(events: list[Any], ndjson: bool) -> bytes:
    """Events as an NDJSON body, or as server-sent events (``data: ...``; comments as they are)."""
    lines = [event if isinstance(event, str) else json.dumps(event) for event in events]
    if ndjson:
        return "".join(f"{line}\n" for line in lines).encode()
    return "".join(f"{line}\n\n" if line.startswith(":") else f"data: {line}\n\n" for line in lines).encode()


def seed_body(path: Path) -> tuple[int, bytes]:
    """(200, the transcript's body as the server sent it)."""
    return 200, encode_stream(stream_seed(path), path.name.endswith(".ndjson"))


@st.composite
def stream_mutants(draw, path: Path) -> tuple[int, bytes]:
    """(HTTP status, body): a transcript with events changed (nasty values, other JSON types, junk
    lines) or its bytes cut; now and then an error status over an error body of any JSON."""
    if draw(st.integers(0, 5)) == 0:
        error = json.dumps(draw(JSON_VALUES | st.fixed_dictionaries({"error": JSON_VALUES}))).encode()
        return draw(st.sampled_from([400, 401, 404, 422, 429, 500, 503])), draw(st.just(error) | st.binary(max_size=30))
    events = stream_seed(path)
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
    body = encode_stream(events, path.name.endswith(".ndjson"))
    if draw(st.integers(0, 4)) == 0:
        body = body[:draw(st.integers(0, len(body)))] + draw(st.sampled_from([b"", b"\xff\xfe", b"\x00", b"\r"]))
    return 200, body


# What the mock server answers next: (HTTP status, body). One client per base URL serves every example
# (building an httpx client costs milliseconds: an SSL context each).
_ANSWER: list[tuple[int, bytes]] = [(200, b"")]


def answer_next(answer: tuple[int, bytes]) -> None:
    """What every ``mock_http`` client answers from now on: (HTTP status, event-stream body)."""
    _ANSWER[0] = answer


@functools.cache
def mock_http(base_url: str = ""):
    """An ``httpx.Client`` whose every request gets the answer last given to ``answer_next``."""
    import httpx

    def respond(request):
        status, body = _ANSWER[0]
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    return httpx.Client(base_url=base_url, transport=httpx.MockTransport(respond))


def fuzz_request():
    """The generation request every fuzzed stream answers."""
    from velollm_core.contract.schemas import GenerationRequest

    return GenerationRequest(benchmark="fuzz", prompt="Count:", max_tokens=4)
