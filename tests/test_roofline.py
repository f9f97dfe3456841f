"""The decode roofline: bandwidth sources, the cached RAM measurement, and the engine's annotation of
every benchmark result from the bytes per token its backend reports (which must never fail a benchmark).
What a GGUF model reads per token is velollm-gguf's (libs/velollm-gguf/tests/test_roofline.py)."""

from __future__ import annotations

import pytest

from velollm_core.bench import roofline
from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.roofline import decode_bandwidth, max_decode_tokens_per_s
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import get_suites
from velollm_core.contract.backends import BackendBase
from velollm_core.contract.plugins import pm
from velollm_core.contract.schemas import (
    BackendInfo,
    CpuInfo,
    DecodeTraffic,
    GenerationTiming,
    GpuInfo,
    HardwareReport,
    MemoryInfo,
    ModelFacts,
    OsInfo,
)
from velollm_core.hookspecs import hookimpl

GIB = 2**30


def test_bytes_per_token_grows_with_context_and_stops_at_the_window():
    traffic = DecodeTraffic(weights_bytes=1000, resident_bytes=2000, kv_bytes_per_token=10,
                            window_kv_bytes_per_token=3, window_tokens=50)
    assert traffic.bytes_per_token() == 1000
    assert traffic.bytes_per_token(20) == 1000 + 20 * 10 + 20 * 3
    assert traffic.bytes_per_token(100) == 1000 + 100 * 10 + 50 * 3


def test_roofline_arithmetic():
    assert max_decode_tokens_per_s(100.0, 10**9) == pytest.approx(100.0)
    assert max_decode_tokens_per_s(3352.0, 4 * 10**9) == pytest.approx(838.0)


def hardware(gpus=()) -> HardwareReport:
    return HardwareReport(
        os=OsInfo(system="Linux", release="6", machine="x86_64"),
        cpu=CpuInfo(model="Test CPU", physical_cores=4, logical_cores=8),
        memory=MemoryInfo(total_bytes=32 * GIB, available_bytes=30 * GIB, used_bytes=2 * GIB),
        gpus=list(gpus),
    )


H100 = GpuInfo(vendor="nvidia", name="H100", memory_total_bytes=80 * GIB, bandwidth_gbps=3352.0, source="nvml")


@pytest.fixture
def fake_ram(monkeypatch, tmp_path):
    """RAM bandwidth 'measured' as 20 GB/s, counting calls; the cache in a temporary directory."""
    calls = []
    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(roofline, "measure_ram_bandwidth_gbps", lambda: calls.append(1) or 20.0)
    roofline._cached_ram_bandwidth.cache_clear()
    yield calls
    roofline._cached_ram_bandwidth.cache_clear()


def test_gpu_bandwidth_when_the_model_fits_else_measured_ram(fake_ram):
    assert decode_bandwidth(hardware([H100]), 10 * GIB).device == "gpu"
    assert decode_bandwidth(hardware([H100]), 100 * GIB).device == "cpu"
    assert decode_bandwidth(hardware([H100]), GIB, cpu_only=True).device == "cpu"
    cpu = decode_bandwidth(hardware(), GIB)
    assert (cpu.device, cpu.gbps) == ("cpu", 20.0)


def test_ram_bandwidth_is_measured_once_per_machine_and_cached_on_disk(fake_ram, tmp_path):
    first = roofline.ram_bandwidth(hardware())
    roofline._cached_ram_bandwidth.cache_clear()  # a new process: only the file remains
    second = roofline.ram_bandwidth(hardware())
    assert first[0] == second[0] == 20.0 and len(fake_ram) == 1
    assert (tmp_path / "roofline" / "ram-bandwidth.json").is_file()
    other = hardware()
    other.cpu.model = "Another CPU"
    roofline.ram_bandwidth(other)
    assert len(fake_ram) == 2
    roofline._cached_ram_bandwidth.cache_clear()
    roofline.ram_bandwidth(hardware())  # the first machine's entry survived the second's
    roofline.ram_bandwidth(other)
    assert len(fake_ram) == 2


def test_this_machines_ram_is_measured_for_real_and_cached(tmp_path, monkeypatch):
    """No fake: the copy benchmark runs on this machine, its figure is plausible for RAM, and a new
    process reads the same figure from the cache instead of measuring again."""
    import json

    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path))
    roofline._cached_ram_bandwidth.cache_clear()
    try:
        gbps, source = roofline.ram_bandwidth(hardware())
        roofline._cached_ram_bandwidth.cache_clear()  # a new process
        monkeypatch.setattr(roofline, "measure_ram_bandwidth_gbps", lambda: pytest.fail("measured twice"))
        assert roofline.ram_bandwidth(hardware())[0] == gbps
    finally:
        roofline._cached_ram_bandwidth.cache_clear()
    assert 0.5 < gbps < 5000 and source.startswith("measured copy benchmark")
    (entry,) = json.loads((tmp_path / "roofline" / "ram-bandwidth.json").read_text())["machines"].values()
    assert entry["gbps"] == gbps


def test_copy_benchmark_measures_something_plausible():
    gbps = roofline._copy_gbps(1, size=8 * 2**20, repeats=2)
    assert 0.1 < gbps < 10_000


# --- the engine's annotation -----------------------------------------------------------------------


# What the tiny model of libs/velollm-gguf/tests/test_roofline.py reads per token (its test checks the figure):
# a layer, an untied head, one embedding row; K and V rows of 16 f16 elements in its one layer.
TINY_TRAFFIC = DecodeTraffic(weights_bytes=2048 + 6400 + 64, resident_bytes=6400 + 2048 + 6400,
                             kv_bytes_per_token=2 * 16 * 2)


class DescribedBackend(BackendBase):
    """A backend that reports what a decode step reads, as llama.cpp's does, so the engine can annotate."""

    name = "described"

    def __init__(self, traffic: DecodeTraffic | None) -> None:
        self.traffic = traffic

    @hookimpl
    def register_backends(self, register):
        register(self)

    def generate(self, request, context):
        return GenerationTiming(prompt_tokens=20, completion_tokens=request.max_tokens, decode_tokens_per_s=10.0,
                                prompt_tokens_per_s=100.0, ttft_ms=5.0, total_ms=100.0)

    def describe(self, context):
        return BackendInfo(name="described", model=ModelFacts(name="m", decode_traffic=self.traffic))


@pytest.fixture
def described():
    registered = []

    def register(traffic):
        plugin = DescribedBackend(traffic)
        pm.register(plugin, name=f"described-{len(registered)}")
        registered.append(plugin)

    yield register
    for plugin in registered:
        pm.unregister(plugin)


def _run(hw):
    plan = BenchmarkPlan(backend="described", model="m", suites=get_suites(["short_completion"]), iterations=2,
                         warmup=0)
    return BenchmarkRunner(plan, hardware=hw).run()


def test_every_result_reports_decode_as_a_share_of_the_roofline(described, fake_ram):
    """A model reading 1 GB per token at its mean context, on 20 GB/s: at most 20 tokens/s, so the
    backend's 10 tokens/s is 50% of the roofline."""
    context = 20 + 32 // 2  # the suite's prompt plus half its answer
    described(DecodeTraffic(weights_bytes=10**9 - context * 1000, resident_bytes=10**9, kv_bytes_per_token=1000))
    result = _run(hardware())
    roof = result.roofline
    assert roof["bandwidth_gbps"] == 20.0 and roof["device"] == "cpu"
    assert roof["bytes_per_token"] == 10**9 - context * 1000
    suite = roof["suites"]["short_completion"]
    assert suite["context_tokens"] == context and suite["bytes_per_token"] == 10**9
    assert (suite["max_decode_tokens_per_s"], suite["decode_tokens_per_s"], suite["pct_of_limit"]) == (20.0, 10.0, 50.0)
    assert result.model_dump(mode="json")["roofline"]["suites"]["short_completion"]["pct_of_limit"] == 50.0


def test_annotation_failures_leave_no_roofline_and_no_crash(described, fake_ram, monkeypatch):
    def broken(hardware):
        raise OSError("no bandwidth today")

    monkeypatch.setattr(roofline, "ram_bandwidth", broken)
    described(TINY_TRAFFIC)
    result = _run(hardware())
    assert result.status == "complete" and result.roofline is None


def test_unknown_model_file_means_no_roofline(described, fake_ram):
    described(None)
    assert _run(hardware()).roofline is None


def test_render_shows_the_percentage(described, fake_ram):
    from rich.console import Console

    from velollm_core.bench.render import render_result

    described(TINY_TRAFFIC)
    console = Console(record=True, width=200)
    render_result(_run(hardware()), console)
    text = console.export_text()
    assert "% roofline" in text and "roofline: 20 GB/s" in text
