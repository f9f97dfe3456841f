"""The ``ollama`` benchmark backend: a running Ollama server, its model facts, its typed options."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from velollm_core.api import (
    BackendBase,
    BackendInfo,
    BackendOptions,
    BenchmarkContext,
    Capabilities,
    ConfigDict,
    Deadlines,
    Field,
    GenerationRequest,
    GenerationTiming,
    ModelFacts,
    VeloError,
    field_validator,
    seconds_option,
)
from velollm_ollama.store import resolve_gguf

BACKEND = "ollama"


class OllamaOptions(BackendOptions):
    """``--option`` keys of the ollama backend.

    Any other key passes through to Ollama, as ``runner.split_options`` sorts it: a top-level request
    field (``keep_alive``, ``think``, ...) or a model option (``num_ctx``, ``num_gpu``, ...). Ollama's
    list of model options grows with its releases and Ollama itself names the ones it does not know,
    so this model allows extra keys rather than copying that list.
    """

    model_config = ConfigDict(extra="allow")

    timeout: float | None = Field(None, description="Older name of timeout_s (the whole request).")
    cache_prompt: bool = Field(False, description="Let Ollama reuse the prompt's KV cache between runs.")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_seconds(cls, value: Any) -> Any:
        return None if value is None else seconds_option("timeout", value)


def deadlines_of(settings: OllamaOptions | None) -> Deadlines:
    """The request deadlines of these options; ``timeout`` is this backend's older name of ``timeout_s``."""
    deadlines = Deadlines.from_settings(settings)
    if isinstance(settings, OllamaOptions) and settings.timeout_s is None and settings.timeout is not None:
        deadlines = replace(deadlines, total_s=settings.timeout)
    return deadlines


_CLIENT_KEY = "ollama_client"


def client_for(context: BenchmarkContext):
    """The benchmark's OllamaClient: made once (``OllamaBackend.start``; concurrent runs share it),
    closed by the core."""
    client = context.state.get(_CLIENT_KEY)
    if client is not None:
        return client
    with context.lock:
        client = context.state.get(_CLIENT_KEY)
        if client is None:
            from velollm_ollama.client import OllamaClient

            client = OllamaClient(context.host, deadlines=deadlines_of(context.settings))
            context.resources.callback(client.close)
            context.state[_CLIENT_KEY] = client
    return client


_VERSION_KEY = "ollama_version"


def server_version(context: BenchmarkContext) -> str | None:
    """The server's ``/api/version``, asked once per benchmark; None when it does not say."""
    if _VERSION_KEY not in context.state:
        try:
            version = client_for(context).version()
        except VeloError:
            version = None
        context.state[_VERSION_KEY] = version
    return context.state[_VERSION_KEY]


def _facts(name: str, shown: dict[str, Any], listed: dict[str, Any] | None, running: dict[str, Any] | None,
           gguf_path: Path | None) -> ModelFacts:
    """ModelFacts from /api/show, the /api/tags entry, the /api/ps entry and the store's GGUF path."""
    from velollm_gguf import file_decode_traffic

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
        # What a decode step reads, for the roofline: Ollama's runner is llama.cpp, with an f16 cache by default.
        decode_traffic=file_decode_traffic(gguf_path) if gguf_path else None,
        **{key: value for key, value in extra.items() if value is not None},
    )


def _find(entries: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    from velollm_ollama.inputs import same_model

    for entry in entries:
        if same_model(str(entry.get("name") or entry.get("model") or ""), name):
            return entry
    return None


def describe(context: BenchmarkContext) -> BackendInfo:
    """Version, model facts (/api/show, /api/tags, /api/ps, the store) and this machine's configuration."""
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
    context.state.setdefault(_VERSION_KEY, version)
    shown = ask("/api/show", lambda: client.show(context.model), {})
    listed = _find(ask("/api/tags", client.tags, []), context.model)
    running = _find(ask("/api/ps", client.ps, []), context.model)
    local = is_loopback_url(client.base_url)
    gguf_path = None
    if local:  # another machine's server has its own store
        try:
            gguf_path = resolve_gguf(context.model)
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


class OllamaBackend(BackendBase):
    """A running Ollama server (--host, default its own address): one /api/generate stream per run.

    Ollama has no tokenizer endpoint (the engine calibrates prompt sizes from the reported prompt
    counts) and no way to generate past the end-of-sequence token (with ``ignore_eos`` the answer may
    stop early: the engine flags the short output).
    """

    name = BACKEND
    Options = OllamaOptions
    capabilities = Capabilities(stream=True, speculative=True)

    def speculative(self):
        """Ollama's drafts (a DRAFT model, an MTP head), as ``velollm speculative`` runs them."""
        from velollm_ollama.speculative import OllamaSpeculative

        return OllamaSpeculative()

    def start(self, context: BenchmarkContext) -> None:
        """The client of this benchmark (no request yet: Ollama loads the model on the first generation)."""
        client_for(context)

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        from velollm_ollama.runner import run_generation

        return run_generation(client_for(context), context.model, request, context.options, context.state,
                              version=server_version(context))

    def describe(self, context: BenchmarkContext) -> BackendInfo:
        return describe(context)

    def stream(self, request: GenerationRequest, context: BenchmarkContext):
        """The generation as an NDJSON StreamCall for the core's asyncio load generator: the body and
        the accumulator of the sync path (``runner.prepare``), so Ollama's stream has one parser."""
        from velollm_core.api import StreamCall
        from velollm_ollama.runner import endpoint, prepare

        client = client_for(context)
        body, accumulator = prepare(context.model, request, context.options, context.state,
                                    version=server_version(context))
        return StreamCall(
            url=f"{client.base_url}{endpoint(body)}", body={**body, "stream": True}, accumulator=accumulator,
            framing="ndjson", server=f"Ollama at {client.base_url}", auth=client.auth, params=client.params,
            status_error=lambda status, raw: client.status_error(status, raw, context.model),
        )
