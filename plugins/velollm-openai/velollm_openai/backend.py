"""The ``openai`` benchmark backend: attach to an OpenAI-compatible server, check the model it
serves, stream one generation per call, or describe it as a StreamCall for the core's load generator."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import click

from velollm_core.api import (
    BackendBase,
    BackendError,
    BackendInfo,
    BackendOptions,
    BenchmarkContext,
    Capabilities,
    Deadlines,
    Field,
    GenerationRequest,
    GenerationTiming,
    ModelFacts,
    StreamCall,
    UserInputError,
)
from velollm_openai.client import OpenAIServer, StreamOptionsRejected
from velollm_openai.metrics import OPENAI_SERVER_METRICS
from velollm_openai.timing import OpenAIStream, StreamRecord, timing_from_stream

BACKEND = "openai"
ENDPOINTS = {"completions": "/completions", "chat": "/chat/completions"}
_STATE_KEY = "openai"


class OpenAIOptions(BackendOptions):
    """``--option`` keys of the openai backend (``--api-key-env`` and ``--endpoint`` set the first two)."""

    api_key_env: str | None = Field(None, description="Environment variable holding the API key (never the key).")
    endpoint: Literal["completions", "chat"] = Field("completions", description="Which API endpoint to stream.")


@dataclass
class Session:
    """One benchmark's connection to the server, shared by every run and thread."""

    server: OpenAIServer
    model: str
    endpoint: str
    models: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    include_usage: bool = True
    fingerprint: str | None = None
    request_fields: dict[str, Any] = field(default_factory=dict)  # --option request.<field>=VALUE

    @property
    def software(self) -> str | None:
        return self.headers.get("server") or self.headers.get("Server")


def _api_key(settings: OpenAIOptions) -> str | None:
    """The key from the environment variable named by ``api_key_env`` (never from a flag value)."""
    var = settings.api_key_env
    if not var:
        return None
    key = os.environ.get(str(var), "").strip()
    if not key:
        raise UserInputError(f"environment variable {var} (named by --api-key-env) is not set or empty")
    return key


def _names(entry: dict[str, Any]) -> set[str]:
    """Every name a /v1/models entry answers to: its id, aliases, and (for file paths) the file name."""
    names = {str(entry.get("id"))} | {str(a) for a in entry.get("aliases") or []}
    for name in list(names):
        path = PurePosixPath(name)
        names |= {path.name, path.stem} if path.suffix == ".gguf" or "/" in name else set()
    return names


def _match_model(wanted: str, models: list[dict[str, Any]], server: OpenAIServer) -> str:
    """The id to send for ``wanted``; a model the server does not list is a UserInputError."""
    if not models:
        return wanted  # the server lists nothing: let the generation request decide
    for entry in models:
        if wanted == entry.get("id"):
            return wanted
    for entry in models:
        if wanted in _names(entry):
            return str(entry["id"])
    raise UserInputError(
        f"model {wanted!r} is not offered by the OpenAI-compatible server at {server.base}; "
        f"it offers: {server.offered()}"
    )


def _server_needed(context: BenchmarkContext) -> None:
    if not context.host:
        raise UserInputError(
            "the openai backend attaches to a running server: pass --host URL "
            "(e.g. --host http://127.0.0.1:8000)"
        )


def _open_session(context: BenchmarkContext) -> Session:
    _server_needed(context)
    settings: OpenAIOptions = context.settings
    server = OpenAIServer(
        context.host,
        api_key=_api_key(settings),
        api_key_env=settings.api_key_env,
        max_concurrency=context.max_concurrency,
        deadlines=Deadlines.from_settings(settings),
    )
    context.resources.callback(server.close)
    listed = server.list_models()
    models, headers = listed if listed is not None else ([], {})
    model = _match_model(context.model, models, server)
    return Session(
        server=server,
        model=model,
        endpoint=settings.endpoint,
        models=models,
        headers={k.lower(): v for k, v in headers.items()},
        request_fields=settings.request,
    )


def session(context: BenchmarkContext) -> Session:
    """This benchmark's Session, opened once (``OpenAIBackend.start``) even when calls come from many threads."""
    with context.lock:
        current = context.state.get(_STATE_KEY)
        if current is None:
            current = context.state[_STATE_KEY] = _open_session(context)
    return current


def request_body(request: GenerationRequest, sess: Session) -> dict[str, Any]:
    """Greedy, seeded, streamed, with usage; the ``request`` option's fields are set over these."""
    body: dict[str, Any] = {
        "model": sess.model,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.seed,
        "stream": True,
    }
    if _endpoint(sess, request) == "chat":
        body["messages"] = chat_messages(request)
    else:
        body["prompt"] = request.prompt
    if request.json_schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": request.json_schema, "strict": True}}
    if request.tools:
        body["tools"] = request.tools
        body["tool_choice"] = "required"  # the benchmark times a tool call: an answer in prose is none
    if request.think is not None:
        # The switch of Qwen3-style templates, which vLLM, SGLang and llama-server pass to the template.
        body["chat_template_kwargs"] = {"enable_thinking": request.think}
    if sess.include_usage:
        body["stream_options"] = {"include_usage": True}
    if request.ignore_eos:
        # A fixed output length: vLLM and SGLang take both, llama-server ignore_eos; servers that know
        # neither answer naturally, and the engine flags a shorter answer.
        body["ignore_eos"] = True
        body["min_tokens"] = request.max_tokens
    if (sess.software or "").startswith("llama.cpp"):
        # As the llamacpp backend does: reprocess the prompt every run (unless the workload measures
        # the prefix cache), so prefill is measured, and sample greedily with top_k=1 (the full
        # sampler chain over a 262k vocabulary costs ~4%).
        body["cache_prompt"] = request.cache_prompt
        body.pop("min_tokens", None)
        if request.temperature == 0:
            body["top_k"] = 1
    body.update(sess.request_fields)
    return body


def chat_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The conversation so far and the new user message, its images as ``image_url`` data URIs."""
    content: str | list[dict[str, Any]] = request.prompt
    if request.images:
        content = [{"type": "text", "text": request.prompt},
                   *({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
                     for image in request.images)]
    return [*request.history, {"role": "user", "content": content}]


def _endpoint(sess: Session, request: GenerationRequest) -> str:
    """A raw request (a synthetic workload, sized in tokens) goes to completions: no chat template; a
    conversation, tools, images, a schema or the thinking switch need chat."""
    if request.raw:
        return "completions"
    if request.chat or request.history or request.tools or request.images or request.think is not None \
            or request.json_schema is not None:
        return "chat"
    return sess.endpoint


def stream_call(request: GenerationRequest, context: BenchmarkContext) -> StreamCall:
    """The generation as a StreamCall for the core's asyncio load generator (same body, same parser)."""
    sess = session(context)
    endpoint = _endpoint(sess, request)
    return sess.server.stream_call(ENDPOINTS[endpoint], request_body(request, sess),
                                   OpenAIStream(endpoint, f"the server at {sess.server.base}"))


def tokenize(text: str, context: BenchmarkContext) -> list[int] | None:
    """The server's tokenizer where it has one: vLLM's and SGLang's /tokenize, llama-server's."""
    sess = session(context)
    return sess.server.tokenize(sess.model, text)


def _stream(sess: Session, path: str, request: GenerationRequest) -> StreamRecord:
    """One streamed request, every event taken into a StreamRecord."""
    record = StreamRecord(start=time.perf_counter())
    for arrived, event in sess.server.stream(path, request_body(request, sess),
                                             tokens_arrived=lambda: len(record.chunk_times)):
        record.observe(arrived, event)
    return record


def run_generation(request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
    """Stream one generation and time it on the client's clock."""
    sess = session(context)
    endpoint = _endpoint(sess, request)
    path = ENDPOINTS[endpoint]
    try:
        record = _stream(sess, path, request)
    except StreamOptionsRejected:
        sess.include_usage = False  # tokens counted from chunks from now on, and said so per run
        record = _stream(sess, path, request)
    end = time.perf_counter()
    if not record.finished:
        raise BackendError(
            f"the stream from the OpenAI-compatible server at {sess.server.base}{path} ended mid-way "
            f"after {len(record.chunk_times)} content chunk(s), without a finish_reason"
        )
    sess.fingerprint = record.fingerprint or sess.fingerprint
    return timing_from_stream(record, end, endpoint=endpoint)


def describe(context: BenchmarkContext) -> BackendInfo:
    """Server software and version where the server says (vLLM's /version, llama.cpp's fingerprint)."""
    sess = session(context)
    entry = next((m for m in sess.models if m.get("id") == sess.model), {})
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    version_doc = sess.server.get_json(f"{sess.server.root}/version") or {}
    return BackendInfo(
        name=BACKEND,
        version=version_doc.get("version") or sess.fingerprint,
        host=sess.server.base,
        model=ModelFacts(
            name=sess.model,
            size_bytes=meta.get("size") if isinstance(meta.get("size"), int) else None,
            quantization=meta.get("ftype") if isinstance(meta.get("ftype"), str) else None,
        ),
        server=sess.software,
        owned_by=entry.get("owned_by"),
        endpoint=sess.endpoint,
    )


class OpenAIBackend(BackendBase):
    """Any OpenAI-compatible server (vLLM, llama-server, LM Studio, ...), attached to with --host."""

    name = BACKEND
    Options = OpenAIOptions
    # ignore_eos: sent, and honoured by vLLM, SGLang and llama-server; a server that ignores it answers
    # naturally and the engine flags each shorter answer.
    capabilities = Capabilities(stream=True, tokenize=True, ignore_eos=True, metrics=OPENAI_SERVER_METRICS)
    cli_options = (
        click.Option(["--api-key-env"], metavar="VAR", help="Env variable holding the API key (openai backend)."),
        click.Option(["--endpoint"], type=click.Choice(list(ENDPOINTS)), help="openai backend: API endpoint."),
    )

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        """It attaches to a running server: refuse a missing --host or API key before anything else."""
        _server_needed(context)
        _api_key(context.settings)

    def start(self, context: BenchmarkContext) -> None:
        """Connect: list the server's models and match --model among them."""
        session(context)

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        return run_generation(request, context)

    def describe(self, context: BenchmarkContext) -> BackendInfo:
        return describe(context)

    def stream(self, request: GenerationRequest, context: BenchmarkContext) -> StreamCall:
        return stream_call(request, context)

    def tokenize(self, text: str, context: BenchmarkContext) -> list[int] | None:
        return tokenize(text, context)

    def metrics_url(self, context: BenchmarkContext) -> str | None:
        """``/metrics`` beside ``/v1`` (vLLM, SGLang with --enable-metrics, llama-server with --metrics)."""
        return f"{session(context).server.root}/metrics"
