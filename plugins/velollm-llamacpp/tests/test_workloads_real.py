"""Engine v2 on the real llama-server with SmolLM2 135M: a fixed output length past the model's own
end of sequence, a pp/tg workload whose prompt the server counts exactly, and continuous streams."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from velollm_testkit.real import missing


@pytest.fixture(scope="module")
def smollm2(llama_server_bin):
    from velollm_core.api import UserInputError
    from velollm_core.contract.modelfiles import resolve_model_path

    try:
        return resolve_model_path("smollm2-135m")
    except UserInputError as exc:
        missing("SmolLM2 135M", f"{exc}; run ./scripts/setup")


def benchmark(tmp_path, *args: str) -> dict:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "benchmark", "--backend", "llamacpp",
                           "--model", "smollm2-135m", "--warmup", "0", "--output", str(out), *args],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_suites_produce_the_asked_number_of_tokens(smollm2, tmp_path):
    """SmolLM2 stops at its first token on these prompts (stop_reason eos); the default fixed output
    length generates every token asked, and --natural-stop restores the model's own stopping."""
    fixed = benchmark(tmp_path, "--suite", "short_completion", "--iterations", "1", "--max-tokens", "24")
    (run,) = fixed["runs"]
    assert run["completion_tokens"] == 24 and not run["short_output"] and run["decode_tokens_per_s"]
    natural = benchmark(tmp_path, "--suite", "short_completion", "--iterations", "1", "--max-tokens", "24",
                        "--natural-stop")
    assert natural["settings"]["output_length"] == "natural"
    assert natural["runs"][0]["completion_tokens"] <= 24


def test_pp512_tg128_reports_512_prompt_tokens_at_two_streams(smollm2, tmp_path):
    data = benchmark(tmp_path, "--workload", "pp512/tg16", "--concurrency", "1,2", "--iterations", "1",
                     "--requests", "2")
    assert {r["prompt_tokens"] for r in data["runs"]} == {512}
    assert {r["completion_tokens"] for r in data["runs"]} == {16}
    seq, c2 = data["levels"]
    assert seq["prompt_tokens"] == {"requested": 512, "reported_median": 512, "mismatch": False}
    assert (c2["key"], c2["completed"], c2["max_concurrency"]) == ("c2", 2, 2)
    assert data["settings"]["prompt_sizing"]["method"] == "tokenizer"


def test_depth_primes_the_cache_and_measures_the_prompt_on_top(smollm2, tmp_path):
    data = benchmark(tmp_path, "--workload", "pp64/tg8@d256", "--iterations", "1")
    (run,) = data["runs"]
    assert run["prompt_tokens"] == 256 + 64
    assert run["extra"]["cache_n"] >= 250  # the primed context came from the cache
