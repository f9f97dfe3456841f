"""GuideLLM's and `vllm bench serve`'s result files imported into the history: a real GuideLLM 0.8.1 run
against llama-server, and a vLLM result reconstructed from vLLM's source (tests/data/peers/README.md
says how each was made). Each request becomes a run; what the tool did not measure stays unknown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from velollm_openai import peers

PEERS = Path(__file__).resolve().parents[3] / "tests" / "data" / "peers"
GUIDELLM = PEERS / "guidellm-0.8.1-pp512-tg128-synchronous.json"
VLLM = PEERS / "vllm-bench-serve-reconstructed.json"
VELOLLM_RESULT = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "peer" / "velollm-pp512-tg128-d0-r1.json"


def velollm(*args: str, history: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VELOLLM_HISTORY_DB": str(history)}
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def imported(path: Path, tmp_path: Path) -> dict:
    history = tmp_path / "history.db"
    done = velollm("history", "import", str(path), history=history)
    assert done.returncode == 0, done.stderr
    return json.loads(velollm("history", "export", "latest", history=history).stdout)


def test_a_guidellm_run_imports_request_by_request(tmp_path):
    source = json.loads(GUIDELLM.read_text())
    requests = source["benchmarks"][0]["requests"]["successful"]
    document = imported(GUIDELLM, tmp_path)
    assert document["imported"]["tool"] == "guidellm" and document["imported"]["tool_version"] == "0.8.1"
    assert document["settings"]["backend"] == "guidellm"
    runs = document["runs"]
    assert len(runs) == len(requests) == 3
    for run, request in zip(runs, requests):
        assert run["benchmark"] == "pp512/tg128" and run["concurrency"] == 1
        assert run["ttft_ms"] == request["time_to_first_token_ms"]
        assert run["total_ms"] == pytest.approx(request["request_latency"] * 1000)
        # GuideLLM's inter-token latency is the decode time per token after the first: its inverse.
        assert run["decode_tokens_per_s"] == pytest.approx(1000 / request["inter_token_latency_ms"])
        assert run["prompt_tokens_per_s"] is None  # the server's prefill time: GuideLLM does not read it
    assert "prompt_tokens_per_s" not in document["summary"]["pp512/tg128"]


def test_a_vllm_bench_serve_result_imports_request_by_request(tmp_path):
    source = json.loads(VLLM.read_text())
    document = imported(VLLM, tmp_path)
    runs = document["runs"]
    assert [run["ttft_ms"] for run in runs] == pytest.approx([t * 1000 for t in source["ttfts"]])
    assert runs[0]["decode_tokens_per_s"] == pytest.approx(127 / sum(source["itls"][0]))
    assert runs[0]["extra"]["itl_ms"] == pytest.approx([gap * 1000 for gap in source["itls"][0]])
    assert all(run["prompt_tokens_per_s"] is None for run in runs)
    assert document["summary"]["pp512/tg128"]["ttft_ms"]["median"] == pytest.approx(source["median_ttft_ms"])


def test_a_vllm_result_without_its_details_is_refused_in_one_sentence(tmp_path):
    source = json.loads(VLLM.read_text())
    for field in ("input_lens", "output_lens", "start_times", "ttfts", "itls", "generated_texts", "errors"):
        del source[field]  # what vllm bench serve leaves out without --save-detailed
    path = tmp_path / "aggregate.json"
    path.write_text(json.dumps(source))
    done = velollm("history", "import", str(path), history=tmp_path / "history.db")
    assert done.returncode == 2
    assert "--save-detailed" in done.stderr and "Traceback" not in done.stderr


def test_guidellm_and_vllm_results_sit_beside_velollms_in_one_compare(tmp_path):
    history = tmp_path / "history.db"
    for path in (VELOLLM_RESULT, GUIDELLM, VLLM):
        assert velollm("history", "import", str(path), history=history).returncode == 0
    compared = velollm("compare", "1", "2", "3", "--json", history=history)
    assert compared.returncode == 0, compared.stderr
    pairs = json.loads(compared.stdout)["comparisons"]
    for pair in pairs:
        metrics = {row["metric"] for row in pair["rows"]}
        assert {"decode_tokens_per_s", "ttft_ms"} <= metrics and "prompt_tokens_per_s" not in metrics


def test_the_sniffers_claim_no_velollm_result():
    head = VELOLLM_RESULT.read_bytes()[:65536]
    assert not peers.sniff_guidellm(VELOLLM_RESULT, head)
    assert not peers.sniff_vllm_bench(VELOLLM_RESULT, head)
    assert peers.sniff_guidellm(GUIDELLM, GUIDELLM.read_bytes()[:65536])
    assert peers.sniff_vllm_bench(VLLM, VLLM.read_bytes()[:65536])
