"""The ``llamacpp`` backend object: a llama-server VeloLLM starts (or one it attaches to with --host).

The work is done by ``velollm_llamacpp.backend`` (server, checks, generation, facts); this object is
what the plugin registers, and what names its typed options and its capabilities (speculative
decoding, ``velollm optimize --verify``).
"""

from __future__ import annotations

from velollm_core.api import (
    BackendBase,
    BackendInfo,
    BenchmarkContext,
    ConfigProposal,
    GenerationRequest,
    GenerationTiming,
    HardwareReport,
)
from velollm_llamacpp.options import LlamaCppOptions

BACKEND = "llamacpp"


class LlamaCppBackend(BackendBase):
    """llama.cpp's llama-server, built by ``velollm llamacpp install`` or found on PATH."""

    name = BACKEND
    Options = LlamaCppOptions

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        from velollm_llamacpp.backend import check

        check(context, requests)

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        from velollm_llamacpp.backend import run_generation

        return run_generation(request, context)

    def describe(self, context: BenchmarkContext) -> BackendInfo:
        from velollm_llamacpp.backend import describe

        return describe(context)

    def speculative(self):
        from velollm_llamacpp.speculative import LlamaCppSpeculative

        return LlamaCppSpeculative()

    def verify_config(self, proposal: ConfigProposal, model: str | None, hardware: HardwareReport, progress):
        from velollm_llamacpp.tune import verify_config

        return verify_config(proposal=proposal, model=model, hardware=hardware, progress=progress)
