"""The plugin manager: built-in plugins plus every entry point of group ``velollm``, each loaded alone.

A plugin that fails to import or register is recorded in ``load_errors`` and shown by
``velollm plugins``; it never takes the CLI down.
"""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass
from importlib import metadata

import pluggy

from velollm_core import hookspecs

ENTRY_POINT_GROUP = "velollm"
PLUGINS_ENV = "VELOLLM_PLUGINS"

# Core features registered as plugins, so they are listed and can be replaced like any other.
BUILTIN_PLUGINS = (
    "velollm_core.hardware.pci",
    "velollm_core.hardware.xpu",
    "velollm_core.testmodels",
)

pm = pluggy.PluginManager("velollm")
pm.add_hookspecs(hookspecs)


def _dist_name(dist) -> str | None:
    # Reading METADATA parses it as e-mail; done only when `velollm plugins` shows it, which keeps
    # every other command's start-up free of it.
    return dist.metadata["Name"] if dist is not None and not isinstance(dist, str) else dist


@dataclass
class PluginLoadError:
    name: str
    dist: object  # importlib.metadata.Distribution, or a plain name for built-ins
    error: str

    @property
    def distribution(self) -> str | None:
        return _dist_name(self.dist)

    def to_dict(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "error": self.error}


@dataclass
class PluginRecord:
    name: str
    dist: object
    builtin: bool

    @property
    def distribution(self) -> str | None:
        return _dist_name(self.dist)

    @property
    def version(self) -> str | None:
        if isinstance(self.dist, str):
            from velollm_core import __version__

            return __version__
        return self.dist.version if self.dist is not None else None


load_errors: list[PluginLoadError] = []
records: dict[str, PluginRecord] = {}
_loaded = False


def _allowed_names() -> set[str] | None:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _register(plugin: object, record: PluginRecord) -> None:
    pm.register(plugin, name=record.name)
    records[record.name] = record


def _describe_error(exc: BaseException) -> str:
    """One line: the exception and the place it was raised."""
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}{where}"


def load_plugins() -> None:
    """Register the built-ins and every allowed entry point; runs once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    allowed = _allowed_names()
    for module_name in BUILTIN_PLUGINS:
        try:
            module = importlib.import_module(module_name)
            _register(module, PluginRecord(module_name, "velollm", builtin=True))
        except Exception as exc:  # noqa: BLE001 - a broken built-in must not take the CLI down either
            load_errors.append(PluginLoadError(module_name, "velollm", _describe_error(exc)))

    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and entry_point.name not in allowed:
            continue
        dist = entry_point.dist
        if entry_point.name in records:
            continue  # the same distribution visible twice on sys.path
        try:
            plugin = entry_point.load()
            _register(plugin, PluginRecord(entry_point.name, dist, builtin=False))
        except Exception as exc:  # noqa: BLE001 - any plugin bug must stay isolated
            load_errors.append(PluginLoadError(entry_point.name, dist, _describe_error(exc)))


def describe_plugins() -> list[dict]:
    """One dict per loaded plugin: name, distribution, version, hooks, builtin."""
    load_plugins()
    out = []
    for name, record in records.items():
        plugin = pm.get_plugin(name)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        out.append(
            {
                "name": name,
                "distribution": record.distribution,
                "version": record.version,
                "builtin": record.builtin,
                "hooks": hooks,
            }
        )
    return out


def hook():
    """The hook relay, plugins loaded."""
    load_plugins()
    return pm.hook
