"""Gathering what the optimizer's rules read: settings, the running server, the model store, the target model."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm_core.api import BackendError, HardwareReport, UserInputError, VeloError
from velollm_ollama.budget import SAFETY_FRACTION, memory_budget
from velollm_ollama.client import OllamaClient, default_base_url, is_loopback_url
from velollm_ollama.config import OllamaConfig, read_ollama_config
from velollm_ollama.modelfacts import ModelArchitecture
from velollm_ollama.store import ModelName, ModelStore


@dataclass
class OptimizerInputs:
    """Everything the rules read; gathered by ``collect_inputs`` or built by tests."""

    hardware: HardwareReport
    current: OllamaConfig
    model: ModelArchitecture | None = None
    loaded_vram_bytes: int = 0
    loaded_ram_bytes: int = 0
    version: str | None = None
    platform: str = sys.platform
    notes: list[str] = field(default_factory=list)


def same_model(a: str, b: str) -> bool:
    """Whether two Ollama names denote one model (``llama3.2`` is ``llama3.2:latest``)."""
    try:
        return ModelName.parse(a).short().casefold() == ModelName.parse(b).short().casefold()
    except UserInputError:
        return a == b


def _tags_size(client: OllamaClient, name: str) -> int | None:
    try:
        for entry in client.tags():
            if same_model(str(entry.get("name") or entry.get("model") or ""), name):
                return int(entry.get("size") or 0) or None
    except VeloError:
        return None
    return None


def load_architecture(name: str, client: OllamaClient | None = None,
                      store: ModelStore | None = None) -> ModelArchitecture:
    """A model's facts from a GGUF path, the server's ``/api/show``, or the store's GGUF file."""
    path = Path(name).expanduser()
    if path.is_file():
        return ModelArchitecture.from_gguf(name, path)
    local = store.find(name) if store is not None else None
    # Projectors and a draft (Modelfile DRAFT) are loaded beside the weights.
    extra = (local.load_bytes or 0) - (local.model_bytes or 0) if local else 0
    if client is not None:
        shown = None
        try:
            shown = client.show(name)
        except UserInputError:
            if local is None:
                raise
        except BackendError:
            shown = None
        if shown and isinstance(shown.get("model_info"), dict):
            weights = local.model_bytes + extra if local and local.model_bytes else _tags_size(client, name)
            return ModelArchitecture.from_metadata(name, shown["model_info"], weights_bytes=weights)
    if local is not None and local.gguf_path is not None:
        return ModelArchitecture.from_gguf(local.name, local.gguf_path, extra)
    if local is not None:
        raise UserInputError(f"Ollama's {local.name} has no GGUF weights on disk (a cloud or safetensors "
                             "model, or an interrupted pull): cannot size settings for it")
    dirs = ", ".join(str(d) for d in (store.models_dirs if store else []))
    raise UserInputError(f"model {name!r} is not installed in Ollama (searched {dirs or 'no store'}); "
                         f"get it with: ollama pull {shlex.quote(name)}")


def _installed_sizes(store: ModelStore, client: OllamaClient | None) -> dict[str, int]:
    sizes = {m.name: m.load_bytes or m.size_bytes for m in store.list() if m.gguf_path}
    if not sizes and client is not None:
        try:
            sizes = {str(e.get("name")): int(e.get("size") or 0) for e in client.tags() if e.get("name")}
        except VeloError:
            sizes = {}
    return sizes


def choose_default_model(hardware: HardwareReport, store: ModelStore, client: OllamaClient | None,
                         loaded: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(name, why) of the model to size for when none is given: the loaded one, else the largest that fits."""
    if loaded and loaded[0].get("name"):
        return str(loaded[0]["name"]), "the model Ollama has loaded now"
    sizes = _installed_sizes(store, client)
    if not sizes:
        return None
    room = memory_budget(hardware).room() * SAFETY_FRACTION
    fitting = {name: size for name, size in sizes.items() if size < room}
    if fitting:
        name = max(fitting, key=lambda n: (fitting[n], n))
        return name, "the largest installed model that fits in memory"
    name = min(sizes, key=lambda n: (sizes[n], n))
    return name, "the smallest installed model (none fits in memory entirely)"


def collect_inputs(hardware: HardwareReport, model: str | None, *, required: bool) -> OptimizerInputs | None:
    """Read this machine's Ollama: settings, running server (if any), model store, and the target model.

    Returns None when nothing says Ollama is here and the user did not ask for it (``required``).
    """
    config = read_ollama_config()
    store = ModelStore.default()
    url = default_base_url()
    notes: list[str] = []
    client: OllamaClient | None = None
    version, loaded = None, []
    if is_loopback_url(url):
        client = OllamaClient(url, connect_timeout=1.0, read_timeout=30.0)
        try:
            version = client.version()
            loaded = client.ps()
        except VeloError:
            client.close()
            client = None
            notes.append(f"no Ollama server answered at {url}: model facts come from the model files")
    else:
        notes.append(f"OLLAMA_HOST points at {url}, not this machine: only local files were read")
    present = client is not None or store.existing_dirs() or shutil.which("ollama") or config.scope == "systemd"
    if not required and not present:
        if client is not None:
            client.close()
        return None
    inputs = OptimizerInputs(
        hardware=hardware,
        current=config,
        loaded_vram_bytes=sum(int(m.get("size_vram") or 0) for m in loaded),
        loaded_ram_bytes=sum(max(0, int(m.get("size") or 0) - int(m.get("size_vram") or 0)) for m in loaded),
        version=version,
        notes=notes,
    )
    try:
        if model:
            inputs.model = load_architecture(model, client, store)
        else:
            chosen = choose_default_model(hardware, store, client, loaded)
            if chosen is not None:
                inputs.model = load_architecture(chosen[0], client, store)
                notes.append(f"sized for {chosen[0]}, {chosen[1]}; pass --model to size for another")
    except UserInputError as exc:
        if required:
            raise
        notes.append(str(exc))
    finally:
        if client is not None:
            client.close()
    notes.extend(store.warnings)
    return inputs
