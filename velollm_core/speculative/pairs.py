"""Find (target, draft) pairs among local models: compatible, and the draft far smaller."""

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


def find_pairs(models: list[dict], *, max_ratio: float = 0.5) -> list[dict]:
    """Every compatible pair whose draft is at most ``max_ratio`` of the target's size."""
    from velollm_core.contract.errors import UserInputError
    from velollm_core.gguf_meta import read_summary
    from velollm_core.speculative.compat import check_pair

    summaries = {}
    for model in models:
        try:
            summaries[model["path"]] = read_summary(model["path"])
        except UserInputError:
            continue  # not a readable GGUF: nothing to pair
    pairs = []
    for target, tgt in summaries.items():
        for draft, dft in summaries.items():
            if draft == target or dft.size_bytes > max_ratio * tgt.size_bytes:
                continue
            if tgt.metadata.get("tokenizer.ggml.model") != dft.metadata.get("tokenizer.ggml.model"):
                continue
            report = check_pair(Path(target), Path(draft))
            if report.compatible:
                pairs.append({"target": target, "draft": draft, "size_ratio": dft.size_bytes / tgt.size_bytes})
    return sorted(pairs, key=lambda p: (p["target"], p["size_ratio"]))
