"""Hugging Face Text Generation Inference's native wire format in the mock: ``POST /generate_stream``
(server-sent events), ``POST /generate``, ``GET /info`` and ``POST /tokenize``.

A stream is one ``data:`` event per token (``data:`` with no space after it, as TGI's router writes
it; no ``[DONE]``): ``{"index": n, "token": {"id", "text", "logprob", "special"}, "generated_text":
null, "details": null}`` with ``index`` counting from 1. The last event carries the last token and
also ``generated_text`` and, when the request asked for ``details``, ``details`` (``finish_reason``
``length`` | ``eos_token``, ``generated_tokens``, ``seed``, ``input_length``). TGI has no
``ignore_eos``: the "model" ends at its end-of-sequence token after ``--output-tokens`` words, so
short answers happen; that EOS token is generated on the schedule like any other, sent as the last
event's token (``special: true``) and counted in ``generated_tokens``, but not in the text.
Refusals are HTTP 422 ``{"error", "error_type": "validation"}``. Stop sequences are checked but the
mock's answer never stops at one.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from velollm_testkit.mock.config import MockConfig
from velollm_testkit.mock.tokenizer import BOS_ID, EOS_ID, SPECIAL, Tokenizer
from velollm_testkit.mock.wire import BadRequest, Format, Plan, int_field, output_length

if TYPE_CHECKING:
    from velollm_testkit.mock.scheduler import Generation
    from velollm_testkit.mock.server import Connection, MockServer

TGI_VERSION = "3.3.0"  # what /info claims
MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences
LOGPROB = -0.25  # every token's: the mock's "model" is sure of its words


def _invalid(message: str) -> BadRequest:
    return BadRequest(f"Input validation error: {message}", status=422, kind="validation")


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest("Failed to deserialize the JSON body into the target type: parameters: expected a map",
                         status=422, kind="validation")
    temperature = parameters.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                                    or not temperature > 0):
        raise _invalid("`temperature` must be strictly positive")
    stop = parameters.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(text, str) for text in stop):
        raise _invalid("`stop` must be a list of strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise _invalid(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stop)}")
    for name in ("do_sample", "details"):
        if not isinstance(parameters.get(name, False), bool):
            raise _invalid(f"`{name}` must be true or false")
    return parameters


def plan_tgi(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any], stream: bool) -> Plan:
    inputs = body.get("inputs")
    if not isinstance(inputs, str) or not inputs.strip():
        raise _invalid("`inputs` cannot be empty")
    parameters = _parameters(body)
    try:
        limit = int_field(parameters, "max_new_tokens")
        seed = int_field(parameters, "seed")
    except BadRequest as exc:
        raise _invalid(str(exc)) from None
    if limit is not None and limit <= 0:
        raise _invalid("`max_new_tokens` must be strictly positive")
    if seed is not None and seed < 0:
        raise _invalid("`seed` must not be negative")
    prompt = tokenizer.tokenize(inputs, add_special=True)
    max_input = config.ctx_size - 1
    if len(prompt) > max_input:
        raise _invalid(f"`inputs` must have less than {max_input} tokens. Given: {len(prompt)}")
    if limit is not None and len(prompt) + limit > config.ctx_size:
        raise _invalid(f"`inputs` tokens + `max_new_tokens` must be <= {config.ctx_size}. "
                       f"Given: {len(prompt)} `inputs` tokens and {limit} `max_new_tokens`")
    n_out, stop = output_length(config, len(prompt), limit, ignore_eos=False)
    if stop == "eos":
        n_out += 1  # the end-of-sequence token is generated too
    return Plan(prompt, n_out, stop, True, stream)


class TGIFormat(Format):
    def __init__(self, gen: Generation) -> None:
        super().__init__(gen)
        self.template = ('data:{"index":%d,"token":{"id":%d,"text":%s,"logprob":' + str(LOGPROB)
                         + ',"special":false},"generated_text":null,"details":null}\n\n')
        self.last: dict[str, Any] | None = None  # held back: the final event carries it

    def event(self, data: dict[str, Any] | str) -> bytes:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        return f"data:{text}\n\n".encode()

    def token(self, index: int, piece_json: str, token: int) -> bytes:
        if index < self.gen.plan.n_out - 1:
            return (self.template % (index + 1, token, piece_json)).encode()
        if self.gen.plan.stop == "eos":
            self.last = {"id": EOS_ID, "text": SPECIAL[EOS_ID], "logprob": LOGPROB, "special": True}
        else:
            self.last = {"id": token, "text": json.loads(piece_json), "logprob": LOGPROB, "special": False}
        return b""

    def text(self) -> str:
        """The answer's text: every generated token's but the end-of-sequence one."""
        gen = self.gen
        tokens = gen.tokens()
        if gen.plan.stop == "eos" and gen.emitted == gen.plan.n_out:
            tokens = tokens[:-1]
        return "".join(gen.server.tokenizer.piece(token) for token in tokens)

    def details(self) -> dict[str, Any] | None:
        gen = self.gen
        parameters = gen.body.get("parameters") or {}
        if not parameters.get("details"):
            return None
        seed = parameters.get("seed")
        return {"finish_reason": "eos_token" if gen.plan.stop == "eos" else "length",
                "generated_tokens": gen.emitted, "input_length": len(gen.plan.prompt),
                "seed": (gen.number if seed is None else seed) if parameters.get("do_sample") else None}

    def final(self) -> bytes:
        return self.event({"index": self.gen.emitted, "token": self.last, "generated_text": self.text(),
                           "details": self.details()})

    def whole(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"generated_text": self.text()}
        details = self.details()
        if details is not None:
            answer["details"] = details
        return answer

    @staticmethod
    def error(message: str, status: int, kind: str) -> dict[str, Any]:
        return {"error": message, "error_type": kind}


def generate_stream(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, functools.partial(plan_tgi, stream=True), TGIFormat)


def generate(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, functools.partial(plan_tgi, stream=False), TGIFormat)


def tokenize(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    """Every token of ``inputs`` with where its text lies (``start``/``stop``: character offsets)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        conn.send_json(422, TGIFormat.error("Input validation error: `inputs` must be a string", 422, "validation"))
        return
    tokens = [{"id": BOS_ID, "text": SPECIAL[BOS_ID], "start": 0, "stop": 0}]
    tokens += [{"id": token, "text": inputs[start:stop], "start": start, "stop": stop}
               for token, start, stop in server.tokenizer.spans(inputs)]
    conn.send_json(200, tokens)


def info(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    config = server.config
    conn.send_json(200, {
        "model_id": config.model, "model_sha": None, "model_dtype": "torch.float16", "model_device_type": "cpu",
        "model_pipeline_tag": "text-generation", "max_concurrent_requests": config.slots or 128,
        "max_best_of": 2, "max_stop_sequences": MAX_STOP_SEQUENCES, "max_input_tokens": config.ctx_size - 1,
        "max_total_tokens": config.ctx_size, "validation_workers": 2, "max_client_batch_size": 4,
        "router": "text-generation-router", "version": TGI_VERSION, "sha": None, "docker_label": None,
    })


# /tokenize is shared with llama-server: server.py routes a body with "inputs" here.
ROUTES = {
    "/generate_stream": ("POST", generate_stream), "/generate": ("POST", generate), "/info": ("GET", info),
}
