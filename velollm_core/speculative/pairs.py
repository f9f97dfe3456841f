"""The local models ``velollm speculative pairs`` scans: GGUF files in directories plus what the plugins list.

Which of them pair (compatible, the draft far smaller) is the backend's speculative object's rule.
"""

from __future__ import annotations

from pathlib import Path


def local_models(dirs) -> list[dict]:
    """GGUF files under ``dirs`` plus every model the plugins list (Ollama store, test models)."""
    from velollm_core.contract.plugins import call_each

    found: dict[str, dict] = {}
    for directory in dirs:
        for path in sorted(Path(directory).expanduser().rglob("*.gguf")):
            found.setdefault(str(path.resolve()), {"name": path.name, "path": str(path)})
    for listing in call_each("local_models"):
        for model in listing or []:
            found.setdefault(str(Path(model["path"]).resolve()), model)
    return list(found.values())
