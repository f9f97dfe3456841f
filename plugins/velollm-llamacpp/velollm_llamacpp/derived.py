"""Test models derived from the bundled ones with llama-quantize (e.g. an F16 Gemma 3 270M target
for its own Q4_K_M as a draft), made once into the cache."""

from __future__ import annotations

from pathlib import Path

from velollm_core.api import BackendError, interrupt

# name -> (bundled source model, llama-quantize type)
DERIVED = {
    "gemma3-270m-f16": ("gemma3-270m", "F16"),
    "gemma3-270m-q8_0": ("gemma3-270m", "Q8_0"),
}


def derived_path(name: str) -> Path:
    from velollm_llamacpp.install import cache_root

    return cache_root().parent / "models" / f"{name}.gguf"


def make_derived(name: str) -> Path:
    """The derived model's path, quantizing it first when absent."""
    from velollm_llamacpp.install import find_program
    from velollm_llamacpp.testmodels import TEST_MODELS

    source_name, qtype = DERIVED[name]
    out = derived_path(name)
    if out.is_file():
        return out
    source = TEST_MODELS[source_name]()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    # --allow-requantize: the source is already quantized; going *up* to F16/Q8_0 keeps its values
    # exactly, it only costs more bytes per weight (which is the point: a heavier target).
    proc = interrupt.run([str(find_program("llama-quantize")), "--allow-requantize", str(source), str(tmp), qtype])
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"llama-quantize failed for {name}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    tmp.rename(out)
    return out
