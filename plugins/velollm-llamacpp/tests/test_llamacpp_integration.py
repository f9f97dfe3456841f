"""End to end through the ``velollm`` CLI against the real llama-server on the real Gemma 3 270M.

Skipped where llama-server or the test model is absent, unless VELOLLM_REQUIRE_REAL=1 (CI sets
it), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from velollm_testkit.plugin import fill_filesystem

pytestmark = pytest.mark.llamacpp

VELOLLM = [sys.executable, "-m", "velollm_core"]


def velollm(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([*VELOLLM, *args], check=False, capture_output=True, text=True, timeout=timeout)


def _assert_one_clean_error(proc, code, fragment):
    assert proc.returncode == code, proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_benchmark_end_to_end_on_real_server(gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", "gemma3-270m", "--iterations", "3",
                   "--suite", "short_completion", "--max-tokens", "48", "--option", "threads=2",
                   "--output", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)  # --json: one document on stdout, nothing else
    saved = json.loads(out.read_text())
    assert printed["runs"] == saved["runs"] and saved["status"] == "complete"
    runs = saved["runs"]
    assert len(runs) == 3
    for run in runs:
        assert run["completion_tokens"] == 48 and run["prompt_tokens"] > 5
        assert run["ttft_ms"] > 0 and run["total_ms"] > run["ttft_ms"]
        assert run["prompt_tokens_per_s"] > 0 and run["decode_tokens_per_s"] > 0
    # Greedy decoding with a fixed seed: the same text every time.
    assert len({run["text"] for run in runs}) == 1
    # Fidelity: the client's stream timing agrees with the server's own within 2%.
    ratio = statistics.median(r["client_decode_tokens_per_s"] / r["server_decode_tokens_per_s"] for r in runs)
    assert abs(ratio - 1) < 0.02, ratio
    backend = saved["environment"]["backend"]
    assert backend["name"] == "llamacpp" and backend["version"]
    assert backend["model"]["quantization"] == "Q4_K_M" and backend["model"]["architecture"] == "gemma3"
    assert "127.0.0.1" in backend["server_flags"]
    assert saved["environment"]["hardware"]["cpu"]["logical_cores"] >= 1
    assert saved["summary"]["short_completion"]["decode_tokens_per_s"]["n"] == 3


@pytest.fixture(scope="module")
def running_server(gemma, llama_server_bin):
    from velollm_llamacpp.server import LlamaServer

    with LlamaServer(llama_server_bin, gemma, args=["-c", "4096", "--parallel", "2"]) as server:
        yield server


def test_attach_to_running_server_and_concurrency(running_server, tmp_path):
    out = tmp_path / "r.json"
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", "gemma3-270m", "--host", running_server.url,
                   "--iterations", "2", "--warmup", "0", "--suite", "short_completion", "--max-tokens", "16",
                   "--concurrency", "1,2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {r["concurrency"] for r in data["runs"]} == {1, 2}
    assert len(data["runs"]) == 2 + 2 * 2
    level = next(lv for lv in data["levels"] if lv["key"] == "c2" and lv["workload"] == "short_completion")
    assert level["output_throughput"] > 0 and level["ttft_ms"]["p99"] >= level["ttft_ms"]["median"]
    assert data["environment"]["backend"]["model"]["path"] == str(running_server.model)
    assert "load levels" in proc.stdout and "c2" in proc.stdout  # the table shows the load levels


def test_missing_model_file(tmp_path):
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", str(tmp_path / "none.gguf"))
    _assert_one_clean_error(proc, 2, "model file not found")


def test_file_that_is_not_gguf(tmp_path, llama_server_bin):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", str(bogus))
    _assert_one_clean_error(proc, 2, "is not a GGUF file")


def test_unknown_model_name():
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", "no-such-model")
    _assert_one_clean_error(proc, 2, "unknown model 'no-such-model'")


def test_port_in_use(gemma):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        proc = velollm("benchmark", "--backend", "llamacpp", "--model", "gemma3-270m", "--option", f"port={port}")
    _assert_one_clean_error(proc, 2, f"port {port} on 127.0.0.1 is already in use")


def test_unreachable_host():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        proc = velollm("benchmark", "--backend", "llamacpp", "--model", "x", "--host", f"http://127.0.0.1:{port}")
    _assert_one_clean_error(proc, 1, "llama-server is not reachable at")


def test_server_that_never_becomes_healthy(gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", "gemma3-270m",
                   "--option", "health_timeout_s=0.05", "--output", str(out))
    _assert_one_clean_error(proc, 1, "did not become healthy within 0.05 s")
    assert json.loads(out.read_text())["status"] == "failed"


def _wait_for_runs(path: Path, n: int, proc, deadline_s=300):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if path.exists():
            try:
                if len(json.loads(path.read_text())["runs"]) >= n:
                    return
            except ValueError:
                pytest.fail("result file was not valid JSON while being rewritten")
        time.sleep(0.1)
    pytest.fail("benchmark made no progress")


def _long_benchmark(out: Path) -> subprocess.Popen:
    """A benchmark that runs long enough to be interrupted mid-way."""
    return subprocess.Popen([*VELOLLM, "benchmark", "--backend", "llamacpp", "--model", "gemma3-270m",
                             "--iterations", "200", "--warmup", "0", "--suite", "short_completion",
                             "--max-tokens", "24", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VELOLLM_DEBUG": "1"})  # a stuck cleanup dumps its stacks


def _server_children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if "llama-server" in p.name()]


def test_server_killed_mid_run_keeps_finished_runs(gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = _long_benchmark(out)
    try:
        _wait_for_runs(out, 2, proc)
        for server in _server_children(proc.pid):
            server.kill()
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "llama-server" in stderr
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and len(data["runs"]) >= 2


SIGNALS = [("SIGINT", 130, "Interrupted.", "interrupted by the user (Ctrl-C)"),
           ("SIGTERM", 143, "Terminated by SIGTERM.", "terminated by SIGTERM"),
           ("SIGHUP", 129, "Terminated by SIGHUP.", "terminated by SIGHUP")]


@pytest.mark.parametrize(("name", "code", "message", "error"), SIGNALS, ids=[s[0] for s in SIGNALS])
def test_signal_mid_run_stops_server_and_keeps_runs(gemma, tmp_path, name, code, message, error):
    """Ctrl-C, `timeout`/systemd/docker stop (SIGTERM) and a closed terminal (SIGHUP) end a run alike."""
    out = tmp_path / "r.json"
    proc = _long_benchmark(out)
    try:
        _wait_for_runs(out, 1, proc)
        servers = _server_children(proc.pid)
        assert servers, "the benchmark should have started llama-server"
        proc.send_signal(getattr(signal, name))
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code and message in stderr and "Traceback" not in stderr, stderr
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted" and data["error"] == error and len(data["runs"]) >= 1, stderr
    _gone, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, "llama-server must not outlive the benchmark"


def test_two_ctrl_c_20_ms_apart_end_the_run_and_keep_runs(gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = _long_benchmark(out)
    try:
        _wait_for_runs(out, 1, proc)
        servers = _server_children(proc.pid)
        assert servers, "the benchmark should have started llama-server"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    data = json.loads(out.read_text())
    assert len(data["runs"]) >= 1 and data["status"] == "interrupted", data
    assert data["error"].startswith("interrupted by the user (Ctrl-C); second Ctrl-C"), data["error"]
    _gone, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, "llama-server must not outlive the benchmark"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_velollm_takes_its_server_down(gemma, tmp_path):
    """No handler sees SIGKILL: the kernel ends the server (the child asked to die with its parent)."""
    out = tmp_path / "r.json"
    proc = _long_benchmark(out)
    try:
        _wait_for_runs(out, 1, proc)
        servers = _server_children(proc.pid)
        assert servers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    _gone, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, "llama-server outlived a SIGKILLed velollm"
    assert len(json.loads(out.read_text())["runs"]) >= 1  # the last atomic rewrite is intact JSON


def test_a_second_benchmark_on_the_same_output_is_refused(gemma, tmp_path):
    """Two writers of one file: the second is told at once; the first one's runs are all kept."""
    out = tmp_path / "r.json"
    first = _long_benchmark(out)
    try:
        _wait_for_runs(out, 1, first)
        second = velollm("benchmark", "--backend", "llamacpp", "--model", "gemma3-270m", "--output", str(out),
                         timeout=120)
        _assert_one_clean_error(second, 2, f"is being written by another velollm (pid {first.pid})")
        _wait_for_runs(out, 2, first)  # the first goes on writing
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert json.loads(out.read_text())["status"] == "interrupted"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_disk_that_fills_mid_run_says_what_was_kept(gemma, tmp_path):
    """The disk fills after the first runs: one sentence, exit 1, and the file as of the last good write."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        out = mount / "r.json"
        proc = _long_benchmark(out)
        try:
            _wait_for_runs(out, 1, proc)
            fill_filesystem(mount)
            _, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 1 and "Traceback" not in stderr, stderr
        assert "No space left on device" in stderr, stderr
        kept = json.loads(out.read_text())  # intact: the last write that succeeded
        assert f"{len(kept['runs'])} finished run(s) kept in {out}" in " ".join(stderr.split())
        assert not list(mount.glob(f".{out.name}.*.tmp")), "no temporary file is left behind"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
