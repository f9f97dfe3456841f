"""``velollm optimize --backend llamacpp --model gemma3-270m --verify`` end to end through the CLI: the
real llama-server started with the defaults and with the proposal, interleaved round by round, the
verdict printed, the measurements written and no server left behind.

The run is as short as the command allows (its rounds and suites are fixed: a few minutes on 2 cores).
Needs the real build and Gemma (the ``gemma`` fixture: a failure under VELOLLM_REQUIRE_REAL=1).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.llamacpp


def test_optimize_verify_measures_the_proposal_against_the_defaults_on_the_real_server(gemma, tmp_path):
    # Output to files, not pipes: the loop below reads nothing until the command ends.
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "velollm_core", "optimize", "--backend", "llamacpp",
                                 "--model", "gemma3-270m", "--verify"],
                                cwd=tmp_path, env={**os.environ, "COLUMNS": "200"}, stdout=out, stderr=err)
        servers: dict[int, psutil.Process] = {}  # every llama-server it started, seen while it ran
        try:
            proc_info = psutil.Process(proc.pid)
            deadline = time.monotonic() + 1500
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(psutil.Error):
                    servers.update({child.pid: child for child in proc_info.children(recursive=True)
                                    if child.name() == "llama-server"})
                time.sleep(0.5)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    (written,) = tmp_path.glob("velollm-optimize-*-verify.json")
    assert f"measurements written to {written.name}" in stderr
    report = json.loads(written.read_text())
    assert report["runtime"] == "llamacpp" and report["model"].endswith(".gguf")
    by_name = {candidate["name"]: candidate for candidate in report["candidates"]}
    assert {"defaults", "proposal"} <= set(by_name)
    for candidate in by_name.values():
        # Every round measured every candidate on the real server: real, positive speeds, no error.
        assert candidate["error"] is None, candidate
        assert len(candidate["decode_tokens_per_s"]) == report["rounds"] >= 3
        assert all(speed > 0 for speed in candidate["decode_tokens_per_s"] + candidate["prompt_tokens_per_s"])
    # The verdict: what is proposed in the end, measured against the defaults, and why each change stays.
    assert set(report["final"]["vs_defaults"]) == {"decode", "prefill"}
    assert all(change["why"] for change in report["changes"])
    assert report["proposal"]["runtime"] == "llamacpp"
    # The printed verdict: the interleaved rounds, the final configuration against the defaults, its command.
    assert f"llamacpp: measured ({report['rounds']} interleaved rounds" in stdout
    assert f"verified vs defaults ({report['final']['measured_as']}): decode" in stdout
    assert "command: " in stdout and "llama-server" in stdout
    assert servers, "no llama-server was started"
    _gone, alive = psutil.wait_procs(list(servers.values()), timeout=10)
    assert not alive, "a llama-server outlived `velollm optimize --verify`"
