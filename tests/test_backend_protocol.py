"""The Backend protocol as the engine drives it: lifecycle order, declared capabilities (never probed),
check() semantics, error semantics at sequential and load levels, warnings, the one wording of a cut
stream, the documented request fields and stream accumulator."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from velollm_core import api
from velollm_core.bench.loadgen import LevelDriver
from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.profiles import LevelSpec
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import get_suites
from velollm_core.bench.workloads import Workload
from velollm_core.contract import backends, plugins
from velollm_core.contract.backends import BackendBase, Capabilities
from velollm_core.contract.deadline import Deadlines
from velollm_core.contract.errors import BackendError, ServerGone, UserInputError
from velollm_core.contract.plugins import pm
from velollm_core.contract.schemas import BackendInfo, GenerationRequest, GenerationTiming
from velollm_core.contract.streamclient import StreamCall
from velollm_core.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parents[1]


class Recording(BackendBase):
    """Backend 'recording': writes down every call, in order; behaviour set per test."""

    name = "recording"

    def __init__(self, capabilities: Capabilities | None = None, *, refuse: bool = False,
                 fail_at: int | None = None, gone_at: int | None = None, short: bool = False,
                 warnings: tuple[str, ...] = ()) -> None:
        self.capabilities = capabilities or Capabilities()
        self.refuse, self.fail_at, self.gone_at, self.short = refuse, fail_at, gone_at, short
        self.warnings = list(warnings)
        self.calls: list[str] = []
        self.checked: list[GenerationRequest] = []
        self.generated = 0
        self.closed_resources = False
        self.lock = threading.Lock()

    @hookimpl
    def register_backends(self, register):
        register(self)

    def check(self, context, requests):
        self.calls.append("check")
        self.checked = list(requests)
        context.resources.callback(setattr, self, "closed_resources", True)
        if self.refuse:
            raise UserInputError("recording: refused")

    def start(self, context):
        self.calls.append("start")

    def describe(self, context):
        self.calls.append("describe")
        return BackendInfo(name=self.name, warnings=self.warnings)

    def generate(self, request, context):
        with self.lock:
            self.generated += 1
            n = self.generated
            if self.calls[-1] != "generate":
                self.calls.append("generate")
        if n == self.gone_at:
            raise ServerGone("recording: the server is gone")
        if n == self.fail_at:
            raise BackendError("recording: one request failed")
        tokens = max(1, request.max_tokens // 2) if self.short else request.max_tokens
        return GenerationTiming(ttft_ms=1.0, prompt_tokens=len(request.prompt.split()) + 1, completion_tokens=tokens, decode_tokens_per_s=100.0,
                                client_decode_tokens_per_s=100.0, total_ms=2.0)

    # Present but not declared: the engine must never call them.
    def tokenize(self, text, context):
        self.calls.append("tokenize")
        return list(range(len(text.split()) + 1))

    def metrics_url(self, context):
        self.calls.append("metrics_url")
        return "http://127.0.0.1:9/metrics"

    def close(self, context):
        self.calls.append("close")


@pytest.fixture
def register():
    registered = []

    def add(backend):
        plugins.load_plugins()
        pm.register(backend, name=f"recording-{len(registered)}")
        registered.append(backend)
        return backend

    yield add
    for backend in registered:
        if pm.is_registered(backend):
            pm.unregister(backend)


def plan(**kwargs):
    defaults = {"backend": "recording", "model": "m", "suites": get_suites(["short_completion"]), "iterations": 2,
                "warmup": 1}
    defaults.update(kwargs)
    return BenchmarkPlan(**defaults)


def test_lifecycle_runs_in_order_and_undeclared_capabilities_are_never_called(register, tmp_path):
    backend = register(Recording())
    said: list[str] = []
    BenchmarkRunner(plan(workloads=[Workload(16, 4)]), output=tmp_path / "r.json", warn=said.append).run()
    assert backend.calls[:4] == ["check", "start", "generate", "describe"]
    assert backend.calls[-1] == "close" and backend.calls.count("close") == 1
    assert "tokenize" not in backend.calls and "metrics_url" not in backend.calls  # not declared: not probed


def test_engine_and_load_generator_find_no_capability_by_getattr():
    for path in sorted((ROOT / "velollm_core" / "bench").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"getattr\([^)]*(tokenize|stream|metrics_url|speculative|verify_config)", text), path


def test_a_declared_capability_without_its_method_is_a_load_error(register):
    class Liar(BackendBase):
        name = "liar"
        capabilities = Capabilities(tokenize=True)
        tokenize = None

        @hookimpl
        def register_backends(self, register):
            register(self)

        def generate(self, request, context):
            raise AssertionError

    before = len(plugins.load_errors)
    register(Liar())
    assert backends.get("liar") is None
    assert "declares capabilities.tokenize but has no tokenize()" in plugins.load_errors[-1].error
    del plugins.load_errors[before:]


def test_declared_tokenizer_sizes_prompts(register, tmp_path):
    backend = register(Recording(Capabilities(tokenize=True)))
    result = BenchmarkRunner(plan(suites=[], workloads=[Workload(16, 4)]), output=tmp_path / "r.json").run()
    assert "tokenize" in backend.calls and result.settings["prompt_sizing"]["method"] == "tokenizer"


def test_check_gets_real_max_tokens_and_prompt_size_of_a_workload(register, tmp_path):
    backend = register(Recording())
    BenchmarkRunner(plan(suites=[], workloads=[Workload(512, 128, depth=1024)])).check()
    (request,) = backend.checked
    assert (request.max_tokens, request.prompt_tokens_target) == (128, 1024 + 512)


def test_resources_of_a_refusing_check_are_closed_and_nothing_starts(register, tmp_path):
    backend = register(Recording(refuse=True))
    with pytest.raises(UserInputError, match="recording: refused"):
        BenchmarkRunner(plan(), output=tmp_path / "r.json").run()
    assert backend.closed_resources and backend.calls == ["check"]
    assert not (tmp_path / "r.json").exists()


def test_a_generate_error_ends_a_sequential_run_but_is_one_failure_at_a_load_level(register, tmp_path):
    register(Recording(fail_at=2))
    with pytest.raises(BackendError, match="one request failed"):
        BenchmarkRunner(plan(warmup=0, iterations=3), output=tmp_path / "a.json").run()
    pm.unregister(name="recording-0")
    register(Recording(fail_at=4))
    result = BenchmarkRunner(plan(warmup=0, concurrency=[2], requests=6), output=tmp_path / "b.json").run()
    (level,) = result.levels
    assert level["failed"] == 1 and level["completed"] == 5
    assert level["failures"] == {"recording: one request failed": 1}


def test_server_gone_from_generate_ends_the_level(register, tmp_path):
    register(Recording(gone_at=3))
    with pytest.raises(BackendError, match="the server stopped answering during level c2"):
        BenchmarkRunner(plan(warmup=0, concurrency=[2], requests=20), output=tmp_path / "r.json").run()
    assert api.ServerGone is ServerGone and issubclass(ServerGone, api.BackendError)


def test_backend_warnings_and_a_missing_ignore_eos_are_said(register, tmp_path):
    register(Recording(short=True, warnings=("/api/ps: not answered",)))
    said: list[str] = []
    result = BenchmarkRunner(plan(natural_stop=False), output=tmp_path / "r.json", warn=said.append).run()
    assert "recording: /api/ps: not answered" in said
    assert any("cannot generate past the end-of-sequence token" in line for line in said)
    assert all(run.short_output for run in result.runs)
    assert result.environment.backend.warnings == ["/api/ps: not answered"]


def test_a_backend_without_metrics_gets_no_server_metrics_warning(register, tmp_path, capsys):
    register(Recording())
    result = BenchmarkRunner(plan(), output=tmp_path / "r.json", telemetry=True).run()
    err = capsys.readouterr().err
    assert "Prometheus" not in err and "server metrics" not in err
    assert result.telemetry["server"]["available"] is False


def test_request_fields_and_stream_types_are_documented():
    fields = GenerationRequest.model_fields
    for name in ("benchmark", "prompt", "max_tokens", "ignore_eos", "raw", "cache_prompt", "prompt_tokens_target"):
        assert fields[name].description, name
    assert "capabilities.ignore_eos=False" in fields["ignore_eos"].description
    timing_doc = GenerationTiming.__doc__
    assert "prompt_tokens_per_s`` is None when the runtime reports no prefill time" in timing_doc
    assert 'extra["itl_ms"]' in timing_doc
    for name in ("StreamCall", "Accumulator", "stream_cut", "Capabilities", "MetricNames", "ServerGone"):
        assert name in api.__all__, name
    order = api.Accumulator.__doc__
    assert order.index("feed(event, arrived)") < order.index("finish(start, end)") < order.index("token_times")
    protocol = " ".join(api.Backend.__doc__.split())
    assert "it may NOT make network calls" in protocol and "closed when it refuses" in protocol
    assert "context.lock" in api.Backend.__doc__


class _Counting:
    """An accumulator that counts content events; complete at {"done": true}."""

    def __init__(self) -> None:
        self.token_times: list[float] = []

    def feed(self, event, arrived):
        if event.get("done"):
            return True
        self.token_times.append(arrived)
        return False

    def finish(self, start, end):
        return GenerationTiming(completion_tokens=len(self.token_times), total_ms=(end - start) * 1000)


def _cutting_server() -> tuple[socket.socket, int]:
    """A server that answers every POST with three SSE events, then drops the connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                events = b"".join(b'data: {"t": %d}\n\n' % i for i in range(3))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10000\r\n\r\n"
                             + events)

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_a_cut_stream_is_worded_once_with_its_tokens_and_no_class_name():
    listener, port = _cutting_server()
    try:
        requests = [GenerationRequest(benchmark="b", prompt="p", max_tokens=8) for _ in range(2)]
        outcomes = []
        driver = LevelDriver(
            LevelSpec("c1", "concurrent", concurrency=1, requests=2), requests,
            prepare=lambda r: StreamCall(url=f"http://127.0.0.1:{port}/gen", body={}, accumulator=_Counting(),
                                         server="the cutting server"),
            generate=lambda r: pytest.fail("a streaming backend's generate is not called at a load level"),
            deadlines=Deadlines(), on_done=outcomes.append)
        driver.run()
    finally:
        listener.close()
    errors = {outcome.error for outcome in outcomes}
    assert errors == {str(api.stream_cut("the cutting server", 3))}
    (error,) = errors
    assert "after 3 token(s)" in error and "Error" not in error and "Incomplete" not in error


def test_the_cli_shows_a_backends_warnings_on_the_console(register, tmp_path):
    from click.testing import CliRunner

    from velollm_core.cli import cli

    register(Recording(warnings=("/api/ps: not answered",)))
    result = CliRunner().invoke(cli, ["benchmark", "--backend", "recording", "--model", "m", "--iterations", "1",
                                      "--warmup", "0", "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "warning: recording: /api/ps: not answered" in result.stderr


def test_a_plugin_may_take_over_a_whole_run_of_its_own_backend(register, tmp_path):
    backend = register(Recording())

    class WholeRun:
        @hookimpl
        def run_benchmark(self, backend, plan, runner):
            if backend != "recording":
                return None
            runner.result.settings["taken_over"] = plan.iterations
            return runner.result

    taker = WholeRun()
    pm.register(taker, name="whole-run")
    try:
        result = BenchmarkRunner(plan(), output=tmp_path / "r.json").run()
    finally:
        pm.unregister(taker)
    assert result.status == "complete" and result.settings["taken_over"] == 2
    assert backend.calls == ["check"]  # the engine's own path (trylast) never ran
