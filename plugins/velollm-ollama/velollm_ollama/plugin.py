"""The hook implementations of velollm-ollama: its backend, the model store, the optimizer, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from velollm_core.api import hookimpl

BACKEND = "ollama"


@hookimpl
def register_backends(register) -> None:
    from velollm_ollama.backend import OllamaBackend

    register(OllamaBackend())


@hookimpl
def resolve_model(name: str) -> Path | None:
    """An Ollama name -> its GGUF blob; None for names that are not Ollama's (the next plugin answers)."""
    from velollm_ollama.store import resolve_gguf

    return resolve_gguf(name)


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
    from velollm_ollama.inputs import collect_inputs
    from velollm_ollama.optimizer import propose_ollama_config

    inputs = collect_inputs(hardware, model, required=backend == BACKEND)
    return [] if inputs is None else [propose_ollama_config(inputs)]


@hookimpl
def register_commands(cli) -> None:
    from velollm_ollama.commands import ollama_group

    cli.add_command(ollama_group)
