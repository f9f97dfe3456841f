"""The ``llamacpp`` benchmark backend: a llama-server we start (or one we attach to) plus the client,
and ``LlamaCppBackend``, the object the plugin registers (its typed options and capabilities)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from velollm_core.api import (
    PLAIN_TIMEOUT_S,
    BackendBase,
    BackendError,
    BackendInfo,
    BenchmarkContext,
    Capabilities,
    ConfigProposal,
    Deadlines,
    GenerationRequest,
    GenerationTiming,
    HardwareReport,
    ModelFacts,
    UserInputError,
    join_url,
    plain_request,
    split_server_url,
)
from velollm_llamacpp.metrics import LLAMACPP_METRICS
from velollm_llamacpp.options import OPTION_FLAGS, LlamaCppOptions

BACKEND = "llamacpp"

DEFAULT_CTX_PER_SLOT = 4096
# Options about how we run and talk to the server, never passed to it as flags.
RUN_OPTIONS = tuple(key for key in LlamaCppOptions.model_fields
                    if key not in OPTION_FLAGS and key not in ("server_args", "env", "request"))


def server_args(binary: Path, options: dict[str, Any], parallel: int) -> list[str]:
    """llama-server flags for the benchmark options, in the spellings this build accepts."""
    from velollm_llamacpp.server import pick_flag, server_flags

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
        elif key in RUN_OPTIONS or key.startswith("env."):
            continue  # how we run the server, not a model flag: see _start
        elif key == "server_args":
            args += server_args_list(options)
        elif not key.startswith("request."):
            known = ", ".join([*OPTION_FLAGS, "server_args", *RUN_OPTIONS, "env.<VAR>", "request.<field>"])
            raise UserInputError(f"unknown llamacpp option {key!r}; known: {known}")
    # Prometheus counters at /metrics: the benchmark's telemetry reads the server's own figures. Only
    # where this build lists the flag (it changes no timing, so the tuner's candidates stay exact).
    if "--metrics" in args or "--metrics" not in server_flags(binary):
        return args
    return [*args, "--metrics"]


# Flags of ours that raw server_args must not override: the server must stay on 127.0.0.1.
_OWN_FLAGS = ("--host", "--port", "-m", "--model")


def server_args_list(options: dict[str, Any]) -> list[str]:
    """``--option server_args="..."`` split as a shell would; refused when it rebinds the server."""
    raw = options.get("server_args")
    if raw is None:
        return []
    try:
        args = shlex.split(str(raw))
    except ValueError as exc:
        raise UserInputError(f"--option server_args={raw!r}: {exc} (quote it as a shell would)") from None
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in _OWN_FLAGS:
            hint = (" (a server VeloLLM starts listens on 127.0.0.1 only: to measure one on another address, "
                    "start it yourself and pass --host)") if flag == "--host" else ""
            raise UserInputError(f"--option server_args may not set {flag}: VeloLLM sets it{hint}")
    return args


def model_facts(path: Path, options: dict[str, Any] | None = None, flags: list[str] | tuple[str, ...] = ()) -> ModelFacts:
    """The model file's facts, with what a decode step reads under ``options`` and server ``flags``."""
    from velollm_gguf import file_decode_traffic, read_summary

    summary = read_summary(path)
    options = options or {}
    cache_type_k = str(options.get("cache_type_k", "f16"))
    return ModelFacts(
        name=summary.text("general.name") or path.name,
        path=str(path),
        size_bytes=summary.size_bytes,
        quantization=summary.quantization,
        architecture=summary.architecture,
        parameters=summary.text("general.size_label"),
        decode_traffic=file_decode_traffic(path, cache_type_k=cache_type_k,
                                           cache_type_v=str(options.get("cache_type_v", cache_type_k)),
                                           cpu_only=_cpu_only(options, flags)),
    )


def _cpu_only(options: dict[str, Any], flags: list[str] | tuple[str, ...]) -> bool:
    """Whether the run keeps every layer on the CPU (``n_gpu_layers=0``, or ``-ngl 0`` among the flags)."""
    if str(options.get("n_gpu_layers", "")).strip() == "0":
        return True
    from itertools import pairwise

    return any(flag in ("-ngl", "--n-gpu-layers", "--gpu-layers") and value.strip() == "0"
               for flag, value in pairwise(flags))


def _deadlines(context: BenchmarkContext) -> Deadlines:
    return Deadlines.from_settings(context.settings)


def _request_fields(context: BenchmarkContext) -> dict[str, Any]:
    """The ``request`` option's body fields; none for a context made without the engine's validation."""
    return context.settings.request if context.settings is not None else {}


def _client(context: BenchmarkContext):
    client = context.state.get("client")
    if client is None:
        import httpx

        # A --host's user:password@ and query go with every request (basic auth, parameters) and
        # nowhere else: the base URL we use and show has neither.
        server = split_server_url(context.host) if context.host else None
        # One connection per parallel stream, so concurrent requests really run side by side.
        limits = httpx.Limits(max_connections=max(context.max_concurrency, 1) + 1)
        client = context.resources.enter_context(httpx.Client(
            limits=limits,
            timeout=_deadlines(context).plain().httpx_timeout(5.0),
            auth=server.auth if server else None,
            params=server.params if server else None,
        ))
        context.state["client"] = client
    return client


def _get(context: BenchmarkContext, url: str, seconds: float = PLAIN_TIMEOUT_S):
    """A GET of llama-server's (/health, /props), read whole within ``seconds``."""
    return plain_request(_client(context), "GET", url, _deadlines(context).plain(seconds),
                                  server="llama-server", connect_s=5.0)


def _attach(context: BenchmarkContext) -> str:
    import httpx

    url = split_server_url(context.host).base
    try:
        response = _get(context, join_url(url, "health"), 5.0)
    except httpx.HTTPError as exc:
        raise BackendError(f"llama-server is not reachable at {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise BackendError(f"llama-server at {url} is not ready: HTTP {response.status_code} {response.text[:200]}")
    return url


def _start(context: BenchmarkContext) -> str:
    from velollm_core.api import resolve_model_path
    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.server import HEALTH_TIMEOUT_S, LlamaServer

    model = resolve_model_path(context.model)
    binary = find_program("llama-server", exact=bool(context.options.get("exact_build")))
    args = server_args(binary, context.options, context.max_concurrency)
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


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


_LONGEST_KEY = "longest_request_tokens"


def check(context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
    """Refuse, before a server starts, what it could not hold: context, slots, memory (no network:
    a server attached to with --host is checked by ``check_attached`` once it answers)."""
    # A slot holds the prompt and the answer: a workload says its prompt size, a suite's is small.
    longest = max(((r.prompt_tokens_target or 0) + r.max_tokens for r in requests), default=0)
    context.state[_LONGEST_KEY] = longest
    if not context.host:
        _check_started(context, longest)


def check_attached(context: BenchmarkContext, url: str) -> None:
    """Refuse what the attached llama-server's slots cannot hold, from its /props."""
    longest = context.state.get(_LONGEST_KEY, 0)
    props = _get(context, join_url(url, "props")).json()
    slots = props.get("total_slots")
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
    if isinstance(slots, int) and context.max_concurrency > slots:
        raise UserInputError(
            f"--concurrency {context.max_concurrency} is more than the {slots} slot(s) of the llama-server at "
            f"{url}: extra streams would wait in its queue; restart it with --parallel "
            f"{context.max_concurrency} or lower --concurrency")
    if isinstance(n_ctx, int) and longest > n_ctx:
        raise UserInputError(f"--max-tokens {longest} does not fit the {n_ctx}-token context of each slot "
                             f"of the llama-server at {url}")


def _check_started(context: BenchmarkContext, longest: int) -> None:
    import psutil
    from velollm_gguf import estimate_memory, model_shape, read_summary

    from velollm_core.api import resolve_model_path

    options = context.options
    port = options.get("port")
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
        raise UserInputError(f"--option port={port} is not a TCP port (1-65535)")
    server_args_list(options)  # a quoting error is the user's, said now
    summary = read_summary(resolve_model_path(context.model))
    trained = model_shape(summary).n_ctx_train
    ctx = options.get("ctx_size", DEFAULT_CTX_PER_SLOT * context.max_concurrency)
    if ctx is None:
        return  # llama-server's own default: the trained context
    if not isinstance(ctx, int) or ctx < 1:
        raise UserInputError(f"--option ctx_size={ctx} is not a positive number of tokens")
    per_slot = ctx // context.max_concurrency
    if "ctx_size" in options and per_slot > trained:
        raise UserInputError(f"ctx_size {ctx} gives each of {context.max_concurrency} slot(s) {per_slot} tokens, more "
                             f"than the {trained} the model was trained for; lower ctx_size")
    if longest > per_slot:
        raise UserInputError(f"--max-tokens {longest} does not fit the {per_slot}-token context of each of "
                             f"{context.max_concurrency} slot(s); raise --option ctx_size or lower --max-tokens")
    estimate = estimate_memory(summary, ctx=ctx, parallel=context.max_concurrency,
                               cache_type_k=str(options.get("cache_type_k", "f16")),
                               cache_type_v=options.get("cache_type_v"))
    needed = estimate.kv_cache_bytes + estimate.compute_bytes
    gpus = context.hardware.gpus if context.hardware is not None else []
    available = psutil.virtual_memory().available + sum(g.memory_free_bytes or 0 for g in gpus)
    if needed > available:
        raise UserInputError(
            f"{context.max_concurrency} slot(s) of {per_slot} tokens need {_gib(needed)} for the KV cache and compute "
            f"buffers, more than the {_gib(available)} of memory available; lower --concurrency or ctx_size")


def base_url(context: BenchmarkContext) -> str:
    """The server of this benchmark, started (once) or attached to (``LlamaCppBackend.start``)."""
    with context.lock:
        url = context.state.get("url")
        if url is None:
            url = _attach(context) if context.host else _start(context)
            context.state["url"] = url
    return url


def run_generation(request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
    from velollm_llamacpp.client import stream_completion

    url = base_url(context)
    try:
        return stream_completion(_client(context), url, request, _deadlines(context), _request_fields(context))
    except BackendError:
        server = context.state.get("server")
        if server is not None and not server.alive():
            raise BackendError(
                f"llama-server died during the benchmark; its log is {server.log_path}"
            ) from None
        raise


def stream_call(request: GenerationRequest, context: BenchmarkContext):
    """The generation as a StreamCall for the core's asyncio load generator (same body and parser)."""
    from velollm_core.api import StreamCall
    from velollm_llamacpp.client import request_route, status_error

    url = base_url(context)
    server = split_server_url(context.host) if context.host else None
    path, body, accumulator = request_route(request, _request_fields(context))
    return StreamCall(url=f"{url}{path}", body=body, accumulator=accumulator,
                      framing="sse", server=f"llama-server at {url}", status_error=status_error,
                      auth=server.auth if server else None, params=server.params if server else None)


def tokenize(text: str, context: BenchmarkContext) -> list[int] | None:
    """llama-server's own tokenizer, special tokens (BOS) included as the server counts a prompt."""
    response = plain_request(_client(context), "POST", join_url(base_url(context), "tokenize"),
                             _deadlines(context).plain(), server="llama-server", connect_s=5.0,
                             json={"content": text, "add_special": True})
    if response.status_code != 200:
        return None
    tokens = response.json().get("tokens")
    return tokens if isinstance(tokens, list) else None


def describe(context: BenchmarkContext) -> BackendInfo:
    from velollm_llamacpp.install import info_for_binary
    from velollm_llamacpp.server import server_version

    server = context.state.get("server")
    if server is not None:
        build = info_for_binary(context.state["binary"]) or None
        return BackendInfo(
            name=BACKEND,
            version=server_version(context.state["binary"]),
            build_commit=(build or {}).get("llama_cpp_commit"),
            build=build,
            host=server.url,
            model=model_facts(context.state["model_path"], context.options, server.command[1:]),
            server_flags=server.command[1:],
            server_env=server.env,
            log_path=str(server.log_path),
        )
    props = _get(context, join_url(base_url(context), "props")).json() if context.host else {}
    model_path = props.get("model_path")
    facts = ModelFacts(name=context.model, path=model_path)
    if model_path and Path(model_path).is_file():
        facts = model_facts(Path(model_path), context.options)
    return BackendInfo(name=BACKEND, version=props.get("build_info"), host=base_url(context), model=facts)


class LlamaCppBackend(BackendBase):
    """llama.cpp's llama-server, built by ``velollm llamacpp install`` or found on PATH."""

    name = BACKEND
    Options = LlamaCppOptions
    capabilities = Capabilities(stream=True, tokenize=True, ignore_eos=True, metrics=LLAMACPP_METRICS,
                                speculative=True, verify_config=True, engine_ceiling=True, tune_for_load=True)

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        check(context, requests)

    def start(self, context: BenchmarkContext) -> None:
        """Start llama-server (or attach to --host's and check its slots); it stops with ``context.resources``."""
        url = base_url(context)
        if context.host:
            check_attached(context, url)

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        return run_generation(request, context)

    def describe(self, context: BenchmarkContext) -> BackendInfo:
        return describe(context)

    def metrics_url(self, context: BenchmarkContext) -> str | None:
        """llama-server's Prometheus endpoint (on for a server we start; --metrics for one attached to)."""
        return join_url(base_url(context), "metrics")

    def stream(self, request: GenerationRequest, context: BenchmarkContext):
        return stream_call(request, context)

    def tokenize(self, text: str, context: BenchmarkContext) -> list[int] | None:
        return tokenize(text, context)

    def speculative(self):
        from velollm_llamacpp.speculative import LlamaCppSpeculative

        return LlamaCppSpeculative()

    def engine_ceiling(self, shapes, context: BenchmarkContext):
        """llama-batched-bench with the model and engine flags of this benchmark, at each level's shape."""
        from velollm_llamacpp.ceiling import measure

        return measure(shapes, context)

    def tune_for_load(self, proposal: ConfigProposal, model: str | None, concurrency: int, workload):
        from velollm_llamacpp.tune_load import tune_for_load

        return tune_for_load(proposal, model, concurrency, workload)

    def verify_config(self, proposal: ConfigProposal, model: str | None, hardware: HardwareReport, progress):
        from velollm_llamacpp.tune import verify_config

        return verify_config(proposal=proposal, model=model, hardware=hardware, progress=progress)
