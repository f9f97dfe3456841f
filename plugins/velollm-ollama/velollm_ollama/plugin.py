"""The hook implementations of velollm-ollama: benchmark runner, backend facts, model store, optimizer, CLI."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from velollm_core.errors import UserInputError, VeloError
from velollm_core.hookspecs import hookimpl

if TYPE_CHECKING:  # pydantic models: imported when a hook runs, not when the CLI starts
    from velollm_core.models import (
        BackendInfo,
        BenchmarkContext,
        GenerationRequest,
        GenerationTiming,
        ModelFacts,
    )

BACKEND = "ollama"
_CLIENT_KEY = "ollama_client"
_client_lock = threading.Lock()


@hookimpl
def benchmark_backends() -> list[str]:
    return [BACKEND]


def client_for(context: BenchmarkContext):
    """The benchmark's OllamaClient: made once (concurrent runs share it), closed by the core."""
    client = context.state.get(_CLIENT_KEY)
    if client is not None:
        return client
    with _client_lock:
        client = context.state.get(_CLIENT_KEY)
        if client is None:
            from velollm_core.deadline import Deadlines
            from velollm_ollama.client import OllamaClient
            from velollm_ollama.runner import split_options

            # `timeout` is this backend's older name for timeout_s (the whole request).
            deadlines = Deadlines.from_options(split_options(context.options)[2], total_aliases=("timeout",))
            client = OllamaClient(context.host, deadlines=deadlines)
            context.resources.callback(client.close)
            context.state[_CLIENT_KEY] = client
    return client


@hookimpl
def run_benchmark(backend: str, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming | None:
    if backend != BACKEND:
        return None
    from velollm_ollama.runner import run_generation

    return run_generation(client_for(context), context.model, request, context.options, context.state)


def _facts(name: str, shown: dict[str, Any], listed: dict[str, Any] | None, running: dict[str, Any] | None,
           gguf_path: Path | None) -> ModelFacts:
    """ModelFacts from /api/show, the /api/tags entry, the /api/ps entry and the store's GGUF path."""
    from velollm_core.models import ModelFacts

    details = shown.get("details") or (listed or {}).get("details") or {}
    info = shown.get("model_info") if isinstance(shown.get("model_info"), dict) else {}
    arch = info.get("general.architecture") or details.get("family")

    def arch_key(key: str) -> Any:
        return info.get(f"{arch}.{key}")

    extra: dict[str, Any] = {
        "family": details.get("family"),
        "format": details.get("format"),
        "digest": (listed or {}).get("digest") or (running or {}).get("digest"),
        "context_length": arch_key("context_length"),
        "block_count": arch_key("block_count"),
        "embedding_length": arch_key("embedding_length"),
        "head_count": arch_key("attention.head_count"),
        "head_count_kv": arch_key("attention.head_count_kv"),
        "parameter_count": info.get("general.parameter_count"),
        "capabilities": shown.get("capabilities"),
    }
    if running:
        size, vram = running.get("size"), running.get("size_vram")
        extra["loaded_size_bytes"] = size
        extra["size_vram_bytes"] = vram
        extra["loaded_context_length"] = running.get("context_length")
        if size:
            extra["gpu_fraction"] = round((vram or 0) / size, 4)
    return ModelFacts(
        name=name,
        path=str(gguf_path) if gguf_path else None,
        size_bytes=(listed or {}).get("size") or (running or {}).get("size"),
        quantization=details.get("quantization_level"),
        architecture=arch,
        parameters=details.get("parameter_size"),
        **{key: value for key, value in extra.items() if value is not None},
    )


def _find(entries: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    from velollm_ollama.optimizer import same_model

    for entry in entries:
        if same_model(str(entry.get("name") or entry.get("model") or ""), name):
            return entry
    return None


@hookimpl
def describe_backend(backend: str, context: BenchmarkContext) -> BackendInfo | None:
    if backend != BACKEND:
        return None
    from velollm_core.models import BackendInfo
    from velollm_ollama.client import is_loopback_url
    from velollm_ollama.config import read_ollama_config

    client = client_for(context)
    problems: list[str] = []

    def ask(label: str, call, default):
        # Facts are a bonus to a finished run: a failing endpoint is noted, never fatal.
        try:
            return call()
        except VeloError as exc:
            problems.append(f"{label}: {exc}")
            return default

    version = ask("/api/version", client.version, None)
    shown = ask("/api/show", lambda: client.show(context.model), {})
    listed = _find(ask("/api/tags", client.tags, []), context.model)
    running = _find(ask("/api/ps", client.ps, []), context.model)
    local = is_loopback_url(client.base_url)
    gguf_path = None
    if local:  # another machine's server has its own store
        try:
            gguf_path = resolve_model(context.model)
        except VeloError:
            gguf_path = None
    info = BackendInfo(
        name=BACKEND,
        version=version,
        host=client.base_url,
        model=_facts(context.model, shown, listed, running, gguf_path),
        server_flags=[f"{key}={value}" for key, value in sorted(context.options.items())],
    )
    if local:
        # What this machine's configuration says the server runs with (service, launchctl or shell).
        info.server_config = read_ollama_config().describe()
    if problems:
        info.warnings = problems
    return info


@hookimpl
def resolve_model(name: str) -> Path | None:
    """An Ollama name -> its GGUF blob; None for names that are not Ollama's (the next plugin answers)."""
    from velollm_ollama.store import ModelName, ModelStore

    try:
        parsed = ModelName.parse(name)
    except UserInputError:
        return None
    store = ModelStore.default()
    found = store.find(parsed)
    if found is None:
        if ":" in name:  # an explicit tag: clearly meant as an Ollama model
            dirs = ", ".join(str(d) for d in store.models_dirs)
            unreadable = f" ({'; '.join(store.warnings)})" if store.warnings else ""
            raise UserInputError(f"Ollama model {name!r} is not in the model store (searched {dirs}){unreadable}; "
                                 f"get it with: ollama pull {name}")
        return None
    if found.gguf_path is None:
        missing = f" (missing blobs: {', '.join(found.missing_blobs)})" if found.missing_blobs else ""
        raise UserInputError(f"Ollama model {found.name} has no GGUF weights on disk{missing}: it may be a "
                             f"cloud or safetensors model, or an interrupted pull (run `ollama pull {name}`)")
    return found.gguf_path


@hookimpl
def local_models() -> list[dict[str, Any]]:
    """Every model of Ollama's store that has a GGUF file on disk: name, path, size."""
    from velollm_ollama.store import ModelStore

    return [
        {"name": m.name, "path": str(m.gguf_path), "size_bytes": m.model_bytes, "source": "ollama"}
        for m in ModelStore.default().list()
        if m.gguf_path is not None
    ]


@hookimpl
def propose_config(hardware, model, backend) -> list:
    if backend not in (None, BACKEND):
        return []
    from velollm_ollama.optimizer import collect_inputs, propose_ollama_config

    inputs = collect_inputs(hardware, model, required=backend == BACKEND)
    return [] if inputs is None else [propose_ollama_config(inputs)]


@hookimpl
def register_commands(cli) -> None:
    from velollm_ollama.commands import ollama_group

    cli.add_command(ollama_group)
