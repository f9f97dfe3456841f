"""Turn what the user typed as a model (a GGUF path or a name) into a checked local GGUF file."""

from __future__ import annotations

from pathlib import Path

from velollm_core.errors import UserInputError

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> Path:
    """Return ``path`` when it is a readable GGUF file; raise UserInputError saying what is wrong."""
    if not path.exists():
        raise UserInputError(f"model file not found: {path}")
    if not path.is_file():
        raise UserInputError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise UserInputError(f"cannot read model file {path}: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise UserInputError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    return path


def _looks_like_path(name: str) -> bool:
    return name.endswith(".gguf") or "/" in name and not name.count(":") or name.startswith((".", "~"))


def resolve_model_path(name: str) -> Path:
    """A GGUF path as given, or a name resolved by the plugins' ``resolve_model`` hook."""
    candidate = Path(name).expanduser()
    if candidate.exists() or _looks_like_path(name):
        return check_gguf(candidate)
    from velollm_core.plugins import hook

    resolved = hook().resolve_model(name=name)
    if resolved is None:
        from velollm_core.testmodels import TEST_MODELS

        raise UserInputError(
            f"unknown model {name!r}: not a file, and no plugin knows this name "
            f"(built-in test models: {', '.join(TEST_MODELS)}; Ollama names need velollm-ollama)"
        )
    return check_gguf(Path(resolved))
