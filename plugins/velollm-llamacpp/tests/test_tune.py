"""The llama.cpp proposal rules on synthetic machines and models: full and partial GPU offload, two GPUs, a
q8_0 cache that makes a model fit, CPU-only threads, memory pressure, a CPU build on a GPU machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from velollm_gguf.estimate import estimate_memory
from velollm_gguf.meta import GgufSummary, TensorInfo
from velollm_llamacpp import tune
from velollm_llamacpp.tune import GPU_MARGIN_BYTES, gpu_budgets, propose_llamacpp
from velollm_llamacpp.tune_split import split_candidates, tensor_split

from velollm_core.contract.schemas import CpuInfo, GpuInfo, GpuLink, HardwareReport, MemoryInfo, OsInfo

GIB = 2**30
MODEL = Path("/models/llama-8b.gguf")


def llama_summary(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_kv=8, vocab=128256,
                  bytes_per_weight=0.5625, tied=False, ctx_train=131072) -> GgufSummary:
    """A Llama-shaped model whose tensor bytes follow its shapes (0.5625 bytes per weight = Q4_0)."""
    head = n_embd // n_head

    def tensor(name, rows, cols):
        return TensorInfo(name, "Q4_0", (cols, rows), int(rows * cols * bytes_per_weight))

    tensors = [tensor("token_embd.weight", vocab, n_embd)]
    for i in range(n_layer):
        tensors += [tensor(f"blk.{i}.attn_q.weight", n_head * head, n_embd),
                    tensor(f"blk.{i}.attn_k.weight", n_kv * head, n_embd),
                    tensor(f"blk.{i}.attn_v.weight", n_kv * head, n_embd),
                    tensor(f"blk.{i}.attn_output.weight", n_embd, n_head * head),
                    tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd),
                    tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd),
                    tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)]
    if not tied:
        tensors.append(tensor("output.weight", vocab, n_embd))
    metadata = {"general.architecture": "llama", "llama.block_count": n_layer, "llama.embedding_length": n_embd,
                "llama.feed_forward_length": n_ff, "llama.attention.head_count": n_head,
                "llama.attention.head_count_kv": n_kv, "llama.context_length": ctx_train, "llama.vocab_size": vocab}
    return GgufSummary(str(MODEL), 0, metadata, tuple(tensors), {})


def machine(*, gpus=(), physical=8, logical=16, ram_gib=64, available_gib=None) -> HardwareReport:
    return HardwareReport(
        os=OsInfo(system="Linux", release="6.8", machine="x86_64"),
        cpu=CpuInfo(model="Test CPU", physical_cores=physical, logical_cores=logical),
        memory=MemoryInfo(total_bytes=ram_gib * GIB, available_bytes=(available_gib or ram_gib - 2) * GIB,
                          used_bytes=2 * GIB),
        gpus=list(gpus),
    )


def gpu(total_gib: float, free_gib: float | None = None, name: str = "NVIDIA H100 80GB HBM3") -> GpuInfo:
    return GpuInfo(vendor="nvidia", name=name, memory_total_bytes=int(total_gib * GIB),
                   memory_free_bytes=int((free_gib if free_gib is not None else total_gib) * GIB),
                   bandwidth_gbps=3352.0, source="nvml")


def propose(hardware, summary=None, **kwargs):
    summary = summary if summary is not None else llama_summary()
    kwargs.setdefault("gpu_devices", ("CUDA0: test",) if hardware.gpus else ())
    return propose_llamacpp(hardware, MODEL, summary=summary, **kwargs)


def changes(proposal):
    return {c.key: c for c in proposal.changes}


def test_every_change_is_a_flag_with_its_reason_and_args_in_the_command():
    proposal = propose(machine(gpus=[gpu(80)]))
    assert proposal.runtime == "llamacpp"
    assert proposal.command[:3] == ["llama-server", "-m", str(MODEL)]
    flat = [arg for change in proposal.changes for arg in change.args]
    assert proposal.command[3:] == flat
    for change in proposal.changes:
        assert change.kind == "flag" and change.reason and change.purpose in ("speed", "capacity", "explicit")


def test_gpu_that_fits_everything_offloads_all_layers_and_keeps_the_default_batches():
    proposal = propose(machine(gpus=[gpu(80)]))
    found = changes(proposal)
    assert found["-ngl"].args == ["-ngl", "33"] and found["-ngl"].purpose == "explicit"
    # 2048-token micro-batches measured no faster on an H200 (docs/BENCHMARKS.md): not proposed.
    assert "-b/-ub" not in found
    assert "-ctk/-ctv" not in found
    assert found["-c"].args == ["-c", "8192"] and found["-np"].args == ["-np", "1"]
    assert found["-fa"].args == ["-fa", "on"]


def test_a_q8_0_cache_is_chosen_when_it_is_what_lets_every_layer_fit():
    summary = llama_summary()
    name = gpu_budgets(machine(gpus=[gpu(80)]))[0].name
    args = {"ctx": 8192, "n_gpu_layers": 33, "gpu_names": (name,), "n_ubatch": 512}
    f16 = estimate_memory(summary, **args).devices[0].bytes
    q8 = estimate_memory(summary, cache_type_k="q8_0", **args).devices[0].bytes
    # A GPU whose usable memory lies between the two: only the q8_0 cache lets every layer fit.
    hardware = machine(gpus=[gpu(((f16 + q8) / 2 + GPU_MARGIN_BYTES) / GIB)])
    found = changes(propose(hardware, summary))
    assert found["-ngl"].args == ["-ngl", "33"]
    assert found["-ctk/-ctv"].args == ["-ctk", "q8_0", "-ctv", "q8_0"]
    assert found["-fa"].purpose == "capacity"  # a quantized V cache needs flash attention


def test_partial_offload_takes_as_many_layers_as_fit_with_a_margin():
    summary = llama_summary()
    hardware = machine(gpus=[gpu(4)])
    found = changes(propose(hardware, summary))
    n = int(found["-ngl"].proposed)
    assert 0 < n < 33 and found["-ngl"].purpose == "speed"
    budget = gpu_budgets(hardware)[0]
    assert budget.usable_bytes == 4 * GIB - GPU_MARGIN_BYTES

    def on_gpu(layers):
        est = estimate_memory(summary, ctx=8192, n_gpu_layers=layers, gpu_names=(budget.name,))
        return est.devices[0].bytes

    assert on_gpu(n) <= budget.usable_bytes < on_gpu(n + 1)


def test_free_memory_not_total_sizes_the_offload():
    busy = changes(propose(machine(gpus=[gpu(80, free_gib=3)])))
    assert int(busy["-ngl"].proposed) < 33


def test_gpu_without_room_for_one_layer_runs_on_the_cpu():
    found = changes(propose(machine(gpus=[gpu(1.6)])))  # 0.1 GiB usable: not even the head
    assert found["-ngl"].args == ["-ngl", "0"]


def test_cpu_only_uses_physical_cores_not_logical():
    found = changes(propose(machine(physical=8, logical=16)))
    assert found["-t"].args == ["-t", "8"]
    assert "16 logical CPUs are 8 cores" in found["-t"].reason
    assert found["-t"].purpose == "explicit"  # llama.cpp's own count agrees
    assert "-ngl" not in found


def test_threads_follow_an_affinity_or_quota_limit_below_the_core_count():
    found = changes(propose(machine(physical=8, logical=16), cpu_limit=3))
    assert found["-t"].args == ["-t", "3"] and found["-t"].purpose == "speed"


def test_memory_pressure_locks_the_weights_or_loads_them_without_mmap():
    big = llama_summary(bytes_per_weight=2.0)  # ~16 GiB of F16 weights
    tight = machine(ram_gib=32, available_gib=20)
    assert changes(propose(tight, big))["--mlock"].args == ["--mlock"]
    no_lock = changes(propose(tight, big, memlock_limit=64 * 2**20))
    assert "--mlock" not in no_lock and no_lock["--no-mmap"].args == ["--no-mmap"]
    assert "--mlock" not in changes(propose(machine(ram_gib=256), big))


def test_builds_that_folded_mlock_into_load_mode(monkeypatch):
    monkeypatch.setattr("velollm_llamacpp.server.server_flags", lambda binary: frozenset({"--load-mode", "-t"}))
    flags = tune._Flags(Path("/fake/llama-server"))
    assert flags.mlock() == ["--load-mode", "mmap+mlock"] and flags.no_mmap() == ["--load-mode", "none"]
    assert tune._Flags(None).mlock() == ["--mlock"]


def test_a_cpu_build_on_a_gpu_machine_says_so_and_stays_on_the_cpu(monkeypatch):
    for var in tune.GPU_MASK_VARS:
        monkeypatch.delenv(var, raising=False)
    proposal = propose(machine(gpus=[gpu(80)]), gpu_devices=())
    assert "-ngl" not in changes(proposal)
    assert any("no GPU backend" in note for note in proposal.notes)


def test_gpus_hidden_by_the_user_give_a_cpu_proposal_that_says_why(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    proposal = propose(machine(gpus=[gpu(80)]), gpu_devices=())
    assert "-ngl" not in changes(proposal)
    assert any("CUDA_VISIBLE_DEVICES='' hides the GPUs" in note for note in proposal.notes)
    assert not any("no GPU backend" in note for note in proposal.notes)


def test_context_never_exceeds_the_trained_one_and_scales_with_slots():
    found = changes(propose(machine(), llama_summary(ctx_train=2048), parallel=3))
    assert found["-c"].args == ["-c", str(2048 * 3)] and found["-np"].args == ["-np", "3"]


def test_without_a_model_only_machine_settings_are_proposed():
    proposal = propose_llamacpp(machine(), None, gpu_devices=())
    assert set(changes(proposal)) == {"-fa", "-t"}
    assert any("--model" in note for note in proposal.notes)


def test_hook_answers_only_for_llamacpp_and_all():
    from velollm_core.contract.plugins import hook

    assert tune.propose_config(hardware=machine(), model=None, backend="ollama") == []
    answers = [p for group in hook().propose_config(hardware=machine(), model=None, backend="llamacpp",
                                                    concurrency=None)
               for p in group]
    assert [p.runtime for p in answers] == ["llamacpp"]


def test_unknown_model_is_a_user_error_for_llamacpp_but_a_note_for_all_runtimes():
    from velollm_core.contract.errors import UserInputError

    with pytest.raises(UserInputError):
        tune.propose_config(hardware=machine(), model="no-such-model:7b", backend="llamacpp")
    (proposal,) = tune.propose_config(hardware=machine(), model="no-such-model:7b", backend=None)
    assert any("not sized" in note for note in proposal.notes)


def test_cgroup_quota_parsing(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert tune.cgroup_cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert tune.cgroup_cpu_limit(tmp_path) is None
    assert tune.cgroup_cpu_limit(tmp_path / "absent") is None


def test_a_cuda_builds_device_line_is_read(fake_tools):
    """A CUDA build's ``--list-devices`` line (no CUDA build runs here, so this output is a capture)."""
    import shutil

    fake_tools("llama-server", stdout="Available devices:\n  CUDA0: NVIDIA H100 (81000 MiB, 80000 MiB free)\n")
    tune.build_devices.cache_clear()
    assert tune.build_devices(shutil.which("llama-server")) == ("CUDA0: NVIDIA H100 (81000 MiB, 80000 MiB free)",)
    tune.build_devices.cache_clear()


def test_the_real_cpu_build_lists_no_device_so_a_gpu_machine_gets_a_cpu_proposal(llama_server_bin, monkeypatch):
    """The build ./scripts/setup makes is a CPU build: its own ``--list-devices`` answers "(none)"."""
    for var in tune.GPU_MASK_VARS:
        monkeypatch.delenv(var, raising=False)
    tune.build_devices.cache_clear()
    devices = tune.build_devices(str(llama_server_bin))
    tune.build_devices.cache_clear()
    assert devices == ()
    proposal = propose(machine(gpus=[gpu(80)]), gpu_devices=devices)
    assert "-ngl" not in changes(proposal)
    assert any("no GPU backend" in note for note in proposal.notes)


def test_verification_starts_llama_server_with_exactly_the_candidate_flags(llama_server_bin):
    """Only the candidate's flags and --metrics (Prometheus counters, which change no timing), in the
    spellings the real build's ``--help`` lists: the defaults pass not even --ctx-size."""
    from velollm_llamacpp.backend import server_args
    from velollm_llamacpp.server import server_flags

    server_flags.cache_clear()
    assert "--metrics" in server_flags(llama_server_bin)
    assert server_args(llama_server_bin, tune.benchmark_options([]), 1) == ["--metrics"]
    assert server_args(llama_server_bin, tune.benchmark_options(["-t", "2", "-c", "8192"]), 1) == [
        "-t", "2", "-c", "8192", "--metrics"]


def test_verify_hook_answers_for_llamacpp_only_and_keeps_servers_up_when_they_fit(monkeypatch, tmp_path):
    from velollm_core.api import UserInputError
    from velollm_core.contract.schemas import ConfigProposal
    from velollm_core.tune import verify

    captured = {}
    monkeypatch.setattr(verify, "verify_proposal", lambda *a, **k: captured.update(args=a, kwargs=k))
    monkeypatch.setattr("velollm_core.contract.modelfiles.resolve_model_path", lambda name: MODEL)
    monkeypatch.setattr("velollm_gguf.meta.read_summary", lambda path: llama_summary())
    other = ConfigProposal(runtime="ollama")
    assert tune.verify_config(proposal=other, model="m", hardware=machine(), progress=print) is None
    assert captured == {}  # another runtime's proposal: this plugin measures nothing
    proposal = propose(machine(gpus=[gpu(80)]))
    with pytest.raises(UserInputError, match="pass --model"):
        tune.verify_config(proposal=proposal, model=None, hardware=machine(gpus=[gpu(80)]), progress=print)
    hardware = machine(gpus=[gpu(80)])
    tune.verify_config(proposal=proposal, model="m", hardware=hardware, progress=print)
    # The proposal is measured on the model the name resolves to, with this plugin's benchmark options.
    assert captured["args"] == (proposal, str(MODEL), hardware, tune.benchmark_options)
    assert captured["kwargs"]["keep_alive"] is True  # 8B Q4_0 x 3 servers fit in 80 GB
    tune.verify_config(proposal=proposal, model="m", hardware=machine(gpus=[gpu(24)]), progress=print)
    assert captured["kwargs"]["keep_alive"] is False  # defaults reserve 16 GiB of KV: one server at a time


def test_a_busy_machine_gets_a_note_about_fewer_threads():
    proposal = propose(machine(physical=2, logical=2), load_average=1.6)
    assert changes(proposal)["-t"].args == ["-t", "2"]  # the rule stays: a server outlives the load
    assert any("busy now" in note and "-t 1 is faster" in note for note in proposal.notes)
    assert not any("busy" in note for note in propose(machine(), load_average=0.2).notes)


def test_load_on_cpus_the_threads_leave_free_is_not_busy():
    # 16 CPUs, this process may use 4 (a container's cpuset): the other 12 absorb a load of 5.5.
    quiet = propose(machine(physical=16, logical=16), cpu_limit=4, load_average=5.5)
    assert changes(quiet)["-t"].args == ["-t", "4"]
    assert not any("busy" in note for note in quiet.notes)
    busy = propose(machine(physical=16, logical=16), cpu_limit=4, load_average=13.5)
    assert any("-t 3 is faster than -t 4" in note for note in busy.notes)


# --- two GPUs: one GPU for a model that fits it (measured against the default split by --verify), a layer
# split in proportion to usable memory for one that needs both, and the split candidates to A/B ----------

BUS = ("0000:09:00.0", "0000:41:00.0")
SEVENTY_B = {"n_layer": 80, "n_embd": 8192, "n_ff": 28672, "n_head": 64}  # ~38 GiB at Q4_0


def two_cards(first_gib=24.0, second_gib=24.0, link: str | None = None, name="NVIDIA GeForce RTX 3090"):
    cards = [gpu(first_gib, name=name).replace(pci_bus_id=BUS[0]),
             gpu(second_gib, name=name).replace(pci_bus_id=BUS[1])]
    hardware = machine(gpus=cards)
    if link:
        label = {"cross-numa": "SYS", "bridge": "NV4"}[link]
        hardware = hardware.model_copy(update={"links": [GpuLink(pci_bus_ids=list(BUS), kind=link, label=label,
                                                                 source="test")]})
    return hardware


def test_a_model_that_fits_one_card_runs_on_it_alone_and_verify_measures_that():
    proposal = propose(two_cards(link="cross-numa"))  # Llama 8B Q4_0 with 8k of context: ~6 GiB
    split = changes(proposal)["-sm"]
    assert split.args == ["-sm", "none", "-mg", "0"]
    assert (split.purpose, split.group) == ("speed", "split")  # --verify ablates it: one vs two GPUs
    assert "over PCIe and between CPU sockets (SYS)" in split.reason
    assert "often slower" in split.reason
    assert proposal.command[proposal.command.index("-sm"):][:4] == ["-sm", "none", "-mg", "0"]
    note = next(n for n in proposal.notes if n.startswith("split candidates"))
    assert "one GPU: -sm none -mg 0" in note and "layer split: -sm layer -ts 22,22" in note
    assert "rarely faster without NVLink" in note


def test_the_roomiest_card_is_the_main_gpu():
    proposal = propose(two_cards(24, 48, name="NVIDIA RTX A6000"))
    assert changes(proposal)["-sm"].args == ["-sm", "none", "-mg", "1"]


def test_a_model_that_needs_both_cards_gets_a_layer_split_by_usable_memory():
    proposal = propose(two_cards(32, 16), summary=llama_summary(**SEVENTY_B))
    found = changes(proposal)
    assert "-sm" not in found
    split = found["-sm/-ts"]
    ratios = [int(r) for r in split.args[3].split(",")]
    assert split.args[:3] == ["-sm", "layer", "-ts"] and ratios[0] > 1.9 * ratios[1]
    assert split.args[3] == tensor_split(gpu_budgets(two_cards(32, 16)))
    assert split.purpose == "explicit"
    assert found["-ngl"].args == ["-ngl", "81"]  # every layer and the head, over both cards
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in n for n in proposal.notes)  # unequal cards


def test_over_a_bridge_row_and_tensor_splits_are_worth_measuring():
    proposal = propose(two_cards(link="bridge"), summary=llama_summary(**SEVENTY_B))
    note = next(n for n in proposal.notes if n.startswith("split candidates"))
    assert "row split: -sm row -ts 22,22" in note and "tensor split: -sm tensor" in note
    assert "worth measuring over this bridge" in note and "one GPU" not in note


def test_one_gpu_gets_no_split():
    proposal = propose(machine(gpus=[gpu(24)]))
    assert not {"-sm", "-sm/-ts"} & set(changes(proposal))
    assert not any(n.startswith("split candidates") for n in proposal.notes)


def test_candidates_name_the_main_gpu_only_when_the_model_fits_it():
    budgets = gpu_budgets(two_cards(24, 48))
    assert [name for name, _ in split_candidates(budgets, budgets[1])] == [
        "one GPU", "layer split", "row split", "tensor split"]
    assert split_candidates(budgets, budgets[1])[0][1] == ["-sm", "none", "-mg", "1"]
    assert next(name for name, _ in split_candidates(budgets, None)) == "layer split"
