"""The proposal being built: the settings the rules decided so far, read as Ollama will read them."""

from __future__ import annotations

from velollm_core.api import ConfigChange
from velollm_ollama.budget import context_capacity, memory_budget
from velollm_ollama.config import parse_bool, parse_uint
from velollm_ollama.inputs import OptimizerInputs
from velollm_ollama.modelfacts import GIB, MIB
from velollm_ollama.versions import OLD_FLASH_ATTENTION_FAMILIES, has, parallel_forced_to_one

MAX_GPU_CONTEXT = 32768
# On CPU, prompt processing runs at tens to hundreds of tokens/s: a longer default is rarely usable.
MAX_CPU_CONTEXT = 8192
# The types Ollama's own runner knew (< 0.30); from 0.30 the value goes to llama-server, which knows these.
KV_TYPES = ("f16", "q8_0", "q4_0")
LLAMA_SERVER_KV_TYPES = ("f16", "q8_0", "q4_0", "f32", "bf16", "q4_1", "iq4_nl", "q5_0", "q5_1")
UNQUANTIZED_KV_TYPES = ("f16", "f32", "bf16")
# llama.cpp's --fit-target default: MiB its fit leaves free on each GPU.
DEFAULT_FIT_TARGET_MIB = 1024
OLD_DEFAULT_CONTEXT = 4096


class Plan:
    """The proposal being built: rules read decided values of earlier rules through it."""

    def __init__(self, inputs: OptimizerInputs) -> None:
        self.inputs = inputs
        self.model = inputs.model
        self.budget = memory_budget(inputs.hardware, inputs.loaded_vram_bytes, inputs.loaded_ram_bytes)
        self.version = inputs.version
        # Ollama >= 0.30 runs llama-server, whose fit keeps LLAMA_ARG_FIT_TARGET MiB free per GPU.
        self.llama_server = has(self.version, "llama_server")
        if self.llama_server and self.budget.kind != "cpu" and self.fit_enabled:
            fit_target = (parse_uint(self.current("LLAMA_ARG_FIT_TARGET")) or DEFAULT_FIT_TARGET_MIB) * MIB
            self.budget.reserve_per_device = max(self.budget.reserve_per_device, fit_target)
        self.changes: list[ConfigChange] = []
        self.notes: list[str] = []
        self.extra: dict = {}  # further fields of the proposal (a Modelfile to create)
        self.decided: dict[str, str | None] = {}

    def current(self, key: str) -> str | None:
        return self.inputs.current.value(key)

    def value(self, key: str) -> str | None:
        """The value after the rules so far: proposed if a rule changed it, else current."""
        return self.decided[key] if key in self.decided else self.current(key)

    def propose(self, key: str, proposed: str | None, reason: str) -> ConfigChange | None:
        """Record a change unless the current value already is ``proposed``."""
        self.decided[key] = proposed
        if self.current(key) == proposed:
            return None
        setting = self.inputs.current.settings.get(key)
        change = ConfigChange(key=key, current=setting.value if setting else None, proposed=proposed,
                              reason=reason)
        self.changes.append(change)
        return change

    # decided values, as Ollama will read them

    @property
    def overhead(self) -> int:
        return parse_uint(self.value("OLLAMA_GPU_OVERHEAD")) or 0

    @property
    def fit_enabled(self) -> bool:
        """llama.cpp's fit (on unless LLAMA_ARG_FIT says off)."""
        return (self.current("LLAMA_ARG_FIT") or "on").lower() not in ("off", "0", "false")

    @property
    def flash_attention(self) -> bool:
        """Whether flash attention is on as Ollama of this version reads the decided setting.

        Unset means llama.cpp's ``auto`` from 0.30 (on wherever the devices run it; Ollama passes off
        where a GPU cannot), and before that on for Ollama's list of model families.
        """
        setting = parse_bool(self.value("OLLAMA_FLASH_ATTENTION"))
        if setting is not None:
            return setting
        if self.llama_server:
            return not self.budget.flash_attention_blocker
        return self.model is not None and self.model.architecture in OLD_FLASH_ATTENTION_FAMILIES

    @property
    def model_flash_attention(self) -> bool:
        """Whether flash attention is really used for the target model (Ollama's per-model test before 0.30;
        llama-server's own choice from then)."""
        if self.llama_server:
            return self.flash_attention
        return self.flash_attention and (self.model is None or self.model.supports_flash_attention())

    @property
    def kv_types(self) -> tuple[str, ...]:
        return LLAMA_SERVER_KV_TYPES if self.llama_server else KV_TYPES

    @property
    def kv_type(self) -> str:
        """The KV cache type the target model gets: quantized types only work with flash attention."""
        wanted = (self.value("OLLAMA_KV_CACHE_TYPE") or "f16").lower()
        if wanted not in self.kv_types:
            return "f16"
        return wanted if wanted in UNQUANTIZED_KV_TYPES or self.model_flash_attention else "f16"

    @property
    def parallel_forced_to_one(self) -> bool:
        """Ollama loads the target's architecture with one slot whatever OLLAMA_NUM_PARALLEL says."""
        return self.model is not None and parallel_forced_to_one(self.model.architecture, self.version)

    @property
    def parallel(self) -> int:
        if self.parallel_forced_to_one:
            return 1
        return max(1, parse_uint(self.value("OLLAMA_NUM_PARALLEL")) or 1)

    @property
    def default_context(self) -> int:
        """Ollama's context when OLLAMA_CONTEXT_LENGTH is unset: by total VRAM from 0.15.5, else 4,096."""
        if not has(self.version, "vram_default_context") or self.budget.kind == "cpu":
            return OLD_DEFAULT_CONTEXT
        overhead = parse_uint(self.current("OLLAMA_GPU_OVERHEAD")) or 0
        totals = self.budget.devices if self.budget.kind == "apple" else [
            gpu.memory_total_bytes or 0 for gpu in self.budget.gpus]
        total = sum(max(0, device - overhead) for device in totals)
        if total >= 47 * GIB:
            return 262144
        if total >= 23 * GIB:
            return 32768
        return OLD_DEFAULT_CONTEXT

    @property
    def context(self) -> int | None:
        return parse_uint(self.value("OLLAMA_CONTEXT_LENGTH"))

    @property
    def effective_context(self) -> int:
        """The context the target model is loaded with: the decided setting or Ollama's default, within the
        model's training (Ollama lowers a larger request to it)."""
        context = self.context or self.default_context
        trained = self.model.context_length if self.model is not None else None
        return min(context, trained) if trained else context

    def capacity(self, parallel: int | None = None, single_device: bool = False,
                 kv_type: str | None = None) -> int | None:
        if self.model is None:
            return None
        return context_capacity(
            self.budget, self.model, kv_type=kv_type or self.kv_type,
            flash_attention=self.model_flash_attention, parallel=parallel or self.parallel,
            overhead=self.overhead, single_device=single_device,
        )

    @property
    def context_cap(self) -> int:
        return MAX_CPU_CONTEXT if self.budget.kind == "cpu" else MAX_GPU_CONTEXT

    def footprint(self, context: int | None) -> int | None:
        """Weights + KV cache + compute buffers of the target model at ``context``, in bytes."""
        if self.model is None:
            return None
        return self.model.footprint_bytes(context or self.effective_context, cache_type=self.kv_type,
                                          flash_attention=self.model_flash_attention, parallel=self.parallel)

    @property
    def memory_word(self) -> str:
        return {"gpu": "VRAM", "apple": "unified memory", "cpu": "RAM"}[self.budget.kind]

