"""Which Ollama behaviour starts at which release, read from Ollama's own source (tags of
github.com/ollama/ollama); ``/api/version`` tells a server's release apart.

Each entry names the first release with the behaviour. An unknown version (no server answered, or
a development build that reports ``0.0.0``) is taken as the newest: the rules then describe the
Ollama that users install today, and say so in a note.
"""

from __future__ import annotations

import re

# name: (first release, what changed there)
FEATURES: dict[str, tuple[tuple[int, int, int], str]] = {
    "context_length_env": ((0, 5, 13), "OLLAMA_CONTEXT_LENGTH sets the default context (envconfig.ContextLength)"),
    "parallel_one_mllama": ((0, 7, 0), "OLLAMA_NUM_PARALLEL forced to 1 for mllama (server/sched.go)"),
    "parallel_one_qwen3vl": ((0, 12, 7), "forced to 1 for qwen3vl, qwen3vlmoe"),
    "parallel_one_qwen3next": ((0, 15, 5), "forced to 1 for qwen3next, lfm2, lfm2moe"),
    "vram_default_context": ((0, 15, 5), ("unset OLLAMA_CONTEXT_LENGTH: 4k / 32k / 256k by total VRAM "
                                         "(>= 23 / 47 GiB, less OLLAMA_GPU_OVERHEAD per GPU; server/routes.go)")),
    "parallel_one_qwen35": ((0, 17, 1), ("forced to 1 for qwen35, qwen35moe, nemotron_h, nemotron_h_moe, "
                                        "nemotron_h_omni")),
    "llama_server": ((0, 30, 0), ("every GGUF model runs in a spawned upstream llama-server "
                                 "(llm/llama_server.go)")),
    "flash_attention_auto": ((0, 30, 0), ("OLLAMA_FLASH_ATTENTION unset: --flash-attn auto (llama.cpp decides); "
                                         "set: on/off; off where a GPU lacks support")),
    "kv_type_passthrough": ((0, 30, 0), ("OLLAMA_KV_CACHE_TYPE passed as --cache-type-k/--cache-type-v, "
                                        "with or without flash attention")),
    "llama_arg_fit": ((0, 30, 0), ("LLAMA_ARG_FIT / LLAMA_ARG_FIT_TARGET reach llama-server through "
                                  "Ollama's environment: llama.cpp's fit places the layers Ollama leaves "
                                  "unset (-ngl only with num_gpu), keeping FIT_TARGET MiB (1024) free per GPU")),
    "fit_target_projector": ((0, 31, 2), "Ollama adds a vision projector's MiB to LLAMA_ARG_FIT_TARGET"),
    "draft": ((0, 30, 0), ("Modelfile DRAFT (layer application/vnd.ollama.image.draft), option "
                          "draft_num_predict (4 with a draft, 0 = off), MTP from <arch>.nextn_predict_layers")),
    "prompt_count_includes_cache": ((0, 30, 1), ("prompt_eval_count = cache_n + prompt_n, while "
                                                "prompt_eval_duration covers prompt_n only")),
    "draft_dflash": ((0, 32, 8), "a draft of architecture dflash runs as --spec-type draft-dflash"),
}

# Architectures whose parallel requests Ollama forces to 1, with the feature that added each.
PARALLEL_ONE = {
    "mllama": "parallel_one_mllama",
    **dict.fromkeys(("qwen3vl", "qwen3vlmoe"), "parallel_one_qwen3vl"),
    **dict.fromkeys(("qwen3next", "lfm2", "lfm2moe"), "parallel_one_qwen3next"),
    **dict.fromkeys(("qwen35", "qwen35moe", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni"),
                    "parallel_one_qwen35"),
}

# Before llama-server, unset OLLAMA_FLASH_ATTENTION meant on for these families (fs/ggml FlashAttention()).
OLD_FLASH_ATTENTION_FAMILIES = frozenset((
    "bert", "gemma3", "gemma4", "glm4moelite", "glmocr", "gptoss", "gpt-oss", "lfm2", "lfm2moe", "mistral3",
    "nemotron_h", "nemotron_h_moe", "nemotron_h_omni", "olmo3", "qwen3", "qwen3moe", "qwen35", "qwen35moe",
    "qwen3next", "qwen3vl", "qwen3vlmoe",
))

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``0.33.0-rc2`` -> (0, 33, 0); None for no text, text without a version, or ``0.0.0`` (a dev build)."""
    match = _VERSION.match((text or "").strip())
    if not match:
        return None
    version = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
    return None if version == (0, 0, 0) else version


def has(version: str | tuple[int, int, int] | None, feature: str) -> bool:
    """Whether a server of ``version`` behaves as ``feature`` says; an unknown version is the newest."""
    parsed = parse_version(version) if isinstance(version, str) or version is None else version
    return parsed is None or parsed >= FEATURES[feature][0]


def since(feature: str) -> str:
    """The first release with ``feature``, as ``0.30.1``."""
    return ".".join(map(str, FEATURES[feature][0]))


def parallel_forced_to_one(architecture: str | None, version: str | None) -> bool:
    """Whether Ollama of ``version`` loads ``architecture`` with one slot whatever OLLAMA_NUM_PARALLEL says."""
    feature = PARALLEL_ONE.get(architecture or "")
    return feature is not None and has(version, feature)
