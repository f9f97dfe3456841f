"""The plugin manager: every entry point of group ``velollm``, each loaded alone, built-ins first.

The built-in plugins are entry points too, declared by VeloLLM's own distribution (``velollm``) in
its pyproject.toml: they are found, loaded, listed and disabled exactly as a third party's are, and
this module names no feature.

A plugin that fails to import or register is recorded in ``load_errors`` and shown by
``velollm plugins``; it never takes the CLI down. Each is imported in a worker thread under a deadline
(``VELOLLM_PLUGIN_IMPORT_TIMEOUT_S``, default 10 s): one whose import never finishes is abandoned there
as a load error, one that calls ``sys.exit`` while imported is a load error, and what one prints while
imported goes to stderr, so stdout stays one JSON document under ``--json``. Plugins load built-ins
first, then the plugins shipped with VeloLLM, then third parties, so a shipped backend name is never
taken by a plugin installed beside it (``contract/backends.py`` holds to that whatever the order). So is a plugin implementing a hook that has no spec
(a misspelt ``detect_gpus``): it is unregistered, as pytest's ``check_pending`` refuses it. Every
non-firstresult hook is called through ``call_each``: a plugin that raises costs only its own answer
and is named in a warning. ``VELOLLM_DISABLE=a,b`` blocks plugins, built-ins included (pytest's
``-p no:name``); ``VELOLLM_PLUGINS=a,b`` loads only the plugins named (and the built-ins). Both take
entry point names (``nvidia``) and distribution names (``velollm-nvidia``: all its entry points); a
name that matches no installed plugin is warned about on stderr, never silently ignored.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from velollm_core import hookspecs
from velollm_core.contract import plugin_index

ENTRY_POINT_GROUP = plugin_index.ENTRY_POINT_GROUP
PLUGINS_ENV = plugin_index.PLUGINS_ENV
DISABLE_ENV = plugin_index.DISABLE_ENV
IMPORT_TIMEOUT_ENV = "VELOLLM_PLUGIN_IMPORT_TIMEOUT_S"
# Importing a plugin takes milliseconds, a second or two for one that imports a large library from a
# cold disk; 10 s is past any of them, and short enough that a hung plugin costs every command only that.
IMPORT_TIMEOUT_S = 10.0

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
    shipped: bool = False  # built in, or released with VeloLLM (plugin_index.SHIPPED_DISTRIBUTIONS)


load_errors: list[PluginLoadError] = []
records: dict[str, PluginRecord] = {}
failed_files: list[str] = []  # the module files of plugins that failed to import (module_file)
_candidates: list[plugin_index.EntryPoint] | None = None  # what this process may load (_loadable)
_attempted: set[str] = set()  # entry point names imported (or tried) so far
_complete = False  # every allowed plugin attempted


disabled_names = plugin_index.disabled_names


def unknown_hooks(plugin: object) -> list[str]:
    """The hooks ``plugin`` implements that no spec declares (a misspelt name), optional ones aside."""
    return sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or []
        if not caller.has_spec()
        and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
    )


def _register(plugin: object, record: PluginRecord) -> None:
    pm.register(plugin, name=record.name)
    unknown = unknown_hooks(plugin)
    if unknown:
        pm.unregister(plugin)
        names = ", ".join(unknown)
        raise ValueError(f"implements {names}, which is no VeloLLM hook (see velollm_core/hookspecs.py)")
    records[record.name] = record


def describe_error(exc: BaseException) -> str:
    """One line: the exception and the place it was raised."""
    import traceback

    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}{where}"


def installed_plugins() -> list[plugin_index.EntryPoint]:
    """Every installed plugin, none imported: the entry points of group ``velollm``, built-ins first,
    then the shipped plugins, then third parties (each group in ``sys.path`` order).

    Each has ``name``, ``value`` (what it loads), ``distribution``, ``version``, ``builtin`` and
    ``shipped``; a plugin's own test can check its entry point is installed without running the CLI.
    """
    found = plugin_index.entry_points()
    return sorted(found, key=lambda entry_point: (not entry_point.builtin, not entry_point.shipped))


def is_shipped(plugin_name: str) -> bool:
    """Whether the loaded plugin ``plugin_name`` is built in or shipped with VeloLLM."""
    record = records.get(plugin_name)
    return record is not None and record.shipped


def import_timeout_s() -> float:
    """The deadline of one plugin's import: ``$VELOLLM_PLUGIN_IMPORT_TIMEOUT_S`` where it is a positive
    number (anything else is warned about), else ``IMPORT_TIMEOUT_S``."""
    raw = os.environ.get(IMPORT_TIMEOUT_ENV)
    if raw is None:
        return IMPORT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        warn(f"{IMPORT_TIMEOUT_ENV}={raw!r} is no positive number of seconds; using {IMPORT_TIMEOUT_S:g}")
        return IMPORT_TIMEOUT_S
    return seconds


class PluginImportError(Exception):
    """A plugin's import that did not finish, or that ended the interpreter (``sys.exit``)."""


class _Importer:
    """Imports plugins one at a time in a worker thread, so that one whose import never finishes can
    be abandoned (a thread cannot be stopped: it is left, a daemon, and the next plugin gets a new one)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue | None = None

    def load(self, entry_point: plugin_index.EntryPoint, timeout_s: float) -> Any:
        """``entry_point.load()`` within ``timeout_s``, or a PluginImportError saying what went wrong."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(self._jobs,), name="velollm-plugin-import",
                             daemon=True).start()
        done, answer = threading.Event(), {}
        self._jobs.put((entry_point, answer, done))
        # What a plugin prints while imported goes to stderr: stdout may be one JSON document.
        with contextlib.redirect_stdout(sys.stderr):
            finished = done.wait(timeout_s)
        if not finished:
            self._jobs = None
            raise PluginImportError(f"did not finish importing within {timeout_s:g} s (a hang at import?); "
                                    f"it is left out (the deadline is ${IMPORT_TIMEOUT_ENV})")
        if "error" in answer:
            raise answer["error"]
        return answer["value"]

    @staticmethod
    def _work(jobs: queue.SimpleQueue) -> None:
        while True:
            entry_point, answer, done = jobs.get()
            try:
                answer["value"] = entry_point.load()
            except SystemExit as exc:
                answer["error"] = PluginImportError(f"called sys.exit({exc.code!r}) while being imported")
            except BaseException as exc:  # noqa: BLE001 - handed to the loading thread, which records it
                answer["error"] = exc
            done.set()


def _warn_unmatched(variable: str, names: set[str] | None, installed: list[plugin_index.EntryPoint]) -> None:
    """A warning for each name in ``$variable`` that is no installed plugin's (a typo, a removed plugin)."""
    for name in sorted(names or ()):
        if not any(entry_point.named_by({name}) for entry_point in installed):
            warn(f"{variable} names {name!r}, which is no installed plugin (neither an entry point nor a "
                 "distribution; `velollm plugins` lists them)")


def _loadable() -> list[plugin_index.EntryPoint]:
    """The entry points this process may load, in loading order; on the first call, warns about names in
    ``$VELOLLM_PLUGINS`` / ``$VELOLLM_DISABLE`` that match nothing and blocks the disabled ones."""
    global _candidates
    if _candidates is None:
        allowed, disabled = plugin_index.allowed_names(), disabled_names()
        # The entry points come from the plugin index: no importlib.metadata scan while nothing changed.
        installed = installed_plugins()
        if not any(entry_point.builtin for entry_point in installed):
            # Sources run without their distribution's metadata (no pip install): the built-ins are unknown.
            load_errors.append(PluginLoadError(plugin_index.BUILTIN_DISTRIBUTION, None, "VeloLLM's built-in "
                                               "plugins are not installed: install VeloLLM (pip install -e .)"))
        _warn_unmatched(PLUGINS_ENV, allowed, installed)
        _warn_unmatched(DISABLE_ENV, disabled, installed)
        for name in disabled:
            pm.set_blocked(name)  # a plugin registered later under this name (a test's) is blocked too
        _candidates = []
        for entry_point in installed:
            if entry_point.named_by(disabled):
                pm.set_blocked(entry_point.name)  # not even imported
            elif entry_point.builtin or allowed is None or entry_point.named_by(allowed):
                _candidates.append(entry_point)
    return _candidates


def load_plugins(hooks: Iterable[str] | None = None) -> None:
    """Register every allowed entry point, built-ins first; each is imported at most once per process.

    With ``hooks``, only the plugins that implement one of them: the plugin index remembers each
    plugin's hooks from an earlier full load; a plugin it does not know (new, changed, or one that failed
    to load) is loaded anyway. ``velollm detect`` imports no backend this way.
    """
    global _complete
    if _complete:
        return
    candidates = _loadable()
    known = plugin_index.cached_hooks(plugin_index.selection()) if hooks is not None else None
    wanted = None if known is None else set(hooks or ())
    importer, timeout_s = _Importer(), import_timeout_s()
    for entry_point in candidates:
        if entry_point.name in _attempted:
            continue
        if wanted is not None and entry_point.name in known and not wanted & set(known[entry_point.name]):
            continue
        _attempted.add(entry_point.name)
        if entry_point.name in records:
            continue  # the same distribution visible twice on sys.path
        try:
            plugin = importer.load(entry_point, timeout_s)
            record = PluginRecord(entry_point.name, entry_point.distribution, entry_point.version,
                                  builtin=entry_point.builtin, shipped=entry_point.shipped)
            _register(plugin, record)
        except Exception as exc:  # noqa: BLE001 - any plugin bug, a built-in's too, must stay isolated
            error = str(exc) if isinstance(exc, PluginImportError) else describe_error(exc)
            load_errors.append(PluginLoadError(entry_point.name, entry_point.distribution, error))
            failed_files.extend(filter(None, [module_file(entry_point)]))
    if wanted is None:
        _complete = True
        implemented = {name: sorted(caller.name for caller in pm.get_hookcallers(pm.get_plugin(name)) or [])
                       for name in records if pm.get_plugin(name) is not None}
        plugin_index.store_hooks(plugin_index.selection(), implemented, _loaded_files())


def module_file(entry_point: plugin_index.EntryPoint) -> str | None:
    """The file of the top-level module ``entry_point`` names, found without importing it (a submodule's
    parent could be one whose import hangs)."""
    import importlib.util

    top = entry_point.value.split("[", 1)[0].partition(":")[0].strip().split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def record_error(plugin_name: str, error: str) -> None:
    """A load error of a registered plugin (a failing registration hook, a duplicate backend name)."""
    record = records.get(plugin_name)
    load_errors.append(PluginLoadError(plugin_name, record.distribution if record else None, error))


def describe_plugins() -> list[dict]:
    """One dict per loaded plugin: name, distribution, version, builtin, the hooks it implements.

    ``velollm plugins`` shows ``backends.describe_plugins()``: this, plus the backends each registers.
    """
    load_plugins()
    # Built-ins first, then shipped, then third parties, whichever a command loaded first (per hook).
    order = {entry_point.name: position for position, entry_point in enumerate(_loadable())}
    out = []
    for name, record in sorted(records.items(), key=lambda item: order.get(item[0], len(order))):
        plugin = pm.get_plugin(name)
        if plugin is None:
            continue  # unregistered since (a test's fake)
        out.append(
            {
                "name": name,
                "distribution": record.distribution,
                "version": record.version,
                "builtin": record.builtin,
                "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or []),
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
    load_plugins(hooks={hook_name})
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue

        def call(_impl=impl, **kwargs):
            return _impl.function(**{name: kwargs[name] for name in _impl.argnames if name in kwargs})

        yield impl.plugin_name, call


def warn(message: str) -> None:
    """One warning line on stderr (stdout stays one JSON document under --json); a plugin's words in it
    are shown, never obeyed by the terminal (``output.safe_text``)."""
    from velollm_core.contract.output import safe_text

    sys.stderr.write(f"warning: {safe_text(message)}\n")


def call_each(hook_name: str, *, reraise: tuple[type[BaseException], ...] = (),
              on_error: Callable[[str, BaseException], None] | None = None, **kwargs: Any) -> list[Any]:
    """Call every implementation of a (non-firstresult) hook in pluggy's order, each in its own try.

    The answers come back as pluggy's relay would return them (None left out). A plugin that raises
    costs only its own answer: ``on_error(plugin_name, exc)`` hears of it, by default a warning on
    stderr naming the plugin and the hook. ``reraise`` lists the exceptions that are a plugin's answer
    rather than its bug (a refusal raised as ``UserInputError``).
    """
    return [result for _, result in call_each_named(hook_name, reraise=reraise, on_error=on_error, **kwargs)]


def call_each_named(hook_name: str, *, reraise: tuple[type[BaseException], ...] = (),
                    on_error: Callable[[str, BaseException], None] | None = None,
                    **kwargs: Any) -> list[tuple[str, Any]]:
    """As ``call_each``, each answer paired with the name of the plugin that gave it."""
    answers = []
    for plugin_name, call in reversed(list(implementations(hook_name))):  # pluggy calls LIFO
        try:
            result = call(**kwargs)
        except reraise:
            raise
        except Exception as exc:  # noqa: BLE001 - one plugin's bug must not cost the others
            if on_error is not None:
                on_error(plugin_name, exc)
            else:
                warn(f"plugin {plugin_name} failed in {hook_name}: {describe_error(exc)}")
            continue
        if result is not None:
            answers.append((plugin_name, result))
    return answers


def _loaded_files() -> list[str]:
    files = []
    for plugin in pm.get_plugins():
        module = plugin if hasattr(plugin, "__file__") else sys.modules.get(type(plugin).__module__)
        path = getattr(module, "__file__", None)
        if path:
            files.append(path)
    return sorted(set(files))


def plugin_files() -> list[str]:
    """The source files of the loaded plugins' modules (what an edit to a plugin changes)."""
    load_plugins()
    return _loaded_files()
