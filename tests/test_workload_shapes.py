"""Reasoning, structured output, tool calls, images, multi-turn conversations and trace replay, through
the ``velollm`` CLI on the three backends (openai, llamacpp, ollama) against the loopback mock, which
speaks each runtime's own fields for them; and every bad input refused in one sentence, exit 2.

The mock's "model" thinks ``--reasoning-tokens`` tokens before its answer where the request does not
switch thinking off, answers a schema with JSON that follows it, and calls the first tool with
arguments that follow its parameters; each image adds ``--image-tokens`` prompt tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from velollm_testkit.mock import mock_llm

from velollm_core.bench.answers import json_answer_valid, tool_calls_valid
from velollm_core.bench.shape import load_tools, make_png

BACKENDS = ("openai", "llamacpp", "ollama")
REASONING = 5
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def velollm(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def thinking_mock():
    with mock_llm(ttft_ms=5, itl_ms=3, output_tokens=12, reasoning_tokens=REASONING) as server:
        yield server


@pytest.fixture
def files(tmp_path):
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    return tmp_path


def bench(mock, backend: str, *args: str, tmp_path) -> dict:
    """One benchmark through the CLI; its --json document (also checked against the --output file)."""
    out = tmp_path / f"{backend}.json"
    env = {"VELOLLM_HISTORY_DB": str(tmp_path / "history.db")}
    proc = velollm("benchmark", "--backend", backend, "--host", mock.url, "--model", "velollm-mock",
                   "--iterations", "2", "--warmup", "0", *args, "--output", str(out), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["runs"] == json.loads(out.read_text())["runs"]
    return printed


@pytest.mark.parametrize("backend", BACKENDS)
def test_reasoning_split_and_time_to_first_answer(thinking_mock, backend, tmp_path):
    result = bench(thinking_mock, backend, "--suite", "short_completion", "--think", "on", "--natural-stop",
                   tmp_path=tmp_path)
    assert result["settings"]["think"] is True
    for run in result["runs"]:
        assert run["reasoning_tokens"] == REASONING
        assert run["answer_tokens"] == run["completion_tokens"] - REASONING > 0
        # Five thinking tokens come first: the answer starts after the first token of any kind.
        assert run["time_to_first_answer_ms"] >= run["ttft_ms"]
        assert run["no_answer"] is False
    summary = result["summary"]["short_completion"]
    assert summary["reasoning_tokens"]["median"] == REASONING and summary["time_to_first_answer_ms"]["n"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_thinking_off_is_sent_in_the_runtimes_own_field(thinking_mock, backend, tmp_path):
    result = bench(thinking_mock, backend, "--suite", "short_completion", "--think", "off", "--natural-stop",
                   tmp_path=tmp_path)
    for run in result["runs"]:
        assert run["reasoning_tokens"] is None and run["time_to_first_answer_ms"] == pytest.approx(run["ttft_ms"])


def test_an_answer_that_never_starts_is_flagged_not_averaged(thinking_mock, tmp_path):
    env = {"VELOLLM_HISTORY_DB": str(tmp_path / "history.db")}
    proc = velollm("benchmark", "--backend", "openai", "--host", thinking_mock.url, "--model", "velollm-mock",
                   "--suite", "short_completion", "--suite", "long_prompt", "--iterations", "2", "--warmup", "0",
                   "--think", "on", "--max-tokens", "4", "--output", str(tmp_path / "r.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert all(run["no_answer"] and run["time_to_first_answer_ms"] is None for run in result["runs"])
    assert result["summary"] == {}  # nothing averaged: every run thought through its budget
    assert "thought through the token budget without an answer" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    stored = velollm("history", "--json", env=env)  # the stored result keeps the flag
    assert stored.returncode == 0 and "velollm-mock" in stored.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_structured_output_is_checked_against_the_schema(thinking_mock, backend, files):
    result = bench(thinking_mock, backend, "--suite", "short_completion", "--json-schema",
                   str(files / "schema.json"), "--natural-stop", tmp_path=files)
    assert result["settings"]["json_schema"] == SCHEMA
    assert [run["json_valid"] for run in result["runs"]] == [True, True]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_schema_answer_ends_where_its_json_ends_without_natural_stop(thinking_mock, backend, files):
    # A fixed output length would pad the JSON with text past its end: no answer could be valid.
    result = bench(thinking_mock, backend, "--suite", "short_completion", "--json-schema",
                   str(files / "schema.json"), tmp_path=files)
    assert [run["json_valid"] for run in result["runs"]] == [True, True]
    assert result["settings"]["output_length"] == "natural"


@pytest.mark.parametrize("backend", BACKENDS)
def test_tool_calls_time_their_arguments_and_check_them(thinking_mock, backend, files):
    # Sequential (the backend's generate) and at two streams (its StreamCall through the load generator).
    result = bench(thinking_mock, backend, "--suite", "short_completion", "--tools", str(files / "tools.json"),
                   "--natural-stop", "--concurrency", "1,2", "--requests", "2", tmp_path=files)
    assert result["settings"]["tools"] == ["get_weather"]
    assert [run["level"] for run in result["runs"]] == [None, None, "c2", "c2"]
    for run in result["runs"]:
        assert [call["name"] for call in run["tool_calls"]] == ["get_weather"]
        assert json.loads(run["tool_calls"][0]["arguments"])["city"]
        assert run["tool_call_valid"] is True
        assert run["tool_args_ms"] >= run["time_to_first_answer_ms"] >= run["ttft_ms"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_are_sent_and_counted_as_prompt_tokens(thinking_mock, backend, tmp_path):
    # --think off on both: the same endpoint (chat where the runtime has one) with and without images.
    plain = bench(thinking_mock, backend, "--suite", "short_completion", "--max-tokens", "4", "--think", "off",
                  tmp_path=tmp_path)
    with_images = bench(thinking_mock, backend, "--suite", "short_completion", "--max-tokens", "4",
                        "--images", "2:24x16", "--think", "off", tmp_path=tmp_path)
    assert with_images["settings"]["images"] == {"count": 2, "width": 24, "height": 16}
    extra = [b["prompt_tokens"] - a["prompt_tokens"] for a, b in zip(plain["runs"], with_images["runs"])]
    assert extra == [2 * 64, 2 * 64]  # the mock's 64 tokens per image


@pytest.mark.parametrize("backend", BACKENDS)
def test_conversations_count_turns_and_concurrency_in_conversations(thinking_mock, backend, tmp_path):
    result = bench(thinking_mock, backend, "--suite", "short_completion", "--turns", "3", "--concurrency", "1,2",
                   "--requests", "2", "--max-tokens", "6", "--think", "off", "--think-time", "0.01",
                   tmp_path=tmp_path)
    assert result["settings"]["turns"] == 3
    sequential, concurrent = result["levels"]
    assert sequential["conversations"] == 2 and concurrent["conversations"] == 2
    assert concurrent["max_concurrency"] == 2 and concurrent["completed"] == 6
    runs = [run for run in result["runs"] if run["level"] is None]
    assert sorted((run["conversation"], run["turn"]) for run in runs) == [(c, t) for c in (1, 2) for t in (1, 2, 3)]
    turns = sequential["turns"]
    assert [row["turn"] for row in turns] == [1, 2, 3]
    if backend != "ollama":  # Ollama reports only the evaluated prompt tokens, never the cached ones
        # Each turn's prompt holds the one before it: the server answers that prefix from its cache.
        assert turns[0]["prompt_tokens"] < turns[1]["prompt_tokens"] < turns[2]["prompt_tokens"]
        assert turns[2]["cached_prompt_tokens"] >= turns[1]["prompt_tokens"] - 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_replay_arrives_on_its_scaled_timestamps_with_exact_lengths(thinking_mock, backend, tmp_path):
    lines = [{"timestamp": 0, "input_length": 40, "output_length": 5, "hash_ids": [1, 2]},
             {"timestamp": 200, "input_length": 80, "output_length": 3},
             {"timestamp": 500, "input_tokens": 20, "output_tokens": 8}]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = bench(thinking_mock, backend, "--trace", str(trace), "--time-scale", "0.5", tmp_path=tmp_path)
    assert result["settings"]["trace"] == {"name": "trace:trace.jsonl", "requests": 3, "time_scale": 0.5}
    runs = sorted(result["runs"], key=lambda run: run["started_s"])
    assert [(run["prompt_tokens"], run["completion_tokens"]) for run in runs] == [(40, 5), (80, 3), (20, 8)]
    starts = [run["started_s"] for run in runs]
    assert starts[1] == pytest.approx(0.1, abs=0.05) and starts[2] == pytest.approx(0.25, abs=0.05)
    assert [level["key"] for level in result["levels"]] == ["trace"]


@pytest.mark.parametrize(("args", "message"), [
    (["--json-schema", "{dir}/not-schema.json"], "is not a valid JSON Schema"),
    (["--json-schema", "{dir}/list.json"], "is not a JSON Schema"),
    (["--tools", "{dir}/not-tools.json"], "non-empty JSON list of OpenAI tool definitions"),
    (["--tools", "{dir}/nameless-tools.json"], "needs a function name"),
    (["--images", "1:0x64"], "each side must be 1 to"),
    (["--images", "two"], "is not of the form N or N:WxH"),
    (["--trace", "{dir}/backwards.jsonl"], "comes before the previous line's"),
    (["--trace", "{dir}/absurd.jsonl"], "is not a length a request can have"),
    (["--trace", "{dir}/trace.jsonl", "--time-scale", "-1"], "--time-scale"),
    (["--trace", "{dir}/trace.jsonl", "--profile", "concurrent"], "without --profile"),
    (["--turns", "2", "--workload", "pp16/tg4"], "--turns sends chat messages"),
    (["--turns", "2", "--profile", "poisson", "--rate", "2"], "--concurrency counts conversations"),
    (["--think-time", "1"], "give --turns 2 or more"),
])
def test_bad_input_is_one_sentence_and_exit_2_before_anything_starts(args, message, tmp_path):
    (tmp_path / "not-schema.json").write_text('{"type": "objekt"}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "not-tools.json").write_text('{"name": "f"}')
    (tmp_path / "nameless-tools.json").write_text('[{"type": "function", "function": {"parameters": {}}}]')
    (tmp_path / "backwards.jsonl").write_text('{"timestamp": 10, "input_length": 9, "output_length": 1}\n'
                                             '{"timestamp": 5, "input_length": 9, "output_length": 1}\n')
    (tmp_path / "absurd.jsonl").write_text('{"timestamp": 0, "input_length": 9000000000, "output_length": 1}\n')
    (tmp_path / "trace.jsonl").write_text('{"timestamp": 0, "input_length": 9, "output_length": 1}\n')
    given = [arg.format(dir=tmp_path) for arg in args]
    # No server answers at this address: the refusal comes before any connection is tried.
    proc = velollm("benchmark", "--backend", "openai", "--host", "http://127.0.0.1:9", "--model", "m", *given,
                   "--output", str(tmp_path / "never.json"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never.json").exists()


def test_answer_checks_catch_what_does_not_follow():
    assert json_answer_valid('{"name": "a", "age": 3}', SCHEMA)
    assert not json_answer_valid('{"name": "a", "age": "3"}', SCHEMA)  # wrong type
    assert not json_answer_valid('{"name": "a", "age": 3', SCHEMA)  # cut off
    good = [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    assert tool_calls_valid(good, TOOLS)
    assert not tool_calls_valid([], TOOLS)  # prose instead of a call
    assert not tool_calls_valid([{"name": "get_time", "arguments": "{}"}], TOOLS)
    assert not tool_calls_valid([{"name": "get_weather", "arguments": "{}"}], TOOLS)  # city is required
    assert not tool_calls_valid([{"name": "get_weather", "arguments": '{"city": '}], TOOLS)


def test_bare_tool_definitions_are_wrapped_and_images_are_real_pngs(tmp_path):
    import zlib

    path = tmp_path / "tools.json"
    path.write_text(json.dumps([{"name": "f", "parameters": {"type": "object"}}]))
    assert load_tools(path) == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    png = make_png(5, 3, seed=1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    idat = png.index(b"IDAT")
    length = int.from_bytes(png[idat - 4:idat], "big")
    assert len(zlib.decompress(png[idat + 4:idat + 4 + length])) == 3 * (1 + 5 * 3)  # rows of filter + RGB
    assert make_png(5, 3, seed=1) != make_png(5, 3, seed=2)


def test_report_shows_time_to_first_answer_and_validity(thinking_mock, files):
    import csv
    import io

    result = bench(thinking_mock, "openai", "--suite", "short_completion", "--tools", str(files / "tools.json"),
                   "--think", "on", "--natural-stop", tmp_path=files)
    assert result["runs"][0]["tool_call_valid"] is True
    saved = files / "openai.json"
    table = velollm("report", str(saved), "--format", "csv")
    assert table.returncode == 0, table.stderr
    row = next(r for r in csv.DictReader(io.StringIO(table.stdout)) if r["table"] == "suite")
    assert float(row["ttfa_ms_median"]) >= float(row["ttft_ms_median"]) > 0
    assert float(row["reasoning_tokens_median"]) == REASONING and float(row["tool_call_valid_share"]) == 1.0
    html = velollm("report", str(saved), "--output", str(files / "r.html"))
    assert html.returncode == 0, html.stderr
    assert "TTFA ms" in (files / "r.html").read_text()


def test_a_dataset_of_conversations_sends_its_own_user_turns(thinking_mock, tmp_path):
    long_turn = " ".join(["word"] * 60)
    record = {"conversations": [{"from": "human", "value": "Hello there."}, {"from": "gpt", "value": "Hi."},
                                {"from": "human", "value": long_turn}]}
    dataset = tmp_path / "chats.jsonl"
    dataset.write_text(json.dumps(record) + "\n")
    result = bench(thinking_mock, "openai", "--dataset", str(dataset), "--turns", "3", "--max-tokens", "4",
                   "--think", "off", tmp_path=tmp_path)
    turns = {row["turn"]: row["prompt_tokens"] for row in result["levels"][0]["turns"]}
    # Turn 2 carries the record's 60-word second user turn; turn 3 (past the record) a short follow-up.
    assert turns[2] - turns[1] > 60 and turns[3] - turns[2] < 20
