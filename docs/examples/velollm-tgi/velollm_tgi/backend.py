"""The ``tgi`` backend: attach to a running Text Generation Inference router and measure it through
its native API (``/info``, ``/tokenize``, ``/generate_stream``), not its OpenAI-compatible one.

Lifecycle, as the core calls it: ``check`` (no network: is there a --host, and does the workload ask
only for what the native API sends?) -> ``start`` (connect,
read ``/info``, match the model) -> ``describe`` -> ``generate`` (sequential runs) / ``stream`` (load
levels) / ``tokenize`` (prompts sized in tokens) -> ``close``. TGI cannot ignore the end-of-sequence
token, so the backend declares ``ignore_eos=False`` and the core flags answers shorter than asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from velollm_core.api import (
    BackendBase,
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
from velollm_tgi.events import TGIStream
from velollm_tgi.server import TGIServer

STATE_KEY = "tgi"  # this backend's entry in context.state
# What a workload may ask that the native API cannot send, and the benchmark flag that asks it: the
# chat template's inputs (a conversation, the thinking switch, tools, images) and a schema for the
# answer (TGI's own grammar parameter is left out to keep the example small).
UNSENDABLE = {"chat": "--turns", "history": "--turns", "think": "--think", "json_schema": "--json-schema",
              "tools": "--tools", "images": "--images"}


class TGIOptions(BackendOptions):
    """``--option`` keys of the tgi backend; ``request.<field>`` lands in the body's ``parameters``."""

    top_k: int | None = Field(None, ge=1, description="Sample from the k likeliest tokens.")
    truncate: int | None = Field(None, ge=1, description="Keep only the prompt's last N tokens.")


@dataclass
class Session:
    """One benchmark's connection: the client and what ``/info`` said."""

    server: TGIServer
    info: dict[str, Any]

    @property
    def model(self) -> str:
        return self.info["model_id"]


def _served_name_matches(wanted: str, model_id: str) -> bool:
    """``--model`` names the served model: its whole id (``org/name``) or its last part (``name``)."""
    return wanted.casefold() in (model_id.casefold(), model_id.rsplit("/", 1)[-1].casefold())


def refuse_unsendable(requests: list[GenerationRequest]) -> None:
    """One UserInputError naming the flags whose request fields the native API cannot send (``think=False``
    asks too: thinking off). ``check`` sees every field but a conversation's (``chat``, ``history``), which
    come only with its turns: ``request_body`` asks again."""
    asked = {flag for request in requests for field, flag in UNSENDABLE.items()
             if (getattr(request, field) is not None if field == "think" else getattr(request, field))}
    if asked:
        raise UserInputError("the tgi backend sends a plain prompt to TGI's /generate_stream (no chat "
                             f"messages, thinking switch, JSON schema, tools or images): drop {', '.join(sorted(asked))}")


def session(context: BenchmarkContext) -> Session:
    """The Session ``start`` opened for this benchmark."""
    return context.state[STATE_KEY]


def request_body(request: GenerationRequest, settings: TGIOptions) -> dict[str, Any]:
    """TGI's ``{"inputs", "parameters"}``: greedy unless a temperature is asked (TGI refuses 0), seeded,
    with ``details`` so the final event carries the counts. The prompt is sent as it is: the native
    API applies no chat template, so every request is raw."""
    refuse_unsendable([request])
    parameters: dict[str, Any] = {"max_new_tokens": request.max_tokens, "details": True, "seed": request.seed,
                                  "do_sample": request.temperature > 0}
    if request.temperature > 0:
        parameters["temperature"] = request.temperature
    if settings.top_k is not None:
        parameters["top_k"] = settings.top_k
    if settings.truncate is not None:
        parameters["truncate"] = settings.truncate
    parameters.update(settings.request)
    return {"inputs": request.prompt, "parameters": parameters}


class TGIBackend(BackendBase):
    """Hugging Face Text Generation Inference, attached to with ``--host``."""

    name = "tgi"
    Options = TGIOptions
    capabilities = Capabilities(stream=True, tokenize=True, ignore_eos=False, metrics=None)

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        """Refuse, before anything starts, a benchmark with no server to attach to, or one asking what
        the native API cannot send (no network here)."""
        if not context.host:
            raise UserInputError("the tgi backend attaches to a running TGI router: pass --host URL "
                                 "(e.g. --host http://127.0.0.1:8080)")
        refuse_unsendable(requests)

    def start(self, context: BenchmarkContext) -> None:
        """Connect, read ``/info`` and check that the router serves ``--model``."""
        deadlines = Deadlines.from_settings(context.settings)
        server = TGIServer(context.host, deadlines=deadlines, max_concurrency=context.max_concurrency)
        context.resources.callback(server.close)
        info = server.info()
        if not _served_name_matches(context.model, info["model_id"]):
            raise UserInputError(f"{server.who} serves model {info['model_id']!r}, not {context.model!r} "
                                 f"(a TGI router serves one model: pass --model {info['model_id']})")
        context.state[STATE_KEY] = Session(server, info)

    def describe(self, context: BenchmarkContext) -> BackendInfo:
        sess = session(context)
        info = sess.info
        limits = ("max_concurrent_requests", "max_input_tokens", "max_input_length", "max_total_tokens",
                  "max_batch_total_tokens")
        return BackendInfo(
            name=self.name,
            version=info.get("version"),
            host=sess.server.base,
            model=ModelFacts(name=sess.model, quantization=info.get("model_dtype")),
            server_flags=[f"{key}={info[key]}" for key in limits if info.get(key) is not None],
            build_commit=info.get("sha"),
            device=info.get("model_device_type"),
        )

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        """One streamed generation, read by this backend's own client (sequential runs)."""
        sess = session(context)
        events = TGIStream(sess.server.who, request.max_tokens)
        start = time.perf_counter()
        for arrived, event in sess.server.stream(request_body(request, context.settings), events):
            if events.feed(event, arrived):
                break
        return events.finish(start, time.perf_counter())

    def stream(self, request: GenerationRequest, context: BenchmarkContext) -> StreamCall:
        """The same generation as a StreamCall, for the core's load generator (load levels)."""
        sess = session(context)
        accumulator = TGIStream(sess.server.who, request.max_tokens)
        return sess.server.stream_call(request_body(request, context.settings), accumulator)

    def tokenize(self, text: str, context: BenchmarkContext) -> list[int]:
        return session(context).server.tokenize(text)

    def close(self, context: BenchmarkContext) -> None:
        """The client is closed by ``context.resources``; forget the session."""
        context.state.pop(STATE_KEY, None)
