"""velollm-gguf's memory estimate against what the real llama-server logs for the real test models (Gemma 3
with sliding-window layers, SmolLM2 without), f16 and q8_0, and ``velollm estimate`` on a real model.

Skipped where llama-server or the test models are absent, unless VELOLLM_REQUIRE_REAL=1 (CI sets
it), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from velollm_gguf import estimate_memory, read_summary
from velollm_testkit.real import missing

from velollm_core.contract.errors import UserInputError

pytestmark = pytest.mark.llamacpp


def velollm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def _test_model(name: str):
    from velollm_llamacpp.testmodels import TEST_MODELS

    try:
        return TEST_MODELS[name]()
    except UserInputError as exc:
        missing(f"the bundled test model {name}", str(exc))


@pytest.mark.parametrize(
    ("model", "kv_type", "parallel"),
    [
        ("gemma3-270m", "f16", 1),
        ("gemma3-270m", "q8_0", 1),
        ("gemma3-270m", "f16", 2),
        ("smollm2-135m", "f16", 1),
        ("smollm2-135m", "q8_0", 1),
    ],
)
def test_kv_estimate_matches_what_llama_server_logs(llama_server_bin, model, kv_type, parallel):
    from velollm_llamacpp.memlog import server_memory

    path = _test_model(model)
    ctx = 4096
    args = ["-c", str(ctx), "-np", str(parallel), "-ctk", kv_type, "-ctv", kv_type, "-fa", "on", "-t", "1"]
    logged, log = server_memory(llama_server_bin, path, args)
    estimate = estimate_memory(read_summary(path), ctx=ctx, cache_type_k=kv_type, parallel=parallel)
    assert logged.kv_caches, log[-2000:]
    assert abs(estimate.kv_cache_bytes - logged.kv_bytes) <= 0.10 * logged.kv_bytes
    if model == "gemma3-270m":
        # Two caches: the full-attention layers and the sliding-window layers, each matched.
        (full, full_cells, _), (swa, swa_cells, _) = logged.kv_caches
        assert (full_cells, swa_cells) == (estimate.kv.layout.cells, estimate.kv.layout.swa_cells)
        assert abs(estimate.kv.full_bytes - full) <= 0.10 * full
        assert abs(estimate.kv.swa_bytes - swa) <= 0.10 * swa
    # The compute figure is an allowance: it must cover what the server reserved, without doubling it.
    reserved = logged.total("compute") + logged.total("output")
    assert reserved <= estimate.compute_bytes <= 2 * reserved


def test_estimate_command_json_on_a_real_model(llama_server_bin):
    _test_model("gemma3-270m")
    proc = velollm("estimate", "gemma3-270m", "--ctx", "4096", "--kv-type", "q8_0", "--n-gpu-layers", "10",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("weights_bytes", "kv_cache_bytes", "compute_bytes", "total_bytes", "devices"):
        assert key in data
    assert [d["name"] for d in data["devices"]] == ["GPU0", "CPU"]
    assert data["kv_swa_cells"] == 1024 and data["cache_type_k"] == "q8_0"
