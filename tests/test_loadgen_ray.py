"""Load generation across a real Ray cluster: two Ray nodes started on loopback (``ray start --head`` and
a second ``ray start --address``, each with one CPU and a small object store), one level run by
``velollm benchmark --cluster`` with a worker actor on each node against the test kit's mock, the merged
counts and latencies checked against the mock's own record; an unreachable cluster and a missing Ray
each one sentence with their exit code. The cluster is stopped (``ray stop``) whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from velollm_testkit.mock import mock_llm
from velollm_testkit.real import missing

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB; the shares are a few kB


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([_ray_cli(), *args], capture_output=True, text=True, timeout=180, check=False, env=env)


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A two-node Ray cluster on 127.0.0.1 (its head's GCS address), stopped after the test."""
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("Ray", "the load generator's cluster extra: pip install 'velollm[ray]' (scripts/setup installs it)")
    # Short socket paths (AF_UNIX allows ~107 bytes) and no usage report; a fresh HOME must do.
    temp_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"velollm-ray-{os.getpid()}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    node = ["--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"]
    try:
        head = _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir",
                    str(temp_dir), "--include-dashboard", "false", *node, env=env)
        assert head.returncode == 0, head.stderr[-2000:]
        second = _ray("start", "--address", address, "--node-ip-address", "127.0.0.1", *node, env=env)
        assert second.returncode == 0, second.stderr[-2000:]
        yield address
    finally:
        _ray("stop", "--force", env=env)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _velollm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", "benchmark", *args], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, **(env or {})})


def test_a_level_across_two_ray_nodes_merges_every_sample(ray_cluster, tmp_path):
    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=30, itl_ms=10, output_tokens=8) as mock:
        proc = _velollm("--backend", "llamacpp", "--host", mock.url, "--model", "velollm-mock", "--workload",
                        "pp16/tg8", "--profile", "concurrent", "--concurrency", "8", "--requests", "64",
                        "--warmup", "1", "--cluster", ray_cluster, "--output", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        mock_stats = mock.stats()
    document = json.loads(out.read_text())
    level = document["levels"][0]
    client = level["client"]
    assert client["where"] == f"Ray cluster at {ray_cluster}"
    assert client["workers"] == 2 and client["nodes"] == 2  # one actor on each node (SPREAD)
    assert client["lost"] == [] and client["errors"] == []
    assert all(cpu > 0 for cpu in client["worker_cpu_s"])
    # Every measured request came back once, each with the mock's 8 tokens.
    runs = [r for r in document["runs"] if r.get("level") == "c8"]
    assert level["completed"] == 64 and level["failed"] == 0 and len(runs) == 64
    assert sorted(r["iteration"] for r in runs) == list(range(1, 65))
    assert all(r["completion_tokens"] == 8 for r in runs)
    # Against the mock's own record: it finished every request the client counts as done (8 warm-ups,
    # 64 measured, the one-token request that starts the server; cool-down ones may be cancelled) and
    # sent each of its tokens late by at most its p99; percentiles once over all 64: its TTFT and gap.
    assert mock_stats["completed"] >= 8 + 64 + 1
    assert mock_stats["tokens"] >= sum(r["completion_tokens"] for r in runs)
    assert level["ttft_ms"]["n"] == 64
    assert 30 <= level["ttft_ms"]["median"] <= 30 + mock_stats["lag_ms"]["p99"] + 40
    assert 10 - 1 <= level["itl_ms"]["median"] <= 10 + mock_stats["lag_ms"]["p99"] + 5
    assert "c8: 2 client workers on 2 nodes" in " ".join(proc.stdout.split())


def _actors() -> list[psutil.Process]:
    """This machine's processes that hold a load worker actor (Ray names them ray::_Worker...)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(part.startswith("ray::_Worker") for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_the_workers_on_every_node(ray_cluster, tmp_path):
    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=5, itl_ms=20, output_tokens=50) as mock:
        proc = subprocess.Popen([sys.executable, "-m", "velollm_core", "benchmark", "--backend", "llamacpp", "--host",
                                 mock.url, "--model", "velollm-mock", "--workload", "pp16/tg50", "--profile",
                                 "concurrent", "--concurrency", "4", "--requests", "2000", "--warmup", "0",
                                 "--cluster", ray_cluster, "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while mock.stats()["tokens"] < 200:  # both actors are streaming
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the actors did not start streaming"
                time.sleep(0.3)
            assert len(_actors()) == 2
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            stderr = proc.stderr.read()
        finally:
            proc.kill()
            proc.stderr.close()
        assert proc.returncode == 128 + signal.SIGTERM, stderr
        deadline = time.monotonic() + 30
        while _actors() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _actors() == []
        streamed = mock.stats()["tokens"]
        time.sleep(1.0)
        assert mock.stats()["tokens"] == streamed  # nothing streams any more
    assert json.loads(out.read_text())["status"] == "interrupted"


def test_an_unreachable_cluster_is_one_sentence_and_exit_1(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("Ray", "pip install 'velollm[ray]'")
    with mock_llm(ttft_ms=5, itl_ms=5, output_tokens=4) as mock:
        proc = _velollm("--backend", "llamacpp", "--host", mock.url, "--model", "velollm-mock", "--workload",
                        "pp16/tg4", "--concurrency", "2", "--cluster", f"127.0.0.1:{_free_port()}")
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_without_ray_the_cluster_flag_names_the_extra_and_exits_2(tmp_path):
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('ray is hidden for this test')\n")
    with mock_llm(ttft_ms=5, itl_ms=5, output_tokens=4) as mock:
        proc = _velollm("--backend", "llamacpp", "--host", mock.url, "--model", "velollm-mock", "--workload",
                        "pp16/tg4", "--concurrency", "2", "--cluster", "auto",
                        env={"PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith("pip install 'velollm[ray]'") and "Traceback" not in proc.stderr
