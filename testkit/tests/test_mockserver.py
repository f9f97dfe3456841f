"""The mock LLM server of the test kit, on real sockets in its own process: each wire format read by
the real backends' clients (llamacpp, openai, ollama), 200 streams at once, the request rules
(output length, tokenizer, prefix cache, slots), the mock's own account, and its command line."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from velollm_testkit.mock import MockConfig, mock_llm
from velollm_testkit.mock.llamacpp import plan_llama
from velollm_testkit.mock.ollama import plan_ollama
from velollm_testkit.mock.openai import plan_openai
from velollm_testkit.mock.tokenizer import Tokenizer
from velollm_testkit.mock.wire import Plan

from velollm_core.contract import backends
from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest

MOCK = [sys.executable, "-m", "velollm_testkit.mock"]


def _context(backend_name: str, url: str, **options) -> BenchmarkContext:
    context = BenchmarkContext(backend=backend_name, model="velollm-mock", host=url, options=options)
    backends.settings(backends.get(backend_name), context)
    return context


def _generate(backend_name: str, url: str, request: GenerationRequest, **options):
    backend = backends.get(backend_name)
    context = _context(backend_name, url, **options)
    with context.resources:
        return backend.generate(request, context)


def _request(max_tokens: int, ignore_eos: bool = False, **options) -> GenerationRequest:
    return GenerationRequest(benchmark="mock", prompt="Tell me about the sea", max_tokens=max_tokens,
                             ignore_eos=ignore_eos, options=options)


# --- the real clients read each wire format ----------------------------------------------------------------


def test_llamacpp_client_reads_the_completion_stream_and_its_timings(mock_llm_server):
    # The mock's model ends its answer after 16 tokens (EOS) unless ignore_eos forces the limit.
    natural = _generate("llamacpp", mock_llm_server.url, _request(64))
    assert natural.completion_tokens == 16 and natural.stop_reason == "eos"
    forced = _generate("llamacpp", mock_llm_server.url, _request(40, ignore_eos=True))
    assert forced.completion_tokens == 40 and forced.stop_reason == "limit"
    assert forced.text.startswith(" The quick brown fox")
    # The final event's timings, from the mock's clock: 40 tokens 5 ms apart, the first after 20 ms.
    assert forced.extra["server_predicted_ms"] == pytest.approx(39 * 5, rel=0.25)
    assert forced.extra["server_prompt_ms"] == pytest.approx(20, abs=15)
    assert forced.prompt_tokens == 6  # BOS and five words
    assert forced.extra["cache_n"] == 0  # the llamacpp client sends cache_prompt: false


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_openai_client_reads_both_endpoints_with_usage(mock_llm_server, endpoint):
    timing = _generate("openai", mock_llm_server.url, _request(7), endpoint=endpoint)
    assert timing.completion_tokens == 7 and timing.stop_reason == "length"
    assert timing.text == " The quick brown fox jumps over the"
    # usage arrives only because the client asked for it (stream_options.include_usage).
    assert timing.prompt_tokens == (6 if endpoint == "completions" else 8)  # chat: two role markers
    assert timing.ttft_ms is not None and timing.ttft_ms >= 15


def test_ollama_client_reads_the_ndjson_stream(mock_llm_server):
    timing = _generate("ollama", mock_llm_server.url, _request(9))
    assert timing.completion_tokens == 9 and timing.stop_reason == "length"
    assert timing.text == " The quick brown fox jumps over the lazy dog"
    # eval_duration in nanoseconds from the mock's clock: 8 gaps of 5 ms.
    assert timing.server_decode_tokens_per_s == pytest.approx(9 / 0.040, rel=0.3)
    short = _generate("ollama", mock_llm_server.url, _request(100))
    assert short.completion_tokens == 16 and short.stop_reason == "stop"


# --- 200 streams at once ------------------------------------------------------------------------------------


def _llama_body(i: int) -> tuple[str, dict]:
    return "/completion", {"prompt": f"stream {i} says", "n_predict": 20, "ignore_eos": True, "stream": True}


def _chat_body(i: int) -> tuple[str, dict]:
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": f"stream {i}"}], "max_tokens": 20,
                                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}


def _ollama_body(i: int) -> tuple[str, dict]:
    return "/api/generate", {"model": "m", "prompt": f"stream {i}", "options": {"num_predict": 20}}


def _events(lines: list[str], ndjson: bool) -> list[dict]:
    if ndjson:
        return [json.loads(line) for line in lines if line]
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"]


async def _streams(url: str, n: int, body_of) -> list[list[dict]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        async def one(i: int) -> list[dict]:
            path, body = body_of(i)
            async with client.stream("POST", path, json=body) as response:
                assert response.status_code == 200
                lines = [line async for line in response.aiter_lines()]
            return _events(lines, ndjson=path.startswith("/api/"))

        return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("body_of", [_llama_body, _chat_body, _ollama_body], ids=["completion", "chat", "ollama"])
def test_two_hundred_streams_at_once(body_of):
    with mock_llm(ttft_ms=50, itl_ms=20, output_tokens=8) as mock:
        streams = asyncio.run(_streams(mock.url, 200, body_of))
        stats = mock.stats()
    assert stats["active_max"] == 200  # all 200 held at once, none queued
    # Ollama has no ignore_eos: its streams end at the model's end of sequence, 8 tokens.
    per_stream = 8 if body_of is _ollama_body else 20
    assert stats["completed"] == 200 and stats["cancelled"] == 0 and stats["tokens"] == 200 * per_stream
    for events in streams:
        if body_of is _llama_body:
            assert [e["tokens_predicted"] for e in events[:-1]] == list(range(1, 21))
            assert events[-1]["stop"] and events[-1]["timings"]["predicted_n"] == 20
        elif body_of is _chat_body:
            assert sum(1 for e in events if e["choices"] and e["choices"][0]["delta"].get("content")) == 20
            assert events[-1]["usage"]["completion_tokens"] == 20
        else:
            assert events[-1]["done"] and events[-1]["eval_count"] == 8 and events[-1]["done_reason"] == "stop"
            assert sum(1 for e in events if e["response"]) == 8


# --- the request rules -------------------------------------------------------------------------------------


def _plan(kind: str, body: dict, **config) -> Plan:
    config = MockConfig(**{"output_tokens": 10, "ctx_size": 100, **config})
    tokenizer = Tokenizer(config.vocab_size)
    if kind == "llama":
        return plan_llama(config, tokenizer, body)
    if kind in ("completions", "chat"):
        return plan_openai(config, tokenizer, body, chat=kind == "chat")
    return plan_ollama(config, tokenizer, body, chat=False)


@pytest.mark.parametrize("kind, body, n_out, stop", [
    ("llama", {"prompt": "a b"}, 10, "eos"),  # no limit: the model's own end
    ("llama", {"prompt": "a b", "n_predict": 4}, 4, "limit"),
    ("llama", {"prompt": "a b", "n_predict": 40}, 10, "eos"),
    ("llama", {"prompt": "a b", "n_predict": 40, "ignore_eos": True}, 40, "limit"),
    ("llama", {"prompt": "a b", "ignore_eos": True}, 97, "limit"),  # to the end of the context
    ("llama", {"prompt": "a b", "n_predict": 0}, 0, "limit"),
    ("completions", {"prompt": "a b", "max_tokens": 40, "min_tokens": 30}, 30, "eos"),  # vLLM's min_tokens
    ("chat", {"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 3}, 3, "limit"),
    ("ollama", {"model": "m", "prompt": "a", "options": {"num_predict": 40}}, 10, "eos"),  # no ignore_eos
    ("ollama", {"model": "m", "prompt": "a", "options": {"num_predict": 5}}, 5, "limit"),
])
def test_output_length_follows_the_request(kind, body, n_out, stop):
    plan = _plan(kind, body)
    assert (plan.n_out, plan.stop) == (n_out, stop)


@pytest.mark.parametrize("kind, body, message", [
    ("llama", {}, '"prompt" must be provided'),
    ("llama", {"prompt": "a", "n_predict": "many"}, "'n_predict' must be an integer"),
    ("llama", {"prompt": " w" * 150}, "exceeds the available context size"),
    ("llama", {"prompt": [1, 99999]}, "outside the vocabulary"),
    ("chat", {"messages": []}, "'messages' must be a non-empty list"),
    ("completions", {"prompt": "a", "n": 2}, "one choice per request"),
    ("ollama", {"prompt": "a"}, "model is required"),
])
def test_bad_requests_are_refused_with_a_reason(kind, body, message):
    from velollm_testkit.mock.wire import BadRequest

    with pytest.raises(BadRequest, match=message):
        _plan(kind, body)


def test_tokenize_counts_what_completion_reports(mock_llm_server):
    text = "The sea is calm tonight, and the tide is full"
    with httpx.Client(base_url=mock_llm_server.url) as client:
        tokens = client.post("/tokenize", json={"content": text, "add_special": True}).json()["tokens"]
        final = _stream_final(client, {"prompt": text, "n_predict": 2, "stream": True, "cache_prompt": False})
        assert final["tokens_evaluated"] == len(tokens) == 11 and final["timings"]["prompt_n"] == 11
        # Fixed ids round-trip (a prompt built of token ids has the length it was built for).
        ids = list(range(100, 612))
        content = client.post("/detokenize", json={"tokens": ids}).json()["content"]
        assert client.post("/tokenize", json={"content": content}).json()["tokens"] == ids
        pieces = client.post("/tokenize", json={"content": "a b", "with_pieces": True}).json()["tokens"]
        assert [p["piece"] for p in pieces] == ["a", " b"]


def _stream_final(client: httpx.Client, body: dict) -> dict:
    with client.stream("POST", "/completion", json=body) as response:
        events = _events(list(response.iter_lines()), ndjson=False)
    return events[-1]


def test_prefix_cache_hits_are_reported_in_cache_n_and_metrics(mock_llm_server):
    prompt = " ".join(f"w{i}" for i in range(50))
    with httpx.Client(base_url=mock_llm_server.url) as client:
        mock_llm_server.reset()
        first = _stream_final(client, {"prompt": prompt, "n_predict": 1, "stream": True})
        again = _stream_final(client, {"prompt": prompt, "n_predict": 1, "stream": True})
        refused = _stream_final(client, {"prompt": prompt, "n_predict": 1, "stream": True, "cache_prompt": False})
        metrics = client.get("/metrics").text
    assert first["timings"]["cache_n"] <= 1  # at most the BOS token an earlier prompt began with
    assert again["timings"]["cache_n"] == 50  # all but the last prompt token, evaluated for its logits
    assert again["timings"]["prompt_n"] == 1
    assert refused["timings"]["cache_n"] == 0
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#"))
    values = {name: float(value) for name, value in values.items()}
    assert values["llamacpp:prompt_tokens_cached_total"] == first["timings"]["cache_n"] + 50
    assert values["llamacpp:tokens_predicted_total"] == 3


def test_slots_queue_requests_beyond_them():
    async def run(url: str) -> list[tuple[float, float]]:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            async def one(i: int) -> tuple[float, float]:
                first = last = 0.0
                body = {"prompt": f"q {i}", "n_predict": 5, "ignore_eos": True, "stream": True}
                async with client.stream("POST", "/completion", json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            last = time.monotonic()
                            first = first or last
                return first, last

            return await asyncio.gather(*(one(i) for i in range(4)))

    with mock_llm(ttft_ms=30, itl_ms=20, slots=2) as mock:
        spans = asyncio.run(run(mock.url))
        stats = mock.stats()
    assert stats["active_max"] == 2 and stats["queued_max"] == 2
    ends = sorted(last for _, last in spans)
    late_starts = sorted(first for first, _ in spans)[2:]
    # The two queued requests got their first token only after two others had finished.
    assert all(start >= ends[1] for start in late_starts)


def test_a_client_going_away_cancels_its_stream(mock_llm_server):
    mock_llm_server.reset()
    with socket.create_connection(_address(mock_llm_server.url)) as sock:
        body = json.dumps({"prompt": "bye", "n_predict": 1000, "ignore_eos": True, "stream": True}).encode()
        sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        assert b"200 OK" in sock.recv(4096)
    for _ in range(100):
        stats = mock_llm_server.stats()
        if stats["cancelled"]:
            break
        time.sleep(0.02)
    assert stats["cancelled"] == 1 and stats["active"] == 0 and stats["completed"] == 0


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_chunked_body_expect_continue_and_keep_alive(mock_llm_server):
    with socket.create_connection(_address(mock_llm_server.url)) as sock:
        # curl's way with a large body: Expect: 100-continue, then the body in chunks.
        sock.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b'c\r\n{"content": \r\n7\r\n"a b c"\r\n1\r\n}\r\n0\r\n\r\n')
        reply = _read_reply(sock)
        assert len(json.loads(reply.partition(b"\r\n\r\n")[2])["tokens"]) == 3
        # The same connection serves the next request (keep-alive), here a 404.
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"404 Not Found" in _read_reply(sock)


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_status_codes_of_bad_requests(mock_llm_server):
    with httpx.Client(base_url=mock_llm_server.url) as client:
        assert client.post("/completion", content=b"{not json").status_code == 400
        assert client.post("/completion", json={"prompt": "x", "n_predict": "y"}).json()["error"]["message"] \
            == "'n_predict' must be an integer, not \"y\""
        assert client.get("/completion").status_code == 405
        assert client.post("/api/generate", json={"prompt": "x"}).json() == {"error": "model is required"}
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/api/version").json()["version"]
        assert client.get("/v1/models").json()["data"][0]["id"] == "velollm-mock"
        props = client.get("/props").json()
        assert props["default_generation_settings"]["n_ctx"] == MockConfig().ctx_size


def test_injected_failures_reach_the_client_as_its_error():
    from velollm_core.contract.errors import VeloError

    with mock_llm(ttft_ms=1, itl_ms=1, fail_every=2) as mock:
        assert _generate("llamacpp", mock.url, _request(3)).completion_tokens == 3
        with pytest.raises(VeloError, match="HTTP 503.*injected failure"):
            _generate("llamacpp", mock.url, _request(3))
        assert mock.stats()["failed"] == 1


def test_jitter_is_off_by_default_and_seeded():
    from velollm_testkit.mock.server import MockServer

    async def gaps(**config) -> list[float]:
        server = MockServer(MockConfig(itl_ms=20, **config))
        return [server.gap() for _ in range(50)]

    assert set(asyncio.run(gaps())) == {0.02}
    jittered = asyncio.run(gaps(jitter_ms=5, seed=3))
    assert jittered == asyncio.run(gaps(jitter_ms=5, seed=3)) and len(set(jittered)) == 50
    assert all(0.015 <= gap <= 0.025 for gap in jittered)


def test_lateness_and_cpu_are_accounted(mock_llm_server):
    mock_llm_server.reset()
    _generate("llamacpp", mock_llm_server.url, _request(10, ignore_eos=True))
    stats = mock_llm_server.stats()
    assert stats["tokens"] == 10 and stats["completed"] == 1
    assert 0 <= stats["lag_ms"]["p50"] <= stats["lag_ms"]["p99"] and stats["lag_ms"]["max"] < 1000
    assert stats["cpu_s"] > 0 and stats["config"]["itl_ms"] == 5


def test_the_gaps_the_mock_sent_are_its_own_account_and_merge_across_processes():
    """Per stream, one gap per token after the first, as the mock sent them (the truth a client's ITL is
    checked against); two processes' histograms merge into one account of every gap."""
    with mock_llm(processes=2, ttft_ms=1, itl_ms=15, output_tokens=8) as mock:
        mock.reset()
        with httpx.Client() as http:  # new connections: the kernel spreads them over both processes
            for _ in range(6):
                body = {"prompt": "hi", "n_predict": 8, "stream": True, "ignore_eos": True}
                with http.stream("POST", f"{mock.url}/completion", json=body, headers={"Connection": "close"}) as r:
                    r.read()
        stats = mock.stats()
    assert stats["processes"] == 2 and stats["tokens"] == 48
    # 15 ms apart by the mock's clock; the histogram's upper bucket edge may add 0.1 ms
    assert 15.0 <= stats["gap_ms"]["p50"] <= stats["gap_ms"]["p99"] < 40
    assert 15.0 <= stats["gap_ms"]["mean"] < 25


# --- the command line ---------------------------------------------------------------------------------------


def test_command_prints_its_url_first_and_stops_cleanly_on_sigterm():
    proc = subprocess.Popen([*MOCK, "--port", "0", "--ttft-ms", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("args, code, message", [
    (["--itl-ms", "-5"], 2, "--itl-ms must lie between 0 and 3600000 ms"),
    (["--port", "70000"], 2, "--port must lie between 0 and 65535"),
    (["--slots", "many"], 2, "argument --slots: invalid int value: 'many'"),
])
def test_command_usage_errors_are_one_line(args, code, message):
    done = subprocess.run([*MOCK, *args], check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == code and done.stdout == ""
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_command_on_a_taken_port_fails_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run([*MOCK, "--port", str(taken.getsockname()[1])], check=False,
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "cannot listen on 127.0.0.1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_mock_llm_refuses_unknown_settings():
    with pytest.raises(TypeError, match="unknown mock server setting.*itl"), mock_llm(itl=5):
        pass
