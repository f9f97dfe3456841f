"""Every optimizer rule, on CPU-only, single-GPU, multi-GPU and Apple machines."""

from __future__ import annotations

import pytest
from velollm_ollama import plugin
from velollm_ollama.config import SETTINGS, OllamaConfig, Setting
from velollm_ollama.modelfacts import GIB, ModelArchitecture
from velollm_ollama.optimizer import (
    OptimizerInputs,
    apple_gpu_bytes,
    context_capacity,
    memory_budget,
    pick_context,
    propose_ollama_config,
)
from velollm_ollama.versions import FEATURES, has, parallel_forced_to_one, parse_version, since

from velollm_core.contract.errors import UserInputError

# Variables Ollama's envconfig really reads; a proposal may only touch these.
REAL_OLLAMA_VARIABLES = set(SETTINGS) | {"OLLAMA_DEBUG", "OLLAMA_LOAD_TIMEOUT", "OLLAMA_MAX_QUEUE"}


def llama8b(name: str = "llama3.1:8b", weights_bytes: int = 4_920_000_000, architecture: str = "llama",
            **overrides) -> ModelArchitecture:
    """Llama 3.1 8B Q4_K_M (as /api/show reports it): 32 layers, 32 heads, 8 KV heads of 128, 128k context."""
    values = {"block_count": 32, "embedding_length": 4096, "feed_forward_length": 14336,
              "attention.head_count": 32, "attention.head_count_kv": 8, "context_length": 131072,
              "vocab_size": 128256}
    values.update(overrides)
    meta = {"general.architecture": architecture, **{f"{architecture}.{k}": v for k, v in values.items()}}
    return ModelArchitecture.from_metadata(name, meta, weights_bytes=weights_bytes)


def config(**values: str) -> OllamaConfig:
    return OllamaConfig(scope="environment", settings={k: Setting(v, "environment") for k, v in values.items()})


# The rules below these helpers are those of Ollama before VRAM-tier contexts (0.15.5) and llama-server
# (0.30); the tests at the end of this file have those of later releases.
OLD = "0.15.4"


def propose(hardware, model=None, current=None, version=OLD, **kwargs):
    inputs = OptimizerInputs(hardware=hardware, current=current or config(), model=model, platform="linux",
                             version=version, **kwargs)
    proposal = propose_ollama_config(inputs)
    return proposal, {c.key: c for c in proposal.changes}


def reapplied(proposal, current: OllamaConfig) -> OllamaConfig:
    settings = dict(current.settings)
    for change in proposal.changes:
        if change.proposed is None:
            settings.pop(change.key, None)
        else:
            settings[change.key] = Setting(change.proposed, "environment")
    return OllamaConfig(scope=current.scope, settings=settings)


# --- memory model ------------------------------------------------------------------------------------


def test_kv_cache_bytes():
    model = llama8b()
    per_token = 32 * 8 * 256  # layers x KV heads x (K + V head sizes)
    assert model.kv_cache_bytes(4096, "f16") == per_token * 2 * 4096  # 512 MiB
    assert model.kv_cache_bytes(4096, "q8_0") == per_token * 34 // 32 * 4096
    assert model.kv_cache_bytes(4096, "q4_0") == per_token * 18 // 32 * 4096
    assert model.kv_cache_bytes(4096, "f16", parallel=2) == 2 * model.kv_cache_bytes(4096, "f16")


def test_kv_with_per_layer_heads_and_explicit_head_sizes():
    meta = {"general.architecture": "hyb", "hyb.block_count": 4, "hyb.embedding_length": 512,
            "hyb.attention.head_count": 8, "hyb.attention.head_count_kv": [2, 0, 2, 0],
            "hyb.attention.key_length": 64, "hyb.attention.value_length": 32}
    hybrid = ModelArchitecture.from_metadata("h", meta, weights_bytes=GIB)
    assert hybrid.kv_cache_bytes(256, "f16") == 2 * 2 * (64 + 32) * 2 * 256
    assert not hybrid.supports_flash_attention()  # K and V head sizes differ


def test_sliding_window_layers_hold_only_their_window():
    # gemma3: five of every six layers attend to a 1,024-token window (the core estimator knows).
    keys = {"block_count": 48, "embedding_length": 3840, "feed_forward_length": 15360,
            "attention.head_count": 16, "attention.head_count_kv": 8, "attention.key_length": 256,
            "attention.value_length": 256, "context_length": 131072}
    meta = {"general.architecture": "gemma3", **{f"gemma3.{k}": v for k, v in keys.items()}}
    full = ModelArchitecture.from_metadata("full", meta, weights_bytes=8 * GIB)
    swa = ModelArchitecture.from_metadata("gemma3:12b", {**meta, "gemma3.attention.sliding_window": 1024},
                                          weights_bytes=8 * GIB)
    assert swa.kv_cache_bytes(32768) < full.kv_cache_bytes(32768) / 4


def test_model_facts_from_api_show_and_gguf(gguf_file):
    info = {"general.architecture": "qwen3", "qwen3.block_count": 28, "qwen3.attention.head_count": 16,
            "qwen3.attention.head_count_kv": 8, "qwen3.attention.key_length": 128,
            "qwen3.attention.value_length": 128, "qwen3.context_length": 40960, "qwen3.embedding_length": 1024}
    arch = ModelArchitecture.from_metadata("qwen3:0.6b", info, weights_bytes=500_000_000)
    assert arch.kv_cache_bytes(256, "f16") == 28 * 8 * 256 * 2 * 256
    assert arch.context_length == 40960
    from_file = ModelArchitecture.from_gguf("m", gguf_file(layers=4, heads=8, kv_heads=2, embedding=256))
    assert from_file.kv_cache_bytes(256, "f16") == 4 * 2 * (32 + 32) * 2 * 256
    assert from_file.shape.n_vocab == 1000 and from_file.weights_bytes > 0
    assert ModelArchitecture.from_gguf("e", gguf_file(pooling=True)).embedding_model


def test_pick_context():
    assert pick_context(100_000, 131072, 32768) == 32768
    assert pick_context(20_000, 131072, 32768) == 16384
    assert pick_context(100_000, 8192, 32768) == 8192
    assert pick_context(1_500, 131072, 32768) is None
    assert pick_context(5_000, 1024, 32768) == 1024
    assert pick_context(0, None, 32768) is None


def test_budget_counts_ollamas_own_loaded_models_as_free(hw):
    report = hw.report([hw.nvidia(total_gib=24, free_gib=14)])
    assert memory_budget(report).devices == [14 * GIB]
    assert memory_budget(report, loaded_vram=6 * GIB).devices == [20 * GIB]
    model = llama8b()
    before = context_capacity(memory_budget(report), model, kv_type="f16", flash_attention=True)
    after = context_capacity(memory_budget(report, loaded_vram=6 * GIB), model, kv_type="f16",
                             flash_attention=True)
    assert after > before


def test_without_flash_attention_the_score_matrix_costs_context(hw):
    budget = memory_budget(hw.report([hw.nvidia()]))
    with_fa = context_capacity(budget, llama8b(), kv_type="f16", flash_attention=True)
    without = context_capacity(budget, llama8b(), kv_type="f16", flash_attention=False)
    assert without < with_fa


# --- single discrete GPU -----------------------------------------------------------------------------


def test_gpu_defaults(hw):
    proposal, changes = propose(hw.report([hw.nvidia()]), llama8b())
    assert changes["OLLAMA_FLASH_ATTENTION"].proposed == "1"
    assert changes["OLLAMA_FLASH_ATTENTION"].current is None
    kv = changes["OLLAMA_KV_CACHE_TYPE"]
    assert kv.proposed == "q8_0"
    assert "half the memory of f16" in kv.reason
    assert "at 32,768 tokens, 4.0 GiB -> 2.1 GiB (saves 1.9 GiB)" in kv.reason
    ctx = changes["OLLAMA_CONTEXT_LENGTH"]
    assert ctx.proposed == "32768"
    assert "capped at 32,768" in ctx.reason and "unset" in ctx.reason
    assert changes["OLLAMA_KEEP_ALIVE"].proposed == "30m"
    assert set(changes) == {"OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE", "OLLAMA_CONTEXT_LENGTH",
                            "OLLAMA_KEEP_ALIVE"}
    assert proposal.systemd_unit == "ollama"
    assert all(c.reason for c in proposal.changes)


def test_proposals_are_stable_when_applied(hw):
    for report, model in [(hw.report([hw.nvidia()]), llama8b()),
                          (hw.report([hw.nvidia(total_gib=8)]), llama8b()),
                          (hw.report([], ram_gib=16), llama8b()),
                          (hw.report([hw.apple()], ram_gib=32), llama8b())]:
        current = config(OLLAMA_NUM_PARALLEL="4", OLLAMA_KEEP_ALIVE="0")
        first, _ = propose(report, model, current)
        _, changes = propose(report, model, reapplied(first, current))
        assert changes == {}, (report.gpus, changes)


def test_only_real_ollama_variables_are_proposed(hw):
    for report in (hw.report([hw.nvidia(), hw.nvidia(bus="0000:02:00.0")]), hw.report([]),
                   hw.report([hw.apple()]), hw.report([hw.nvidia(total_gib=24, free_gib=10)])):
        _, changes = propose(report, llama8b(), config(OLLAMA_SCHED_SPREAD="1", OLLAMA_NUM_PARALLEL="8"))
        assert set(changes) <= REAL_OLLAMA_VARIABLES
        assert "OLLAMA_NUM_GPU" not in changes


def test_small_gpu_context_is_what_fits(hw):
    _, changes = propose(hw.report([hw.nvidia("NVIDIA GeForce RTX 3070", total_gib=8)]), llama8b())
    ctx = changes["OLLAMA_CONTEXT_LENGTH"]
    assert ctx.proposed == "16384"
    assert "fit beside llama3.1:8b (4.6 GiB of weights)" in ctx.reason
    assert "NVIDIA GeForce RTX 3070" in ctx.reason


def test_context_too_large_is_lowered(hw):
    current = config(OLLAMA_CONTEXT_LENGTH="131072", OLLAMA_FLASH_ATTENTION="1", OLLAMA_KV_CACHE_TYPE="q8_0")
    _, changes = propose(hw.report([hw.nvidia(total_gib=8)]), llama8b(), current)
    ctx = changes["OLLAMA_CONTEXT_LENGTH"]
    assert (ctx.current, ctx.proposed) == ("131072", "16384")
    assert "more than fits beside the model, so Ollama moves layers to the CPU" in ctx.reason


def test_context_limited_by_training(hw):
    _, changes = propose(hw.report([hw.nvidia()]), llama8b(context_length=8192))
    ctx = changes["OLLAMA_CONTEXT_LENGTH"]
    assert ctx.proposed == "8192"
    assert "trained for 8,192 tokens" in ctx.reason


def test_model_too_big_gets_a_note_not_a_context(hw):
    proposal, changes = propose(hw.report([hw.nvidia()]), llama8b(name="llama3.3:70b", weights_bytes=42 * GIB))
    assert "OLLAMA_CONTEXT_LENGTH" not in changes
    assert any("does not fit" in note and "smaller quantization" in note for note in proposal.notes)


def test_no_model_means_no_context_but_a_note(hw):
    proposal, changes = propose(hw.report([hw.nvidia()]), None)
    assert "OLLAMA_CONTEXT_LENGTH" not in changes
    assert changes["OLLAMA_FLASH_ATTENTION"].proposed == "1"
    assert any("--model" in note for note in proposal.notes)


def test_unknown_model_shape(hw):
    odd = ModelArchitecture.from_metadata("odd", {"general.architecture": "odd"}, weights_bytes=GIB)
    proposal, changes = propose(hw.report([hw.nvidia()]), odd)
    assert "OLLAMA_CONTEXT_LENGTH" not in changes
    assert any("layer and head counts of odd are unknown" in note for note in proposal.notes)


def test_parallel_slots_that_starve_the_context(hw):
    current = config(OLLAMA_NUM_PARALLEL="8")
    _, changes = propose(hw.report([hw.nvidia(total_gib=8)]), llama8b(), current)
    parallel = changes["OLLAMA_NUM_PARALLEL"]
    assert (parallel.current, parallel.proposed) == ("8", "1")
    assert "memory scales with parallel x context: 8 slots" in parallel.reason
    assert changes["OLLAMA_CONTEXT_LENGTH"].proposed == "16384"


def test_parallel_kept_when_memory_allows(hw):
    current = config(OLLAMA_NUM_PARALLEL="2")
    _, changes = propose(hw.report([hw.nvidia(total_gib=80, name="NVIDIA H100")]), llama8b(), current)
    assert "OLLAMA_NUM_PARALLEL" not in changes
    assert "2 parallel slots" in changes["OLLAMA_CONTEXT_LENGTH"].reason


def test_gpu_shared_with_a_desktop_gets_overhead(hw):
    _, changes = propose(hw.report([hw.nvidia(total_gib=24, free_gib=20.5)]), llama8b())
    overhead = changes["OLLAMA_GPU_OVERHEAD"]
    assert overhead.proposed == str(512 * 1024**2)
    assert "other programs already use 3.5 GiB of NVIDIA GeForce RTX 4090" in overhead.reason


def test_ollamas_own_models_are_not_other_programs(hw):
    _, changes = propose(hw.report([hw.nvidia(total_gib=24, free_gib=18)]), llama8b(),
                         loaded_vram_bytes=int(5.8 * GIB))
    assert "OLLAMA_GPU_OVERHEAD" not in changes


def test_existing_overhead_is_kept(hw):
    _, changes = propose(hw.report([hw.nvidia(total_gib=24, free_gib=18)]), llama8b(),
                         config(OLLAMA_GPU_OVERHEAD="1073741824"))
    assert "OLLAMA_GPU_OVERHEAD" not in changes


def test_old_gpu_without_flash_attention(hw):
    current = config(OLLAMA_FLASH_ATTENTION="1", OLLAMA_KV_CACHE_TYPE="q8_0")
    proposal, changes = propose(hw.report([hw.nvidia("NVIDIA GeForce GTX 970", total_gib=4, cc="5.2")]),
                                llama8b(weights_bytes=2 * GIB), current)
    fa = changes["OLLAMA_FLASH_ATTENTION"]
    assert fa.proposed is None and "compute capability 5.2" in fa.reason
    kv = changes["OLLAMA_KV_CACHE_TYPE"]
    assert kv.proposed is None and "only with flash attention" in kv.reason
    assert any("flash attention stays off" in n for n in proposal.notes)


def test_keep_alive_rules_on_gpu(hw):
    report = hw.report([hw.nvidia()])
    assert propose(report, llama8b(), config(OLLAMA_KEEP_ALIVE="1h"))[1].get("OLLAMA_KEEP_ALIVE") is None
    assert propose(report, llama8b(), config(OLLAMA_KEEP_ALIVE="-1"))[1].get("OLLAMA_KEEP_ALIVE") is None
    change = propose(report, llama8b(), config(OLLAMA_KEEP_ALIVE="soon"))[1]["OLLAMA_KEEP_ALIVE"]
    assert change.proposed == "30m" and "cannot parse 'soon'" in change.reason
    change = propose(report, llama8b(), config(OLLAMA_KEEP_ALIVE="120"))[1]["OLLAMA_KEEP_ALIVE"]
    assert "after 2m idle" in change.reason


def test_kv_cache_type_rules(hw):
    report = hw.report([hw.nvidia()])
    proposal, changes = propose(report, llama8b(), config(OLLAMA_KV_CACHE_TYPE="q4_0"))
    assert "OLLAMA_KV_CACHE_TYPE" not in changes
    assert any("q4_0 kept" in n for n in proposal.notes)
    _, changes = propose(report, llama8b(), config(OLLAMA_KV_CACHE_TYPE="q5_1"))
    assert changes["OLLAMA_KV_CACHE_TYPE"].proposed == "q8_0"
    assert "does not know the cache type 'q5_1'" in changes["OLLAMA_KV_CACHE_TYPE"].reason


def test_model_without_flash_attention_support(hw):
    gemma2 = llama8b(name="gemma2:9b", architecture="gemma2", context_length=8192)
    proposal, changes = propose(hw.report([hw.nvidia()]), gemma2)
    assert changes["OLLAMA_FLASH_ATTENTION"].proposed == "1"  # other models still benefit
    assert any("gemma2:9b does not support flash attention" in n for n in proposal.notes)
    assert "(f16)" in changes["OLLAMA_CONTEXT_LENGTH"].reason  # sized with the cache it really gets
    assert "for gemma2:9b" not in changes["OLLAMA_KV_CACHE_TYPE"].reason


# --- several GPUs --------------------------------------------------------------------------------------


def two_gpus(hw, total_gib=24):
    return hw.report([hw.nvidia(total_gib=total_gib), hw.nvidia(total_gib=total_gib, bus="0000:02:00.0")])


def test_spread_removed_when_the_model_fits_one_gpu(hw):
    _, changes = propose(two_gpus(hw), llama8b(), config(OLLAMA_SCHED_SPREAD="1"))
    spread = changes["OLLAMA_SCHED_SPREAD"]
    assert spread.proposed is None
    assert "fits on one GPU" in spread.reason and "over 2 GPUs" in spread.reason


def test_big_model_spreads_on_its_own(hw):
    proposal, changes = propose(two_gpus(hw), llama8b(name="llama3.3:70b", weights_bytes=38 * GIB,
                                                        block_count=80, embedding_length=8192,
                                                        **{"attention.head_count": 64}))
    assert "OLLAMA_SCHED_SPREAD" not in changes
    assert any("Ollama spreads it over the GPUs on its own" in n for n in proposal.notes)
    assert "2x NVIDIA GeForce RTX 4090" in changes["OLLAMA_CONTEXT_LENGTH"].reason


def test_single_gpu_ignores_spread(hw):
    _, changes = propose(hw.report([hw.nvidia()]), llama8b(), config(OLLAMA_SCHED_SPREAD="1"))
    assert "OLLAMA_SCHED_SPREAD" not in changes


def test_the_proposal_says_where_the_scheduler_puts_the_model_on_two_gpus(hw):
    fits, _ = propose(two_gpus(hw), llama8b())
    assert any("fits on one GPU: Ollama's scheduler loads it whole on the GPU with the most free memory" in n
               for n in fits.notes)
    big, _ = propose(two_gpus(hw), llama8b(name="llama3.3:70b", weights_bytes=38 * GIB, block_count=80,
                                           embedding_length=8192, **{"attention.head_count": 64}))
    assert any("into as few GPUs as hold them, the GPUs with the most free memory first" in n for n in big.notes)


def test_mixed_vendors_size_for_the_larger_group(hw):
    from velollm_core.contract.schemas import GpuInfo

    amd = GpuInfo(vendor="amd", name="AMD Radeon RX 7600", memory_total_bytes=8 * GIB,
                  memory_free_bytes=8 * GIB, source="amdsmi")
    budget = memory_budget(hw.report([amd, hw.nvidia()]))
    assert budget.names == ["NVIDIA GeForce RTX 4090"]


# --- CPU only -------------------------------------------------------------------------------------------


def test_cpu_only_rules(hw):
    current = config(OLLAMA_NUM_PARALLEL="4")
    proposal, changes = propose(hw.report([], ram_gib=12, available_gib=9), llama8b(), current)
    assert changes["OLLAMA_FLASH_ATTENTION"].proposed == "1"
    assert "on CPU too" in changes["OLLAMA_FLASH_ATTENTION"].reason
    assert changes["OLLAMA_KV_CACHE_TYPE"].proposed == "q8_0"
    assert changes["OLLAMA_NUM_PARALLEL"].proposed == "1"
    assert "share the same cores" in changes["OLLAMA_NUM_PARALLEL"].reason
    ctx = changes["OLLAMA_CONTEXT_LENGTH"]
    assert ctx.proposed == "8192" and "capped at 8,192 on CPU" in ctx.reason and " RAM" in ctx.reason
    loaded = changes["OLLAMA_MAX_LOADED_MODELS"]
    assert loaded.proposed == "1" and "swap" in loaded.reason
    assert "OLLAMA_KEEP_ALIVE" not in changes  # the 5m default suits a shared machine
    assert "OLLAMA_GPU_OVERHEAD" not in changes and "OLLAMA_SCHED_SPREAD" not in changes
    assert any("sized for RAM" in n for n in proposal.notes)


def test_cpu_with_plenty_of_ram_keeps_several_models(hw):
    _, changes = propose(hw.report([], ram_gib=128, available_gib=120), llama8b())
    assert "OLLAMA_MAX_LOADED_MODELS" not in changes


def test_cpu_keep_alive(hw):
    report = hw.report([], ram_gib=16, available_gib=12)
    change = propose(report, llama8b(), config(OLLAMA_KEEP_ALIVE="0"))[1]["OLLAMA_KEEP_ALIVE"]
    assert change.proposed == "5m" and "every request" in change.reason
    change = propose(report, llama8b(), config(OLLAMA_KEEP_ALIVE="-1"))[1]["OLLAMA_KEEP_ALIVE"]
    assert change.proposed == "30m" and "forever" in change.reason
    small = llama8b(weights_bytes=300_000_000, name="tiny")
    assert "OLLAMA_KEEP_ALIVE" not in propose(report, small, config(OLLAMA_KEEP_ALIVE="-1"))[1]


def test_unsupported_gpus_fall_back_to_cpu_rules(hw):
    from velollm_core.contract.schemas import GpuInfo

    intel = GpuInfo(vendor="intel", name="Intel UHD Graphics 770", source="pci")
    proposal, _ = propose(hw.report([intel], ram_gib=32), llama8b())
    assert any("found: Intel UHD Graphics 770" in n for n in proposal.notes)


# --- Apple ----------------------------------------------------------------------------------------------


def test_apple_uses_usable_gpu_memory_not_ram(hw):
    report = hw.report([hw.apple(usable_gib=21.3)], ram_gib=32, system="Darwin")
    budget = memory_budget(report)
    assert budget.kind == "apple" and budget.devices == [int(21.3 * GIB)]
    proposal, changes = propose(report, llama8b())
    assert changes["OLLAMA_FLASH_ATTENTION"].proposed == "1"
    assert "unified" in changes["OLLAMA_CONTEXT_LENGTH"].reason
    assert any("iogpu.wired_limit_mb" in n for n in proposal.notes)
    assert "OLLAMA_GPU_OVERHEAD" not in changes


def test_apple_without_a_reported_limit(hw):
    report = hw.report([hw.apple(usable_gib=None)], ram_gib=16)
    assert memory_budget(report).devices == [apple_gpu_bytes(16 * GIB)] == [int(16 * GIB * 2 / 3)]
    report = hw.report([hw.apple(usable_gib=64)], ram_gib=64)  # a total-RAM figure is not usable memory
    assert memory_budget(report).devices == [int(64 * GIB * 3 / 4)]


def test_apple_small_memory_one_model(hw):
    report = hw.report([hw.apple(usable_gib=10.7)], ram_gib=16)
    _, changes = propose(report, llama8b())
    assert changes["OLLAMA_MAX_LOADED_MODELS"].proposed == "1"
    assert "unified memory" in changes["OLLAMA_MAX_LOADED_MODELS"].reason


# --- notes and platform -------------------------------------------------------------------------------


def test_notes_for_service_scope_and_old_versions(hw):
    current = OllamaConfig(scope="systemd", settings={},
                           shadowed={"OLLAMA_FLASH_ATTENTION": Setting("1", "environment")})
    proposal, _ = propose(hw.report([hw.nvidia()]), llama8b(), current, version="0.5.7")
    notes = " | ".join(proposal.notes)
    assert "your shell sets OLLAMA_FLASH_ATTENTION=1, which the service does not see" in notes
    assert "needs Ollama 0.5.13 or newer; this server is 0.5.7" in notes


def test_no_systemd_unit_off_linux(hw):
    inputs = OptimizerInputs(hardware=hw.report([hw.apple()]), current=config(), model=llama8b(),
                             platform="darwin")
    assert propose_ollama_config(inputs).systemd_unit is None


# --- the hook, with the loopback server and a fake store -------------------------------------------------


def test_hook_ignores_other_backends(hw):
    assert plugin.propose_config(hardware=hw.report([]), model=None, backend="llamacpp") == []


def test_hook_reads_the_running_server(hw, fake_ollama, isolated_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url.removeprefix("http://"))
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "1")
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8)]), model="tiny",
                                       backend="ollama")
    changes = {c.key: c for c in proposal.changes}
    assert "OLLAMA_FLASH_ATTENTION" not in changes
    assert "fit beside tiny (1.2 GiB of weights)" in changes["OLLAMA_CONTEXT_LENGTH"].reason
    assert any(r["path"] == "/api/show" for r in fake_ollama.requests)


def test_hook_sizes_for_the_loaded_model_by_default(hw, fake_ollama, isolated_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=8, free_gib=5)]), model=None,
                                       backend="ollama")
    assert any("sized for tiny:latest, the model Ollama has loaded now" in n for n in proposal.notes)
    assert any(c.key == "OLLAMA_CONTEXT_LENGTH" for c in proposal.changes)


def test_hook_missing_model_is_a_user_error(hw, fake_ollama, isolated_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    with pytest.raises(UserInputError, match="ollama pull mistral"):
        plugin.propose_config(hardware=hw.report([]), model="mistral", backend="ollama")


def test_hook_without_server_uses_the_store(hw, isolated_ollama, fake_store, gguf_file, dead_url,
                                            monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", dead_url)
    monkeypatch.setenv("OLLAMA_MODELS", str(fake_store.root))
    fake_store.add("registry.ollama.ai", "library", "small", "latest", gguf_file(context=4096).read_bytes())
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia()]), model=None, backend="ollama")
    notes = " | ".join(proposal.notes)
    assert "no Ollama server answered" in notes
    assert "sized for small:latest, the largest installed model that fits in memory" in notes
    # No server, no version: the rules are the newest Ollama's, whose 32k default here is cut to the
    # model's trained 4,096 tokens, which fit.
    assert "Ollama's version is unknown" in notes
    assert "OLLAMA_CONTEXT_LENGTH" not in {c.key for c in proposal.changes}
    assert "Ollama's default here, 4,096 tokens, is what fits" in notes


def test_hook_with_a_gguf_path(hw, isolated_ollama, gguf_file, dead_url, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", dead_url)
    path = gguf_file(context=16384)
    [proposal] = plugin.propose_config(hardware=hw.report([hw.nvidia(total_gib=16)]), model=str(path),
                                       backend="ollama")
    assert {c.key: c for c in proposal.changes}["OLLAMA_CONTEXT_LENGTH"].proposed == "16384"


def test_hook_stays_quiet_where_there_is_no_ollama(hw, isolated_ollama, dead_url, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", dead_url)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert plugin.propose_config(hardware=hw.report([]), model=None, backend=None) == []
    # Asked for explicitly, it still answers.
    assert len(plugin.propose_config(hardware=hw.report([]), model=None, backend="ollama")) == 1


# --- by Ollama release (/api/version): llama-server inside from 0.30.0, VRAM-tier default contexts from
# 0.15.5, parallel forced to one for some architectures; older releases keep their rules ---------------

NEW = "0.33.0-rc2"
PRE_LLAMA_SERVER = "0.24.0"


def test_versions_parse_and_compare():
    assert parse_version("0.33.0-rc2") == (0, 33, 0)
    assert parse_version("v0.5") == (0, 5, 0)
    assert parse_version("0.0.0") is None and parse_version("dev") is None and parse_version(None) is None
    assert has("0.30.1", "prompt_count_includes_cache") and not has("0.30.0", "prompt_count_includes_cache")
    assert has(None, "llama_server")  # unknown: the newest
    assert since("flash_attention_auto") == "0.30.0"
    assert all(isinstance(text, str) and text for _, text in FEATURES.values())


def test_unset_flash_attention_is_auto_from_0_30(hw):
    proposal, changes = propose(hw.report([hw.nvidia()]), llama8b(), version=NEW)
    assert "OLLAMA_FLASH_ATTENTION" not in changes
    assert any("unset is llama.cpp's auto" in n for n in proposal.notes)
    # Sized with flash attention on: q8_0 is proposed, as it is where flash attention is on.
    assert changes["OLLAMA_KV_CACHE_TYPE"].proposed == "q8_0"
    _, old_changes = propose(hw.report([hw.nvidia()]), llama8b(), version=PRE_LLAMA_SERVER)
    assert old_changes["OLLAMA_FLASH_ATTENTION"].proposed == "1"


def test_flash_attention_forced_off_is_undone_from_0_30(hw):
    _, changes = propose(hw.report([hw.nvidia()]), llama8b(), config(OLLAMA_FLASH_ATTENTION="0"), version=NEW)
    change = changes["OLLAMA_FLASH_ATTENTION"]
    assert (change.current, change.proposed) == ("0", None)
    assert "--flash-attn auto" in change.reason


def test_old_gpu_blocks_flash_attention_in_every_version(hw):
    old_gpu = hw.report([hw.nvidia("Tesla K80", total_gib=12, cc="3.7")])
    for version in (NEW, PRE_LLAMA_SERVER):
        proposal, changes = propose(old_gpu, llama8b(), config(OLLAMA_FLASH_ATTENTION="1"), version=version)
        assert changes["OLLAMA_FLASH_ATTENTION"].proposed is None
        assert any("flash attention stays off" in n for n in proposal.notes)


def test_quantized_kv_without_flash_attention_fails_to_load_from_0_30(hw):
    old_gpu = hw.report([hw.nvidia("Tesla K80", total_gib=12, cc="3.7")])
    _, changes = propose(old_gpu, llama8b(), config(OLLAMA_KV_CACHE_TYPE="q8_0"), version=NEW)
    assert changes["OLLAMA_KV_CACHE_TYPE"].proposed is None
    assert "--cache-type-k/v" in changes["OLLAMA_KV_CACHE_TYPE"].reason
    assert "fail to load" in changes["OLLAMA_KV_CACHE_TYPE"].reason
    _, old = propose(old_gpu, llama8b(), config(OLLAMA_KV_CACHE_TYPE="q8_0"), version=PRE_LLAMA_SERVER)
    assert "has no effect" in old["OLLAMA_KV_CACHE_TYPE"].reason


def test_llama_server_cache_types_pass_straight_through_from_0_30(hw):
    # q5_1 is unknown to Ollama's old runner (it used f16) but llama-server takes it as it is.
    proposal, changes = propose(hw.report([hw.nvidia()]), llama8b(), config(OLLAMA_KV_CACHE_TYPE="q5_1"),
                                version=NEW)
    assert "OLLAMA_KV_CACHE_TYPE" not in changes
    assert any("q5_1 kept" in n for n in proposal.notes)
    _, old = propose(hw.report([hw.nvidia()]), llama8b(), config(OLLAMA_KV_CACHE_TYPE="q5_1"),
                     version=PRE_LLAMA_SERVER)
    assert "Ollama does not know the cache type 'q5_1'" in old["OLLAMA_KV_CACHE_TYPE"].reason
    _, bad = propose(hw.report([hw.nvidia()]), llama8b(), config(OLLAMA_KV_CACHE_TYPE="q3_x"), version=NEW)
    assert "llama-server does not know the cache type 'q3_x' and refuses to start" in bad["OLLAMA_KV_CACHE_TYPE"].reason


def test_per_model_flash_attention_test_is_gone_from_0_30(hw):
    gemma2 = llama8b(name="gemma2:9b", architecture="gemma2", context_length=8192)
    proposal, _ = propose(hw.report([hw.nvidia()]), gemma2, version=NEW)
    assert not any("does not support flash attention" in n for n in proposal.notes)
    old, _ = propose(hw.report([hw.nvidia()]), gemma2, version=PRE_LLAMA_SERVER)
    assert any("gemma2:9b does not support flash attention" in n for n in old.notes)


@pytest.mark.parametrize(("architecture", "version", "forced"), [
    ("qwen3next", NEW, True), ("qwen35", NEW, True), ("nemotron_h", NEW, True), ("mllama", NEW, True),
    ("qwen3vl", "0.12.7", True), ("qwen3vl", "0.12.6", False), ("lfm2", "0.15.4", False),
    ("qwen35", "0.17.0", False), ("llama", NEW, False),
])
def test_parallel_forced_to_one_by_architecture_and_version(architecture, version, forced):
    assert parallel_forced_to_one(architecture, version) is forced


def test_no_parallel_proposal_for_architectures_forced_to_one(hw):
    model = llama8b(name="qwen3-next:80b", architecture="qwen3next", weights_bytes=2 * 1024**3)
    proposal, changes = propose(hw.report([]), model, config(OLLAMA_NUM_PARALLEL="4"), version=NEW)
    assert "OLLAMA_NUM_PARALLEL" not in changes  # on CPU it would be proposed 1 for any other model
    note = next(n for n in proposal.notes if "one slot whatever OLLAMA_NUM_PARALLEL says" in n)
    assert "the 4 set now is ignored" in note and "server/sched.go" in note
    # Sized for the one slot Ollama gives it: the KV cache of one slot.
    context = changes["OLLAMA_CONTEXT_LENGTH"]
    assert "parallel slots" not in context.reason
    _, other = propose(hw.report([]), llama8b(weights_bytes=2 * 1024**3), config(OLLAMA_NUM_PARALLEL="4"),
                       version=NEW)
    assert other["OLLAMA_NUM_PARALLEL"].proposed == "1"


@pytest.mark.parametrize(("total_gib", "default"), [(8, 4096), (24, 32768), (48, 262144)])
def test_vram_tier_default_context_from_0_15_5(hw, total_gib, default):
    from velollm_ollama.inputs import OptimizerInputs
    from velollm_ollama.plan import Plan

    inputs = OptimizerInputs(hardware=hw.report([hw.nvidia(total_gib=total_gib)]), current=config(),
                             model=llama8b(), version=NEW)
    assert Plan(inputs).default_context == default
    inputs.version = "0.15.4"
    assert Plan(inputs).default_context == 4096


def test_default_context_that_fits_needs_no_variable(hw):
    # A 24 GiB GPU: Ollama's own default (32k) is what fits beside Llama 3.1 8B.
    proposal, changes = propose(hw.report([hw.nvidia()]), llama8b(), version=NEW)
    assert "OLLAMA_CONTEXT_LENGTH" not in changes
    assert any("Ollama's default here, 32,768 tokens, is what fits" in n for n in proposal.notes)


def test_default_context_too_large_is_lowered_with_the_real_default_named(hw):
    # 48 GiB: the default is 256k, cut to the model's 128k, and 128k of f16 KV beside 40 GiB of weights is too much.
    big = llama8b(name="llama3.3:70b", weights_bytes=40 * 1024**3, block_count=80, embedding_length=8192,
                  **{"attention.head_count": 64})
    _, changes = propose(hw.report([hw.nvidia("NVIDIA RTX 6000 Ada", total_gib=48)]), big, version=NEW)
    reason = changes["OLLAMA_CONTEXT_LENGTH"].reason
    assert "unset, Ollama uses 262,144 tokens (by total VRAM, Ollama 0.15.5+), 131,072 within the model's " \
           "training: more than fits" in reason


def test_llama_fit_off_is_undone_and_fit_target_sizes_the_reserve(hw):
    from velollm_ollama.inputs import OptimizerInputs
    from velollm_ollama.plan import Plan

    _, changes = propose(hw.report([hw.nvidia(total_gib=8)]), llama8b(), config(LLAMA_ARG_FIT="off"), version=NEW)
    assert changes["LLAMA_ARG_FIT"].proposed is None
    assert "fails to load instead of keeping some layers on the CPU" in changes["LLAMA_ARG_FIT"].reason

    def room(version, **settings):
        inputs = OptimizerInputs(hardware=hw.report([hw.nvidia(total_gib=8)]), current=config(**settings),
                                 model=llama8b(), version=version)
        return Plan(inputs).budget.room()

    assert room(NEW) == room(NEW, LLAMA_ARG_FIT_TARGET="1024") < room(PRE_LLAMA_SERVER)  # 1 GiB vs 457 MiB
    assert room(NEW, LLAMA_ARG_FIT_TARGET="3072") == room(NEW) - 2048 * 1024**2
    assert room(NEW, LLAMA_ARG_FIT="off") == room(PRE_LLAMA_SERVER)  # Ollama's own reserve only
    notes, _ = propose(hw.report([hw.nvidia(total_gib=8)]), llama8b(), version=NEW)
    assert any("llama.cpp's fit keeps 1,024 MiB free on each GPU" in n for n in notes.notes)


def test_llama_fit_is_noted_as_ignored_before_0_30(hw):
    proposal, changes = propose(hw.report([hw.nvidia()]), llama8b(), config(LLAMA_ARG_FIT="off"),
                                version=PRE_LLAMA_SERVER)
    assert "LLAMA_ARG_FIT" not in changes
    assert any("LLAMA_ARG_FIT is read by llama-server" in n and "ignores it" in n for n in proposal.notes)
