"""Turn what the user typed as a model (a GGUF path or a name) into a checked local GGUF file."""

from __future__ import annotations

from pathlib import Path

from velollm_core.contract.errors import UserInputError

GGUF_MAGIC = b"GGUF"


def _shown(text: str) -> str:
    return text if len(text) <= 100 else f"{text[:60]}...{text[-20:]} ({len(text)} characters)"


def _exists(path: Path) -> bool:
    """``path.exists()``, with the OS's refusals (a name too long, ...) as a user error, not a traceback."""
    try:
        return path.exists()
    except OSError as exc:
        raise UserInputError(f"model path {_shown(str(path))}: {exc.strerror or exc}") from None


def check_gguf(path: Path) -> Path:
    """Return ``path`` when it is a readable GGUF file; raise UserInputError saying what is wrong."""
    if not _exists(path):
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
    if not name.strip() or "\0" in name:
        raise UserInputError("--model is empty or holds a NUL character")
    candidate = Path(name).expanduser()
    if _exists(candidate) or _looks_like_path(name):
        return check_gguf(candidate)
    from velollm_core.contract.plugins import hook

    resolved = hook().resolve_model(name=name)
    if resolved is None:
        raise UserInputError(f"unknown model {_shown(name)!r}: not a file, and no installed plugin knows this "
                             f"name ({_listed_models()})")
    return check_gguf(Path(resolved))


# Names shown in the unknown-model message at most: a model store can hold hundreds.
SHOWN_NAMES = 8


def _listed_models() -> str:
    """What the plugins' ``local_models`` hook lists, for the unknown-model message."""
    from velollm_core.contract.plugins import call_each

    # A plugin failing here is no news for this message: its warning would make the error two lines.
    listings = call_each("local_models", on_error=lambda plugin_name, exc: None)
    names = sorted({str(model["name"]) for listing in listings for model in listing or []
                    if isinstance(model, dict) and model.get("name")})
    if not names:
        return "the plugins list no local model"
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN_NAMES else ""
    return f"local models the plugins list: {', '.join(_shown(n) for n in names[:SHOWN_NAMES])}{more}"
