"""``velollm estimate``: the memory a GGUF model needs under llama.cpp, from its metadata alone."""

from __future__ import annotations

import math

import click
from velollm_gguf.estimate import CACHE_TYPES, SPLIT_MODES, MemoryEstimate

ALL_LAYERS = 999  # -ngl 999: every layer and the output head, whatever the model's depth


def _mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB"


def render_estimate(estimate: MemoryEstimate, console) -> None:
    """The estimate as a table: weights, KV cache (full and sliding-window layers), compute, devices."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"memory estimate · {escape(estimate.model)}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("bytes", justify="right")
    table.add_column("detail")
    kv = estimate.kv
    table.add_row("weights", _mib(estimate.weights_bytes), "tensors' real types and shapes")
    detail = (f"{estimate.n_ctx} tokens, {kv.layout.n_stream} stream(s) of {kv.layout.cells} cells, "
              f"K {estimate.cache_type_k} / V {estimate.cache_type_v}")
    table.add_row("KV cache", _mib(estimate.kv_cache_bytes), detail)
    if kv.layout.swa_cells:
        table.add_row("  full-attention layers", _mib(kv.full_bytes), "")
        table.add_row("  sliding-window layers", _mib(kv.swa_bytes), f"{kv.layout.swa_cells} cells per stream")
    fa = "flash attention on" if estimate.flash_attn else "flash attention off"
    table.add_row("compute (allowance)", _mib(estimate.compute_bytes), f"{fa}, {estimate.parallel} slot(s)")
    if estimate.duplicated_bytes:
        table.add_row("tied head copy", _mib(estimate.duplicated_bytes), "token embeddings again on the GPU")
    table.add_row("total", _mib(estimate.total_bytes), "", style="bold")
    for device in estimate.devices:
        parts = (f": weights {_mib(device.weights_bytes)}, KV {_mib(device.kv_cache_bytes)}, "
                 f"compute {_mib(device.compute_bytes)}" if estimate.gpu_count > 1 else "")
        table.add_row(f"  on {escape(device.name)}", _mib(device.bytes), f"{device.layers} layer(s){parts}")
    console.print(table)
    for note in estimate.notes:
        console.print(f"note: {escape(note)}", highlight=False)


@click.command("estimate", short_help="Estimate the memory a model needs: weights, KV cache, compute buffers.")
@click.argument("model")
@click.option("--ctx", type=int, help="Context size in tokens (all slots together); default: the model's own.")
@click.option("--kv-type", type=click.Choice(CACHE_TYPES, case_sensitive=False), default="f16", show_default=True,
              help="KV cache type, for K and V.")
@click.option("--parallel", type=int, default=1, show_default=True, help="Parallel slots (llama-server -np).")
@click.option("--n-gpu-layers", type=click.IntRange(min=0), help="Layers offloaded (-ngl); splits the total "
              "by device.")
@click.option("--gpus", type=click.IntRange(min=1), help="GPUs to split the model over (all layers offloaded "
              "unless --n-gpu-layers says otherwise).")
@click.option("--tensor-split", help="Share of each GPU, llama.cpp's -ts: e.g. 3,1 (default: equal shares).")
@click.option("--split-mode", type=click.Choice(SPLIT_MODES), default="layer", show_default=True,
              help="llama.cpp's -sm: layers per GPU, weight rows over every GPU, or one GPU only.")
@click.option("--main-gpu", type=click.IntRange(min=0), default=0, show_default=True,
              help="llama.cpp's -mg: the GPU of --split-mode none.")
@click.option("--flash-attn/--no-flash-attn", default=True, show_default=True, help="Flash attention (-fa).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def estimate_command(model: str, ctx: int | None, kv_type: str, parallel: int, n_gpu_layers: int | None,
                     gpus: int | None, tensor_split: str | None, split_mode: str, main_gpu: int,
                     flash_attn: bool, as_json: bool) -> None:
    """Estimate weights, KV cache and compute memory of MODEL (GGUF path or name) under llama.cpp;
    per GPU with --gpus / --tensor-split."""
    from velollm_gguf import estimate_memory, read_summary

    from velollm_core.api import print_json, resolve_model_path, stdout_console

    split = parse_tensor_split(tensor_split) if tensor_split else None
    count = gpus or (len(split) if split else 1)
    if (gpus or split) and n_gpu_layers is None:
        n_gpu_layers = ALL_LAYERS
    summary = read_summary(resolve_model_path(model))
    estimate = estimate_memory(summary, ctx=ctx, cache_type_k=kv_type, parallel=parallel,
                               n_gpu_layers=n_gpu_layers, flash_attn=flash_attn,
                               gpu_names=tuple(f"GPU{index}" for index in range(count)), gpu_split=split,
                               split_mode=split_mode, main_gpu=main_gpu)
    if as_json:
        print_json(estimate.to_json())
    else:
        render_estimate(estimate, stdout_console())


def parse_tensor_split(text: str) -> tuple[float, ...]:
    """``"3,1"`` (or llama.cpp's ``"3/1"``) as ratios; UserInputError for anything else."""
    from velollm_core.api import UserInputError

    try:
        ratios = tuple(float(part) for part in text.replace("/", ",").split(","))
    except ValueError:
        raise UserInputError(f"--tensor-split takes numbers separated by commas (e.g. 3,1), not {text!r}") from None
    if not all(math.isfinite(ratio) for ratio in ratios):
        raise UserInputError(f"--tensor-split takes finite numbers, not {text!r}")
    return ratios
