"""Structured output and multi-turn conversations through the ``velollm`` CLI against the real
llama-server on the real Gemma 3 270M: ``--json-schema`` becomes llama-server's ``json_schema`` (a
grammar), so every answer must follow it; ``--turns`` goes to its chat endpoint, where each turn's
prompt holds the previous one and the server's prefix cache answers it (``timings.cache_n``).

Tool calls and reasoning have no real case here: this Gemma's chat template has no tools
(``/props`` says ``supports_tools: false``, and llama-server answers in prose) and it does not
think; both are tested against the mock (tests/test_workload_shapes.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.llamacpp

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def velollm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], check=False, capture_output=True,
                          text=True, timeout=600)


def test_every_answer_follows_the_json_schema(gemma, tmp_path):
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(SCHEMA))
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", str(gemma), "--suite", "short_completion",
                   "--iterations", "2", "--warmup", "0", "--json-schema", str(schema), "--natural-stop",
                   "--max-tokens", "64", "--option", "threads=2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for run in result["runs"]:
        assert run["json_valid"] is True, run["text"]
        assert set(json.loads(run["text"])) == {"name", "age"}
        assert run["completion_tokens"] < 64  # the grammar ends the answer with the JSON


def test_conversation_turns_reuse_the_servers_prefix_cache(gemma, tmp_path):
    proc = velollm("benchmark", "--backend", "llamacpp", "--model", str(gemma), "--suite", "short_completion",
                   "--iterations", "1", "--warmup", "0", "--turns", "3", "--max-tokens", "8",
                   "--option", "threads=2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    turns = result["levels"][0]["turns"]
    assert [row["turn"] for row in turns] == [1, 2, 3]
    assert turns[0]["prompt_tokens"] < turns[1]["prompt_tokens"] < turns[2]["prompt_tokens"]
    # The history is answered from the cache: most of the previous turn's prompt (llama-server evaluates
    # again from where the re-rendered history first differs, near the end of the previous prompt).
    assert turns[1]["cached_prompt_tokens"] >= 0.75 * turns[0]["prompt_tokens"]
    assert turns[2]["cached_prompt_tokens"] >= 0.75 * turns[1]["prompt_tokens"]
    assert turns[0]["cached_prompt_tokens"] < 0.5 * turns[0]["prompt_tokens"]  # a new conversation: unique
    assert all(run["turn"] is not None and run["text"] for run in result["runs"])
