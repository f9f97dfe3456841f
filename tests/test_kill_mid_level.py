"""A VeloLLM killed (SIGKILL, no handler runs) in the middle of a load level: the result file is whole
JSON and holds every request of that level that ended more than ``SAVE_EVERY_S`` before the kill, as
README.md says of ``--output``. Against the test kit's mock server, through the real CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from velollm_testkit.mock import mock_llm

from velollm_core.bench.runner import BenchmarkRunner

LEVEL = "c4"


def _level_runs(path: Path) -> list[dict] | None:
    """The level's runs in the file as last rewritten, or None before the file exists."""
    if not path.exists():
        return None
    document = json.loads(path.read_text())  # an atomic rewrite: never a half-written file
    return [run for run in document["runs"] if run.get("level") == LEVEL]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigkill_mid_level_keeps_every_request_that_ended_before_the_last_rewrite_window(tmp_path):
    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=5, itl_ms=5, output_tokens=8) as mock:
        proc = subprocess.Popen(
            [sys.executable, "-m", "velollm_core", "benchmark", "--backend", "llamacpp", "--host", mock.url,
             "--model", "velollm-mock", "--workload", "pp16/tg8", "--concurrency", "4", "--requests", "4000",
             "--warmup", "0", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not _level_runs(out):  # the first rewrite in the middle of the level
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "no rewrite of --output during the level"
                time.sleep(0.2)
            # The mock's count of finished generations, sampled while the level goes on.
            ended: list[tuple[float, int]] = []
            until = time.monotonic() + BenchmarkRunner.SAVE_EVERY_S + 3
            while time.monotonic() < until:
                ended.append((time.monotonic(), mock.stats()["completed"]))
                time.sleep(0.25)
            proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.stderr.close()
    on_disk = _level_runs(out)
    # Requests that ended a full rewrite interval (and a second of slack) before the kill; one of the
    # mock's finished generations is the one-token request that starts the server before the level.
    window_start = killed_at - BenchmarkRunner.SAVE_EVERY_S - 1
    ended_before = max(count for at, count in ended if at <= window_start) - 1
    assert ended_before > 0
    assert len(on_disk) >= ended_before, (len(on_disk), ended_before)
    assert all(run["failed"] is None and run["completion_tokens"] == 8 for run in on_disk)
    assert json.loads(out.read_text())["status"] == "running"  # it was killed: nothing said it ended
