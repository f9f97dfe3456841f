"""Exact-length prompts on the real llama-server with Gemma 3 270M: a load level's prompts, sized before
it starts at about one /tokenize round trip each, are counted by the server at exactly pp tokens."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_level_of_pp512_prompts_gets_512_prompt_tokens_each(gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "benchmark", "--backend", "llamacpp",
                           "--model", str(gemma), "--workload", "pp512/tg4", "--concurrency", "4",
                           "--requests", "8", "--warmup", "0", "--output", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    (level,) = data["levels"]
    assert (level["key"], level["completed"], level["failed"]) == ("c4", 8, 0)
    assert {run["prompt_tokens"] for run in data["runs"]} == {512}
    assert level["prompt_tokens"] == {"requested": 512, "reported_median": 512, "mismatch": False}
    # 12 prompts built (8 measured, one cool-down request per stream); Gemma counts each of the words
    # as one token after a space, so the words' counts take 2 round trips and each prompt 1.
    sizing = data["settings"]["prompt_sizing"]
    assert sizing["method"] == "tokenizer" and sizing["round_trips"] == 2 + 12
    assert level["client_cpu_ms_per_request"] > 0 and level["client_cpu_ms_per_token"] > 0
