"""The decode roofline: bytes read per token, bandwidth sources, the cached RAM measurement, and the
engine's annotation of every benchmark result (which must never fail a benchmark)."""

from __future__ import annotations

import pytest

from velollm_core.bench.engine import BenchmarkPlan, BenchmarkRunner
from velollm_core.bench.suites import get_suites
from velollm_core.contract.plugins import pm
from velollm_core.contract.schemas import (
    BackendInfo,
    CpuInfo,
    GenerationTiming,
    GpuInfo,
    HardwareReport,
    MemoryInfo,
    ModelFacts,
    OsInfo,
)
from velollm_core.gguf_meta import GgufSummary, TensorInfo
from velollm_core.hookspecs import hookimpl
from velollm_core.tune import roofline
from velollm_core.tune.roofline import bytes_per_token, decode_bandwidth, max_decode_tokens_per_s

GIB = 2**30


def summary(*, tied: bool, moe: bool = False, window: int | None = None) -> GgufSummary:
    arch = "gemma3" if window else "llama"
    metadata = {
        "general.architecture": arch,
        f"{arch}.block_count": 2,
        f"{arch}.embedding_length": 64,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 1,  # K and V rows of 16 elements
        f"{arch}.feed_forward_length": 128,
    }
    if window:
        metadata[f"{arch}.attention.sliding_window"] = window
    tensors = [TensorInfo("token_embd.weight", "F16", (64, 1000), 128_000),
               TensorInfo("blk.0.attn_q.weight", "F16", (64, 64), 8192),
               TensorInfo("blk.1.attn_q.weight", "F16", (64, 64), 8192),
               TensorInfo("output_norm.weight", "F32", (64,), 256)]
    if moe:
        metadata.update({f"{arch}.expert_count": 8, f"{arch}.expert_used_count": 2})
        tensors.append(TensorInfo("blk.0.ffn_up_exps.weight", "Q4_0", (64, 128, 8), 80_000))
    if not tied:
        tensors.append(TensorInfo("output.weight", "F16", (64, 1000), 128_000))
    return GgufSummary("m.gguf", 0, metadata, tuple(tensors), {})


def test_untied_model_reads_layers_head_and_one_embedding_row():
    assert bytes_per_token(summary(tied=False)) == 8192 * 2 + 256 + 128_000 + 128


def test_tied_head_reads_the_whole_embedding_matrix():
    assert bytes_per_token(summary(tied=True)) == 8192 * 2 + 256 + 128_000


def test_moe_reads_only_the_experts_used():
    dense = bytes_per_token(summary(tied=True))
    assert bytes_per_token(summary(tied=True, moe=True)) == dense + 80_000 * 2 // 8


def test_kv_read_grows_with_context_and_stops_at_the_window():
    base = bytes_per_token(summary(tied=True))
    row = 2 * 16 * 2  # K + V, 16 elements, f16
    assert bytes_per_token(summary(tied=True), context_tokens=100) == base + 2 * 100 * row
    windowed = summary(tied=True, window=10)  # gemma3: layer 0 slides, layer 1 too (period 6)
    assert bytes_per_token(windowed, context_tokens=100) == base + 2 * 10 * row
    assert bytes_per_token(summary(tied=True), context_tokens=100, cache_type_k="f32") == base + 2 * 100 * row * 2  # K and V in f32


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
    assert decode_bandwidth(hardware([H100]), GIB, {"n_gpu_layers": 0}).device == "cpu"
    assert decode_bandwidth(hardware([H100]), GIB, {}, ["-m", "x", "-ngl", "0"]).device == "cpu"
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


def test_copy_benchmark_measures_something_plausible():
    gbps = roofline._copy_gbps(1, size=8 * 2**20, repeats=2)
    assert 0.1 < gbps < 10_000


# --- the engine's annotation -----------------------------------------------------------------------


class DescribedBackend:
    """A backend that reports a model file, as llama.cpp's does, so the engine can annotate."""

    def __init__(self, model_path: str | None) -> None:
        self.model_path = model_path

    @hookimpl
    def benchmark_backends(self):
        return ["described"]

    @hookimpl
    def run_benchmark(self, backend, request, context):
        if backend != "described":
            return None
        return GenerationTiming(prompt_tokens=20, completion_tokens=request.max_tokens, decode_tokens_per_s=10.0,
                                prompt_tokens_per_s=100.0, ttft_ms=5.0, total_ms=100.0)

    @hookimpl
    def describe_backend(self, backend, context):
        if backend != "described":
            return None
        return BackendInfo(name="described", model=ModelFacts(name="m", path=self.model_path))


@pytest.fixture
def described():
    registered = []

    def register(path):
        plugin = DescribedBackend(path)
        pm.register(plugin, name=f"described-{len(registered)}")
        registered.append(plugin)

    yield register
    for plugin in registered:
        pm.unregister(plugin)


def tiny_gguf(path) -> str:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_feed_forward_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((100, 32), dtype=np.float16))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float16))
    writer.add_tensor("output.weight", np.zeros((100, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def _run(hw):
    plan = BenchmarkPlan(backend="described", model="m", suites=get_suites(["short_completion"]), iterations=2,
                         warmup=0)
    return BenchmarkRunner(plan, hardware=hw).run()


def test_every_result_reports_decode_as_a_share_of_the_roofline(described, fake_ram, tmp_path):
    described(tiny_gguf(tmp_path / "tiny.gguf"))
    result = _run(hardware())
    roof = result.roofline
    assert roof["bandwidth_gbps"] == 20.0 and roof["device"] == "cpu"
    per_token = 2048 + 6400 + 64  # layer, untied head, one embedding row
    assert roof["bytes_per_token"] == per_token
    suite = roof["suites"]["short_completion"]
    assert suite["context_tokens"] == 20 + 32 // 2
    assert suite["pct_of_limit"] == pytest.approx(100 * 10.0 / suite["max_decode_tokens_per_s"], abs=0.1)
    assert result.model_dump(mode="json")["roofline"]["suites"]


def test_annotation_failures_leave_no_roofline_and_no_crash(described, fake_ram, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 40)  # the magic, then garbage
    described(str(broken))
    result = _run(hardware())
    assert result.status == "complete" and result.roofline is None


def test_unknown_model_file_means_no_roofline(described, fake_ram):
    described(None)
    assert _run(hardware()).roofline is None


def test_render_shows_the_percentage(described, fake_ram, tmp_path):
    from rich.console import Console

    from velollm_core.bench.render import render_result

    described(tiny_gguf(tmp_path / "tiny.gguf"))
    console = Console(record=True, width=200)
    render_result(_run(hardware()), console)
    text = console.export_text()
    assert "% roofline" in text and "roofline: 20 GB/s" in text
