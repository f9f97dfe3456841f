"""The openai backend through the test kit's hostile server: every hostility ends in one readable
``Error:`` line (no traceback, no escape sequence reaching the terminal, no gigabytes read)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from velollm_testkit.hostile import HOSTILITIES, Stream

ROUTES = {
    "/v1/models": {"object": "list", "data": [{"id": "good", "object": "model"}]},
    "/version": {"version": "0.6.2"},
    "/v1/chat/completions": Stream([{"choices": [{"delta": {"content": "hi"}, "index": 0}]},
                                    {"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}],
                                     "usage": {"prompt_tokens": 5, "completion_tokens": 1}}, "[DONE]"]),
}
# Numbers are the engine's checks (a server's counts are claims), tested beside them.
TRANSPORT = [hostility for hostility in HOSTILITIES if hostility not in ("non_finite", "absurd_numbers")]


def benchmark(url: str, model: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "velollm_core", "benchmark", "--backend", "openai", "--host", url,
               "--model", model, "--suite", "short_completion", "--warmup", "0", "--iterations", "1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "VELOLLM_HISTORY_DB": "off", "COLUMNS": "200"})


@pytest.mark.parametrize("hostility", TRANSPORT)
def test_a_hostile_server_is_one_error_line(hostile_server, hostility):
    server = hostile_server(hostility, ROUTES)
    proc = benchmark(server.url, "good")
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert proc.returncode in (1, 2) and len(errors) == 1, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr and "\u202e" not in proc.stdout + proc.stderr


def test_the_model_list_in_an_error_shows_escapes_harmlessly(hostile_server):
    proc = benchmark(hostile_server("escapes", ROUTES).url, "missing")
    assert proc.returncode == 2, proc.stderr
    assert "it offers: good\\u001b[2J" in proc.stderr and "\x1b" not in proc.stderr


def test_a_refusal_and_its_retry_after_reach_the_terminal_as_visible_escapes(hostile_server):
    from velollm_testkit.hostile import ESCAPES, Reply

    refusal = Reply({"error": {"message": "slow down"}}, 429, {"Retry-After": "5\u202e\u0085"})
    proc = benchmark(hostile_server("escapes", {**ROUTES, "/v1/models": refusal}).url, "good")
    error = next(line for line in proc.stderr.splitlines() if line.startswith("Error: "))
    assert proc.returncode in (1, 2) and "Retry-After: 5\\u202e\\u0085" in error and "slow down" in error, error
    assert "\u202e" not in proc.stderr and "\x85" not in proc.stderr and "\x1b" not in proc.stderr
    assert ESCAPES not in proc.stderr
