"""Fault suite: what users hand ``velollm benchmark`` and ``history`` is distrusted, through the real CLI.

A dataset may be nested without end, endless (``/dev/zero``, a pipe), or hold text no server can be
sent; jobs and load levels that would share one result key are refused rather than merged; a rate
whose first arrival lies beyond any deadline, a non-finite option and a control character in a
server URL are the user's to fix (exit 2); a 200 HTML page is named for what it is; the history
says how many results matched and words a full disk as one. Every case ends in one sentence, no
traceback. Requests go to a closed port: a check that did not refuse would fail with exit 1.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from velollm_core.bench import workloads
from velollm_core.contract.errors import UserInputError

VELOLLM = [sys.executable, "-m", "velollm_core"]
CLOSED_PORT = "http://127.0.0.1:9"
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX files")
ROOT_ONLY = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")
# A regression that reads an endless file whole fails with MemoryError here instead of taking the machine.
MEMORY_CAP_BYTES = 3 << 30


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def velollm(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*VELOLLM, *args], check=False, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "VELOLLM_HISTORY_DB": "off", **(env or {})},
                          preexec_fn=_capped if os.name == "posix" else None)


def bench(*args: str, backend: str = "openai", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return velollm("benchmark", "--backend", backend, "--host", CLOSED_PORT, "--model", "m", "--warmup", "0",
                   "--iterations", "1", *args, env=env)


def one_sentence(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def jsonl(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# --- 6: datasets ----------------------------------------------------------------------------------


def test_a_dataset_line_nested_100000_deep_is_one_sentence(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"prompt": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    one_sentence(bench("--dataset", str(deep)), 2, "line 2", "nested deeper than")


def test_a_dataset_array_nested_100000_deep_is_one_sentence(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    one_sentence(bench("--dataset", str(deep)), 2, "nested deeper than")


@POSIX
def test_dev_zero_as_a_dataset_is_refused_after_a_bounded_read():
    proc = bench("--dataset", "/dev/zero")
    one_sentence(proc, 2, "--dataset /dev/zero")
    assert "MemoryError" not in proc.stderr


@POSIX
def test_an_endless_dataset_pipe_is_cut_at_the_size_limit_by_bytes_read(tmp_path, monkeypatch):
    """A pipe's size by stat is 0: what counts is what was read."""
    monkeypatch.setattr(workloads, "MAX_DATASET_BYTES", 1 << 16)
    fifo = tmp_path / "endless.jsonl"
    os.mkfifo(fifo)
    line = (json.dumps({"prompt": "again"}) + "\n").encode()

    def feed() -> None:  # 16 times the limit (a test must not fill memory if the bound is missing)
        try:
            with open(fifo, "wb") as pipe:
                pipe.writelines(line * 64 for _ in range(16 * (1 << 16) // len(line * 64) + 1))
        except (BrokenPipeError, OSError):
            pass  # the reader stopped early: what the test wants

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with pytest.raises(UserInputError, match="over 64 KiB"):
        workloads.load_dataset(fifo, 16)
    writer.join(10)
    assert not writer.is_alive()


def test_a_lone_surrogate_prompt_fails_at_load_not_mid_run(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "fine"}\n{"prompt": "broken \\ud800 text"}\n')
    one_sentence(bench("--dataset", str(data)), 2, "line 2", "surrogate")


def test_a_lone_surrogate_in_a_json_array_dataset_names_the_record(tmp_path):
    data = tmp_path / "bad.json"
    data.write_text('[{"prompt": "fine"}, {"messages": [{"role": "user", "content": "x \\udfff"}]}]')
    with pytest.raises(UserInputError, match="record 2"):
        workloads.load_dataset(data, 16)


def test_a_prompt_is_picked_in_constant_time_from_the_same_seeded_order(monkeypatch):
    """100k prompts: one shuffle per seed, not one per request; the order is the seeded shuffle it was."""
    prompts = tuple(f"p{i}" for i in range(100_000))
    dataset = workloads.Dataset("big", prompts, 16)
    shuffles = []
    real_shuffle = random.Random.shuffle
    monkeypatch.setattr(random.Random, "shuffle", lambda self, x: (shuffles.append(1), real_shuffle(self, x))[1])
    picked = [dataset.prompt(i, 42) for i in range(1000)]
    assert len(shuffles) == 1
    monkeypatch.setattr(random.Random, "shuffle", real_shuffle)
    order = list(range(len(prompts)))
    random.Random(42).shuffle(order)
    assert picked == [prompts[order[i]] for i in range(1000)]
    assert dataset.prompt(100_000 + 5, 42) == prompts[order[5]]  # the dataset repeats
    random.Random(7).shuffle(order := list(range(len(prompts))))
    assert dataset.prompt(3, 7) == prompts[order[3]]  # another seed, another order


# --- 14: one result key per job and level ---------------------------------------------------------


def test_two_datasets_with_one_file_name_are_refused_not_merged(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = jsonl(tmp_path / "a" / "x.jsonl", {"prompt": "short"})
    b = jsonl(tmp_path / "b" / "x.jsonl", {"prompt": "a much longer prompt than the other one"})
    one_sentence(bench("--dataset", str(a), "--dataset", str(b)), 2, "'x'", str(a), str(b))


def test_one_dataset_given_twice_is_refused(tmp_path):
    a = jsonl(tmp_path / "x.jsonl", {"prompt": "short"})
    one_sentence(bench("--dataset", str(a), "--dataset", str(a)), 2, "'x'")


def test_a_dataset_named_like_a_suite_is_refused_beside_that_suite(tmp_path):
    data = jsonl(tmp_path / "short_completion.jsonl", {"prompt": "mine"})
    one_sentence(bench("--dataset", str(data), "--suite", "short_completion"), 2, "'short_completion'",
                 "--suite short_completion")


def test_a_suite_named_twice_is_refused():
    one_sentence(bench("--suite", "code_generation", "--suite", "code_generation"), 2,
                 "--suite code_generation")


def test_a_workload_named_twice_is_refused():
    one_sentence(bench("--workload", "pp64/tg8", "--workload", "PP64/TG8"), 2, "'pp64/tg8'")


@pytest.mark.parametrize("args, fragment", [
    (("--concurrency", "2,2"), "--concurrency"),
    (("--concurrency", "1,4,1"), "--concurrency"),
    (("--profile", "constant", "--rate", "1,1"), "--rate"),
    (("--profile", "poisson", "--rate", "2,2.0001"), "--rate"),
], ids=["c2-twice", "seq-twice", "rate-twice", "rates-one-key"])
def test_load_levels_with_one_key_are_refused(args, fragment):
    one_sentence(bench(*args), 2, fragment)


def test_distinct_jobs_and_levels_still_run():
    """The checks refuse only what would merge: distinct jobs reach the (closed) server."""
    proc = bench("--suite", "short_completion", "--suite", "code_generation", "--concurrency", "1,2")
    assert proc.returncode == 1, proc.stderr
    assert "not reachable" in proc.stderr


# --- 16: rates, options, URLs, HTML, the history ----------------------------------------------------


def test_a_rate_whose_first_arrival_lies_beyond_a_day_is_refused():
    proc = bench("--profile", "constant", "--rate", "1e-300", "--requests", "3")
    one_sentence(proc, 2, "--rate 1e-300")


def test_a_rate_slower_than_the_duration_is_refused():
    one_sentence(bench("--profile", "poisson", "--rate", "0.01", "--duration", "10"), 2, "--rate 0.01",
                 "--duration 10")


@pytest.mark.parametrize("value", ["nan", "NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_request_option_is_a_user_error(value):
    one_sentence(bench("--option", f"request.max_tokens={value}"), 2, "request.max_tokens")


def test_an_escape_in_ollama_host_is_a_user_error():
    proc = velollm("benchmark", "--backend", "ollama", "--model", "m", "--iterations", "1", "--warmup", "0",
                   env={"OLLAMA_HOST": "http://127.0.0.1:9\x1b[2J"})
    one_sentence(proc, 2, "OLLAMA_HOST", "control characters")
    assert "\x1b" not in proc.stderr


@pytest.mark.parametrize("backend", ["openai", "llamacpp", "ollama"])
def test_an_html_page_is_named_as_not_an_llm_api(hostile_server, backend):
    server = hostile_server("html_page")
    proc = velollm("benchmark", "--backend", backend, "--host", server.url, "--model", "m", "--iterations", "1",
                   "--warmup", "0")
    one_sentence(proc, 1, "HTML page", "'Sign in'", "not an LLM API")
    assert "ended mid-way" not in proc.stderr and "JSONDecodeError" not in proc.stderr


@pytest.fixture
def models_then_pages():
    """An OpenAI model list on GET, a 200 HTML page on every POST (a proxy routing one path to a portal)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from velollm_testkit.hostile import HTML_PAGE

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode(),
                       "application/json")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(HTML_PAGE, "text/html; charset=utf-8")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_an_html_page_instead_of_a_stream_is_named(models_then_pages, concurrency):
    proc = velollm("benchmark", "--backend", "openai", "--host", models_then_pages, "--model", "m",
                   "--iterations", "1", "--warmup", "0", "--suite", "short_completion", "--concurrency", concurrency)
    assert "'Sign in'" in proc.stderr and "not an LLM API" in proc.stderr, proc.stderr
    assert proc.returncode == 1 and "ended mid-way" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_load_generator_names_an_html_page_too(models_then_pages):
    """The load generator's own stream client, which no backend's check stands before."""
    import asyncio

    from velollm_core.bench.loadgen import _stream
    from velollm_core.contract.deadline import Deadlines
    from velollm_core.contract.errors import BackendError
    from velollm_core.contract.streamclient import StreamCall, StreamClient

    class Tokens:
        def __init__(self) -> None:
            self.token_times: list[float] = []

        def feed(self, event, arrived):
            self.token_times.append(arrived)
            return False

        def finish(self, start, end):
            raise AssertionError("an HTML page is no stream to finish")

    call = StreamCall(url=f"{models_then_pages}/v1/completions", body={"prompt": "x"}, accumulator=Tokens(),
                      server=f"the server at {models_then_pages}")

    async def one() -> None:
        client = StreamClient(connect_timeout_s=5.0)
        try:
            await _stream(client, call, Deadlines(first_token_s=10.0, total_s=10.0))
        finally:
            await client.aclose()

    with pytest.raises(BackendError, match="HTML page titled 'Sign in'.*not an LLM API"):
        asyncio.run(one())


def test_an_html_answer_has_one_wording_for_every_client():
    """The load generator's own client (continuous streams) says it as the backends' clients do."""
    from velollm_testkit.hostile import HTML_PAGE

    from velollm_core.contract.pages import html_answer

    error = html_answer("the server at http://h", "text/html; charset=utf-8", HTML_PAGE)
    assert error is not None and "'Sign in'" in str(error) and "not an LLM API" in str(error)
    assert html_answer("s", "application/json", b"{}") is None
    assert html_answer("s", "text/event-stream", b"data: {}") is None


def _import(db: Path, *models: str, tmp_path: Path) -> None:
    for number, model in enumerate(models):
        doc = {"settings": {"backend": "fake", "model": model}, "runs": [], "summary": {}, "status": "complete",
               "started_at": f"2026-12-0{number + 1}T10:00:00+00:00",
               "environment": {"backend": {"name": "fake"}}}
        path = tmp_path / f"r{number}.json"
        path.write_text(json.dumps(doc))
        proc = velollm("history", "import", str(path), env={"VELOLLM_HISTORY_DB": str(db)})
        assert proc.returncode == 0, proc.stderr


def test_history_filter_says_how_many_matched(tmp_path):
    db = tmp_path / "history.db"
    _import(db, "alpha-1b", "beta-7b", "alpha-3b", tmp_path=tmp_path)
    env = {"VELOLLM_HISTORY_DB": str(db), "COLUMNS": "120"}
    matched = velollm("history", "--model", "alpha", env=env)
    assert matched.returncode == 0, matched.stderr
    assert "2 matching result(s), of 3 in" in matched.stdout, matched.stdout
    limited = velollm("history", "--model", "alpha", "--limit", "1", env=env)
    assert "1 of 2 matching result(s), of 3 in" in limited.stdout, limited.stdout
    as_json = json.loads(velollm("history", "--model", "alpha", "--json", env=env).stdout)
    assert (as_json["matched"], as_json["total"], len(as_json["results"])) == (2, 3, 2)
    everything = velollm("history", "--limit", "2", env=env)
    assert "2 of 3 result(s)" in everything.stdout, everything.stdout


@pytest.fixture
def tmpfs(tmp_path):
    points = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], check=False)


@ROOT_ONLY
def test_a_history_on_a_full_disk_is_called_full_not_unusable(tmpfs, tmp_path):
    from velollm_testkit.plugin import fill_filesystem

    disk = tmpfs("size=1m")
    db = disk / "history.db"
    _import(db, "alpha-1b", tmp_path=tmp_path)
    assert not (disk / "history.db-shm").exists()
    fill_filesystem(disk)
    proc = velollm("history", env={"VELOLLM_HISTORY_DB": str(db)})
    one_sentence(proc, 1, "free")
    assert "unusable" not in proc.stderr and "delete" not in proc.stderr.lower()
    (disk / ".velollm-filler").unlink()
    healthy = velollm("history", env={"VELOLLM_HISTORY_DB": str(db)})
    assert healthy.returncode == 0 and "alpha-1b" in healthy.stdout, healthy.stderr
