"""Fault suite: requests the machine or the server cannot hold are refused before anything starts.

Every case runs the real CLI; none needs llama-server, because the refusal comes first.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

VELOLLM = [sys.executable, "-m", "velollm_core"]


def benchmark(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([*VELOLLM, "benchmark", "--backend", "llamacpp", *args], check=False,
                          capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - started


CASES = [
    (["--model", "gemma3-270m", "--concurrency", "100000"], "more than this machine can run: at most"),
    (["--model", "gemma3-270m", "--option", "port=99999"], "port=99999 is not a TCP port"),
    (["--model", "gemma3-270m", "--option", 'server_args="x'], "No closing quotation"),
    (["--model", "gemma3-270m", "--option", "server_args=--host 0.0.0.0"], "may not set --host"),
    (["--model", "gemma3-270m", "--option", "server_args=--port=8080"], "may not set --port"),
    (["--model", "x" * 5000], "File name too long"),
    (["--model", "gemma3-270m", "--max-tokens", "100000"], "does not fit the 4096-token context"),
    (["--model", "gemma3-270m", "--option", "ctx_size=10000000"], "more than the 32768 the model was trained"),
    (["--model", "gemma3-270m", "--concurrency", "1000", "--option", "ctx_size=32768000"],
     "of memory available"),
]


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=[c[1][:24] for c in CASES])
def test_impossible_requests_are_refused_before_anything_starts(args, fragment, tmp_path):
    out = tmp_path / "r.json"
    proc, took = benchmark(*args, "--output", str(out))
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr  # a sentence, not a dump
    assert took < 60 and not out.exists(), "refused before any server started or any file was written"
