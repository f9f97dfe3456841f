"""GGUF metadata and tensor table, read by our own small header reader, cached on disk.

The header is read front to back through a 1 MiB window, so time and memory stay bounded whatever
the file claims: every count is checked against the bytes left before anything is allocated,
vocabulary-sized arrays are walked over (their length recorded, the token texts hashed) instead of
being turned into Python lists, and tensor data is never read. A truncated or damaged file fails
with one ``UserInputError`` sentence, truncation being detected from the tensor table's own offsets
and sizes. (``gguf.GGUFReader`` memory-maps the file and builds a numpy array for every string of
every array: 3.9 GB and over two minutes for a 50 MB file with one huge array, numpy errors for a cut one.)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from velollm_core.api import UserInputError

# Arrays that can be huge: never cached, read on demand with ``read_arrays`` / ``iter_array``.
_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
               "tokenizer.ggml.merges")
TOKENS_KEY = "tokenizer.ggml.tokens"
TOKENS_DIGEST_START = 5

SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEY_BYTES = 1 << 16
MAX_KVS = 1 << 16
MAX_TENSORS = 1 << 17
# Strings in all metadata arrays together, and entries of any one array read into memory: walking
# 2M strings takes about half a second; real vocabularies plus merges stay under 600,000.
MAX_ARRAY_ENTRIES = 1 << 21
# Larger arrays than this are only counted in the summary (per-layer arrays hold a few hundred).
MAX_INLINE_ARRAY = 4096
# Text kept in the summary in all: a chat template is tens of KiB; longer values are left out.
MAX_INLINE_BYTES = 16 << 20
_WINDOW = 1 << 20
# No GGUF file is larger: a count claiming more is damage, where a smaller one means a cut file.
_PLAUSIBLE_BYTES = 1 << 40

_STRING, _ARRAY = 8, 9
_SCALARS = {type_id: struct.Struct("<" + code) for type_id, code in
            {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}.items()}
_U32, _U64 = _SCALARS[4], _SCALARS[10]
_MIN_KV_BYTES = 8 + 4 + 1  # key length, type, the smallest value
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8  # name length, dimensions, type, offset


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
    # sha256 of the raw (length-prefixed) token texts from id 5 on, what llama.cpp compares between
    # target and draft, so a compatibility check of same-size vocabularies needs no second read.
    tokens_digest: str | None = None

    def text(self, key: str) -> str | None:
        """A metadata string; None where the key is missing or holds something else."""
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    @property
    def architecture(self) -> str | None:
        return self.text("general.architecture")

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
        except (ValueError, TypeError, OverflowError):  # not a known type, or no number (nan, inf, text)
            return str(file_type)

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def _shown(name: str) -> str:
    """A key or tensor name as a message shows it: quoted and escaped where it is not plain text."""
    return name if name.isprintable() and name.strip() == name and name else repr(name)


class _Window:
    """Sequential little-endian reads of a file through a buffer, each checked against its size."""

    def __init__(self, handle: BinaryIO, size: int, label: str) -> None:
        self.handle, self.size, self.label = handle, size, label
        self.buf, self.buf_pos, self.pos = b"", 0, 0
        self.where = "the GGUF header"

    def error(self, problem: str) -> UserInputError:
        return UserInputError(f"{self.label}: {problem}")

    def truncated(self) -> UserInputError:
        return UserInputError(f"{self.label} is truncated at byte {self.size:,}, inside {self.where}")

    def claim(self, count: int, unit: int, what: str, noun: str = "entries") -> None:
        """Refuse ``count`` items of at least ``unit`` bytes each where the bytes left cannot hold them."""
        if count * unit <= self.size - self.pos:
            return
        if count * unit <= _PLAUSIBLE_BYTES:
            raise self.truncated()  # what a longer file would hold: this one was cut
        raise self.error(f"{what} claims {count:,} {noun}, more than the file can hold")

    def _view(self, n: int) -> tuple[bytes, int]:
        """The buffer and the offset in it of the ``n`` bytes at ``pos``."""
        if n > self.size - self.pos:
            raise self.truncated()
        off = self.pos - self.buf_pos
        if off < 0 or off + n > len(self.buf):  # outside the window (a reader may step back)
            try:
                self.handle.seek(self.pos)
                self.buf, self.buf_pos, off = self.handle.read(max(n, _WINDOW)), self.pos, 0
            except OSError as exc:
                raise self.error(f"cannot read byte {self.pos:,}: {exc.strerror}") from None
            if len(self.buf) < n:
                raise self.truncated()  # the file shrank while we read it
        return self.buf, off

    def take(self, n: int) -> bytes:
        buf, off = self._view(n)
        self.pos += n
        return buf[off:off + n]

    def unpack(self, fmt: struct.Struct) -> tuple:
        buf, off = self._view(fmt.size)
        self.pos += fmt.size
        return fmt.unpack_from(buf, off)

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def u64(self) -> int:
        return self.unpack(_U64)[0]

    def skip(self, n: int, hasher=None) -> None:
        if n > self.size - self.pos:
            raise self.truncated()
        if hasher is None:
            self.pos += n
            return
        while n:
            step = min(n, _WINDOW)
            buf, off = self._view(step)
            hasher.update(memoryview(buf)[off:off + step])
            self.pos += step
            n -= step

    def string_length(self, what: str, limit: int | None = None) -> int:
        length = self.u64()
        if limit is not None and length > limit:
            raise self.error(f"{what} claims {length:,} bytes (at most {limit:,} are read)")
        self.claim(length, 1, what, "bytes")
        return length

    def string(self, what: str, limit: int) -> str:
        return self.take(self.string_length(what, limit)).decode("utf-8", "replace")

    def skip_strings(self, count: int, hasher=None) -> None:
        """Walk over ``count`` GGUF strings; ``hasher`` gets their raw bytes, length prefixes included."""
        unpack = _U64.unpack_from
        while count:
            buf, off = self._view(8)
            start, end = off, len(buf)
            # The hot loop (a for loop: twice as fast as a while), over the strings wholly in the window.
            for walked in range(count):
                if off + 8 > end:
                    break
                after = off + 8 + unpack(buf, off)[0]
                if after > end:
                    break
                off = after
            else:
                walked = count
            count -= walked
            if hasher is not None:
                hasher.update(memoryview(buf)[start:off])
            self.pos = self.buf_pos + off
            if count and off == start:  # one string crosses the window's end
                length = self.string_length("a string")
                if hasher is not None:
                    hasher.update(_U64.pack(length))
                self.skip(length, hasher)
                count -= 1


class _Entry:
    """One metadata key/value, the reader positioned at its value; arrays are read only on demand."""

    def __init__(self, window: _Window, key: str) -> None:
        self.window, self.key = window, key
        self.type = window.u32()
        self.elem_type: int | None = None
        self.count: int | None = None
        if self.type == _ARRAY:
            self.elem_type, self.count = window.u32(), window.u64()
            self._check_array()
        elif self.type not in _SCALARS and self.type != _STRING:
            raise window.error(f"metadata key {_shown(key)} has unknown type {self.type}")
        self.done = False

    def _check_array(self) -> None:
        window, what = self.window, self.what
        if self.elem_type == _ARRAY:
            raise window.error(f"{what} holds arrays, which llama.cpp does not read")
        if self.elem_type != _STRING and self.elem_type not in _SCALARS:
            raise window.error(f"{what} has unknown element type {self.elem_type}")
        window.claim(self.count, self.item_bytes, what)

    @property
    def item_bytes(self) -> int:
        """The size of one element; for strings the smallest (an empty one)."""
        kind = self.elem_type if self.type == _ARRAY else self.type
        return 8 if kind == _STRING else _SCALARS[kind].size

    def skip(self, hasher=None, hash_from: int = 0) -> None:
        """Pass over the value; ``hasher`` gets the raw bytes of the elements from ``hash_from`` on."""
        self.done = True
        window = self.window
        if self.type != _ARRAY:
            window.skip(window.string_length(self.what) if self.type == _STRING else self.item_bytes)
        elif self.elem_type == _STRING:
            window.skip_strings(min(hash_from, self.count))
            window.skip_strings(max(self.count - hash_from, 0), hasher)
        else:
            window.skip(self.count * self.item_bytes)

    @property
    def what(self) -> str:
        return f"metadata {'array' if self.type == _ARRAY else 'value'} {_shown(self.key)}"

    def value(self) -> Any:
        """The scalar, or the array as a list (at most ``MAX_ARRAY_ENTRIES`` entries)."""
        self.done = True
        if self.type == _STRING:
            return self.window.string(self.what, MAX_INLINE_BYTES)
        if self.type != _ARRAY:
            return self.window.unpack(_SCALARS[self.type])[0]
        return list(self.items())

    def items(self) -> Iterator[Any]:
        """The array's elements one by one, never more than ``MAX_ARRAY_ENTRIES`` of them."""
        self.done = True
        window, what = self.window, self.what
        if self.count > MAX_ARRAY_ENTRIES:
            raise window.error(f"{what} has {self.count:,} entries (at most {MAX_ARRAY_ENTRIES:,} are read)")
        if self.elem_type == _STRING:
            # surrogateescape: distinct byte strings stay distinct texts, so comparisons are exact.
            for _ in range(self.count):
                yield window.take(window.string_length(what, MAX_INLINE_BYTES)).decode("utf-8", "surrogateescape")
            return
        code, size, left = _SCALARS[self.elem_type].format[-1], self.item_bytes, self.count
        while left:
            step = min(left, _WINDOW // size)
            yield from struct.unpack(f"<{step}{code}", window.take(step * size))
            left -= step


def _preamble(window: _Window) -> tuple[int, int, int]:
    """Check magic and version; (version, tensor count, metadata entry count), counts possible here."""
    magic = window.take(4)
    if magic != b"GGUF":
        raise window.error(f"not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    version = window.u32()
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        kind = "a big-endian GGUF" if swapped in SUPPORTED_VERSIONS else f"GGUF version {version}"
        raise window.error(f"{kind}, which VeloLLM does not read (little-endian versions 2 and 3)")
    n_tensors, n_kv = window.u64(), window.u64()
    for count, limit, unit, what in ((n_kv, MAX_KVS, _MIN_KV_BYTES, "the metadata"),
                                     (n_tensors, MAX_TENSORS, _MIN_TENSOR_BYTES, "the tensor table")):
        if count > limit:
            raise window.error(f"{what} claims {count:,} entries (at most {limit:,} are read)")
        window.claim(count, unit, what)
    return version, n_tensors, n_kv


def _entries(window: _Window, n_kv: int) -> Iterator[_Entry]:
    """The metadata entries in file order; one the consumer left unread is skipped."""
    strings_left = MAX_ARRAY_ENTRIES
    for index in range(n_kv):
        window.where = f"metadata entry {index}"
        key = window.string(f"metadata key {index}", MAX_KEY_BYTES)
        window.where = f"metadata key {_shown(key)}"
        entry = _Entry(window, key)
        if entry.elem_type == _STRING:
            strings_left -= entry.count
            if strings_left < 0:
                raise window.error(f"metadata array {_shown(key)} brings the metadata to more than "
                                   f"{MAX_ARRAY_ENTRIES:,} strings (a real vocabulary has under 300,000)")
        yield entry
        if not entry.done:
            entry.skip()


def _open(path: Path) -> tuple[BinaryIO, int]:
    try:
        handle = path.open("rb")
        return handle, os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise UserInputError(f"cannot read model file {path}: {exc.strerror}") from None


def _tensor_table(window: _Window, n_tensors: int, alignment: int) -> list[list]:
    """[name, type name, shape, bytes] of every tensor; refuses a file too short for their data."""
    import gguf

    window.claim(n_tensors, _MIN_TENSOR_BYTES, "the tensor table")
    tensors, names, data_end = [], set(), 0
    for index in range(n_tensors):
        window.where = f"the tensor table (tensor {index})"
        name = window.string(f"tensor name {index}", MAX_KEY_BYTES)
        n_dims = window.u32()
        if n_dims > MAX_DIMS:
            raise window.error(f"tensor {_shown(name)} has {n_dims:,} dimensions (GGML allows {MAX_DIMS})")
        shape = [window.u64() for _ in range(n_dims)]
        type_id, offset = window.u32(), window.u64()
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
            block, type_bytes = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise window.error(f"tensor {_shown(name)} has unknown type {type_id}") from None
        if name in names:
            raise window.error(f"tensor {_shown(name)} appears twice in the tensor table")
        names.add(name)
        n_bytes = functools.reduce(int.__mul__, shape, 1) * type_bytes // block
        if offset + n_bytes >= 1 << 63:
            raise window.error(f"tensor {_shown(name)} claims {offset + n_bytes:,} bytes, more than any file holds")
        tensors.append([name, qtype.name, shape, n_bytes])
        data_end = max(data_end, offset + n_bytes)
    data_start = -(-window.pos // alignment) * alignment
    # No tensor data at all (a tokenizer-only file): nothing after the header, padding included.
    if data_end and data_start + data_end > window.size:
        raise UserInputError(f"{window.label} is truncated: its tensors need {data_start + data_end:,} bytes "
                             f"but the file has {window.size:,}")
    return tensors


def _alignment(metadata: dict[str, Any], window: _Window) -> int:
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise window.error(f"general.alignment is {alignment!r}, not a power of two")
    return alignment


def _read_header(path: Path) -> dict[str, Any]:
    """The summary's fields as JSON-able data: small metadata, array lengths, tokens digest, tensors."""
    handle, size = _open(path)
    with handle:
        window = _Window(handle, size, str(path))
        version, n_tensors, n_kv = _preamble(window)
        # The header's own fields under the names gguf.GGUFReader gives them, as before.
        metadata = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
        lengths, digest = {}, None
        budget = MAX_INLINE_BYTES
        for entry in _entries(window, n_kv):
            if entry.key in metadata or entry.key in lengths:
                raise window.error(f"metadata key {_shown(entry.key)} appears twice")
            if entry.count is not None and (entry.key in _BIG_ARRAYS or entry.count > MAX_INLINE_ARRAY):
                lengths[entry.key] = entry.count
                if entry.key == TOKENS_KEY and entry.elem_type == _STRING:
                    hasher = hashlib.sha256()
                    entry.skip(hasher, hash_from=TOKENS_DIGEST_START)
                    digest = hasher.hexdigest()
            elif entry.type == _STRING or entry.elem_type == _STRING:
                start = window.pos
                entry.skip()  # measured first: text beyond the budget is left out, not read
                if window.pos - start <= budget:
                    budget -= window.pos - start
                    window.pos = start
                    metadata[entry.key] = entry.value()
            else:
                metadata[entry.key] = entry.value()
        tensors = _tensor_table(window, n_tensors, _alignment(metadata, window))
    return {"metadata": metadata, "tensors": tensors, "array_lengths": lengths, "tokens_digest": digest}


def _cache_file(path: Path, stat: os.stat_result) -> Path:
    from velollm_core.api import cache_dir

    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v3".encode()).hexdigest()[:24]
    return cache_dir() / "gguf" / f"{key}.json"


def _summary_from(path_str: str, size: int, data: dict[str, Any]) -> GgufSummary:
    return GgufSummary(
        path=path_str,
        size_bytes=size,
        metadata=data["metadata"],
        tensors=tuple(TensorInfo(n, t, tuple(s), b) for n, t, s, b in data["tensors"]),
        array_lengths=data["array_lengths"],
        tokens_digest=data.get("tokens_digest"),
    )


@functools.lru_cache(maxsize=32)
def _summary_cached(path_str: str, size: int, mtime_ns: int) -> GgufSummary:
    path = Path(path_str)
    cache = _cache_file(path, os.stat(path))
    try:
        return _summary_from(path_str, size, json.loads(cache.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or a damaged one: read the file
    data = _read_header(path)
    from velollm_core.api import atomic_write_text

    try:
        # allow_nan=False: a NaN in the metadata would make a file no JSON reader accepts.
        atomic_write_text(cache, json.dumps(data, allow_nan=False))
    except (OSError, ValueError):
        pass  # a read-only cache (or a NaN in the metadata, which JSON cannot hold) costs speed only
    return _summary_from(path_str, size, data)


def read_summary(path: str | os.PathLike) -> GgufSummary:
    """Metadata (without the big token arrays) and tensor table of a GGUF file."""
    from velollm_core.api import check_gguf

    path = check_gguf(Path(path))
    stat = path.stat()
    return _summary_cached(str(path), stat.st_size, stat.st_mtime_ns)


def _file_arrays(path: str | os.PathLike, names: tuple[str, ...]) -> Iterator[_Entry]:
    """The metadata arrays of a GGUF file named in ``names``, in file order, the file open meanwhile."""
    path = Path(path)
    handle, size = _open(path)
    with handle:
        window = _Window(handle, size, str(path))
        for entry in _entries(window, _preamble(window)[2]):
            if entry.key in names and entry.count is not None:
                yield entry


def iter_array(path: str | os.PathLike, name: str) -> Iterator[Any]:
    """The elements of metadata array ``name`` one at a time (nothing when the file has none)."""
    with contextlib.closing(_file_arrays(path, (name,))) as arrays:
        for entry in arrays:
            yield from entry.items()
            return


def read_arrays(path: str | os.PathLike, names: tuple[str, ...] = (TOKENS_KEY,)) -> dict[str, list]:
    """The named metadata arrays (token texts, types...) of a GGUF file, read in full."""
    return {entry.key: entry.value() for entry in _file_arrays(path, names)}
