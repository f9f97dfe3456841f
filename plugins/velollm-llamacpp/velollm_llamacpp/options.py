"""The llamacpp backend's typed options: ``--option KEY=VALUE`` for the llama-server it starts."""

from __future__ import annotations

from typing import Any

from velollm_core.api import BackendOptions, Field, UserInputError, field_validator

# Options that become llama-server flags; every spelling listed is one some llama.cpp release
# accepted, the first one the build knows is used.
OPTION_FLAGS: dict[str, tuple[str, ...]] = {
    "threads": ("--threads", "-t"),
    "threads_batch": ("--threads-batch", "-tb"),
    "ctx_size": ("--ctx-size", "-c"),
    "n_gpu_layers": ("--n-gpu-layers", "-ngl"),
    "batch_size": ("--batch-size", "-b"),
    "ubatch_size": ("--ubatch-size", "-ub"),
    "flash_attn": ("--flash-attn", "-fa"),
    "cache_type_k": ("--cache-type-k", "-ctk"),
    "cache_type_v": ("--cache-type-v", "-ctv"),
}


class LlamaCppOptions(BackendOptions):
    """What ``--option`` may set for the llamacpp backend: server flags, then how the server is run."""

    threads: int | None = Field(None, description="--threads: CPU threads for generation.")
    threads_batch: int | None = Field(None, description="--threads-batch: CPU threads for prompt processing.")
    ctx_size: int | None = Field(None, description="--ctx-size: context of all slots together "
                                                   "(default 4096 per slot).")
    n_gpu_layers: int | str | None = Field(None, description="--n-gpu-layers: layers offloaded to the GPU.")
    batch_size: int | None = Field(None, description="--batch-size: logical batch size.")
    ubatch_size: int | None = Field(None, description="--ubatch-size: physical batch size.")
    flash_attn: bool | str | None = Field(None, description="--flash-attn: on, off or auto (true/false too).")
    cache_type_k: str | None = Field(None, description="--cache-type-k: KV cache type of K (f16, q8_0, q4_0).")
    cache_type_v: str | None = Field(None, description="--cache-type-v: KV cache type of V.")
    server_args: str | None = Field(None, description="More llama-server flags, quoted as a shell would.")
    port: int | None = Field(None, description="Port of the server VeloLLM starts (default: a free one).")
    health_timeout_s: float | None = Field(None, gt=0, description="Seconds to wait for the server to be ready.")
    exact_build: bool = Field(False, description="Use the batch-invariant llama.cpp build.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the server.",
                                json_schema_extra={"placeholder": "<VAR>"})

    @field_validator("port", mode="before")
    @classmethod
    def _tcp_port(cls, port: Any) -> Any:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
            raise UserInputError(f"--option port={port} is not a TCP port (1-65535)")
        return port

    @field_validator("ctx_size", mode="before")
    @classmethod
    def _tokens(cls, ctx: Any) -> Any:
        if ctx is not None and (isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1):
            raise UserInputError(f"--option ctx_size={ctx} is not a positive number of tokens")
        return ctx

    @field_validator("server_args", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @field_validator("env", mode="before")
    @classmethod
    def _env_text(cls, env: Any) -> Any:
        return {str(key): str(value) for key, value in env.items()} if isinstance(env, dict) else env
