"""The ``openai`` backend through the ``velollm`` CLI against the real llama-server's OpenAI endpoint
on the real Gemma 3 270M, and against the ``llamacpp`` backend on the same server.

Skipped where llama-server or the test model is absent, unless VELOLLM_REQUIRE_REAL=1 (CI sets
it), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from velollm_testkit.llama_server import llama_server

pytestmark = pytest.mark.llamacpp

VELOLLM = [sys.executable, "-m", "velollm_core"]
MODEL = "gemma-3-270m-q4_k_m"  # the file's stem: llama-server lists the model by its path




def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VELOLLM, "benchmark", "--suite", "short_completion", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_completions_endpoint(llama_server_url, gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = bench(
        "--backend",
        "openai",
        "--host",
        llama_server_url,
        "--model",
        MODEL,
        "--iterations",
        "2",
        "--max-tokens",
        "24",
        "--output",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert json.loads(proc.stdout)["runs"] == data["runs"] and data["status"] == "complete"
    for run in data["runs"]:
        extra = run["extra"]
        assert extra["endpoint"] == "completions" and extra["token_count_source"] == "usage"
        assert run["completion_tokens"] == 24 and run["prompt_tokens"] > 5
        assert run["ttft_ms"] > 0 and run["total_ms"] > run["ttft_ms"]
        assert (
            len(extra["itl_ms"]) == extra["content_chunks"] - 1
            and extra["itl_ms_p99"] >= extra["itl_ms_median"]
        )
        assert extra["tpot_ms"] > 0 and extra["cache_n"] == 0  # the prompt is reprocessed every run
        # llama.cpp's own timings ride along; the client's clock agrees with them.
        assert run["prompt_tokens_per_s"] > 0 and run["server_decode_tokens_per_s"] > 0
        assert run["client_decode_tokens_per_s"] == pytest.approx(run["server_decode_tokens_per_s"], rel=0.1)
    assert len({run["text"] for run in data["runs"]}) == 1  # greedy and seeded: same text
    backend = data["environment"]["backend"]
    assert (
        backend["name"] == "openai" and backend["server"] == "llama.cpp" and backend["owned_by"] == "llamacpp"
    )
    assert backend["model"]["name"] == str(gemma) and backend["version"]


def test_chat_endpoint_with_concurrency(llama_server_url, tmp_path):
    out = tmp_path / "r.json"
    proc = bench(
        "--backend",
        "openai",
        "--host",
        llama_server_url,
        "--model",
        MODEL,
        "--endpoint",
        "chat",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--max-tokens",
        "16",
        "--concurrency",
        "1,4",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [r["concurrency"] for r in data["runs"]] == [1, 4, 4, 4, 4]
    assert {r["extra"]["endpoint"] for r in data["runs"]} == {"chat"}
    assert all(r["completion_tokens"] > 0 and r["ttft_ms"] > 0 for r in data["runs"])
    level = next(lv for lv in data["levels"] if lv["key"] == "c4" and lv["workload"] == "short_completion")
    assert level["output_throughput"] > 0 and level["request_throughput"] > 0
    for metric in ("ttft_ms", "tpot_ms", "itl_ms"):
        assert level[metric]["p99"] >= level[metric]["p90"] >= level[metric]["median"] > 0


def test_unknown_model_lists_what_the_server_offers(llama_server_url, gemma):
    proc = bench("--backend", "openai", "--host", llama_server_url, "--model", "no-such-model")
    assert proc.returncode == 2, proc.stderr
    assert "'no-such-model' is not offered" in proc.stderr and str(gemma) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_api_key_is_used_and_never_written(gemma, llama_server_bin, tmp_path):
    key = "sk-velollm-test-7f3a9c"
    out = tmp_path / "r.json"
    with llama_server(llama_server_bin, gemma, ["-c", "2048", "--api-key", key]) as locked_url:
        ok = bench(
            "--backend",
            "openai",
            "--host",
            locked_url,
            "--model",
            MODEL,
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--max-tokens",
            "8",
            "--api-key-env",
            "VELOLLM_TEST_KEY",
            "--output",
            str(out),
            "--json",
            env={"VELOLLM_TEST_KEY": key},
        )
        wrong = bench(
            "--backend",
            "openai",
            "--host",
            locked_url,
            "--model",
            MODEL,
            "--api-key-env",
            "VELOLLM_TEST_KEY",
            env={"VELOLLM_TEST_KEY": "sk-wrong"},
        )
        missing = bench("--backend", "openai", "--host", locked_url, "--model", MODEL)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["runs"][0]["completion_tokens"] == 8
    assert key not in out.read_text() + ok.stdout + ok.stderr
    assert wrong.returncode == 2 and "VELOLLM_TEST_KEY" in wrong.stderr and "Traceback" not in wrong.stderr
    assert missing.returncode == 2 and "--api-key-env" in missing.stderr


def _decode_rates(path: Path) -> tuple[list[float], list[float]]:
    runs = json.loads(path.read_text())["runs"]
    return [r["client_decode_tokens_per_s"] for r in runs], [r["server_decode_tokens_per_s"] for r in runs]


def test_openai_and_llamacpp_backends_agree_on_the_same_server(llama_server_url, tmp_path):
    """Medians within 10%, or, on a machine too busy for that, within noise: the 95% bootstrap interval
    of their ratio contains 1 (the verdict `velollm compare` gives)."""
    from velollm_core.contract.stats import bootstrap_ratio_interval

    rates: dict[str, tuple[list[float], list[float]]] = {"openai": ([], []), "llamacpp": ([], [])}
    common = ["--host", llama_server_url, "--model", MODEL, "--iterations", "2", "--max-tokens", "32"]
    for round_ in range(4):  # interleaved, so drift in machine load hits both backends alike
        for backend in ("openai", "llamacpp"):
            out = tmp_path / f"{backend}-{round_}.json"
            proc = bench("--backend", backend, *common, "--output", str(out))
            assert proc.returncode == 0, proc.stderr
            client, own = _decode_rates(out)
            rates[backend][0].extend(client)
            rates[backend][1].extend(own)
    for which, index in (("client-measured", 0), ("server-reported", 1)):
        openai, llamacpp = rates["openai"][index], rates["llamacpp"][index]
        ratio = statistics.median(openai) / statistics.median(llamacpp)
        low, high = bootstrap_ratio_interval(llamacpp, openai)
        print(
            f"{which} decode tok/s: openai {statistics.median(openai):.1f}, "
            f"llamacpp {statistics.median(llamacpp):.1f} (ratio {ratio:.3f}, 95% [{low:.3f}, {high:.3f}])"
        )
        assert abs(ratio - 1) < 0.10 or low <= 1 <= high, (which, rates)
