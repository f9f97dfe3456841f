"""Every shipped backend through the test kit's hostile server (``velollm benchmark`` as a user runs
it): escape sequences, a gzip bomb, an HTML page, a redirect loop and a reset each end in a clean run
or one ``Error:`` line, with no traceback and no control sequence reaching the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from velollm_testkit.hostile import ESCAPES, HOSTILITIES, Stream

MODEL = "m"
OLLAMA = {
    "/api/version": {"version": "0.6.2"}, "/api/tags": {"models": []}, "/api/ps": {"models": []},
    "/api/show": {"details": {}, "model_info": {}},
    "/api/generate": Stream([*({"model": MODEL, "response": f" w{i}", "done": False} for i in range(4)),
                             {"model": MODEL, "response": "", "done": True, "done_reason": "stop",
                              "prompt_eval_count": 5, "prompt_eval_duration": 1_000_000, "eval_count": 4,
                              "eval_duration": 4_000_000}], framing="ndjson"),
}
OPENAI = {
    "/v1/models": {"object": "list", "data": [{"id": MODEL, "object": "model"}]}, "/version": {"version": "0.6"},
    "/v1/completions": Stream([*({"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]}
                                 for i in range(4)),
                               {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}, "[DONE]"]),
}
LLAMACPP = {
    "/health": {"status": "ok"}, "/props": {"total_slots": 1, "build_info": "b4242"},
    "/completion": Stream([*({"content": f" w{i}", "tokens_predicted": i + 1, "stop": False} for i in range(4)),
                           {"content": "", "tokens_predicted": 4, "stop": True}]),
}
ROUTES = {"ollama": OLLAMA, "openai": OPENAI, "llamacpp": LLAMACPP}
# The numbers (non-finite, absurd) are the engine's checks on what a server claims, tested beside them.
SPOILERS = [hostility for hostility in HOSTILITIES if hostility not in ("non_finite", "absurd_numbers")]


def benchmark(backend: str, url: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "velollm_core", "benchmark", "--backend", backend, "--host", url,
               "--model", MODEL, "--suite", "short_completion", "--warmup", "0", "--iterations", "1"]
    env = {**os.environ, "VELOLLM_HISTORY_DB": "off", "COLUMNS": "200", "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


@pytest.mark.parametrize("hostility", SPOILERS)
@pytest.mark.parametrize("backend", sorted(ROUTES))
def test_a_hostile_server_ends_cleanly(hostile_server, backend, hostility):
    proc = benchmark(backend, hostile_server(hostility, ROUTES[backend]).url)
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said, said
    for sequence in ("\x1b[2J", "\x1b[8m", "\x1b]", "\x07", "\x9b", "\u202e", "\u2066"):
        assert sequence not in said, (sequence, said)
    errors = [line for line in proc.stderr.splitlines() if "Error: " in line]  # after a live display's cleanup
    assert (proc.returncode == 0 and not errors) or (proc.returncode in (1, 2) and len(errors) == 1), said


def test_llama_servers_build_info_titles_the_table_harmlessly(hostile_server):
    proc = benchmark("llamacpp", hostile_server("escapes", LLAMACPP).url)
    assert proc.returncode in (0, 1), proc.stderr
    assert "b4242" in proc.stdout and "pwned" in proc.stdout and "\x1b]" not in proc.stdout, proc.stdout
    assert ESCAPES not in proc.stdout
