"""The telemetry session: sampler timing and overhead, bounded series, energy per level and per decode
phase, what is unknown said once (never 0), client vs server, and a real llama-server with --metrics."""

from __future__ import annotations

import itertools
import time

import pytest

from velollm_core.contract.metricnames import MetricNames
from velollm_core.contract.telemetry import DeviceReading, SensorUnavailable
from velollm_core.telemetry.sampler import BoundedSeries, PeriodicSampler
from velollm_core.telemetry.session import UNKNOWN, TelemetrySession, compare_client_server, merge_windows

# A backend that declares server metrics (none of its names matter where no server answers).
DECLARED = MetricNames(flavors={"llamacpp": "llama.cpp", "vllm": "vLLM", "sglang": "SGLang"})


class SteadyGpu:
    """A sensor on a device that draws ``watts`` all the time: its counter is watts x seconds, exactly."""

    name = "steady"

    def __init__(self, watts: float = 100.0, counter: bool = True) -> None:
        self.watts, self.counter, self.opened, self.closed = watts, counter, False, False

    def open(self) -> list[str]:
        self.t0, self.opened = time.perf_counter(), True
        return [] if self.counter else ["steady: GPU 0 reports no total energy counter (energy integrated from power)"]

    def read(self) -> list[DeviceReading]:
        elapsed = time.perf_counter() - self.t0
        return [DeviceReading("steady:0", "Steady GPU", "gpu", utilization_pct=50.0,
                              memory_used_bytes=1000 + int(elapsed * 10), memory_total_bytes=10_000,
                              power_w=self.watts, energy_j=self.watts * elapsed if self.counter else None)]

    def close(self) -> None:
        self.closed = True


class Absent:
    name = "absent"

    def open(self):
        raise SensorUnavailable("absent: no such sensor here: power unknown")

    def read(self):
        raise AssertionError("never read after a failed open")

    def close(self):
        raise AssertionError("never closed after a failed open")


def test_sampler_keeps_its_rate_stops_at_once_and_measures_itself():
    calls = []
    sampler = PeriodicSampler(calls.append, 0.02, "test")
    sampler.start()
    time.sleep(0.5)
    began = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - began < 0.1  # the Event wakes it: no waiting out a period
    assert 10 <= sampler.ticks <= 27  # 25 planned (a shared CPU wakes it late now and then)
    assert sampler.cpu_s < sampler.wall_s and sampler.wall_s == pytest.approx(0.5, abs=0.1)


def test_a_slow_read_skips_ticks_instead_of_firing_them_in_a_burst():
    calls = []

    def read(now):
        calls.append(now)
        if len(calls) == 1:
            time.sleep(0.1)  # five periods

    sampler = PeriodicSampler(read, 0.02, "slow")
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    assert sampler.late_ticks >= 4
    assert sampler.ticks <= 7  # 10 periods in 0.2 s, five of them spent in the first read
    assert calls[1] - calls[0] >= 0.1


def test_a_failing_read_ends_the_sampler_and_is_kept():
    def read(now):
        raise OSError("sensor gone")

    sampler = PeriodicSampler(read, 0.01, "broken")
    sampler.start()
    time.sleep(0.05)
    sampler.stop()
    assert isinstance(sampler.error, OSError) and sampler.ticks == 0


def test_bounded_series_halves_evenly_keeping_means_and_peaks():
    series = BoundedSeries(limit=8, peaks=("memory",))
    for i in range(1000):
        series.add({"t": float(i), "power": 10.0 if i % 2 else 20.0, "memory": i})
    columns = series.columns()
    assert len(columns["t"]) <= 9
    assert all(p == pytest.approx(15.0) for p in columns["power"])
    assert max(columns["memory"]) == 999
    spacing = {round(b - a) for a, b in itertools.pairwise(columns["t"][:-1])}
    assert len(spacing) == 1  # evenly spaced over the whole run


def test_merge_windows():
    assert merge_windows([(3, 4), (1, 2.5), (2, 3.5), (6, 5), (7, 8)]) == [(1, 4), (7, 8)]


def test_compare_flags_over_two_percent():
    out = compare_client_server({"prompt_tokens": 100, "completion_tokens": 1000, "other": None},
                                {"prompt_tokens": 103, "completion_tokens": 1015})
    assert out["prompt_tokens"] == {"client": 100, "server": 103, "diff_pct": 3.0, "disagree": True}
    assert out["completion_tokens"]["disagree"] is False and out["completion_tokens"]["diff_pct"] == 1.5
    assert "other" not in out


def _level(session: TelemetrySession, key: str, seconds: float, runs):
    session.begin_level(key)
    time.sleep(seconds)
    return session.end_level(key, runs=runs)


def test_energy_per_level_and_per_decode_phase_from_a_counter():
    said = []
    gpu = SteadyGpu(100.0)
    session = TelemetrySession(None, [gpu, Absent()], names=DECLARED, warn=said.append)
    session.start()
    # two requests: decode from 0.1 s to 0.4 s and from 0.3 s to 0.5 s -> one 0.4 s decode phase
    runs = [{"prompt_tokens": 10, "completion_tokens": 30, "started_s": 0.0, "ttft_ms": 100, "ended_s": 0.4},
            {"prompt_tokens": 10, "completion_tokens": 10, "started_s": 0.2, "ttft_ms": 100, "ended_s": 0.5}]
    level = _level(session, "c2", 0.6, runs)
    result = session.finish()
    gpu_level = level["hardware"]["steady:0"]
    assert gpu_level["energy_j"] == pytest.approx(100 * level["duration_s"], rel=0.02)
    assert gpu_level["decode_energy_j"] == pytest.approx(40.0, rel=0.05)
    assert gpu_level["power_w"]["mean"] == pytest.approx(100.0, rel=0.02)
    assert gpu_level["energy_method"] == "counter" and gpu_level["samples"] >= 4
    assert gpu_level["memory_used_bytes"]["peak"] > gpu_level["memory_used_bytes"]["at_start"] >= 1000
    assert level["tokens"] == {"prompt_tokens": 20, "completion_tokens": 40, "window_output_tokens": 40}
    assert level["tokens_per_joule"]["gpu"]["end_to_end"] == pytest.approx(40 / (100 * level["duration_s"]), rel=0.02)
    assert level["tokens_per_joule"]["gpu"]["decode"] == pytest.approx(1.0, rel=0.05)
    # no CPU sensor and no server: unknown, never 0, and why said once
    assert level["energy_j"]["cpu"] == UNKNOWN and level["tokens_per_joule"]["cpu"]["end_to_end"] == UNKNOWN
    assert level["server"] == UNKNOWN and result["server"]["available"] is False
    assert said == result["why"] == ["absent: no such sensor here: power unknown",
                                     "server metrics: the backend exposes no Prometheus metrics endpoint"]
    assert gpu.closed
    series = result["series"]["devices"]["steady:0"]
    assert 4 <= len(series["t"]) <= 512 and set(series) == {"t", "utilization_pct", "memory_used_bytes", "power_w"}
    assert result["series"]["levels"][0]["key"] == "c2"
    assert result["sampler"]["hardware"]["cpu_per_s"] < 0.5


def test_sequential_runs_placed_when_they_end_and_a_measured_window():
    session = TelemetrySession(None, [SteadyGpu(200.0)], warn=None)
    session.start()
    session.begin_level("seq", workload="pp8/tg8")
    t0 = time.perf_counter()
    time.sleep(0.3)
    session.run_ended({"ttft_ms": 100.0, "total_ms": 300.0, "completion_tokens": 20})  # decode: last 0.2 s
    time.sleep(0.2)  # cool-down outside the window below
    level = session.end_level("seq", runs=[{"completion_tokens": 20, "prompt_tokens": 8}],
                              window=(t0, t0 + 0.3), window_tokens=30, other_requests=True)
    session.finish()
    gpu = level["hardware"]["steady:0"]
    assert level["workload"] == "pp8/tg8" and level["window_s"] == pytest.approx(0.3, abs=0.01)
    assert gpu["energy_j"] == pytest.approx(60.0, rel=0.05)  # 200 W over the 0.3 s window, not the 0.5 s level
    assert gpu["decode_energy_j"] == pytest.approx(40.0, rel=0.05)
    assert level["tokens"]["window_output_tokens"] == 30
    assert level["tokens_per_joule"]["gpu"]["end_to_end"] == pytest.approx(0.5, rel=0.05)


def test_energy_integrated_from_power_where_no_counter():
    session = TelemetrySession(None, [SteadyGpu(50.0, counter=False)], warn=None)
    session.start()
    level = _level(session, "seq", 0.5, [])
    session.finish()
    gpu_level = level["hardware"]["steady:0"]
    assert gpu_level["energy_method"] == "integrated power"
    assert gpu_level["energy_j"] == pytest.approx(50 * level["duration_s"], rel=0.05)
    assert gpu_level["decode_energy_j"] == UNKNOWN  # no run placed a decode phase
    assert level["tokens_per_joule"]["gpu"] == {"end_to_end": UNKNOWN, "decode": UNKNOWN}  # no tokens counted


def test_no_sensor_at_all_says_so_once_and_goes_on():
    said = []
    session = TelemetrySession("http://127.0.0.1:9/metrics", [Absent()], names=DECLARED, warn=said.append)
    session.start()
    level = _level(session, "seq", 0.05, [{"prompt_tokens": 5, "completion_tokens": 5}])
    _level(session, "c2", 0.05, [])
    result = session.finish()
    assert level["hardware"] == {} and level["energy_j"] == {"cpu": UNKNOWN}
    assert result["why"][0] == "absent: no such sensor here: power unknown"
    assert "no hardware sensor is readable" in result["why"][1]
    assert result["why"][2].startswith("server metrics: ConnectError")
    # On the console one line for the sensors (reasons in the result), one for the server; said once.
    assert said == ["no power sensor readable (absent): energy and tok/J unknown", result["why"][2]]


def test_an_endpoint_without_metrics_is_said():
    session = TelemetrySession("http://x/metrics", [], names=DECLARED, warn=None,
                               http_get=lambda url: "# nothing here\nfoo 1\n")
    session.start()
    result = session.finish()
    assert "none of the llama.cpp, vLLM or SGLang metrics" in result["server"]["why"]


def test_a_backend_declaring_no_metrics_is_not_scraped_and_nothing_is_said():
    said = []
    session = TelemetrySession("http://127.0.0.1:9/metrics", [SteadyGpu()], names=None, warn=said.append)
    session.start()
    result = session.finish()
    assert said == [] and result["server"]["available"] is False
    assert result["why"] == ["server metrics: the backend declares no server metrics"]
