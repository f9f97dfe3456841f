"""The load generator past one process: a level cut into worker shares (streams, arrival schedule),
run by worker processes against the test kit's mock server, samples merged; a worker killed mid-level;
SIGTERM stopping every worker; the client's own check of itself. Ray's side is tests/test_loadgen_ray.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
from velollm_testkit.mock import mock_llm

from velollm_core.bench.loadgen import LevelRun, Outcome
from velollm_core.bench.profiles import LevelSpec
from velollm_core.bench.workers import (
    CLIENT_LATE_MS,
    STREAMS_PER_WORKER,
    LevelWorkers,
    arrival_offsets,
    choose_workers,
    client_check,
    deal,
    split_level,
)
from velollm_core.contract import backends
from velollm_core.contract.deadline import Deadlines
from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import BenchmarkContext, GenerationRequest
from velollm_core.contract.streamclient import StreamCall


def _calls(n: int) -> list[StreamCall]:
    return [StreamCall(url=f"http://127.0.0.1:9/{i}", body={"i": i}, accumulator=None) for i in range(n)]


# --- the cut ------------------------------------------------------------------------------------------


def test_deal_splits_in_proportion_and_sums_exactly():
    assert deal(10, [1, 1, 1]) == [4, 3, 3] or sorted(deal(10, [1, 1, 1])) == [3, 3, 4]
    assert sum(deal(1000, [3, 2])) == 1000 and deal(1000, [3, 2]) == [600, 400]
    assert deal(0, [1, 1]) == [0, 0]


def test_a_closed_loop_level_is_dealt_by_streams_and_every_request_goes_once():
    spec = LevelSpec("c5", "concurrent", concurrency=5, requests=20, warmup=5)
    shares = split_level(spec, _calls(30), [None] * 30, 2, Deadlines())
    assert [s.spec.concurrency for s in shares] == [3, 2]
    assert sorted(i for s in shares for i in s.indices) == list(range(30))
    assert sum(s.spec.warmup for s in shares) == 5 and sum(s.spec.requests for s in shares) == 20
    assert [s.spec.requests for s in shares] == [12, 8]  # measured requests in proportion to the streams
    for share in shares:  # each share: its warm-ups, then its measured requests, then cool-down
        kinds = [0 if i < 5 else 1 if i < 25 else 2 for i in share.indices]
        assert kinds == sorted(kinds)
    # No more shares than streams.
    assert len(split_level(LevelSpec("c1", "concurrent", concurrency=1, requests=4), _calls(5), [None] * 5, 4,
                           Deadlines())) == 1


@pytest.mark.parametrize("profile", ["poisson", "constant"])
def test_an_open_loop_schedule_is_dealt_round_robin_and_together_is_the_one_process_schedule(profile):
    spec = LevelSpec("r50", profile, rate=50.0, requests=200, warmup=10, max_concurrency=64, seed=7)
    total = 230
    shares = split_level(spec, _calls(total), [None] * total, 3, Deadlines())
    one_process = arrival_offsets(spec, total)
    merged = sorted((offset, i) for s in shares for offset, i in zip(s.spec.profile.offsets, s.indices, strict=True))
    assert [i for _, i in merged] == list(range(total))
    assert [o for o, _ in merged] == one_process  # the same arrival times: the split keeps the process
    assert sum(s.spec.max_concurrency for s in shares) == 64
    assert sum(s.spec.requests for s in shares) == 200
    # The rate of the whole schedule is the level's (Poisson: its mean gap 1/rate, within noise).
    mean_gap = one_process[-1] / (total - 1)
    assert abs(mean_gap - 1 / 50) < (0.004 if profile == "poisson" else 1e-9)


def test_the_default_workers_follow_the_streams_and_the_cores():
    assert choose_workers(None, 64, streaming=True, cores=2)[0] == 1
    count, why = choose_workers(None, 1000, streaming=True, cores=2)
    assert count == 2 and "1000 streams" in why
    assert choose_workers(None, 1000, streaming=True, cores=16)[0] == -(-1000 // STREAMS_PER_WORKER)
    assert choose_workers(3, 8, streaming=True, cores=2) == (3, "--workers 3")
    assert choose_workers(None, 8, streaming=True, nodes=2)[0] == 2  # a cluster: one per node at least
    assert choose_workers(None, 1000, streaming=False)[0] == 1
    with pytest.raises(UserInputError, match="threads in one process"):
        choose_workers(2, 8, streaming=False)
    with pytest.raises(UserInputError, match="--cluster: this backend streams through threads"):
        choose_workers(None, 8, streaming=False, cluster=True)


def test_the_client_flags_itself_when_its_loop_lags_or_its_requests_leave_late():
    def run(late_ms: float, lag_ms: float) -> LevelRun:
        outcomes = [Outcome(i, True, 0.0, 1.0, scheduled=0.0, sent=late_ms / 1000) for i in range(100)]
        return LevelRun(LevelSpec("c100", "concurrent", concurrency=100), 0.0, outcomes, 100, 0, "requests",
                        [lag_ms] * 50)

    on_time = client_check(run(1.0, 1.0), cpu_s=0.5, wall_s=10.0, workers=1)
    assert not on_time["limited"] and on_time["why"] is None
    late = client_check(run(CLIENT_LATE_MS + 30, 1.0), cpu_s=18.0, wall_s=10.0, workers=1, cores=2)
    assert late["limited"] and late["workers_needed"] == 4  # 1.8 cores busy, half a core per worker
    assert "requests left" in late["why"] and "--cluster" in late["why"]  # 4 > this host's 2 cores
    lagging = client_check(run(1.0, CLIENT_LATE_MS * 2), cpu_s=0.9, wall_s=1.0, workers=1, cores=8)
    assert lagging["limited"] and "event loop woke" in lagging["why"] and "--workers 2" in lagging["why"]
    # Late while hardly busy: the client waited for a core other work held; more workers would not help.
    starved = client_check(run(1.0, CLIENT_LATE_MS * 2), cpu_s=0.6, wall_s=2.0, workers=2, cores=2)
    assert starved["limited"] and starved["workers_needed"] is None
    assert "used only 0.30 cores: other work held this machine's 2 cores" in starved["why"]


def test_with_the_kernels_receive_times_loop_lag_counts_only_once_it_outlasts_a_token_gap():
    """Pieces stamped by the kernel keep their times however late the loop is, until a stream's next
    token comes before the loop reads the last: then its tokens share one read and one time."""
    def run(lag_ms: float, stamps: dict[str, int]) -> LevelRun:
        outcomes = [Outcome(i, True, 0.0, 1.0, scheduled=0.0, sent=0.0,
                            token_times=[0.05 + 0.1 * k for k in range(8)]) for i in range(50)]
        return LevelRun(LevelSpec("c50", "concurrent", concurrency=50), 0.0, outcomes, 50, 0, "requests",
                        [lag_ms] * 50, stamps)

    kernel = {"kernel": 400, "read": 0}
    shallow = client_check(run(60.0, kernel), cpu_s=0.5, wall_s=1.0, workers=1, cores=2)
    assert not shallow["limited"] and shallow["lag_limit_ms"] == 100.0  # the tokens' 100 ms gap
    deep = client_check(run(150.0, kernel), cpu_s=0.9, wall_s=1.0, workers=1, cores=2)
    assert deep["limited"] and "longer than the 100 ms token gap" in deep["why"]
    # The same lag where the loop stamps each piece as it reads it: every timestamp 60 ms late.
    read = client_check(run(60.0, {"kernel": 0, "read": 400}), cpu_s=0.9, wall_s=1.0, workers=1, cores=2)
    assert read["limited"] and read["lag_limit_ms"] == CLIENT_LATE_MS


# --- worker processes against the mock ----------------------------------------------------------------


def _velollm(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "velollm_core", "benchmark", *args], text=True, **popen)


def test_a_level_over_two_worker_processes_merges_every_sample(tmp_path):
    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=30, itl_ms=10, output_tokens=8) as mock:
        proc = _velollm("--backend", "llamacpp", "--host", mock.url, "--model", "velollm-mock", "--workload",
                        "pp16/tg8", "--profile", "concurrent", "--concurrency", "8", "--requests", "48", "--warmup",
                        "1", "--workers", "2", "--output", str(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        mock_stats = mock.stats()
    document = json.loads(out.read_text())
    level = document["levels"][0]
    assert level["completed"] == 48 and level["failed"] == 0
    assert len([r for r in document["runs"] if r.get("level") == "c8"]) == 48
    assert level["client"]["workers"] == 2 and level["client"]["lost"] == []
    assert len(level["client"]["worker_cpu_s"]) == 2 and all(cpu > 0 for cpu in level["client"]["worker_cpu_s"])
    assert level["client_cpu_s"] >= sum(level["client"]["worker_cpu_s"])  # every worker's CPU counted
    # Against the mock's own record: it finished at least every request the client counts as done
    # (8 warm-ups, 48 measured, the one-token request that starts the server; cool-down ones may be
    # cancelled), and each answer was 8 tokens.
    assert mock_stats["completed"] >= 8 + 48 + 1
    assert all(r["completion_tokens"] == 8 for r in document["runs"] if r.get("level") == "c8")
    # Latencies timed in the workers, percentiles once on all 48 requests: the mock's TTFT and gap.
    assert level["ttft_ms"]["n"] == 48 and 30 <= level["ttft_ms"]["median"] < 30 + 40
    assert 10 - 1 <= level["itl_ms"]["median"] < 10 + 5  # a late token shortens the gap after it
    assert "c8: 2 client workers (--workers 2)" in " ".join(stdout.split())


def _level(mock, requests: int, streams: int, tokens: int) -> tuple[LevelSpec, list, object]:
    context = BenchmarkContext(backend="llamacpp", model="velollm-mock", host=mock.url, max_concurrency=streams)
    backend = backends.get("llamacpp")
    backends.settings(backend, context)
    backend.start(context)
    requests_list = [GenerationRequest(benchmark="w", prompt=f"request {i}", max_tokens=tokens, ignore_eos=True,
                                       raw=True) for i in range(requests + streams)]
    spec = LevelSpec("c4", "concurrent", concurrency=streams, requests=requests)
    return spec, requests_list, (lambda request: backend.stream(request, context))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_worker_killed_mid_level_marks_the_level_and_keeps_its_finished_samples():
    with mock_llm(ttft_ms=5, itl_ms=20, output_tokens=10) as mock:
        spec, requests, prepare = _level(mock, requests=400, streams=4, tokens=10)
        seen: list[Outcome] = []
        workers = LevelWorkers(spec, requests, prepare=prepare, deadlines=Deadlines(), workers=2,
                               on_done=seen.append)

        def kill_one_after_some(outcome: Outcome) -> None:
            seen.append(outcome)
            if len(seen) == 12:
                pid = workers.reports[0].ready["pid"]
                psutil.Process(pid).kill()

        workers.on_done = kill_one_after_some
        run = workers.run()
        pids = [report.ready["pid"] for report in workers.reports]
    assert run.stopped_by == "worker lost"
    client = workers.client()
    assert len(client["lost"]) == 1 and "worker 0" in client["lost"][0] and "exit code -9" in client["lost"][0]
    assert len(run.outcomes) >= 12 and run.outcomes == seen  # every sample that came back is kept
    assert len([o for o in run.outcomes if o.measured]) < 400  # the level did not pretend to finish
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_every_worker(tmp_path, signum):
    out = tmp_path / "r.json"
    with mock_llm(ttft_ms=5, itl_ms=20, output_tokens=50) as mock:
        proc = _velollm("--backend", "llamacpp", "--host", mock.url, "--model", "velollm-mock", "--workload",
                        "pp16/tg50", "--profile", "concurrent", "--concurrency", "4", "--requests", "2000",
                        "--warmup", "0", "--workers", "2", "--output", str(out),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 90
            workers: list[psutil.Process] = []
            while len(workers) < 2 or mock.stats()["tokens"] < 100:  # the level is streaming
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the workers did not start streaming"
                workers = [child for child in psutil.Process(proc.pid).children()
                           if "velollm_core.bench.workers" in " ".join(child.cmdline())]
                time.sleep(0.2)
            proc.send_signal(signum)
            proc.wait(timeout=60)
            stderr = proc.stderr.read()
        finally:
            proc.kill()
            proc.stderr.close()
    assert proc.returncode == 128 + signum, stderr
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers left running: {alive}"
    document = json.loads(out.read_text())
    assert document["status"] == "interrupted"


def test_a_backend_whose_streams_keep_state_here_is_refused_workers_in_one_sentence():
    with mock_llm(ttft_ms=5, itl_ms=5, output_tokens=4) as mock:
        proc = _velollm("--backend", "ollama", "--host", mock.url, "--model", "velollm-mock", "--workload",
                        "pp16/tg4", "--profile", "concurrent", "--concurrency", "4", "--requests", "8", "--workers",
                        "2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "--workers: the ollama backend's streams keep state in this process" in stderr
    assert "--workers 1" in stderr and "Traceback" not in stderr
