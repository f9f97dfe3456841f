"""The proposal being built: the settings the rules decided so far, read as Ollama will read them."""

from __future__ import annotations

from velollm_core.api import ConfigChange
from velollm_ollama.budget import context_capacity, memory_budget
from velollm_ollama.config import parse_bool, parse_uint
from velollm_ollama.inputs import OptimizerInputs

MAX_GPU_CONTEXT = 32768
# On CPU, prompt processing runs at tens to hundreds of tokens/s: a longer default is rarely usable.
MAX_CPU_CONTEXT = 8192
KV_TYPES = ("f16", "q8_0", "q4_0")


class Plan:
    """The proposal being built: rules read decided values of earlier rules through it."""

    def __init__(self, inputs: OptimizerInputs) -> None:
        self.inputs = inputs
        self.model = inputs.model
        self.budget = memory_budget(inputs.hardware, inputs.loaded_vram_bytes, inputs.loaded_ram_bytes)
        self.changes: list[ConfigChange] = []
        self.notes: list[str] = []
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
    def flash_attention(self) -> bool:
        return parse_bool(self.value("OLLAMA_FLASH_ATTENTION")) is True

    @property
    def model_flash_attention(self) -> bool:
        """Whether flash attention is really used for the target model."""
        return self.flash_attention and (self.model is None or self.model.supports_flash_attention())

    @property
    def kv_type(self) -> str:
        """The KV cache type the target model gets: quantized types only work with flash attention."""
        wanted = (self.value("OLLAMA_KV_CACHE_TYPE") or "f16").lower()
        return wanted if wanted in KV_TYPES and self.model_flash_attention else "f16"

    @property
    def parallel(self) -> int:
        return max(1, parse_uint(self.value("OLLAMA_NUM_PARALLEL")) or 1)

    @property
    def context(self) -> int | None:
        return parse_uint(self.value("OLLAMA_CONTEXT_LENGTH"))

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
        return self.model.footprint_bytes(context or 4096, cache_type=self.kv_type,
                                          flash_attention=self.model_flash_attention, parallel=self.parallel)

    @property
    def memory_word(self) -> str:
        return {"gpu": "VRAM", "apple": "unified memory", "cpu": "RAM"}[self.budget.kind]

