"""Fault suite: numbers from servers. Non-finite (``1e999``, ``NaN``), overflowing (±1.7e308, 10^30) and
impossible (negative, more tokens than asked) numbers in llama-server's ``timings``, OpenAI's ``usage``
and Ollama's durations and counts.

Each is one sentence naming the field (the wire checks of contract/wire.py, shared by every backend),
or a flagged run; never a traceback. The ``--output`` file is never left ``running``: it says
``failed`` with the error, keeps the runs that finished (and only numbers ``compare`` accepts), and is
written even when the very first run fails. Statistics of values near the float range stay finite.
Each backend's own parser is tested in its plugin (tests/test_hostile_numbers.py there).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from velollm_core.contract.errors import BackendError
from velollm_core.contract.schemas import GenerationTiming
from velollm_core.contract.wire import NUMBER, check_timing, conform

VELOLLM = [sys.executable, "-m", "velollm_core"]
MODEL = "m"


# -- a server answering exact bytes, the n-th request of a path its n-th answer (the last repeats) ------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0]
        answers = self.server.routes.get(path)
        if answers is None:
            kind, body = "application/json", b'{"error": "not found"}'
            self.send_response(404)
        else:
            count = self.server.counts.setdefault(path, itertools.count())
            kind, body = answers[min(next(count), len(answers) - 1)]
            self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture
def exact_server():
    """``exact_server(routes)``: a server answering ``{path: [(content type, body), ...]}`` in order."""
    servers = []

    def start(routes: dict[str, list[tuple[str, bytes]]]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.routes, server.counts = routes, {}
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _json(doc: Any) -> tuple[str, bytes]:
    return "application/json", json.dumps(doc).encode()


def _sse(events: list[str]) -> tuple[str, bytes]:
    return "text/event-stream", "".join(f"data: {event}\n\n" for event in events).encode()


def _ndjson(lines: list[str]) -> tuple[str, bytes]:
    return "application/x-ndjson", "".join(f"{line}\n" for line in lines).encode()


def llamacpp_answer(timings: str = '{"predicted_per_second": 50.0, "prompt_per_second": 500.0}',
                    predicted: str = "4") -> tuple[str, bytes]:
    events = [json.dumps({"content": f" w{i}", "tokens_predicted": i + 1, "stop": False}) for i in range(4)]
    events.append(f'{{"content": "", "stop": true, "tokens_predicted": {predicted}, "tokens_evaluated": 5, '
                  f'"stop_type": "limit", "timings": {timings}}}')
    return _sse(events)


def openai_answer(usage: str = '{"prompt_tokens": 5, "completion_tokens": 4}', timings: str = "") -> tuple[str, bytes]:
    events = [json.dumps({"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]}) for i in range(4)]
    extra = f', "timings": {timings}' if timings else ""
    events.append('{"choices": [{"index": 0, "text": "", "finish_reason": "length"}]' + extra + "}")
    events.append(f'{{"choices": [], "usage": {usage}}}')
    events.append("[DONE]")
    return _sse(events)


def ollama_answer(final: str = '"eval_count": 4, "eval_duration": 40000000, "load_duration": 1000000') \
        -> tuple[str, bytes]:
    lines = [json.dumps({"model": MODEL, "response": f" w{i}", "done": False}) for i in range(4)]
    lines.append(f'{{"model": "{MODEL}", "response": "", "done": true, "done_reason": "length", '
                 f'"prompt_eval_count": 5, "prompt_eval_duration": 1000000, {final}}}')
    return _ndjson(lines)


META = {
    "llamacpp": {"/health": [_json({"status": "ok"})], "/props": [_json({"total_slots": 1, "build_info": "b1"})]},
    "openai": {"/v1/models": [_json({"object": "list", "data": [{"id": MODEL, "object": "model"}]})]},
    "ollama": {"/api/version": [_json({"version": "0.6.2"})], "/api/tags": [_json({"models": []})],
               "/api/ps": [_json({"models": []})], "/api/show": [_json({"details": {}, "model_info": {}})]},
}
GENERATE = {"llamacpp": "/completion", "openai": "/v1/completions", "ollama": "/api/generate"}
GOOD = {"llamacpp": llamacpp_answer(), "openai": openai_answer(), "ollama": ollama_answer()}


def bench(backend: str, url: str, out: Path, *args: str, db: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VELOLLM_HISTORY_DB": str(db) if db else "off"}
    command = [*VELOLLM, "benchmark", "--backend", backend, "--host", url, "--model", MODEL, "--suite",
               "short_completion", "--warmup", "0", "--output", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


def one_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def failed_file(out: Path, runs: int) -> dict:
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and data["error"], data["status"]
    assert len(data["runs"]) == runs
    return data


def compare_accepts(out: Path) -> None:
    proc = subprocess.run([*VELOLLM, "compare", str(out), str(out)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "VELOLLM_HISTORY_DB": "off"})
    assert proc.returncode == 0, proc.stderr


# -- the wire checks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**30, 2**63, 1.7e308, -1.7e308])
def test_a_non_finite_or_64_bit_overflowing_number_is_refused_naming_its_field(value):
    schema = {"timings": {"predicted_per_second": NUMBER, "predicted_n": int}}
    with pytest.raises(BackendError, match=r"^llama-server sent .* for timings\.predicted_per_second"):
        conform({"timings": {"predicted_per_second": value}}, schema, "llama-server")
    with pytest.raises(BackendError, match=r"for timings\.predicted_n"):
        conform({"timings": {"predicted_n": value}}, schema, "llama-server")
    # A field of another type is still dropped, as if the server had not said.
    assert conform({"timings": {"predicted_n": "x"}}, schema) == {"timings": {}}


@pytest.mark.parametrize("timing, fragment", [
    (GenerationTiming(completion_tokens=-3), "completion_tokens = -3"),
    (GenerationTiming(prompt_tokens=-1), "prompt_tokens = -1"),
    (GenerationTiming(completion_tokens=10**12), "claimed 1000000000000 completion tokens for a request of at most 64"),
    (GenerationTiming(decode_tokens_per_s=1.7e308), "decode_tokens_per_s = 1.7e+308"),
    (GenerationTiming(ttft_ms=-5.0), "ttft_ms = -5"),
    (GenerationTiming(load_ms=float("nan")), "load_ms = nan"),
])
def test_check_timing_refuses_what_no_generation_measures(timing, fragment):
    with pytest.raises(BackendError, match="^the server") as caught:
        check_timing(timing, server="the server", max_tokens=64)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_fewer_counted_tokens_than_streamed_chunks_is_flagged_not_refused():
    timing = check_timing(GenerationTiming(completion_tokens=2), server="Ollama", streamed=4, max_tokens=64)
    assert "counted 2 completion tokens but streamed 4" in timing.extra["counts_mismatch"]
    assert "counts_mismatch" not in check_timing(GenerationTiming(completion_tokens=4), server="s", streamed=4).extra


# -- through the CLI: one sentence, the file says failed --------------------------------------------------
BAD = {
    "llamacpp": [(llamacpp_answer(timings='{"predicted_per_second": 1e999}'), "timings.predicted_per_second"),
                 (llamacpp_answer(timings='{"prompt_per_second": NaN}'), "timings.prompt_per_second"),
                 (llamacpp_answer(timings='{"predicted_per_second": 1.7e308}'), "timings.predicted_per_second"),
                 (llamacpp_answer(predicted="-4"), "completion_tokens = -4")],
    "openai": [(openai_answer(usage='{"completion_tokens": 1000000000000}'), "completion tokens"),
               (openai_answer(usage='{"completion_tokens": 1000000000000000000000000000000}'),
                "usage.completion_tokens"),
               (openai_answer(timings='{"predicted_per_second": -1.7e308}'), "timings.predicted_per_second"),
               (openai_answer(usage='{"completion_tokens": -4}'), "completion_tokens = -4")],
    "ollama": [(ollama_answer('"eval_count": 4, "eval_duration": 40000000, "load_duration": 1e999'),
                "load_duration"),
               (ollama_answer('"eval_count": 4, "eval_duration": NaN'), "eval_duration"),
               (ollama_answer('"eval_count": 1000000000000000000000000000000, "eval_duration": 4'), "eval_count")],
}
CASES = [(backend, answer, fragment) for backend, cases in BAD.items() for answer, fragment in cases]


@pytest.mark.parametrize("backend, answer, fragment", CASES, ids=[f"{b}-{i}" for b, c in BAD.items()
                                                                  for i in range(len(c))])
def test_a_bad_number_in_the_first_run_is_one_sentence_and_a_failed_file(exact_server, tmp_path, backend, answer,
                                                                         fragment):
    url = exact_server({**META[backend], GENERATE[backend]: [answer]})
    out = tmp_path / "r.json"
    one_error(bench(backend, url, out, "--iterations", "2"), 1, fragment)
    failed_file(out, runs=0)


@pytest.mark.parametrize("backend", list(BAD))
def test_a_bad_number_after_good_runs_keeps_them_and_compare_takes_the_file(exact_server, tmp_path, backend):
    answer, fragment = BAD[backend][0]
    url = exact_server({**META[backend], GENERATE[backend]: [GOOD[backend], GOOD[backend], answer]})
    out, db = tmp_path / "r.json", tmp_path / "h.db"
    proc = bench(backend, url, out, "--iterations", "3", db=db)
    one_error(proc, 1, fragment)
    assert "results history" not in proc.stderr  # the history write blames nothing, it records
    failed_file(out, runs=2)
    from velollm_core.history.store import History

    with History(db) as history:
        assert [entry["status"] for entry in history.find()] == ["failed"]
    compare_accepts(out)


@pytest.mark.parametrize("backend", list(BAD))
@pytest.mark.parametrize("hostility", ["non_finite", "absurd_numbers"])
def test_every_backend_through_the_hostile_server_ends_in_one_sentence(hostile_server, tmp_path, backend, hostility):
    """Every number of every answer spoiled: the run fails in one sentence or completes with numbers
    compare accepts; the file never stays running."""
    from velollm_testkit.hostile import Stream

    def routes(answer: tuple[str, bytes]) -> Any:
        body = answer[1].decode()
        if answer[0] == "application/json":
            return json.loads(body)
        framing = "sse" if answer[0] == "text/event-stream" else "ndjson"
        lines = [line.removeprefix("data: ") for line in body.splitlines() if line.strip()]
        return Stream([line if line == "[DONE]" else json.loads(line) for line in lines], framing)

    server = hostile_server(hostility, {path: routes(answers[0]) for path, answers in
                                        {**META[backend], GENERATE[backend]: [GOOD[backend]]}.items()})
    out = tmp_path / "r.json"
    proc = bench(backend, server.url, out, "--iterations", "2")
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        compare_accepts(out)
        return
    one_error(proc, proc.returncode)
    if out.exists():
        data = json.loads(out.read_text())
        assert data["status"] == "failed" and data["error"]


# -- statistics near the float range ----------------------------------------------------------------
def test_statistics_of_values_near_the_float_range_stay_finite():
    import math

    from velollm_core.contract.stats import bootstrap_ratio_interval, percentile, summarize
    from velollm_core.history.summary import summarize_runs

    stats = summarize([1.7e308, -1.7e308, 1.7e308, 10**400])
    assert all(math.isfinite(v) for v in (stats.mean, stats.median, stats.stdev, stats.min, stats.max))
    assert stats.n == 3 and summarize([1.7e308, 1.7e308]).median == 1.7e308
    assert math.isfinite(percentile([-1.7e308, 1.7e308], 50))
    assert bootstrap_ratio_interval([1.0, 2.0], [3.0, 4.0]) is not None
    from velollm_core.contract.schemas import RunRecord

    runs = [RunRecord(benchmark="s", iteration=i, decode_tokens_per_s=v) for i, v in enumerate([1.7e308, -1.7e308])]
    summary = summarize_runs(runs)["s"]["decode_tokens_per_s"]
    json.dumps(summary.model_dump(), allow_nan=False)


# -- any backend, through the engine ----------------------------------------------------------------
def _run(tmp_path, iterations: int = 3, concurrency: int = 1):
    from velollm_core.bench.plan import BenchmarkPlan
    from velollm_core.bench.runner import BenchmarkRunner
    from velollm_core.bench.suites import get_suites

    plan = BenchmarkPlan(backend="fake", model="m", suites=get_suites(["short_completion"]), iterations=iterations,
                         warmup=0, options={"tokens_per_s": 100.0}, concurrency=[concurrency])
    runner = BenchmarkRunner(plan, output=tmp_path / "r.json")
    return runner


def test_a_third_party_backend_reporting_1_7e308_stops_the_run_with_its_finished_runs(fake_backend, tmp_path):
    """The engine checks every backend's timing (check_timing), not only the shipped clients' own."""
    speeds = iter([100.0, 1.7e308, -1.7e308])
    original = fake_backend.generate

    def generate(request, context):
        timing = original(request, context)
        timing.decode_tokens_per_s = next(speeds)
        return timing

    fake_backend.generate = generate
    runner = _run(tmp_path)
    with pytest.raises(BackendError, match=r"^fake reported decode_tokens_per_s = 1\.7e\+308"):
        runner.run()
    failed_file(tmp_path / "r.json", runs=1)
    compare_accepts(tmp_path / "r.json")



def test_a_bad_number_at_a_load_level_is_that_request_failed(fake_backend, tmp_path):
    """Under load one request's impossible count fails that request, named; the level goes on."""
    calls = itertools.count()
    original = fake_backend.generate

    def generate(request, context):
        timing = original(request, context)
        if next(calls) == 3:
            timing.completion_tokens = 10**12
        return timing

    fake_backend.generate = generate
    result = _run(tmp_path, iterations=3, concurrency=2).run()
    failed = [run for run in result.runs if run.failed]
    assert result.status == "complete" and len(failed) == 1 and len(result.runs) == 6
    assert "fake claimed 1000000000000 completion tokens for a request of at most" in failed[0].failed
    assert failed[0].completion_tokens is None
    compare_accepts(tmp_path / "r.json")
