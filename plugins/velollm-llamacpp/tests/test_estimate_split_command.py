"""``velollm estimate MODEL --gpus N / --tensor-split / --split-mode / --main-gpu`` on the real bundled
Gemma 3 270M: one entry per GPU with its weights, KV cache and compute; bad splits are one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from velollm_testkit.real import missing

from velollm_core.api import UserInputError


def velollm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "COLUMNS": "80"})


@pytest.fixture
def gemma_file() -> str:
    from velollm_core.api import resolve_model_path

    try:
        return str(resolve_model_path("gemma3-270m"))
    except UserInputError as exc:
        missing("the bundled Gemma 3 270M", str(exc))


def test_two_gpus_at_3_to_1_each_get_their_layers_and_parts(gemma_file):
    proc = velollm("estimate", gemma_file, "--ctx", "4096", "--tensor-split", "3,1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    gpu0, gpu1, cpu = data["devices"]
    assert (gpu0["name"], gpu1["name"], cpu["name"]) == ("GPU0", "GPU1", "CPU")
    assert data["n_gpu_layers"] == 19 and (gpu0["layers"], gpu1["layers"]) == (15, 4)  # 18 layers + head
    assert data["split_mode"] == "layer"
    for device in (gpu0, gpu1):
        assert device["bytes"] == device["weights_bytes"] + device["kv_cache_bytes"] + device["compute_bytes"]
    assert gpu0["kv_cache_bytes"] + gpu1["kv_cache_bytes"] == data["kv_cache_bytes"]
    assert sum(d["bytes"] for d in data["devices"]) == data["total_bytes"]


def test_none_and_a_main_gpu_put_it_all_on_that_gpu(gemma_file):
    proc = velollm("estimate", gemma_file, "--ctx", "4096", "--gpus", "2", "--split-mode", "none", "--main-gpu", "1",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert [(d["name"], d["layers"]) for d in json.loads(proc.stdout)["devices"]] == [("GPU1", 19), ("CPU", 0)]


def test_the_table_names_each_gpus_parts_at_80_columns(gemma_file):
    proc = velollm("estimate", gemma_file, "--ctx", "4096", "--gpus", "2", "--split-mode", "row")
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    assert "on GPU0" in proc.stdout and "on GPU1" in proc.stdout and "weights" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--tensor-split", "3,x"], "numbers separated by commas"),
    (["--gpus", "2", "--tensor-split", "1,1,1"], "3 ratio(s) for 2 GPU(s)"),
    (["--gpus", "2", "--main-gpu", "2"], "--main-gpu 2 is not one of the 2 GPU(s)"),
])
def test_a_bad_split_is_one_line_and_exit_2(gemma_file, args, message):
    proc = velollm("estimate", gemma_file, *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
