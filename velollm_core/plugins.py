"""The plugin manager: built-in plugins plus every entry point of group ``velollm``, each loaded alone.

A plugin that fails to import or register is recorded in ``load_errors`` and shown by
``velollm plugins``; it never takes the CLI down.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from velollm_core import __version__, hookspecs, plugin_index

ENTRY_POINT_GROUP = plugin_index.ENTRY_POINT_GROUP
PLUGINS_ENV = plugin_index.PLUGINS_ENV

# Core features registered as plugins, so they are listed and can be replaced like any other.
BUILTIN_PLUGINS = (
    "velollm_core.hardware.pci",
    "velollm_core.hardware.xpu",
    "velollm_core.testmodels",
)

pm = pluggy.PluginManager("velollm")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginLoadError:
    name: str
    distribution: str | None  # the distribution's name; "velollm" for built-ins
    error: str

    def to_dict(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "error": self.error}


@dataclass
class PluginRecord:
    name: str
    distribution: str | None
    version: str | None
    builtin: bool


load_errors: list[PluginLoadError] = []
records: dict[str, PluginRecord] = {}
_loaded = False


def _register(plugin: object, record: PluginRecord) -> None:
    pm.register(plugin, name=record.name)
    records[record.name] = record


def describe_error(exc: BaseException) -> str:
    """One line: the exception and the place it was raised."""
    import traceback

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
    allowed = plugin_index.allowed_names()
    for module_name in BUILTIN_PLUGINS:
        try:
            module = importlib.import_module(module_name)
            _register(module, PluginRecord(module_name, "velollm", __version__, builtin=True))
        except Exception as exc:  # noqa: BLE001 - a broken built-in must not take the CLI down either
            load_errors.append(PluginLoadError(module_name, "velollm", describe_error(exc)))

    # The entry points come from the plugin index: no importlib.metadata scan while nothing changed.
    for entry_point in plugin_index.entry_points():
        if allowed is not None and entry_point.name not in allowed:
            continue
        if entry_point.name in records:
            continue  # the same distribution visible twice on sys.path
        try:
            plugin = entry_point.load()
            record = PluginRecord(entry_point.name, entry_point.distribution, entry_point.version, builtin=False)
            _register(plugin, record)
        except Exception as exc:  # noqa: BLE001 - any plugin bug must stay isolated
            load_errors.append(PluginLoadError(entry_point.name, entry_point.distribution, describe_error(exc)))


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


def implementations(hook_name: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    """``(plugin name, call)`` per implementation of a hook, in registration order, wrappers skipped.

    ``call(**kwargs)`` passes on only the arguments the implementation names (pluggy's rule), so a
    caller can run each plugin in its own try/except: one plugin's bug costs only that plugin.
    """
    caller = getattr(hook(), hook_name)
    for impl in caller.get_hookimpls():
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue

        def call(_impl=impl, **kwargs):
            return _impl.function(**{name: kwargs[name] for name in _impl.argnames if name in kwargs})

        yield impl.plugin_name, call


def plugin_files() -> list[str]:
    """The source files of the loaded plugins' modules (what an edit to a plugin changes)."""
    load_plugins()
    files = []
    for plugin in pm.get_plugins():
        module = plugin if hasattr(plugin, "__file__") else sys.modules.get(type(plugin).__module__)
        path = getattr(module, "__file__", None)
        if path:
            files.append(path)
    return sorted(set(files))
