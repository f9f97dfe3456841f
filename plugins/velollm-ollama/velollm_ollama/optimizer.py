"""Ollama configuration rules: hardware + target model + current settings -> a proposal with reasons.

The proposal runs the rules (``rules.py``) in order over a ``Plan`` (``plan.py``) built from the
inputs (``inputs.py``) and the memory budget (``budget.py``), then adds the notes that depend on
the whole outcome.
"""

from __future__ import annotations

from velollm_core.api import ConfigProposal
from velollm_ollama.budget import apple_gpu_bytes, context_capacity, gib, memory_budget, pick_context
from velollm_ollama.config import SERVICE_UNIT, clean
from velollm_ollama.inputs import OptimizerInputs
from velollm_ollama.plan import Plan
from velollm_ollama.rules import RULES, explain_kv_saving, rule_kv_cache_type
from velollm_ollama.versions import has, parse_version, since

# Imported from here by the tests and earlier callers.
__all__ = ["OptimizerInputs", "apple_gpu_bytes", "context_capacity", "memory_budget", "pick_context",
           "propose_ollama_config"]

RUNTIME = "ollama"


def _context_notes(plan: Plan) -> None:
    inputs = plan.inputs
    config = inputs.current
    if config.scope == "systemd":
        plan.notes.append("current values are those of the ollama systemd service (unit file and drop-ins)")
        for key, setting in sorted(config.shadowed.items()):
            plan.notes.append(f"your shell sets {key}={clean(setting.value)}, which the service does not see")
    elif config.scope == "launchctl":
        plan.notes.append("current values are from launchctl (the Ollama app) and this shell")
    if parse_version(inputs.version) is None:
        plan.notes.append("Ollama's version is unknown (no server answered, or a development build): the rules "
                          "follow the newest Ollama (llama-server inside); start `ollama serve` for advice "
                          "that matches the installed release")
    elif not has(inputs.version, "context_length_env") and any(c.key == "OLLAMA_CONTEXT_LENGTH" for c in plan.changes):
        plan.notes.append(f"OLLAMA_CONTEXT_LENGTH needs Ollama {since('context_length_env')} or newer; "
                          f"this server is {inputs.version}")
    if plan.budget.kind == "apple":
        plan.notes.append(
            f"macOS lets the GPU use {gib(plan.budget.devices[0])} of {gib(plan.budget.ram_bytes)} RAM; "
            "`sudo sysctl iogpu.wired_limit_mb=N` raises that limit until the next reboot"
        )
    if plan.budget.kind == "cpu":
        others = [g.name for g in inputs.hardware.gpus]
        plan.notes.append("no NVIDIA, AMD or Apple GPU with known memory: sized for RAM"
                          + (f" (found: {', '.join(others)})" if others else ""))


def propose_ollama_config(inputs: OptimizerInputs) -> ConfigProposal:
    """Run every rule in order and return the proposal (changes with reasons, and notes)."""
    plan = Plan(inputs)
    kv_change = None
    for rule in RULES:
        result = rule(plan)
        if rule is rule_kv_cache_type:
            kv_change = result
    explain_kv_saving(plan, kv_change)
    _context_notes(plan)
    return ConfigProposal(
        runtime=RUNTIME,
        changes=plan.changes,
        notes=[*inputs.notes, *plan.notes],
        systemd_unit=SERVICE_UNIT if inputs.platform.startswith("linux") else None,
        **plan.extra,
    )
