"""The proposal over several GPUs: ``-sm``/``-ts``/``-mg``, and the split candidates worth measuring.

- A model that fits the roomiest GPU with its KV cache runs there alone (``-sm none -mg I``): every token
  of a layer split crosses the link between the GPUs once per boundary, which often makes two GPUs slower
  than one for a model that fits one. ``optimize --verify`` measures it against llama.cpp's default (a
  layer split over every GPU), so the claim is checked, not assumed.
- A model that needs several GPUs gets the layer split with ``-ts`` in proportion to each GPU's usable
  memory (llama.cpp's default splits by the free memory at start-up, which moves with whatever else
  holds memory then; unequal cards then get unequal shares).
- Row and tensor splits are written as candidates for a measurement on the machine: row mode cuts every
  weight matrix over the GPUs (all of them work on each token, at the price of the link for every
  matrix product: worth trying over NVLink, rarely over PCIe through the CPU), and the llama.cpp tree
  VeloLLM builds has no split buffer in its CUDA backend, so ``-sm row`` is refused there; ``-sm tensor``
  (experimental in llama.cpp) is its parallel split.

Heavy imports happen inside the functions.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from velollm_core.api import HardwareReport
    from velollm_llamacpp.tune_facts import GpuBudget
    from velollm_llamacpp.tune_rules import TunePlan

# How each kind of GPU link reads in a reason (the core's neutral kinds).
LINK_WORDS = {
    "bridge": "over their direct bridge",
    "board": "on their shared board",
    "pcie-switch": "over PCIe through one switch",
    "pcie-switches": "over PCIe through several switches",
    "host-bridge": "over PCIe through the CPU",
    "numa-node": "over PCIe between host bridges",
    "cross-numa": "over PCIe and between CPU sockets",
}
FAST_LINKS = ("bridge", "board")


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def slowest_link(hardware: HardwareReport, budgets: list[GpuBudget]) -> tuple[str, str] | None:
    """(kind, label) of the slowest link between the budgeted GPUs, where detect could tell every pair."""
    bus_ids = [hardware.gpus[b.index].pci_bus_id for b in budgets if b.index < len(hardware.gpus)]
    if len(bus_ids) < 2 or not all(bus_ids):
        return None
    pairs = {tuple(sorted(link.pci_bus_ids)): link for link in hardware.links}
    wanted = [tuple(sorted((a, b))) for i, a in enumerate(bus_ids) for b in bus_ids[i + 1:]]
    if not all(pair in pairs for pair in wanted):
        return None
    slowest = max((pairs[pair] for pair in wanted), key=lambda link: link.speed_rank)
    return slowest.kind, slowest.label or slowest.kind


def tensor_split(budgets: list[GpuBudget]) -> str:
    """``-ts`` ratios: each GPU's usable memory in GiB (at least 1), the unit llama.cpp normalizes away."""
    return ",".join(str(max(1, round(b.usable_bytes / 2**30))) for b in budgets)


def split_candidates(budgets: list[GpuBudget], fits_one: GpuBudget | None) -> list[tuple[str, list[str]]]:
    """The configurations an A/B on this machine should compare, each as llama-server arguments."""
    ratios = tensor_split(budgets)
    candidates = [("one GPU", ["-sm", "none", "-mg", str(fits_one.index)])] if fits_one else []
    return candidates + [("layer split", ["-sm", "layer", "-ts", ratios]),
                         ("row split", ["-sm", "row", "-ts", ratios]),
                         ("tensor split", ["-sm", "tensor"])]


def rule_split(plan: TunePlan) -> None:
    """-sm/-ts/-mg when the model runs on several GPUs (see the module docstring)."""
    sizing = plan.sizing
    if sizing is None or len(plan.budgets) < 2 or sizing.offload.n_gpu_layers == 0:
        return
    from velollm_gguf import estimate_memory

    from velollm_llamacpp.tune_rules import LLAMA_DEFAULT_UBATCH, _change

    offload = sizing.offload
    roomiest = max(plan.budgets, key=lambda budget: budget.usable_bytes)
    alone = estimate_memory(sizing.summary, ctx=sizing.ctx, cache_type_k=offload.cache_type,
                            parallel=sizing.parallel, n_ubatch=LLAMA_DEFAULT_UBATCH,
                            n_gpu_layers=sizing.n_layer + 1, gpu_names=(roomiest.name,))
    need_alone = sum(d.bytes for d in alone.devices if d.name != "CPU")
    fits_one = roomiest if offload.n_gpu_layers == sizing.n_layer + 1 and need_alone <= roomiest.usable_bytes else None
    link = slowest_link(plan.hardware, plan.budgets)
    link_words = f"{LINK_WORDS[link[0]]} ({link[1]})" if link else "over the link between them"
    if fits_one:
        plan.changes.append(_change(
            "-sm", ["-sm", "none", "-mg", str(roomiest.index)], "layer (split over all GPUs)",
            f"the whole model with its {_mib(alone.kv_cache_bytes)} KV cache needs {_mib(need_alone)} and "
            f"{roomiest.name} has {_mib(roomiest.usable_bytes)} usable: on one GPU no token's activations travel "
            f"{link_words}; a layer split is often slower for a model that fits one card, so --verify "
            "measures this against llama.cpp's default split", "speed", "split"))
    else:
        gpu_bytes = {d.name: d.bytes for d in offload.estimate.devices}
        shares = ", ".join(f"{b.name}: {_mib(gpu_bytes.get(b.name, 0))} of {_mib(b.usable_bytes)}"
                           for b in plan.budgets)
        plan.changes.append(_change(
            "-sm/-ts", ["-sm", "layer", "-ts", tensor_split(plan.budgets)], "layer, split by free memory",
            f"the model needs more than one GPU: layers in proportion to each GPU's usable memory ({shares}); "
            "written out so the split does not move with whatever else holds GPU memory at start-up",
            "explicit", "split"))
    if len({b.total_bytes for b in plan.budgets}) > 1 or len({b.name.split(" ", 1)[-1] for b in plan.budgets}) > 1:
        plan.notes.append("these GPUs differ: CUDA numbers devices fastest first, so set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                          "for -mg and -ts to follow the order VeloLLM and nvidia-smi list them in")
    candidates = split_candidates(plan.budgets, fits_one)
    fast = link is not None and link[0] in FAST_LINKS
    plan.notes.append(
        "split candidates to measure on these GPUs (benchmarks/gpu/10_two_gpus.sh runs them): "
        + "; ".join(f"{name}: {shlex.join(args)}" for name, args in candidates)
        + (". Row and tensor splits put every GPU to work on each token but cross the link for every matrix "
           "product: " + ("worth measuring over this bridge" if fast else "rarely faster without NVLink")
           + "; -sm row is refused by CUDA builds of the llama.cpp VeloLLM installs (no split buffer)"))
