"""Engine v2 end to end: synthetic workloads, fixed output length, continuous concurrency, open-loop
rates, sweeps, failures and a dying server, through the real backends' clients against the loopback
mock LLM server (velollm_testkit.mock in its own process: real sockets, real streams)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading

import pytest
from velollm_testkit.mock import mock_llm

from velollm_core.bench.levels import find_knee, parse_slo
from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.workloads import PromptBuilder, Workload, build_prompts, parse_workload
from velollm_core.contract.errors import BackendError, UserInputError


def velollm(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


# --- workloads and prompts ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("pp512/tg128", Workload(512, 128)), ("pp512", Workload(512, 1)), ("tg128", Workload(8, 128)),
    ("pp512/tg128@d4096", Workload(512, 128, 4096)), ("PP64/TG8", Workload(64, 8)),
])
def test_workload_names_parse_as_llama_bench_writes_them(text, expected):
    assert parse_workload(text) == expected
    assert parse_workload(expected.name) == expected


@pytest.mark.parametrize("text", ["", "pp", "512", "pp1/tg1", "pp512/tg0", "pp512tg", "pp9999999", "d4096"])
def test_bad_workloads_are_user_errors(text):
    with pytest.raises(UserInputError, match="workload"):
        parse_workload(text)


def _tokenizer(calls: list[int]):
    """A BOS plus one token per three characters: words of 1-4 tokens, so a count must be corrected."""
    def tokenize(text: str) -> list[int]:
        calls.append(1)
        return [1] + [hash(word[i:i + 3]) for word in text.split() for i in range(0, len(word), 3)]
    return tokenize


@pytest.mark.parametrize("n", [2, 9, 64, 511, 512, 2048])
def test_prompts_have_the_exact_token_count_and_are_unique(n):
    calls: list[int] = []
    builder = PromptBuilder(_tokenizer(calls))
    prompts = build_prompts(Workload(n, 8), builder, 5, seed=1)
    assert [len(builder.tokenize(p.text)) for p in prompts] == [n] * 5
    if n > 8:
        assert len({p.text.split()[0:4].__repr__() for p in prompts}) == 5  # unique from the first words
    shared = build_prompts(Workload(n, 8), builder, 3, seed=1, shared=True)
    assert len({p.text for p in shared}) == 1


def test_depth_prompts_extend_their_primed_context():
    builder = PromptBuilder(_tokenizer([]))
    (prompt,) = build_prompts(Workload(32, 8, depth=100), builder, 1, seed=3)
    assert prompt.text.startswith(prompt.depth_text)
    assert (len(builder.tokenize(prompt.depth_text)), len(builder.tokenize(prompt.text))) == (100, 132)


def test_calibrated_prompts_follow_the_servers_counts():
    builder = PromptBuilder(None)
    builder.calibrate(lambda text: 1 + 2 * len(text.split()), random.Random(0))  # two tokens a word
    text, _ = builder.build(201, random.Random(1))
    assert 1 + 2 * len(text.split()) == 201
    with pytest.raises(UserInputError, match="do not grow"):
        PromptBuilder(None).calibrate(lambda text: 7, random.Random(0))


def test_slo_and_knee():
    assert parse_slo("ttft_ms=500, tpot_ms=50") == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    for bad in ("ttft=5", "ttft_ms=-1", "ttft_ms", "tpot_ms=x"):
        with pytest.raises(UserInputError, match="--slo"):
            parse_slo(bad)
    levels = [{"key": f"rate{r}", "workload": "w", "output_throughput": tput, "e2el_ms": {"median": lat}}
              for r, tput, lat in ((1, 100, 1000), (2, 200, 1010), (4, 260, 2500), (8, 270, 9000))]
    assert find_knee(levels)["knee"] == "rate2"


# --- against the mock server, through the real backends ------------------------------------------


@pytest.fixture(scope="module")
def mock():
    with mock_llm(ttft_ms=20, itl_ms=4, output_tokens=6) as server:
        yield server


def plan(backend: str, mock, **fields) -> BenchmarkPlan:
    defaults = {"backend": backend, "model": "velollm-mock", "suites": [], "host": mock.url, "iterations": 2,
                "warmup": 1, "natural_stop": False, "workloads": [Workload(64, 16)]}
    return BenchmarkPlan(**{**defaults, **fields})


@pytest.mark.parametrize("backend", ["llamacpp", "openai"])
def test_continuous_concurrency_with_exact_counts(backend, mock, tmp_path):
    out = tmp_path / "r.json"
    result = BenchmarkRunner(plan(backend, mock, concurrency=[1, 8], requests=24, slo={"ttft_ms": 10_000}),
                             output=out).run()
    seq, c8 = result.levels
    assert (seq["key"], c8["key"], c8["completed"], c8["failed"], c8["max_concurrency"]) == ("seq", "c8", 24, 0, 8)
    runs = [r for r in result.runs if r.level == "c8"]
    # Fixed output length past the mock's EOS at 6 tokens; the prompt exactly as built, by the server's count.
    assert {r.completion_tokens for r in result.runs} == {16} and not any(r.short_output for r in result.runs)
    assert c8["prompt_tokens"] == {"requested": 64, "reported_median": 64, "mismatch": False}
    assert len({r.text for r in runs}) >= 1 and all(r.ended_s > r.started_s >= 0 for r in runs)
    assert c8["itl_ms"]["n"] == 24 * 15 and c8["goodput"]["share"] == 1.0
    assert c8["output_throughput"] > seq["output_throughput"]  # eight streams at once, no slot limit
    assert json.loads(out.read_text())["levels"][1]["key"] == "c8"


def test_natural_stop_and_short_outputs_are_flagged(mock):
    natural = BenchmarkRunner(plan("openai", mock, natural_stop=True, iterations=1)).run()
    assert {r.completion_tokens for r in natural.runs} == {6} and not any(r.short_output for r in natural.runs)
    # Ollama has no ignore_eos: a fixed length asked of it stops at the model's EOS, and is flagged.
    fixed = BenchmarkRunner(plan("ollama", mock, iterations=1, workloads=[], suites=_suite())).run()
    assert all(r.short_output for r in fixed.runs) and fixed.levels[0]["short_outputs"] == 1


def _suite():
    from velollm_core.bench.suites import SUITES

    return [SUITES["short_completion"]]


@pytest.mark.parametrize(("profile", "backend"), [("constant", "llamacpp"), ("poisson", "llamacpp"),
                                                   ("poisson", "openai"), ("constant", "ollama")])
def test_open_loop_rates(profile, backend, mock):
    result = BenchmarkRunner(plan(backend, mock, profile=profile, rates=[20.0, 40.0], requests=20)).run()
    assert [lv["key"] for lv in result.levels] == [f"{'rate' if profile == 'constant' else 'poisson'}{r}"
                                                   for r in (20, 40)]
    for level in result.levels:
        assert (level["completed"], level["failed"], level["rate"]) == (20, 0, float(level["key"].lstrip("ratepoisn")))
        assert level["request_throughput"] > 0 and level["max_concurrency"] >= 1


@pytest.mark.parametrize("backend", ["openai", "ollama"])
def test_sweep_finds_a_knee(backend, tmp_path):
    with mock_llm(ttft_ms=10, itl_ms=4, slots=2) as server:  # two slots: more streams only queue
        result = BenchmarkRunner(plan(backend, server, profile="sweep", max_concurrency=8, requests=12,
                                      warmup=0)).run()
    keys = [lv["key"] for lv in result.levels]
    assert keys[:2] == ["c1", "c8"] and len(keys) >= 5 and all(k.startswith("rate") for k in keys[2:])
    assert result.sweep["knee"] in keys and "power" in result.sweep["why"]


def test_failed_requests_are_counted_with_reasons():
    with mock_llm(ttft_ms=5, itl_ms=2, fail_every=3) as server:
        result = BenchmarkRunner(plan("llamacpp", server, concurrency=[4], requests=12, warmup=0)).run()
    (level,) = result.levels
    assert level["failed"] >= 3 and level["completed"] + level["failed"] == 12
    (reason,) = level["failures"]
    assert "HTTP 503" in reason


def test_a_server_dying_mid_level_ends_it_with_a_message_and_keeps_finished_runs(tmp_path):
    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=5, itl_ms=20, output_tokens=400) as server:
        runner = BenchmarkRunner(plan("llamacpp", server, concurrency=[4], requests=400, warmup=0,
                                      workloads=[Workload(16, 20)]), output=out)
        threading.Timer(3.0, server.proc.kill).start()
        with pytest.raises(BackendError, match="stopped answering during level c4"):
            runner.run()
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and "stopped answering" in data["error"]
    finished = [r for r in data["runs"] if r["failed"] is None]
    assert finished and all(r["completion_tokens"] == 20 for r in finished)


def test_datasets_jsonl_and_sharegpt(mock, tmp_path):
    from velollm_core.bench.workloads import load_dataset

    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text('{"prompt": "What is a cache?"}\n\n{"messages": [{"role": "system", "content": "Be brief."}, '
                     '{"role": "user", "content": "Name a river."}]}\n')
    share = tmp_path / "share.json"
    share.write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hello there"},
                                                    {"from": "gpt", "value": "Hi"}]}, {"id": 3}]))
    assert load_dataset(jsonl, 8).prompts == ("What is a cache?", "Name a river.")
    assert load_dataset(share, 8).prompts == ("Hello there",)
    result = BenchmarkRunner(plan("openai", mock, workloads=[], datasets=[load_dataset(jsonl, 8)],
                                  concurrency=[2], requests=4, warmup=0)).run()
    (level,) = result.levels
    assert (level["workload"], level["completed"]) == ("mine", 4)
    assert {r.completion_tokens for r in result.runs} == {8}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    for path, message in ((bad, "line 2 is not JSON"), (tmp_path / "none.jsonl", "no such file"),
                          (share.with_name("empty.json"), "holds no prompt")):
        if message == "holds no prompt":
            path.write_text("[]")
        with pytest.raises(UserInputError, match=message):
            load_dataset(path, 8)


# --- the CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--profile", "poisson"], "needs --rate"),
    (["--rate", "2"], "--rate goes with --profile constant"),
    (["--profile", "poisson", "--rate", "2", "--workload", "pp8/tg4@d64"], "open-loop"),
    (["--workload", "pp8x"], "is not of the form"),
    (["--slo", "ttft=3"], "--slo"),
    (["--rate", "0", "--profile", "constant"], "positive"),
])
def test_cli_refuses_bad_load_settings(args, message, mock):
    proc = velollm("benchmark", "--backend", "openai", "--host", mock.url, "--model", "velollm-mock", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_workload_table_and_json(mock, tmp_path):
    out = tmp_path / "r.json"
    history = {"VELOLLM_HISTORY_DB": str(tmp_path / "history.db")}
    proc = velollm("benchmark", "--backend", "openai", "--host", mock.url, "--model", "velollm-mock",
                   "--workload", "pp32/tg8", "--concurrency", "1,4", "--requests", "8", "--output", str(out),
                   env=history)
    assert proc.returncode == 0, proc.stderr
    listed = velollm("history", "--json", env=history)
    assert listed.returncode == 0 and "velollm-mock" in listed.stdout  # every finished benchmark is recorded
    assert "load levels" in proc.stdout and "prompt tokens as requested" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    data = json.loads(out.read_text())
    assert data["settings"]["output_length"] == "fixed" and data["settings"]["workloads"] == ["pp32/tg8"]
    assert [lv["key"] for lv in data["levels"]] == ["seq", "c4"]


def test_telemetry_stops_while_the_server_still_runs():
    """The scraper ends with the last level, not after the backend's server is stopped (which it then
    counted as failed scrapes)."""
    with mock_llm(ttft_ms=5, itl_ms=2, output_tokens=6) as server:
        runner = BenchmarkRunner(plan("llamacpp", server, concurrency=[2], requests=4, warmup=0), telemetry=True)
        at_close = []
        runner.context.resources.callback(lambda: at_close.append(runner.telemetry))  # where a server stops
        result = runner.run()
    assert at_close == [None]
    assert result.telemetry["server"]["available"] and result.telemetry["server"]["scrape_failures"] == 0
