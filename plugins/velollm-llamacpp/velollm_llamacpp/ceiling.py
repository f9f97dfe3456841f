"""The engine's ceiling for llama.cpp: ``llama-batched-bench`` at a load level's shape.

llama-batched-bench decodes N sequences in one batch per step, with the model and the flags the
server ran with, and nothing of the server around it (no HTTP, no slot scheduling, no per-request
sampling loop). Its generation rate (``speed_tg``: N x tg tokens over the generation time) is the
ceiling a server level's output tok/s is divided by. Shapes sharing prompt and output lengths are
measured in one run (``-npl`` takes a list), so the model loads once per length pair.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from velollm_core.api import (
    BackendError,
    BenchmarkContext,
    EngineCeiling,
    EngineShape,
    UserInputError,
    interrupt,
    resolve_model_path,
)
from velollm_llamacpp.options import OPTION_FLAGS

PROGRAM = "llama-batched-bench"
# Server flags that shape the engine's work and that llama-batched-bench takes too (the same common
# arguments); anything else of server_args (slots, ports, caching of prompts) is the server's own.
ENGINE_FLAGS = frozenset({"-fa", "--flash-attn", "-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified",
                          "-ctk", "--cache-type-k", "-ctv", "--cache-type-v", "-b", "--batch-size",
                          "-ub", "--ubatch-size", "-t", "--threads", "-tb", "--threads-batch",
                          "-ngl", "--n-gpu-layers", "--gpu-layers", "--poll", "-sm", "--split-mode",
                          "-ts", "--tensor-split", "-mg", "--main-gpu", "--no-mmap", "--mlock"})
# Options of ours that are engine flags too (ctx_size is not: the run sizes its own context).
ENGINE_OPTIONS = tuple(key for key in OPTION_FLAGS if key != "ctx_size")
# One length pair's run: the model load plus every level's batch; generous for a big model on a CPU.
TIMEOUT_S = 3600.0


def engine_args(options: dict[str, Any]) -> list[str]:
    """The engine flags of the benchmark's options and server_args, as llama-batched-bench takes them."""
    args: list[str] = []
    for key in ENGINE_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        args += [OPTION_FLAGS[key][0], str(value)]
    raw = options.get("server_args")
    words = shlex.split(str(raw)) if raw else []
    for index, word in enumerate(words):
        flag = word.split("=", 1)[0]
        if flag not in ENGINE_FLAGS:
            continue
        args.append(word)
        following = words[index + 1] if index + 1 < len(words) else None
        if "=" not in word and following is not None and not following.startswith("-"):
            args.append(following)
    return args


def command(binary: Path, model: Path, options: dict[str, Any], prompt_tokens: int, output_tokens: int,
            sequences: list[int]) -> list[str]:
    """llama-batched-bench for one prompt/output pair at every count of ``sequences``: each sequence
    its own prompt (no shared prefix), a context that holds the largest batch, JSON lines out."""
    context = max(sequences) * (prompt_tokens + output_tokens)
    context = -(-context // 256) * 256  # llama.cpp pads the context to 256 anyway
    return [str(binary), "-m", str(model), "-c", str(context), "-npp", str(prompt_tokens),
            "-ntg", str(output_tokens), "-npl", ",".join(str(n) for n in sorted(set(sequences))),
            *engine_args(options), "--output-format", "jsonl"]


def parse_jsonl(text: str) -> dict[int, dict[str, Any]]:
    """llama-batched-bench's ``--output-format jsonl`` lines by parallel sequences (``pl``)."""
    rows: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("pl"), int) and isinstance(row.get("speed_tg"), (int, float)):
            rows[row["pl"]] = row
    return rows


def ceiling_of(shape: EngineShape, row: dict[str, Any], argv: list[str]) -> EngineCeiling:
    """One shape's ceiling from its llama-batched-bench row."""
    t_tg, t_all = row.get("t_tg"), row.get("t")
    steps = row.get("tg") or shape.output_tokens
    generated = shape.sequences * steps
    return EngineCeiling(
        shape=shape,
        output_tokens_per_s=float(row["speed_tg"]),
        prompt_tokens_per_s=float(row["speed_pp"]) if isinstance(row.get("speed_pp"), (int, float)) else None,
        with_prompts_tokens_per_s=generated / float(t_all) if isinstance(t_all, (int, float)) and t_all > 0 else None,
        step_ms=float(t_tg) * 1000 / steps if isinstance(t_tg, (int, float)) and steps else None,
        tool=PROGRAM,
        command=tuple(argv),
    )


def _model(context: BenchmarkContext) -> Path:
    model = context.state.get("model_path")
    if model is not None:
        return Path(model)
    try:
        return resolve_model_path(context.model)
    except UserInputError:
        raise UserInputError(f"the engine ceiling needs the model file, and {context.model!r} names none here "
                             "(a server attached with --host is measured by its model's path)") from None


def measure(shapes: list[EngineShape], context: BenchmarkContext) -> list[EngineCeiling]:
    """Every shape's ceiling: one llama-batched-bench run per prompt/output pair."""
    from velollm_llamacpp.install import find_program

    binary = find_program(PROGRAM, exact=bool(context.options.get("exact_build")))
    model = _model(context)
    by_lengths: dict[tuple[int, int], list[EngineShape]] = defaultdict(list)
    for shape in shapes:
        if shape.sequences >= 1 and shape.prompt_tokens >= 1 and shape.output_tokens >= 1:
            by_lengths[(shape.prompt_tokens, shape.output_tokens)].append(shape)
    found: list[EngineCeiling] = []
    for (prompt_tokens, output_tokens), group in by_lengths.items():
        argv = command(binary, model, dict(context.options), prompt_tokens, output_tokens,
                       [shape.sequences for shape in group])
        try:
            done = interrupt.run(argv, timeout=TIMEOUT_S, errors="replace")
        except subprocess.TimeoutExpired:
            raise BackendError(f"{PROGRAM} did not finish within {TIMEOUT_S:g} s: {shlex.join(argv)}") from None
        rows = parse_jsonl(done.stdout)
        if done.returncode != 0 or not rows:
            tail = (done.stderr or "").strip().splitlines()[-3:]
            raise BackendError(f"{PROGRAM} exited {done.returncode} without results ({' / '.join(tail)[:300]}): "
                               f"{shlex.join(argv)}")
        found += [ceiling_of(shape, rows[shape.sequences], argv) for shape in group if shape.sequences in rows]
    return found
