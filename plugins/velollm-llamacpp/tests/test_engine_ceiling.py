"""The engine's ceiling for llama.cpp: llama-batched-bench at a load level's shape, its flags taken from
the benchmark's options, its JSON lines read; and through the CLI, every level's server efficiency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from velollm_llamacpp.ceiling import PROGRAM, command, engine_args, measure, parse_jsonl

from velollm_core.api import BackendError, BenchmarkContext, EngineShape

# One line of `llama-batched-bench --output-format jsonl` (this build, Gemma 3 270M, 2 cores).
ROW = ('{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, '
       '"n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 32, "tg": 16, "pl": 4, "n_kv": 192, '
       '"t_pp": 0.202088, "speed_pp": 633.387451, "t_tg": 0.460046, "speed_tg": 139.116531, "t": 0.662134, '
       '"speed": 289.971527}')


def test_the_benchmarks_engine_flags_go_to_batched_bench_and_the_servers_own_do_not():
    options = {"threads": 4, "flash_attn": True, "ctx_size": 8192, "ubatch_size": 256, "port": 8080,
               "server_args": "--kv-unified --cache-reuse 256 -ctv q8_0 --poll=0 --slots"}
    assert engine_args(options) == ["--threads", "4", "--ubatch-size", "256", "--flash-attn", "on",
                                    "--kv-unified", "-ctv", "q8_0", "--poll=0"]


def test_one_run_per_length_pair_holds_every_level_and_a_context_for_the_largest():
    argv = command(Path("/bin/bb"), Path("/m.gguf"), {}, 512, 128, [8, 1, 64, 8])
    assert argv[argv.index("-npl") + 1] == "1,8,64"
    assert int(argv[argv.index("-c") + 1]) >= 64 * (512 + 128)
    assert argv[-2:] == ["--output-format", "jsonl"]


def test_the_jsonl_rows_are_read_by_parallel_sequences_and_the_log_lines_ignored():
    rows = parse_jsonl(f"main: n_kv_max = 4096\n\n{ROW}\nllama_perf_context_print: load time\n")
    assert list(rows) == [4]
    assert rows[4]["speed_tg"] == pytest.approx(139.116531)


@pytest.mark.llamacpp
def test_batched_bench_measures_every_shape_on_gemma(gemma):
    context = BenchmarkContext(backend="llamacpp", model="gemma3-270m")
    shapes = [EngineShape(1, 16, 8), EngineShape(2, 16, 8), EngineShape(2, 8, 4)]
    ceilings = measure(shapes, context)
    assert sorted(ceiling.shape for ceiling in ceilings) == sorted(shapes)
    for ceiling in ceilings:
        assert ceiling.tool == PROGRAM and ceiling.command[0].endswith(PROGRAM)
        assert ceiling.output_tokens_per_s > 0 and ceiling.prompt_tokens_per_s > 0 and ceiling.step_ms > 0
        # the generation rate leaves the prompts' time out; the rate over the whole run counts it
        assert ceiling.with_prompts_tokens_per_s < ceiling.output_tokens_per_s
        argv = list(ceiling.command)
        assert argv[argv.index("-npp") + 1] == str(ceiling.shape.prompt_tokens)
        assert argv[argv.index("-ntg") + 1] == str(ceiling.shape.output_tokens)


@pytest.mark.llamacpp
def test_a_failing_batched_bench_is_a_backend_error_naming_its_command(gemma):
    context = BenchmarkContext(backend="llamacpp", model="gemma3-270m",
                               options={"server_args": "--cache-type-k nonsense"})
    with pytest.raises(BackendError, match=r"llama-batched-bench exited .*--cache-type-k nonsense"):
        measure([EngineShape(1, 8, 4)], context)


@pytest.mark.llamacpp
def test_benchmark_engine_ceiling_gives_every_level_its_efficiency_and_diagnosis(gemma, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "velollm_core", "benchmark", "--backend", "llamacpp", "--model",
                           "gemma3-270m", "--workload", "pp32/tg16", "--concurrency", "1,2", "--iterations", "2",
                           "--warmup", "0", "--engine-ceiling", "--output", str(out)],
                          capture_output=True, text=True, timeout=600, check=False, env=_wide_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["engine_ceiling"] is True
    for level, streams in zip(result["levels"], (1, 2)):
        ceiling = level["engine_ceiling"]
        assert ceiling["shape"] == {"sequences": streams, "prompt_tokens": 32, "output_tokens": 16}
        assert level["server_efficiency"] == pytest.approx(level["output_throughput"] / ceiling["output_tokens_per_s"],
                                                           rel=1e-3)
        assert level["diagnosis"]["limit"] in ("engine_bound", "server_loop_bound", "prefill_interference",
                                               "client_bound", "kv_cache_full", "unknown")
        assert f"{level['key']} pp32/tg16: {level['diagnosis']['line']}"[:77] in proc.stdout
    assert "engine" in proc.stdout  # the "% engine" column
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def _wide_env() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "80"}
