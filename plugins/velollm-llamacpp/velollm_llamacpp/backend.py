"""The ``llamacpp`` benchmark backend: a llama-server we start (or one we attach to) plus the client."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from velollm_core.errors import BackendError, UserInputError
from velollm_core.models import BackendInfo, BenchmarkContext, GenerationRequest, GenerationTiming, ModelFacts

BACKEND = "llamacpp"

# Benchmark options (--option KEY=VALUE) that become llama-server flags; every spelling listed is
# one some llama.cpp release accepted, the first one the build knows is used.
OPTION_FLAGS: dict[str, tuple[str, ...]] = {
    "threads": ("--threads", "-t"),
    "threads_batch": ("--threads-batch", "-tb"),
    "ctx_size": ("--ctx-size", "-c"),
    "n_gpu_layers": ("--n-gpu-layers", "-ngl"),
    "batch_size": ("--batch-size", "-b"),
    "ubatch_size": ("--ubatch-size", "-ub"),
    "flash_attn": ("--flash-attn", "-fa"),
    "cache_type_k": ("--cache-type-k", "-ctk"),
    "cache_type_v": ("--cache-type-v", "-ctv"),
}
DEFAULT_CTX_PER_SLOT = 4096


def server_args(binary: Path, options: dict[str, Any], parallel: int) -> list[str]:
    """llama-server flags for the benchmark options, in the spellings this build accepts."""
    from velollm_llamacpp.server import pick_flag

    options = dict(options)
    options.setdefault("ctx_size", DEFAULT_CTX_PER_SLOT * parallel)
    args: list[str] = ["--parallel", str(parallel)] if parallel > 1 else []
    for key, value in options.items():
        if key in OPTION_FLAGS:
            if value is None:
                continue  # None leaves the flag out: llama-server's own default (e.g. ctx_size=None)
            if isinstance(value, bool):
                value = "on" if value else "off"
            args += [pick_flag(binary, *OPTION_FLAGS[key]), str(value)]
        elif key in ("port", "health_timeout_s", "exact_build") or key.startswith("env."):
            continue  # how we run the server, not a model flag: see _start
        elif key == "server_args":
            args += shlex.split(str(value))
        elif not key.startswith("request."):
            known = ", ".join([*OPTION_FLAGS, "server_args", "port", "health_timeout_s", "exact_build", "env.<VAR>",
                               "request.<field>"])
            raise UserInputError(f"unknown llamacpp option {key!r}; known: {known}")
    return args


def model_facts(path: Path) -> ModelFacts:
    from velollm_core.gguf_meta import read_summary

    summary = read_summary(path)
    return ModelFacts(
        name=summary.metadata.get("general.name") or path.name,
        path=str(path),
        size_bytes=summary.size_bytes,
        quantization=summary.quantization,
        architecture=summary.architecture,
        parameters=summary.metadata.get("general.size_label"),
    )


def _client(context: BenchmarkContext):
    client = context.state.get("client")
    if client is None:
        import httpx

        # One connection per parallel stream, so concurrent requests really run side by side.
        limits = httpx.Limits(max_connections=max(context.parallel, 1) + 1)
        client = context.resources.enter_context(httpx.Client(limits=limits, timeout=600.0))
        context.state["client"] = client
    return client


def _attach(context: BenchmarkContext) -> str:
    import httpx

    url = context.host.rstrip("/")
    if "://" not in url:
        url = "http://" + url
    try:
        response = httpx.get(f"{url}/health", timeout=5.0)
    except httpx.HTTPError as exc:
        raise BackendError(f"llama-server is not reachable at {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise BackendError(f"llama-server at {url} is not ready: HTTP {response.status_code} {response.text[:200]}")
    return url


def _start(context: BenchmarkContext) -> str:
    from velollm_core.modelfiles import resolve_model_path
    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.server import HEALTH_TIMEOUT_S, LlamaServer

    model = resolve_model_path(context.model)
    binary = find_program("llama-server", exact=bool(context.options.get("exact_build")))
    args = server_args(binary, context.options, context.parallel)
    server = LlamaServer(
        binary,
        model,
        args=args,
        port=context.options.get("port"),
        log_path=_log_path(),
        health_timeout_s=float(context.options.get("health_timeout_s", HEALTH_TIMEOUT_S)),
        env={k.removeprefix("env."): str(v) for k, v in context.options.items() if k.startswith("env.")},
    )
    context.resources.enter_context(server)
    context.state.update(server=server, binary=binary, model_path=model)
    return server.url


def _log_path() -> Path:
    import os
    import time

    from velollm_llamacpp.install import cache_root

    logs = cache_root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"llama-server-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def base_url(context: BenchmarkContext) -> str:
    """The server of this benchmark, started (once) or attached to."""
    url = context.state.get("url")
    if url is None:
        url = _attach(context) if context.host else _start(context)
        context.state["url"] = url
    return url


def run_generation(request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
    from velollm_llamacpp.client import stream_completion

    url = base_url(context)
    try:
        return stream_completion(_client(context), url, request)
    except BackendError:
        server = context.state.get("server")
        if server is not None and not server.alive():
            raise BackendError(
                f"llama-server died during the benchmark; its log is {server.log_path}"
            ) from None
        raise


def describe(context: BenchmarkContext) -> BackendInfo:
    from velollm_llamacpp.server import server_version

    server = context.state.get("server")
    if server is not None:
        return BackendInfo(
            name=BACKEND,
            version=server_version(context.state["binary"]),
            host=server.url,
            model=model_facts(context.state["model_path"]),
            server_flags=server.command[1:],
            server_env=server.env,
            log_path=str(server.log_path),
        )
    props = _client(context).get(f"{base_url(context)}/props").json() if context.host else {}
    model_path = props.get("model_path")
    facts = ModelFacts(name=context.model, path=model_path)
    if model_path and Path(model_path).is_file():
        facts = model_facts(Path(model_path))
    return BackendInfo(name=BACKEND, version=props.get("build_info"), host=context.host, model=facts)
