"""llama-server's wire format in the mock: ``/completion`` SSE with its final ``timings``, ``/tokenize``,
``/detokenize``, ``/props``, ``/health`` and ``/metrics`` (llama-server's metric names, plus the mock's
own lateness and CPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from velollm_testkit.mock import answers
from velollm_testkit.mock.config import MOCK_VERSION, MockConfig
from velollm_testkit.mock.tokenizer import BOS_ID, EOS_ID, SPECIAL, Tokenizer, prompt_tokens
from velollm_testkit.mock.wire import BadRequest, Format, Plan, int_field

if TYPE_CHECKING:
    from velollm_testkit.mock.scheduler import Generation
    from velollm_testkit.mock.server import Connection, MockServer


def plan_llama(config: MockConfig, tokenizer: Tokenizer, body: dict[str, Any]) -> Plan:
    if "prompt" not in body:
        raise BadRequest('"prompt" must be provided')
    prompt = prompt_tokens(tokenizer, body["prompt"], add_special=True)
    schema = body.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise BadRequest("'json_schema' must be a JSON Schema object")
    # /completion is a raw completion: no reasoning split, the schema's JSON as plain content.
    return answers.plan_request(config, prompt, body, int_field(body, "n_predict", "max_tokens", default=-1),
                                answers.Features(schema=schema))


def llama_timings(gen: Generation) -> dict[str, Any]:
    """llama-server's ``timings`` (server_slot_stats::to_json), from the mock's own clock."""
    prompt_ms = max(gen.t_first - gen.t_slot, 0.0) * 1000 if gen.t_first else 0.0
    predicted_ms = max(gen.t_last - gen.t_first, 0.0) * 1000 if gen.t_first else 0.0
    prompt_n = len(gen.plan.prompt) - gen.cache_n
    predicted_n = gen.emitted
    return {
        "cache_n": gen.cache_n,
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
        "prompt_per_second": round(prompt_n / prompt_ms * 1000, 3) if prompt_ms else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / predicted_n, 3) if predicted_n else 0.0,
        "predicted_per_second": round(predicted_n / predicted_ms * 1000, 3) if predicted_ms else 0.0,
    }


class LlamaFormat(Format):
    def __init__(self, gen: Generation) -> None:
        super().__init__(gen)
        # Everything of a token event but the token: formatted once per stream.
        self.template = (f'data: {{"index":0,"content":%s,"tokens":[%d],"stop":false,"id_slot":{gen.slot},'
                         f'"tokens_predicted":%d,"tokens_evaluated":{len(gen.plan.prompt)}}}\n\n')

    def token(self, index: int, piece_json: str, token: int) -> bytes:
        return (self.template % (piece_json, token, index + 1)).encode()

    def _final(self, content: str) -> dict[str, Any]:
        gen = self.gen
        return {
            "index": 0, "content": content, "tokens": [], "id_slot": gen.slot, "stop": True,
            "model": gen.server.config.model, "tokens_predicted": gen.emitted,
            "tokens_evaluated": len(gen.plan.prompt), "generation_settings": {"n_predict": gen.plan.n_out},
            "prompt": "", "has_new_line": False, "truncated": False, "stop_type": gen.plan.stop,
            "stopping_word": "", "tokens_cached": len(gen.plan.prompt) + gen.emitted,
            "timings": llama_timings(gen),
        }

    def final(self) -> bytes:
        return self.event(self._final(""))

    def whole(self) -> dict[str, Any]:
        return self._final(self.gen.text())


def _refuse(conn: Connection, exc: BadRequest) -> None:
    conn.send_json(400, {"error": {"code": 400, "message": str(exc), "type": exc.kind}})


def completion(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.generate(conn, body, plan_llama, LlamaFormat)


def tokenize(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    content = body.get("content", "")
    try:
        tokens = prompt_tokens(server.tokenizer, content, bool(body.get("add_special", False)))
    except BadRequest as exc:
        _refuse(conn, exc)
        return
    if body.get("with_pieces"):
        conn.send_json(200, {"tokens": [{"id": t, "piece": server.tokenizer.piece(t)} for t in tokens]})
    else:
        conn.send_json(200, {"tokens": tokens})


def detokenize(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    tokens = body.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        _refuse(conn, BadRequest("'tokens' must be a list of token ids"))
        return
    try:
        conn.send_json(200, {"content": server.tokenizer.detokenize(tokens)})
    except BadRequest as exc:
        _refuse(conn, exc)


def health(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    conn.send_json(200, {"status": "ok"})


def props(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    config = server.config
    conn.send_json(200, {
        "default_generation_settings": {"n_ctx": config.ctx_size, "params": {"n_predict": -1}},
        "total_slots": config.slots or 1_000_000, "model_alias": config.model, "model_path": config.model,
        "modalities": {"vision": False, "audio": False}, "endpoint_slots": False, "endpoint_props": False,
        "endpoint_metrics": True, "chat_template": "<|{role}|> {content} <|assistant|>",
        "bos_token": SPECIAL[BOS_ID], "eos_token": SPECIAL[EOS_ID], "build_info": MOCK_VERSION,
        "is_sleeping": False, "mock": config.as_dict(),
    })


def metrics(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    stats = server.stats
    decode_rate = stats.tokens / stats.predicted_seconds if stats.predicted_seconds else 0.0
    prompt_rate = stats.prompt_tokens / stats.prompt_seconds if stats.prompt_seconds else 0.0
    counters = [
        ("prompt_tokens_total", "Number of prompt tokens processed, excluding cached tokens", stats.prompt_tokens),
        ("prompt_tokens_cached_total", "Number of prompt tokens reused from the cache", stats.prompt_cached),
        ("prompt_seconds_total", "Total time spent processing prompts", stats.prompt_seconds),
        ("tokens_predicted_total", "Number of generation tokens processed", stats.tokens),
        ("tokens_predicted_seconds_total", "Total time spent generating tokens", stats.predicted_seconds),
        ("n_decode_total", "Total number of llama_decode() calls", stats.tokens),
        ("n_tokens_max", "Largest observed sequence length (prompt + generation)", stats.n_tokens_max),
    ]
    gauges = [
        ("prompt_tokens_seconds", "Average prompt throughput in tokens/s", prompt_rate),
        ("predicted_tokens_seconds", "Average generation throughput in tokens/s", decode_rate),
        ("requests_processing", "Number of requests processing", len(server.active)),
        ("requests_deferred", "Number of requests deferred", len(server.waiting)),
        ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call", 1.0),
    ]
    if (usage := server.kv_cache_usage()) is not None:
        gauges.append(("kv_cache_usage_ratio", "KV-cache usage. 1 = 100 percent usage", usage))
    lines: list[str] = []
    for kind, items in (("counter", counters), ("gauge", gauges)):
        for name, text, value in items:
            lines += [f"# HELP llamacpp:{name} {text}", f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value}"]
    snap = server.snapshot()
    lines += ["# HELP velollm_mock_token_lateness_seconds How long after its scheduled time each token left",
              "# TYPE velollm_mock_token_lateness_seconds summary"]
    for q in (0.5, 0.99):
        lines.append(f'velollm_mock_token_lateness_seconds{{quantile="{q}"}} {stats.lag.quantile(q)}')
    lines += [f"velollm_mock_token_lateness_seconds_sum {stats.lag.sum}",
              f"velollm_mock_token_lateness_seconds_count {stats.tokens}",
              "# HELP velollm_mock_cpu_seconds_total CPU time of the mock process since start or reset",
              "# TYPE velollm_mock_cpu_seconds_total counter", f"velollm_mock_cpu_seconds_total {snap['cpu_s']}",
              "# HELP velollm_mock_connections Open client connections",
              "# TYPE velollm_mock_connections gauge", f"velollm_mock_connections {server.connections}"]
    if server.config.gpu_busy_pct:
        busy = server.config.gpu_busy_pct if server.active else 0.0
        lines += ["# HELP velollm_mock_gpu_utilization_pct The pretend GPU's utilisation (--gpu-busy-pct)",
                  "# TYPE velollm_mock_gpu_utilization_pct gauge", f"velollm_mock_gpu_utilization_pct {busy}"]
    conn.send_bytes(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")


# /tokenize is shared with TGI, which sends "inputs" where llama-server sends "content": server.py routes it.
ROUTES = {
    "/completion": ("POST", completion), "/completions": ("POST", completion),
    "/detokenize": ("POST", detokenize),
    "/health": ("GET", health), "/v1/health": ("GET", health), "/props": ("GET", props),
    "/metrics": ("GET", metrics),
}
