"""The ``openai`` backend against a loopback server replaying the OpenAI wire format: the paths a
real llama-server will not take on demand (401 with an echoed key, 429, 500, a stream cut mid-way,
no ``usage``), each through the CLI as a subprocess, plus the pure timing arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

VELOLLM = [sys.executable, "-m", "velollm_core"]
MODEL = "replay-model"
WORDS = [" one", " two", " three", " four", " five", " six"]


def _event(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def _stream_events(body: dict[str, Any], *, usage: bool) -> list[bytes]:
    chat = "messages" in body
    words = WORDS[: body.get("max_tokens", len(WORDS))]
    events = []
    if chat:
        events.append(_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}))
    for word in words:
        choice = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
        events.append(
            _event({"choices": [{**choice, "finish_reason": None}], "system_fingerprint": "fp_replay"})
        )
    last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
    events.append(_event({"choices": [{**last, "finish_reason": "length"}]}))
    if usage and (body.get("stream_options") or {}).get("include_usage"):
        events.append(_event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}}))
    events.append(_event("[DONE]"))
    return events


class ReplayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _authorized(self) -> bool:
        key = self.server.api_key
        sent = self.headers.get("Authorization", "")
        if key is None or sent == f"Bearer {key}":
            return True
        # As api.openai.com does: the rejected key, echoed back in the error text.
        echoed = sent.removeprefix("Bearer ") or "(none)"
        self._json(401, {"error": {"message": f"Incorrect API key provided: {echoed}", "type": "auth"}})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path == "/v1/models" and self.server.list_models:
            self._json(
                200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "replay"}]}
            )
        else:
            self._json(404, {"error": {"message": "Not Found"}})

    def _chunked(self, parts: list[bytes], *, complete: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.flush()
            time.sleep(0.002)
        if complete:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True  # no terminating chunk: the peer sees a cut stream

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if not self._authorized():
            return
        with self.server.lock:
            action = self.server.script.pop(0) if self.server.script else "ok"
        if isinstance(action, tuple):
            status, data, headers = action
            self._json(status, data, headers)
        elif action == "ok":
            self._chunked(_stream_events(body, usage=True), complete=True)
        elif action == "no_usage":
            self._chunked(_stream_events(body, usage=False), complete=True)
        elif action == "no_stream_options":
            if "stream_options" in body:
                self._json(400, {"error": {"message": "Extra inputs are not permitted: stream_options"}})
            else:
                self._chunked(_stream_events(body, usage=False), complete=True)
        elif action == "cut":
            self._chunked(_stream_events(body, usage=True)[:3], complete=False)
        elif action == "no_finish":
            self._chunked(_stream_events(body, usage=True)[:3], complete=True)
        elif action == "error_event":
            self._chunked(
                [*_stream_events(body, usage=True)[:2], _event({"error": {"message": "slot died"}})],
                complete=True,
            )


@pytest.fixture
def replay():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReplayHandler)
    server.daemon_threads = True
    server.script, server.requests, server.lock = [], [], threading.Lock()
    server.api_key, server.list_models = None, True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def bench(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [
        *VELOLLM,
        "benchmark",
        "--backend",
        "openai",
        "--host",
        url,
        "--model",
        MODEL,
        "--suite",
        "short_completion",
        "--warmup",
        "0",
        *args,
    ]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def _clean_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert proc.returncode == code, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_request_shape_and_usage_counts(replay, tmp_path):
    out = tmp_path / "r.json"
    proc = bench(replay.url, "--iterations", "2", "--max-tokens", "5", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    body = replay.requests[0]["body"]
    assert replay.requests[0]["path"] == "/v1/completions"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (
        body["temperature"] == 0 and body["seed"] == 42 and body["max_tokens"] == 5 and body["model"] == MODEL
    )
    assert "cache_prompt" not in body  # llama.cpp-only field, sent to llama.cpp only
    data = json.loads(out.read_text())
    run = data["runs"][0]
    assert run["completion_tokens"] == 5 and run["prompt_tokens"] == 7 and run["text"] == "".join(WORDS[:5])
    assert run["extra"]["token_count_source"] == "usage" and len(run["extra"]["itl_ms"]) == 4
    # No server timings here: decode rate is the client's, and prefill speed is not invented.
    assert run["decode_tokens_per_s"] == run["client_decode_tokens_per_s"] > 0
    assert run["server_decode_tokens_per_s"] is None and run["prompt_tokens_per_s"] is None
    backend = data["environment"]["backend"]
    assert (
        backend["name"] == "openai"
        and backend["model"]["name"] == MODEL
        and backend["version"] == "fp_replay"
    )


def test_no_usage_counts_chunks_and_says_so(replay, tmp_path):
    out = tmp_path / "r.json"
    replay.script = ["no_usage"] * 2
    proc = bench(
        replay.url, "--iterations", "2", "--max-tokens", "4", "--endpoint", "chat", "--output", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert replay.requests[0]["path"] == "/v1/chat/completions"
    assert replay.requests[0]["body"]["messages"][0]["role"] == "user"
    for run in json.loads(out.read_text())["runs"]:
        assert run["extra"]["token_count_source"] == "chunks" and run["completion_tokens"] == 4
        assert run["prompt_tokens"] is None and run["text"] == "".join(WORDS[:4])


def test_server_refusing_stream_options_is_retried_without(replay, tmp_path):
    out = tmp_path / "r.json"
    replay.script = ["no_stream_options"] * 4
    proc = bench(replay.url, "--iterations", "2", "--max-tokens", "3", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "stream_options" not in replay.requests[-1]["body"]
    assert {r["extra"]["token_count_source"] for r in json.loads(out.read_text())["runs"]} == {"chunks"}


def test_key_required_but_none_given(replay):
    replay.api_key = "sk-right"
    _clean_error(bench(replay.url, "--iterations", "1"), 2, "requires an API key", "--api-key-env")


def test_rejected_key_names_the_variable_and_never_shows_the_key(replay, tmp_path):
    replay.api_key = "sk-right"
    out = tmp_path / "r.json"
    proc = bench(
        replay.url,
        "--iterations",
        "1",
        "--api-key-env",
        "VELOLLM_TEST_KEY",
        "--output",
        str(out),
        env={"VELOLLM_TEST_KEY": "sk-wrong-SECRET123"},
    )
    _clean_error(proc, 2, "rejected the API key from environment variable VELOLLM_TEST_KEY", "***")
    assert "SECRET123" not in proc.stderr + proc.stdout
    # A rejected key is bad input found before any run: nothing is written, so nothing can leak there.
    assert not out.exists()


def test_accepted_key_is_sent_but_never_written(replay, tmp_path):
    replay.api_key = "sk-right-SECRET456"
    out = tmp_path / "r.json"
    proc = bench(
        replay.url,
        "--iterations",
        "2",
        "--max-tokens",
        "3",
        "--api-key-env",
        "VELOLLM_TEST_KEY",
        "--output",
        str(out),
        "--json",
        env={"VELOLLM_TEST_KEY": "sk-right-SECRET456"},
    )
    assert proc.returncode == 0, proc.stderr
    assert replay.requests[0]["auth"] == "Bearer sk-right-SECRET456"
    assert "SECRET456" not in proc.stderr + proc.stdout + out.read_text()
    assert json.loads(out.read_text())["settings"]["options"]["api_key_env"] == "VELOLLM_TEST_KEY"


def test_unset_key_variable(replay):
    _clean_error(
        bench(replay.url, "--api-key-env", "VELOLLM_SURELY_UNSET_VAR"), 2, "VELOLLM_SURELY_UNSET_VAR"
    )


def test_rate_limit_keeps_finished_runs_and_shows_retry_after(replay, tmp_path):
    out = tmp_path / "r.json"
    replay.script = ["ok", "ok", (429, {"error": {"message": "slow down"}}, {"Retry-After": "7"})]
    proc = bench(replay.url, "--iterations", "5", "--max-tokens", "3", "--output", str(out))
    _clean_error(proc, 1, "HTTP 429: slow down", "Retry-After: 7 s")
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and len(data["runs"]) == 2


def test_server_error_shows_its_text(replay):
    replay.script = [(500, {"error": {"message": "CUDA error: out of memory"}}, {})]
    _clean_error(bench(replay.url, "--iterations", "1"), 1, "HTTP 500: CUDA error: out of memory")


@pytest.mark.parametrize(
    "action, fragment",
    [
        ("cut", "was cut mid-way"),
        ("no_finish", "ended mid-way"),
        ("error_event", "slot died"),
    ],
)
def test_broken_stream_keeps_finished_runs(replay, tmp_path, action, fragment):
    out = tmp_path / "r.json"
    replay.script = ["ok", action]
    _clean_error(
        bench(replay.url, "--iterations", "3", "--max-tokens", "3", "--output", str(out)), 1, fragment
    )
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and len(data["runs"]) == 1


def test_unknown_model_rejected_by_the_server(replay):
    replay.list_models = False  # no /v1/models: the generation request is the first to say
    replay.script = [(404, {"error": {"message": "The model `replay-model` does not exist."}}, {})]
    _clean_error(bench(replay.url, "--iterations", "1"), 2, "does not serve model", "does not exist")


def test_unknown_model_listed_models(replay):
    proc = subprocess.run(
        [*VELOLLM, "benchmark", "--backend", "openai", "--host", replay.url, "--model", "gpt-9"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    _clean_error(proc, 2, "'gpt-9' is not offered", f"it offers: {MODEL}")
    assert not replay.requests  # rejected before any generation


def test_timing_arithmetic():
    from velollm_openai.timing import StreamRecord, timing_from_stream

    record = StreamRecord(start=10.0)
    for i, t in enumerate((10.1, 10.2, 10.3, 10.5)):
        record.observe(t, {"choices": [{"text": f"w{i}", "finish_reason": None}]})
    record.observe(
        10.6, {"choices": [{"text": "", "finish_reason": "stop"}], "usage": {"completion_tokens": 5}}
    )
    timing = timing_from_stream(record, 10.6, endpoint="completions")
    assert timing.ttft_ms == pytest.approx(100)
    # 5 tokens in 4 chunks (one chunk carried two): the rate uses usage's count, not the chunks.
    assert timing.client_decode_tokens_per_s == pytest.approx(4 / 0.4)
    assert timing.extra["itl_ms"] == pytest.approx([100, 100, 200])
    assert timing.extra["tpot_ms"] == pytest.approx(500 / 4)
    assert timing.stop_reason == "stop" and timing.text == "w0w1w2w3"


def test_api_base_normalization():
    from velollm_openai.client import api_base

    assert api_base("localhost:8000") == "http://localhost:8000/v1"
    assert api_base("https://h.example/v1/") == "https://h.example/v1"
    assert api_base("http://h:1/openai") == "http://h:1/openai/v1"


def test_plugin_module_imports_nothing_heavy():
    code = (
        "import sys, velollm_openai.plugin; "
        "print('httpx' in sys.modules, 'velollm_openai.backend' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_module_tree_is_self_contained():
    # No plugin imports another plugin.
    package = Path(__file__).resolve().parents[1] / "velollm_openai"
    for source in package.glob("*.py"):
        assert "velollm_llamacpp" not in source.read_text() and "velollm_ollama" not in source.read_text()
