"""Each load level's diagnosis names the limit the mock llama-server was made to have.

The mock (velollm_testkit.mock) runs with one limit switched on: a KV cache too small for the streams,
prefills that stall every other stream, a pretend GPU idle or busy while every slot runs
(velollm_testkit.mock_gpu reads it as a telemetry source), and a load generator outrun by a mock that
streams without gaps. The benchmark runs through the engine with telemetry, as the CLI runs it.
"""

from __future__ import annotations

import pytest
from velollm_testkit.mock import mock_llm
from velollm_testkit.mock_gpu import MockGpuPlugin

from velollm_core.bench.diagnosis import LABELS, diagnose
from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.workloads import Workload
from velollm_core.contract.schemas import BenchmarkResult


def load_level(url: str, *, streams: int = 4, requests: int = 12, prompt: int = 32, output: int = 24) -> dict:
    """One closed-loop level against the mock at ``url``, through the runner with telemetry."""
    plan = BenchmarkPlan(backend="llamacpp", model="velollm-mock", suites=[], host=url, iterations=1, warmup=0,
                         natural_stop=False, workloads=[Workload(prompt, output)], concurrency=[streams],
                         requests=requests)
    result = BenchmarkRunner(plan, telemetry=True, warn=lambda message: None).run()
    (level,) = [level for level in result.levels if level["key"] == f"c{streams}"]
    return level


def test_a_kv_cache_too_small_for_the_streams_is_kv_cache_full():
    # Each request holds its 33 prompt and 24 answer tokens: 100 cells hold one at a time.
    with mock_llm(ttft_ms=5, itl_ms=10, kv_cache_tokens=100) as mock:
        level = load_level(mock.url)
    verdict = level["diagnosis"]
    assert verdict["limit"] == "kv_cache_full", verdict
    assert verdict["signals"]["requests_waiting_peak"] >= 1
    assert verdict["signals"]["kv_cache_usage_peak"] > 0.3
    assert verdict["line"].startswith("KV cache full: ")


def test_prefills_that_stall_the_other_streams_are_prefill_interference():
    with mock_llm(ttft_ms=1, itl_ms=5, prefill_ms_per_token=5, prefill_stalls=1) as mock:
        level = load_level(mock.url)
    verdict = level["diagnosis"]
    assert verdict["limit"] == "prefill_interference", verdict
    assert verdict["signals"]["itl_p99_ms"] >= 3 * verdict["signals"]["itl_p50_ms"]
    assert verdict["signals"]["prompt_share"] >= 0.1


def test_the_same_mock_without_stalls_is_not_prefill_interference():
    with mock_llm(ttft_ms=1, itl_ms=5, prefill_ms_per_token=5) as mock:
        level = load_level(mock.url)
    assert level["diagnosis"]["limit"] != "prefill_interference", level["diagnosis"]


@pytest.mark.parametrize(("busy", "limit", "label"), [(30, "server_loop_bound", "server-loop-bound"),
                                                      (100, "engine_bound", "GPU-bound")])
def test_the_gpu_idle_while_every_slot_runs_is_the_server_loop_and_busy_is_the_gpu(register_plugin, busy, limit,
                                                                                   label):
    # About 3 s: the server's gauges are scraped once a second, and the level's edges see it idle.
    with mock_llm(ttft_ms=5, itl_ms=20, gpu_busy_pct=busy) as mock:
        register_plugin(MockGpuPlugin(mock.url))
        level = load_level(mock.url, requests=24)
    verdict = level["diagnosis"]
    assert verdict["limit"] == limit, verdict
    assert verdict["label"] == label
    assert verdict["signals"]["gpu"] is True
    assert verdict["signals"]["requests_running_peak"] == 4


def test_a_client_that_was_late_is_client_bound():
    # No gap between tokens: the mock streams as fast as its loop writes; one client process
    # parsing 64 streams of 400 tokens falls behind its own timers.
    with mock_llm(ttft_ms=0, itl_ms=0, output_tokens=400) as mock:
        level = load_level(mock.url, streams=64, requests=128, output=400)
    verdict = level["diagnosis"]
    assert verdict["limit"] == "client_bound", verdict
    assert verdict["line"].startswith("client-bound: ")


def _level_with(**fields) -> tuple[BenchmarkResult, dict]:
    level = {"key": "c8", "workload": "pp64/tg32", "concurrency": 8, "itl_ms": {"median": 10.0, "p99": 12.0},
             **fields}
    return BenchmarkResult(started_at="2026-01-01T00:00:00+00:00", levels=[level]), level


def test_the_engine_ceiling_decides_without_a_gpu_sensor():
    result, level = _level_with(server_efficiency=0.3, server_efficiency_with_prompts=0.35)
    assert diagnose(result, level)["limit"] == "server_loop_bound"
    result, level = _level_with(server_efficiency=0.8, server_efficiency_with_prompts=0.9)
    verdict = diagnose(result, level)
    assert (verdict["limit"], verdict["label"]) == ("engine_bound", "engine-bound")
    assert verdict["line"] == "engine-bound: server at 90% of the engine alone"


def test_nothing_to_tell_engine_from_server_is_unknown_and_says_what_is_missing():
    result, level = _level_with()
    verdict = diagnose(result, level)
    assert verdict["limit"] == "unknown"
    assert "--engine-ceiling" in verdict["line"]
    assert [reason["limit"] for reason in verdict["reasons"]] == [k for k in LABELS if k != "unknown"]


def test_a_server_faster_than_its_engine_alone_is_not_believed():
    result, level = _level_with(server_efficiency=1.7, server_efficiency_with_prompts=1.9)
    verdict = diagnose(result, level)
    assert verdict["limit"] == "unknown"
    assert "load changed" in verdict["line"]
    # the line names the figure the checks judged: the engine with its prompts, here 130%
    result, level = _level_with(server_efficiency=1.1, server_efficiency_with_prompts=1.3)
    assert diagnose(result, level)["line"] == "unknown: server at 130% of the engine alone: the load changed"


def test_the_report_carries_each_levels_efficiency_and_limit(tmp_path):
    import csv
    import io
    import json
    import subprocess
    import sys

    from velollm_core.bench.ceiling import annotate
    from velollm_core.contract.ceiling import EngineCeiling, EngineShape

    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=5, itl_ms=10, kv_cache_tokens=100) as mock:
        plan = BenchmarkPlan(backend="llamacpp", model="velollm-mock", suites=[], host=mock.url, iterations=1,
                             warmup=0, natural_stop=False, workloads=[Workload(32, 24)], concurrency=[4], requests=8)
        runner = BenchmarkRunner(plan, output=out, telemetry=True, warn=lambda message: None)
        runner.run()
    level = runner.result.levels[0]
    # the figure a backend's engine_ceiling would give: the level's own rate, twice over
    annotate(level, EngineCeiling(EngineShape(4, 33, 24), output_tokens_per_s=2 * level["output_throughput"]))
    runner.save()
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "report", str(out), "--format", "csv"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    (row,) = [row for row in csv.DictReader(io.StringIO(proc.stdout)) if row["table"] == "level"]
    assert (float(row["server_efficiency"]), row["limit"]) == (0.5, "KV cache full")
    assert json.loads(out.read_text())["levels"][0]["diagnosis"]["limit"] == "kv_cache_full"
    html = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "report", str(out), "--output", str(html)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "of engine" in html.read_text() and "KV cache full: " in html.read_text()


def test_a_moments_wait_for_a_slot_is_not_a_full_kv_cache():
    # 8 streams on 8 slots: one scrape saw 3 requests waiting for a slot being handed over, the rest none
    telemetry = {"devices": [], "levels": [{"key": "c8", "workload": "pp64/tg32", "hardware": {}, "server": {
        "requests_waiting": {"mean": 0.3, "peak": 3.0}, "requests_running": {"mean": 7.0, "peak": 8.0}}}]}
    result, level = _level_with(server_efficiency=0.8, server_efficiency_with_prompts=0.9)
    result.telemetry = telemetry
    assert diagnose(result, level)["limit"] == "engine_bound"
    telemetry["levels"][0]["server"]["requests_waiting"] = {"mean": 2.5, "peak": 3.0}
    verdict = diagnose(result, level)
    assert verdict["limit"] == "kv_cache_full"
    assert verdict["line"] == "KV cache full: 2.5 deferred on average, no free slot or KV room"
