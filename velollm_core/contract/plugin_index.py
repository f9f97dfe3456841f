"""The plugin index: the entry points of group ``velollm`` and the commands plugins add, cached on disk.

Scanning entry points imports ``importlib.metadata`` and reads every installed distribution, and
listing plugin commands imports every plugin: most of the CLI's start-up before this index. Both
change only when something is installed, upgraded or removed (or a plugin's source is edited), so the
index is keyed on what those change, all cheap to stat: the names and mtimes of the ``*.dist-info``,
``*.egg-info`` and ``*.pth`` entries of every ``sys.path`` folder and of their ``entry_points.txt``;
the command listing also on the files of the plugin modules it came from. It also remembers which
hooks each plugin implements, so a command that calls one hook (``detect``: ``detect_gpu``) imports
only the plugins implementing it. The index lives in
``cache_dir()/plugin-index``, one file per interpreter. A missing, stale, corrupt or unwritable index
costs a scan, never an error.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from velollm_core.contract.cachedir import cache_dir

ENTRY_POINT_GROUP = "velollm"
# The built-in plugins are the entry points of VeloLLM's own distribution (its pyproject.toml).
BUILTIN_DISTRIBUTION = "velollm"
# The plugins released with VeloLLM (this repository's plugins/): a backend name one of them registers
# is theirs, whatever a third party installed beside them registers (contract/backends.py).
SHIPPED_DISTRIBUTIONS = frozenset({"velollm-nvidia", "velollm-amd", "velollm-apple", "velollm-intel",
                                   "velollm-ollama", "velollm-llamacpp", "velollm-openai"})
PLUGINS_ENV = "VELOLLM_PLUGINS"  # a,b: load only these plugins (entry point or distribution names)
DISABLE_ENV = "VELOLLM_DISABLE"  # a,b: never load these plugins (built-ins too)
FORMAT = 1
_RECORD_SUFFIXES = (".dist-info", ".egg-info", ".pth")


class EntryPoint(NamedTuple):
    """One entry point of group ``velollm``, with its distribution's name and version."""

    name: str
    value: str
    distribution: str | None
    version: str | None

    @property
    def builtin(self) -> bool:
        """Whether VeloLLM's own distribution declares it."""
        return self.distribution is not None and distribution_key(self.distribution) == BUILTIN_DISTRIBUTION

    @property
    def shipped(self) -> bool:
        """Whether VeloLLM's own distribution or one released with it (``SHIPPED_DISTRIBUTIONS``) declares it."""
        return self.builtin or (self.distribution is not None
                                and distribution_key(self.distribution) in SHIPPED_DISTRIBUTIONS)

    def named_by(self, names: set[str]) -> bool:
        """Whether ``names`` (from ``$VELOLLM_PLUGINS`` or ``$VELOLLM_DISABLE``) name this entry point,
        by its own name or by its distribution's (``velollm-nvidia``, in any of pip's spellings)."""
        return self.name in names or (self.distribution is not None and distribution_key(self.distribution)
                                      in {distribution_key(name) for name in names})

    def load(self) -> Any:
        """The object ``value`` names (``module`` or ``module:attr.attr``), as importlib.metadata loads it."""
        module_name, _, attr = self.value.split("[", 1)[0].partition(":")
        found: Any = importlib.import_module(module_name.strip())
        for part in filter(None, attr.strip().split(".")):
            found = getattr(found, part)
        return found


def distribution_key(name: str) -> str:
    """A distribution name as pip compares them: ``Velollm_NVIDIA`` and ``velollm-nvidia`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_names() -> set[str] | None:
    """The plugin names ``$VELOLLM_PLUGINS`` allows, or None when it is not set (all)."""
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def disabled_names() -> set[str]:
    """The plugin names ``$VELOLLM_DISABLE`` blocks (entry point or distribution names)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def selection() -> str:
    """Which plugins this process may load, as a key: ``all`` or ``only:`` and the sorted names, then
    ``;off:`` and the disabled ones (the cached --help of one selection never serves another)."""
    allowed, disabled = allowed_names(), disabled_names()
    key = "all" if allowed is None else "only:" + ",".join(sorted(allowed))
    return key + (";off:" + ",".join(sorted(disabled)) if disabled else "")


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def installed_distributions(paths: Iterable[str]) -> list[list]:
    """``[folder, entry, mtime_ns, mtime_ns of its entry_points.txt]`` for each distribution record.

    A path that is no folder (a zip, a missing directory) counts by its own mtime.
    """
    found: list[list] = []
    for folder in paths:
        try:
            entries = sorted(os.scandir(folder or "."), key=lambda entry: entry.name)
        except OSError:
            found.append([folder, None, _mtime(folder), None])
            continue
        for entry in entries:
            if entry.name.endswith(_RECORD_SUFFIXES):
                entry_points = None if entry.name.endswith(".pth") else _mtime(f"{entry.path}/entry_points.txt")
                found.append([folder, entry.name, _mtime(entry.path), entry_points])
    return found


def index_path() -> Path:
    """This interpreter's index file: one per executable, holding the ``sys.path`` it is valid for.

    Not one per ``sys.path``: ``python -m velollm_core`` puts the working directory first, and a file
    per directory would pile up. Another ``sys.path`` only costs a scan that replaces the file.
    """
    key = sys.executable.encode("utf-8", "surrogateescape")
    return cache_dir() / "plugin-index" / f"{zlib.crc32(key):08x}.json"


def _scan() -> list[list]:
    from importlib import metadata

    found = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        # Reading METADATA parses it as e-mail: done here, once per install, not at every start.
        name, version = (dist.metadata["Name"], dist.version) if dist is not None else (None, None)
        found.append([entry_point.name, entry_point.value, name, version])
    return found


def _entry_points(data: dict) -> list[EntryPoint]:
    """The entry points an index holds; ValueError when they are not what this module wrote."""
    records = [EntryPoint(*item) for item in data["entry_points"]]
    if not all(isinstance(record.name, str) and isinstance(record.value, str) for record in records):
        raise ValueError("malformed entry point")
    return records


def _read(path: Path, key: dict) -> dict | None:
    """The index at ``path`` if it is valid for ``key``; None when missing, stale or corrupt."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or any(data.get(name) != value for name, value in key.items()):
            return None
        _entry_points(data)
        if not isinstance(data.get("commands"), dict):
            return None
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    return data


def _usable_index_path() -> Path | None:
    try:
        return index_path()
    except Exception:  # noqa: BLE001 - no cache folder (no home directory): scan every time
        return None


def _save(data: dict) -> None:
    from velollm_core.contract.files import atomic_write_text

    path = _usable_index_path()
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps(data))
    except OSError:
        pass  # an unwritable cache costs the next run a scan, nothing more


_index: dict | None = None


def _current() -> dict:
    """This process's index: read once, or rebuilt by a scan and saved when missing or stale."""
    global _index
    if _index is None:
        key = {"format": FORMAT, "sys_path": list(sys.path), "distributions": installed_distributions(sys.path)}
        path = _usable_index_path()
        _index = None if path is None else _read(path, key)
        if _index is None:
            _index = {**key, "entry_points": _scan(), "commands": {}}
            _save(_index)
    return _index


def entry_points() -> list[EntryPoint]:
    """The entry points of group ``velollm``, in ``importlib.metadata.entry_points`` order."""
    return _entry_points(_current())


def cached_commands(selection: str) -> dict[str, dict] | None:
    """The commands (name -> click attributes) plugins added in an earlier run of ``selection``.

    None when unknown or stale (a plugin's file changed): load the plugins to know.
    """
    entry = _current()["commands"].get(selection)
    try:
        if any(_mtime(path) != mtime for path, mtime in entry["files"].items()):
            return None
        commands = entry["commands"]
        if all(isinstance(name, str) and isinstance(attrs, dict) for name, attrs in commands.items()):
            return commands
    except (TypeError, KeyError, AttributeError):
        pass
    return None


def store_commands(selection: str, commands: dict[str, dict], files: Iterable[str]) -> None:
    """Remember the commands plugins added under ``selection``, valid while ``files`` stay unchanged."""
    index = _current()
    index["commands"][selection] = {"files": {path: _mtime(path) for path in files}, "commands": commands}
    _save(index)


def cached_hooks(selection: str) -> dict[str, list[str]] | None:
    """The hooks each plugin of ``selection`` implemented when last loaded (entry point name -> hook
    names); None when unknown or stale (a plugin's file changed). A plugin that failed to load is not in
    it: its hooks are unknown."""
    entry = _current().get("hooks", {}).get(selection)
    try:
        if any(_mtime(path) != mtime for path, mtime in entry["files"].items()):
            return None
        hooks = entry["plugins"]
        if all(isinstance(name, str) and isinstance(names, list) for name, names in hooks.items()):
            return hooks
    except (TypeError, KeyError, AttributeError):
        pass
    return None


def store_hooks(selection: str, hooks: dict[str, list[str]], files: Iterable[str]) -> None:
    """Remember which hooks each plugin of ``selection`` implements, valid while ``files`` stay unchanged;
    written only when it changed (most runs find it known)."""
    index = _current()
    entry = {"files": {path: _mtime(path) for path in files}, "plugins": hooks}
    if index.setdefault("hooks", {}).get(selection) != entry:
        index["hooks"][selection] = entry
        _save(index)


def forget() -> None:
    """Drop this process's copy (tests change ``sys.path`` or the cache folder)."""
    global _index
    _index = None
