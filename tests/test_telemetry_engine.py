"""Telemetry through the engine and the CLI: every `velollm benchmark` records the server's counters per
level beside the client's, against the loopback mock llama-server (real sockets, its /metrics)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from velollm_testkit.mock import mock_llm

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.workloads import Workload


@pytest.fixture(scope="module")
def mock():
    with mock_llm(ttft_ms=20, itl_ms=4, output_tokens=6) as server:
        yield server


def test_runner_records_server_figures_per_level(mock, tmp_path):
    plan = BenchmarkPlan(backend="llamacpp", model="velollm-mock", suites=[], host=mock.url, iterations=3,
                         warmup=1, natural_stop=False, workloads=[Workload(64, 16)], concurrency=[1, 4], requests=8)
    out = tmp_path / "r.json"
    result = BenchmarkRunner(plan, output=out, telemetry=True).run()
    telemetry = result.telemetry
    assert telemetry["server"] == {"url": f"{mock.url}/metrics", "flavor": "llama.cpp", "available": True,
                                   "why": None, "scrape_failures": 0, "last_scrape_error": None}
    seq, c4 = telemetry["levels"]
    assert (seq["key"], seq["workload"], c4["key"]) == ("seq", "pp64/tg16", "c4")
    # sequential: exactly the measured requests ran between the edges, so the counts are judged
    assert seq["server"]["generated_tokens"] == 3 * 16
    assert seq["client_vs_server"]["completion_tokens"]["disagree"] is False
    assert seq["client_vs_server"]["prompt_tokens"]["disagree"] is False
    # a load level also ran its warm-up and cool-down: shown, not judged
    assert c4["server"]["generated_tokens"] >= 8 * 16
    assert all(figure["disagree"] is None for figure in c4["client_vs_server"].values())
    assert c4["window_s"] <= c4["duration_s"] and c4["tokens"]["window_output_tokens"] >= 8 * 16
    assert c4["server"]["requests_running"] != "unknown"
    assert json.loads(out.read_text())["telemetry"]["levels"][1]["key"] == "c4"  # in the file too


def test_runner_without_telemetry_records_none(mock):
    plan = BenchmarkPlan(backend="llamacpp", model="velollm-mock", suites=[], host=mock.url, iterations=1,
                         warmup=0, natural_stop=False, workloads=[Workload(16, 4)])
    assert BenchmarkRunner(plan).run().telemetry is None  # verify and speculative bench leave it off


def test_cli_says_each_missing_sensor_once(mock, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "benchmark", "--backend", "llamacpp", "--host",
                           mock.url, "--model", "velollm-mock", "--workload", "pp32/tg8", "--concurrency", "1,2",
                           "--requests", "4", "--iterations", "2", "--output", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    telemetry = json.loads(out.read_text())["telemetry"]
    said = [line for line in proc.stderr.splitlines() if line.startswith("warning: telemetry:")]
    assert said and len(said) == len(set(said))  # each once, for two levels
    for line in said:  # what was said is in the result, the sensors' reasons in full
        text = line.removeprefix("warning: telemetry: ")
        assert text in telemetry["why"] or (text.startswith("no power sensor readable")
                                            and any(w.startswith("no hardware sensor") for w in telemetry["why"]))
    assert len(telemetry["levels"]) == 2 and telemetry["server"]["available"]
    for level in telemetry["levels"]:
        for kind, figures in level["tokens_per_joule"].items():
            assert all(v == "unknown" or v > 0 for v in figures.values()), (kind, figures)  # never 0
