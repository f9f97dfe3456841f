"""Fault suite: the real CLI against hostile servers on loopback sockets, and credentials in --host.

Each server here is a thread in this process: one that accepts and never answers, one that trickles a
byte every 0.5 s, one that streams a token every 0.5 s for ever, one that answers normally. The
``velollm benchmark`` subprocess must end with exit 1, one sentence and no traceback, in seconds (the
deadlines set short through --option); no password or query secret of --host may appear in stderr or
in the result file.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from velollm_core.contract.deadline import Deadlines, RequestWatch, plain_request
from velollm_core.contract.errors import BackendError

VELOLLM = [sys.executable, "-m", "velollm_core"]
MODEL = "m"
TRICKLE_S = 0.5
# A run ends within its deadline plus the CLI's start-up and shutdown, which on a loaded two-core
# machine takes a few seconds; the bug this guards against took 601 s, or for ever.
SLACK_S = 10.0

SECRET_USER, SECRET_PASSWORD, SECRET_TOKEN = "benchuser", "pw-SECRET-4711", "tok-SECRET-0815"


# --- servers -------------------------------------------------------------------------------------


def _ollama_line(i: int, done: bool = False) -> bytes:
    chunk: dict[str, Any] = {"model": MODEL, "response": "" if done else f" w{i}", "done": done}
    if done:
        chunk.update(done_reason="stop", prompt_eval_count=5, prompt_eval_duration=1_000_000,
                     eval_count=i, eval_duration=i * 1_000_000)
    return (json.dumps(chunk) + "\n").encode()


def _openai_event(i: int, done: bool = False) -> bytes:
    choice = {"index": 0, "text": "" if done else f" w{i}", "finish_reason": "stop" if done else None}
    return f"data: {json.dumps({'choices': [choice]})}\n\n".encode()


def _llamacpp_event(i: int, done: bool = False) -> bytes:
    event = {"content": "" if done else f" w{i}", "tokens_predicted": i + (0 if done else 1), "stop": done}
    return f"data: {json.dumps(event)}\n\n".encode()


class Handler(BaseHTTPRequestHandler):
    """Answers per ``server.modes[path]`` (see FaultServer); every request is recorded."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        entry = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        self.server.requests.append(entry)
        return entry

    def _json(self, status: int, data: Any) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _serve(self) -> None:
        self._record()
        path = self.path.split("?")[0]
        mode = self.server.modes.get(path, "missing")
        stop = self.server.stop
        if mode == "silent":  # accepted, read, never answered
            stop.wait()
            return
        if mode == "missing":
            self._json(404, {"error": "not found"})
            return
        if mode == "unauthorized":  # a proxy rejecting basic auth, echoing what it got
            self._json(401, {"error": {"message": f"bad credentials: {self.headers.get('Authorization')}"}})
            return
        if isinstance(mode, dict):  # a JSON answer
            self._json(200, mode)
            return
        kind, behaviour = mode.split(":")
        line = {"ollama": _ollama_line, "openai": _openai_event, "llamacpp": _llamacpp_event}[kind]
        self._start_stream()
        if behaviour == "ok":
            for i in range(3):
                self._chunk(line(i))
            self._chunk(line(3, done=True))
            if kind == "openai":
                self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        elif behaviour == "trickle_bytes":  # the first event, one byte every TRICKLE_S
            for byte in line(0):
                if stop.wait(TRICKLE_S):
                    return
                self._chunk(bytes([byte]))
        elif behaviour == "trickle_tokens":  # a whole token every TRICKLE_S, never a last one
            i = 0
            while not stop.wait(TRICKLE_S):
                self._chunk(line(i))
                i += 1
        elif behaviour == "stall":  # two tokens TRICKLE_S apart, then silence with the connection open
            for i in range(2):
                if stop.wait(TRICKLE_S):
                    return
                self._chunk(line(i))
            stop.wait()

    def do_GET(self) -> None:
        try:
            self._serve()
        except OSError:
            pass  # the client gave up, as it should

    do_POST = do_GET


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up mid-trickle is the point, not an error

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server():
    """A FaultServer; set ``server.modes = {path: mode}`` before use."""
    srv = FaultServer(("127.0.0.1", 0), Handler)
    srv.modes, srv.requests, srv.stop = {}, [], threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


OLLAMA_OK = {"/api/generate": "ollama:ok", "/api/version": {"version": "0.6.2"}, "/api/tags": {"models": []},
             "/api/ps": {"models": []}, "/api/show": {"details": {}, "model_info": {}}}
OPENAI_MODELS = {"/v1/models": {"object": "list", "data": [{"id": MODEL, "object": "model"}]}}
LLAMACPP_META = {"/health": {"status": "ok"}, "/props": {"total_slots": 1, "build_info": "b1"}}


def bench(backend: str, host: str, *args: str, env: dict[str, str] | None = None) -> tuple[Any, float]:
    """``velollm benchmark`` as a subprocess: (completed process, seconds it took)."""
    command = [*VELOLLM, "benchmark", "--backend", backend, "--host", host, "--model", MODEL,
               "--suite", "short_completion", "--warmup", "0", "--iterations", "1", *args]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})
    return proc, time.monotonic() - started


def one_sentence_error(proc, code: int, *fragments: str) -> str:
    """The single ``Error:`` line of a clean failure, checked for ``fragments``."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- case 3: hung servers end at their deadline ---------------------------------------------------


def test_hung_ollama_is_named_at_the_first_token_deadline_with_a_waiting_line(server):
    server.modes = {"/api/generate": "silent"}
    proc, took = bench("ollama", server.url, "--option", "first_token_timeout_s=6")
    one_sentence_error(proc, 1, f"Ollama at {server.url} sent no token within 6 s",
                       "--option first_token_timeout_s=SECONDS")
    assert 6 <= took < 6 + SLACK_S
    # One line after 5 s of silence, not a flood.
    waiting = [line for line in proc.stderr.splitlines() if line.startswith("waiting for the first token")]
    assert waiting == [f"waiting for the first token from {server.url} (5 s)"], proc.stderr


@pytest.mark.parametrize("backend, modes", [
    ("ollama", {"/api/generate": "ollama:trickle_bytes"}),
    ("openai", {**OPENAI_MODELS, "/v1/completions": "openai:trickle_bytes"}),
    ("openai", {**OPENAI_MODELS, "/v1/completions": "silent"}),
    ("llamacpp", {**LLAMACPP_META, "/completion": "llamacpp:trickle_bytes"}),
])
def test_trickle_or_silence_cannot_outlast_the_first_token_deadline(server, backend, modes):
    server.modes = modes
    proc, took = bench(backend, server.url, "--option", "first_token_timeout_s=2")
    one_sentence_error(proc, 1, "sent no token within 2 s (the first-token deadline)")
    assert 2 <= took < 2 + SLACK_S


@pytest.mark.parametrize("backend, modes", [
    ("ollama", {"/api/generate": "ollama:trickle_tokens"}),
    ("openai", {**OPENAI_MODELS, "/v1/completions": "openai:trickle_tokens"}),
    ("llamacpp", {**LLAMACPP_META, "/completion": "llamacpp:trickle_tokens"}),
])
def test_endless_stream_ends_at_the_whole_request_deadline(server, backend, modes):
    server.modes = modes
    proc, took = bench(backend, server.url, "--option", "timeout_s=3")
    one_sentence_error(proc, 1, "did not finish its answer within 3 s (the whole-request deadline)",
                       "--option timeout_s=SECONDS")
    assert 3 <= took < 3 + SLACK_S


def test_hung_model_list_is_bounded_too(server):
    server.modes = {"/v1/models": "silent"}
    proc, took = bench("openai", server.url, "--option", "first_token_timeout_s=2")
    one_sentence_error(proc, 1, f"{server.url}/v1/models did not answer within 2 s")
    assert took < 2 + SLACK_S


@pytest.mark.parametrize("backend", ["ollama", "openai", "llamacpp"])
@pytest.mark.parametrize(("value", "says"), [
    ("-1", "option first_token_timeout_s must be a positive number of seconds"),
    ("soon", "option first_token_timeout_s must be a positive number of seconds"),
    ("nan", "first_token_timeout_s=nan: 'nan' is not a finite number"),  # refused as no number at all
])
def test_deadline_options_are_validated(server, backend, value, says):
    server.modes = {**OLLAMA_OK, **OPENAI_MODELS, **LLAMACPP_META}
    proc, _ = bench(backend, server.url, "--option", f"first_token_timeout_s={value}")
    one_sentence_error(proc, 2, says)


# --- the watch itself, with sub-second limits ------------------------------------------------------


def _watched_stream(url: str, deadlines: Deadlines, **watch_options) -> tuple[list[str], RequestWatch]:
    lines: list[str] = []
    watch = RequestWatch(deadlines, server="test server", url=url, **watch_options)
    with httpx.Client() as http, watch:
        try:
            with http.stream("POST", url, timeout=deadlines.httpx_timeout(5.0)) as response:
                watch.attach(response)
                for line in watch.lines(response):
                    if line:
                        watch.event()
                        lines.append(line)
        except httpx.HTTPError as exc:
            raise watch.error(exc) or exc from None
    return lines, watch


def test_watchdog_cuts_a_stalled_stream_at_the_whole_request_deadline(server):
    # Tokens at 0.5 s and 1 s, then silence: the per-read limit (1.5 s) alone would end it at 2.5 s.
    server.modes = {"/": "ollama:stall"}
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"did not finish its answer within 1.6 s"):
        _watched_stream(server.url + "/", Deadlines(first_token_s=1.5, total_s=1.6))
    assert time.monotonic() - started < 2.2


def test_silence_between_tokens_is_limited_by_the_first_token_deadline(server):
    server.modes = {"/": "ollama:stall"}
    with pytest.raises(BackendError, match=r"sent nothing for 1 s in the middle of its answer"):
        _watched_stream(server.url + "/", Deadlines(first_token_s=1.0, total_s=30.0))


def test_waiting_lines_are_throttled(server):
    server.modes = {"/": "silent"}
    notices: list[str] = []
    with pytest.raises(BackendError, match="sent no token within 1.5 s"):
        _watched_stream(server.url + "/", Deadlines(first_token_s=1.5, total_s=10.0), notify=notices.append,
                        notice_after_s=0.4, notice_every_s=0.5)
    # At 0.4 s and 0.9 s, then every 0.5 s: two or three lines in 1.5 s, never one per poll.
    assert 2 <= len(notices) <= 3, notices
    assert all(n.startswith(f"waiting for the first token from {server.url}/ (") for n in notices)


def test_plain_request_trickle_is_cut_at_its_deadline(server):
    server.modes = {"/": "ollama:trickle_tokens"}  # an endless body for a plain GET
    started = time.monotonic()
    with httpx.Client() as http, pytest.raises(BackendError, match="did not answer within 1 s"):
        plain_request(http, "GET", server.url + "/", Deadlines().plain(1.0), server="test server", connect_s=5)
    assert time.monotonic() - started < 1.8


def test_deadline_defaults_are_exported_and_read_from_typed_settings():
    from velollm_core import api

    assert (api.FIRST_TOKEN_TIMEOUT_S, api.REQUEST_TIMEOUT_S, api.CONNECT_TIMEOUT_S) == (300.0, 600.0, 10.0)
    assert api.Deadlines.from_settings(None) == api.Deadlines() == api.Deadlines(300.0, 600.0)
    settings = api.BackendOptions.model_validate({"first_token_timeout_s": 5})
    assert api.Deadlines.from_settings(settings) == api.Deadlines(first_token_s=5.0, total_s=600.0)


def test_plain_request_carries_basic_auth_that_no_message_shows(server):
    server.modes = {"/": "silent"}
    with httpx.Client() as http, pytest.raises(BackendError) as caught:
        plain_request(http, "GET", server.url + "/", Deadlines().plain(1.0), server="test server",
                      auth=(SECRET_USER, SECRET_PASSWORD))
    assert server.requests[-1]["auth"] == BASIC
    assert "did not answer within 1 s" in str(caught.value) and SECRET_PASSWORD not in str(caught.value)


@pytest.mark.parametrize("backend, modes, generate", [
    ("openai", {**OPENAI_MODELS, "/v1/completions": "openai:ok"}, "/v1/completions"),
    ("llamacpp", {**LLAMACPP_META, "/completion": "llamacpp:ok"}, "/completion"),
])
def test_request_option_fields_reach_the_body_as_json_and_nested(server, backend, modes, generate):
    server.modes = modes
    proc, _ = bench(backend, server.url, "--option", 'request.stop=["\\n", "END"]', "--option", "request.a.b=1",
                    "--option", "request.user=42", "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(next(r for r in server.requests if r["path"].startswith(generate))["body"])
    assert body["stop"] == ["\n", "END"] and body["a"] == {"b": 1} and body["user"] == 42


# --- case 4: credentials in --host ---------------------------------------------------------------


def _secret_host(url: str) -> str:
    return url.replace("http://", f"http://{SECRET_USER}:{SECRET_PASSWORD}@") + f"/?token={SECRET_TOKEN}"


def _no_secret(proc, *files: Path) -> None:
    texts = [proc.stdout, proc.stderr, *(f.read_text() for f in files if f.exists())]
    for text in texts:
        assert SECRET_PASSWORD not in text and SECRET_TOKEN not in text, text


BASIC = "Basic " + base64.b64encode(f"{SECRET_USER}:{SECRET_PASSWORD}".encode()).decode()


@pytest.mark.parametrize("backend, modes, generate", [
    ("ollama", OLLAMA_OK, "/api/generate"),
    ("openai", {**OPENAI_MODELS, "/v1/completions": "openai:ok"}, "/v1/completions"),
    ("llamacpp", {**LLAMACPP_META, "/completion": "llamacpp:ok"}, "/completion"),
])
def test_host_credentials_are_sent_but_never_written(server, tmp_path, backend, modes, generate):
    server.modes = modes
    out = tmp_path / "r.json"
    proc, _ = bench(backend, _secret_host(server.url), "--output", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    _no_secret(proc, out)
    request = next(r for r in server.requests if r["path"].startswith(generate))
    # The userinfo is basic auth; the query rides on every path, after it (never "?token=.../v1").
    assert request["auth"] == BASIC
    assert request["path"] == f"{generate}?token={SECRET_TOKEN}"
    data = json.loads(out.read_text())
    assert data["settings"]["host"] == f"http://***@127.0.0.1:{server.server_address[1]}/?token=***"
    assert data["environment"]["backend"]["host"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("backend", ["ollama", "openai", "llamacpp"])
def test_host_credentials_stay_out_of_failures(server, tmp_path, backend):
    server.modes = {"/api/generate": "silent", **OPENAI_MODELS, "/v1/completions": "silent",
                    **LLAMACPP_META, "/completion": "silent"}
    out = tmp_path / "r.json"
    proc, _ = bench(backend, _secret_host(server.url), "--option", "first_token_timeout_s=1",
                    "--output", str(out))
    one_sentence_error(proc, 1, "sent no token within 1 s")
    _no_secret(proc, out)


def test_host_credentials_and_api_key_env_are_refused_together(server):
    server.modes = OPENAI_MODELS
    proc, _ = bench("openai", _secret_host(server.url), "--api-key-env", "VELOLLM_TEST_KEY",
                    env={"VELOLLM_TEST_KEY": "sk-SECRET-KEY"})
    one_sentence_error(proc, 2, "--host carries a user name and password and --api-key-env names VELOLLM_TEST_KEY")
    _no_secret(proc)
    assert "sk-SECRET-KEY" not in proc.stderr
    assert not server.requests  # refused before anything was sent


def test_rejected_host_credentials_are_blamed_not_the_key(server):
    server.modes = {"/v1/models": "unauthorized"}
    proc, _ = bench("openai", _secret_host(server.url))
    one_sentence_error(proc, 2, "rejected the user name and password of --host (HTTP 401")
    _no_secret(proc)
    assert BASIC.split()[1] not in proc.stderr  # the server echoed the header: base64 hides nothing


def test_query_secret_is_not_glued_before_v1(server, tmp_path):
    server.modes = {**OPENAI_MODELS, "/v1/completions": "openai:ok"}
    host = f"{server.url}/?api_key={SECRET_TOKEN}"
    proc, _ = bench("openai", host)
    assert proc.returncode == 0, proc.stderr
    assert server.requests[0]["path"] == f"/v1/models?api_key={SECRET_TOKEN}"
    _no_secret(proc)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_host_message_has_no_secret():
    url = f"http://127.0.0.1:{_free_port()}"
    proc, _ = bench("openai", _secret_host(url))
    one_sentence_error(proc, 1, "not reachable")
    _no_secret(proc)


def test_a_steady_stream_gets_no_waiting_lines():
    """Tokens every 0.1 s with the notice at 0.3 s of silence: none is silent that long, so no line
    (the watchdog once woke at its planned time and said "0 s since the last")."""
    from velollm_testkit.mock import mock_llm

    notices: list[str] = []
    with mock_llm(ttft_ms=50, itl_ms=100, output_tokens=15) as mock:
        watch = RequestWatch(Deadlines(first_token_s=5.0, total_s=10.0), server="mock", url=mock.url,
                             notify=notices.append, notice_after_s=0.3, notice_every_s=0.3)
        body = {"model": "velollm-mock", "prompt": "hi"}
        with httpx.Client() as http, watch, http.stream("POST", f"{mock.url}/api/generate", json=body,
                                                        timeout=10.0) as response:
            watch.attach(response)
            events = [watch.event() for line in watch.lines(response) if line]
    assert len(events) >= 15 and notices == [], notices
