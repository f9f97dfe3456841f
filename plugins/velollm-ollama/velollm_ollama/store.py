"""Ollama's model store on disk: names -> manifests -> GGUF blobs, and the list of local models.

Layout (the same on every platform)::

    <models>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest
    <models>/blobs/sha256-<hex>                            content-addressed layers

``<models>`` is ``$OLLAMA_MODELS``, or ``~/.ollama/models``; the Linux service installed by Ollama's
script runs as user ``ollama`` and keeps its models in ``/usr/share/ollama/.ollama/models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from velollm_core.api import UserInputError

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PROJECTOR_MEDIA_TYPE = "application/vnd.ollama.image.projector"
# A Modelfile's DRAFT (Ollama >= 0.30.0): the draft model loaded beside the target for speculative decoding.
DRAFT_MEDIA_TYPE = "application/vnd.ollama.image.draft"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
SERVICE_MODELS_DIR = Path("/usr/share/ollama/.ollama/models")

# Ollama's own part patterns (types/model/name.go); they also keep ".." and "/" out of paths.
_PART_PATTERNS = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}\Z"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}\Z"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}\Z"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}\Z"),
}
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})\Z")


@dataclass(frozen=True)
class ModelName:
    """A fully qualified Ollama model name: host/namespace/model:tag."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse ``llama3.2``, ``llama3.2:1b``, ``user/m:tag`` or ``host/ns/m:tag`` as Ollama does."""
        rest = text.strip()
        if "://" in rest:  # a protocol scheme before the host says nothing about the store path
            rest = rest.split("://", 1)[1]
        tag = None
        # "/" cannot appear in a tag, so a ":" after the last "/" starts the tag (a host port never does).
        if rest.rfind(":") > rest.rfind("/"):
            rest, tag = rest.rsplit(":", 1)
        parts = rest.split("/")
        if len(parts) > 3:
            raise UserInputError(f"{text!r} is not an Ollama model name (too many '/' parts)")
        model = parts[-1]
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        host = parts[-3] if len(parts) == 3 else DEFAULT_HOST
        name = cls(host, namespace, model, DEFAULT_TAG if tag is None else tag)
        for part, value in (("host", host), ("namespace", namespace), ("model", model), ("tag", name.tag)):
            if not _PART_PATTERNS[part].match(value):
                raise UserInputError(f"{text!r} is not an Ollama model name (bad {part} {value!r})")
        return name

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def short(self) -> str:
        """The name as ``ollama list`` shows it: defaults left out."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


@dataclass
class LocalModel:
    """One model of the store, as its manifest describes it."""

    name: str
    models_dir: Path
    manifest_path: Path
    size_bytes: int
    digest: str
    modified: float
    gguf_path: Path | None = None
    model_bytes: int | None = None
    projector_paths: list[Path] = field(default_factory=list)
    draft_path: Path | None = None
    draft_bytes: int | None = None
    missing_blobs: list[str] = field(default_factory=list)

    @property
    def load_bytes(self) -> int | None:
        """The files a load reads into memory: the model, its projectors and its draft."""
        if self.model_bytes is None:
            return None
        projectors = sum(p.stat().st_size for p in self.projector_paths if p.is_file())
        return self.model_bytes + projectors + (self.draft_bytes or 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size_bytes": self.size_bytes,
            "model_bytes": self.model_bytes,
            "gguf_path": str(self.gguf_path) if self.gguf_path else None,
            "projector_paths": [str(p) for p in self.projector_paths],
            "draft_path": str(self.draft_path) if self.draft_path else None,
            "draft_bytes": self.draft_bytes,
            "digest": self.digest,
            "modified": self.modified,
            "models_dir": str(self.models_dir),
            "missing_blobs": self.missing_blobs,
        }


def blob_path(models_dir: Path, digest: str) -> Path | None:
    """``blobs/sha256-<hex>`` for a layer digest; None for anything that is not a sha256 digest."""
    match = _DIGEST.match(digest or "")
    return models_dir / "blobs" / f"sha256-{match.group(1)}" if match else None


def _clean(value: str | None) -> str:
    # Ollama strips spaces and quotes around every variable's value (envconfig.Var).
    return (value or "").strip().strip("\"'")


def default_models_dirs(
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    service_models_dir: str | None = None,
) -> list[Path]:
    """Where models may be: ``$OLLAMA_MODELS``, the service's ``OLLAMA_MODELS``, ~/.ollama/models, the service home."""
    env = os.environ if environ is None else environ
    candidates = []
    for configured in (_clean(env.get("OLLAMA_MODELS")), _clean(service_models_dir)):
        if configured:
            candidates.append(Path(configured).expanduser())
    candidates.append((home or Path.home()) / ".ollama" / "models")
    candidates.append(SERVICE_MODELS_DIR)
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def _find_dir(parent: Path, name: str) -> Path | None:
    """``parent/name``, else a case-insensitive match: Ollama treats names case-insensitively."""
    exact = parent / name
    if exact.exists():
        return exact
    try:
        for entry in parent.iterdir():
            if entry.name.casefold() == name.casefold():
                return entry
    except OSError:
        return None
    return None


class ModelStore:
    """The local models in one or more Ollama model directories (first directory wins on duplicates)."""

    def __init__(self, models_dirs: list[Path]) -> None:
        self.models_dirs = models_dirs
        self.warnings: list[str] = []

    @classmethod
    def default(cls) -> ModelStore:
        """The store as this machine's Ollama sees it (environment, systemd service, defaults)."""
        from velollm_ollama.config import service_environment

        return cls(default_models_dirs(service_models_dir=service_environment().get("OLLAMA_MODELS")))

    def existing_dirs(self) -> list[Path]:
        out = []
        for path in self.models_dirs:
            try:
                if (path / "manifests").is_dir():
                    out.append(path)
            except OSError:
                continue
        return out

    def _load(self, models_dir: Path, manifest_path: Path, name: str) -> LocalModel | None:
        try:
            raw = manifest_path.read_bytes()
            manifest = json.loads(raw)
            modified = manifest_path.stat().st_mtime
        except PermissionError:
            self.warnings.append(f"cannot read {manifest_path}: permission denied")
            return None
        except (OSError, ValueError) as exc:
            self.warnings.append(f"skipping unreadable manifest {manifest_path}: {exc}")
            return None
        if not isinstance(manifest, dict):
            self.warnings.append(f"skipping {manifest_path}: not a manifest")
            return None
        layers = [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict)]
        config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        size = sum(int(layer.get("size") or 0) for layer in [*layers, config])
        model = LocalModel(
            name=name,
            models_dir=models_dir,
            manifest_path=manifest_path,
            size_bytes=size,
            digest=hashlib.sha256(raw).hexdigest(),
            modified=modified,
        )
        for layer in layers:
            media_type = layer.get("mediaType")
            if media_type not in (MODEL_MEDIA_TYPE, PROJECTOR_MEDIA_TYPE, DRAFT_MEDIA_TYPE):
                continue
            path = blob_path(models_dir, str(layer.get("digest") or ""))
            if path is None or not path.is_file():
                model.missing_blobs.append(str(layer.get("digest")))
                continue
            if media_type == MODEL_MEDIA_TYPE and model.gguf_path is None:
                model.gguf_path = path
                model.model_bytes = int(layer.get("size") or path.stat().st_size)
            elif media_type == PROJECTOR_MEDIA_TYPE:
                model.projector_paths.append(path)
            elif media_type == DRAFT_MEDIA_TYPE and model.draft_path is None:
                model.draft_path = path
                model.draft_bytes = int(layer.get("size") or path.stat().st_size)
        return model

    def find(self, name: str | ModelName) -> LocalModel | None:
        """The installed model called ``name``, or None."""
        parsed = name if isinstance(name, ModelName) else ModelName.parse(name)
        for models_dir in self.existing_dirs():
            current: Path | None = models_dir / "manifests"
            try:
                for part in parsed.parts:
                    current = _find_dir(current, part) if current is not None else None
                if current is not None and current.is_file():
                    return self._load(models_dir, current, parsed.short())
            except OSError as exc:  # e.g. the service's store, readable only by user "ollama"
                self.warnings.append(f"cannot read {models_dir}: {exc.strerror or exc}")
        return None

    def list(self) -> list[LocalModel]:
        """Every installed model, sorted by name."""
        found: dict[str, LocalModel] = {}
        for models_dir in self.existing_dirs():
            root = models_dir / "manifests"
            try:
                manifests = sorted(p for p in root.glob("*/*/*/*") if p.is_file() and not p.name.startswith("."))
            except OSError as exc:
                self.warnings.append(f"cannot list {root}: {exc}")
                continue
            for path in manifests:
                host, namespace, model, tag = path.relative_to(root).parts
                try:
                    name = ModelName.parse(f"{host}/{namespace}/{model}:{tag}").short()
                except UserInputError:
                    continue
                if name not in found:
                    loaded = self._load(models_dir, path, name)
                    if loaded is not None:
                        found[name] = loaded
        return [found[name] for name in sorted(found)]


def resolve_gguf(name: str) -> Path | None:
    """An Ollama name -> its GGUF blob; None for names that are not Ollama's (the next plugin answers)."""
    try:
        parsed = ModelName.parse(name)
    except UserInputError:
        return None
    store = ModelStore.default()
    found = store.find(parsed)
    if found is None:
        if ":" in name:  # an explicit tag: clearly meant as an Ollama model
            dirs = ", ".join(str(d) for d in store.models_dirs)
            unreadable = f" ({'; '.join(store.warnings)})" if store.warnings else ""
            raise UserInputError(f"Ollama model {name!r} is not in the model store (searched {dirs}){unreadable}; "
                                 f"get it with: ollama pull {name}")
        return None
    if found.gguf_path is None:
        missing = f" (missing blobs: {', '.join(found.missing_blobs)})" if found.missing_blobs else ""
        raise UserInputError(f"Ollama model {found.name} has no GGUF weights on disk{missing}: it may be a "
                             f"cloud or safetensors model, or an interrupted pull (run `ollama pull {name}`)")
    return found.gguf_path
