"""GGUF metadata through the ``gguf`` package, with the scalar part cached on disk.

Reading a GGUF with ``gguf.GGUFReader`` parses every token string (seconds for a 262k vocabulary),
so the small fields and the tensor table are cached per (path, size, mtime).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from velollm_core.errors import UserInputError

# Arrays that can be huge: never cached, read on demand with ``read_arrays``.
_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
               "tokenizer.ggml.merges")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True)
class GgufSummary:
    path: str
    size_bytes: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    array_lengths: dict[str, int]
    # sha256 of the token texts from id 5 on (what llama.cpp compares between target and draft),
    # so a compatibility check of same-size vocabularies needs no second full read.
    tokens_digest: str | None = None

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def arch_value(self, key: str, default: Any = None) -> Any:
        """A per-architecture field such as ``<arch>.block_count``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def quantization(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        if file_type is None:
            return None
        import gguf

        try:
            return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except ValueError:
            return str(file_type)

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def _open_reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise UserInputError(f"{path} could not be read as GGUF: {exc}") from None


def _field_value(field) -> Any:
    value = field.contents()
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def _cache_file(path: Path, stat: os.stat_result) -> Path:
    from platformdirs import user_cache_path

    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v2".encode()).hexdigest()[:24]
    return Path(os.environ.get("VELOLLM_CACHE_DIR") or user_cache_path("velollm")) / "gguf" / f"{key}.json"


@functools.lru_cache(maxsize=32)
def _summary_cached(path_str: str, size: int, mtime_ns: int) -> GgufSummary:
    path = Path(path_str)
    cache = _cache_file(path, os.stat(path))
    data = None
    if cache.is_file():
        try:
            data = json.loads(cache.read_text())
        except ValueError:
            data = None
    if data is None:
        reader = _open_reader(path)
        metadata, lengths, digest = {}, {}, None
        for name, field in reader.fields.items():
            if name in _BIG_ARRAYS:
                lengths[name] = len(field.data)
                if name == "tokenizer.ggml.tokens":
                    digest = token_texts_digest(_field_value(field))
                continue
            try:
                metadata[name] = _field_value(field)
            except (ValueError, TypeError, UnicodeDecodeError):
                continue
        tensors = [
            [t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_bytes)] for t in reader.tensors
        ]
        data = {"metadata": metadata, "tensors": tensors, "array_lengths": lengths, "tokens_digest": digest}
        from velollm_core.files import atomic_write_json

        try:
            atomic_write_json(cache, data)
        except OSError:
            pass  # a read-only cache costs speed, never correctness
    return GgufSummary(
        path=path_str,
        size_bytes=size,
        metadata=data["metadata"],
        tensors=tuple(TensorInfo(n, t, tuple(s), b) for n, t, s, b in data["tensors"]),
        array_lengths=data["array_lengths"],
        tokens_digest=data.get("tokens_digest"),
    )


TOKENS_DIGEST_START = 5


def token_texts_digest(tokens: list[str], start: int = TOKENS_DIGEST_START) -> str:
    """A digest of the token texts from ``start`` on."""
    hasher = hashlib.sha256()
    for text in tokens[start:]:
        hasher.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return hasher.hexdigest()


def read_summary(path: str | os.PathLike) -> GgufSummary:
    """Metadata (without the big token arrays) and tensor table of a GGUF file."""
    from velollm_core.modelfiles import check_gguf

    path = check_gguf(Path(path))
    stat = path.stat()
    return _summary_cached(str(path), stat.st_size, stat.st_mtime_ns)


def read_arrays(path: str | os.PathLike, names: tuple[str, ...] = ("tokenizer.ggml.tokens",)) -> dict[str, list]:
    """The big arrays (token texts, types...) of a GGUF file, read in full."""
    reader = _open_reader(Path(path))
    out = {}
    for name in names:
        field = reader.get_field(name)
        if field is not None:
            out[name] = _field_value(field)
    return out
