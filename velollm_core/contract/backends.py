"""Backends as objects: the ``Backend`` protocol, its typed options, and the registry plugins fill.

A backend plugin implements ``register_backends(register)`` and calls ``register(MyBackend())``. The
core's bridge plugin (``velollm_core.contract.backend_bridge``) answers the name-dispatched hooks
(``run_benchmark``, ``describe_backend``, ``check_benchmark``, ``speculative_backend``,
``verify_config``, ``benchmark_backends``) for every registered backend, so a backend never checks
``if backend != NAME`` and plugins written against those hooks directly keep working beside it.
Two plugins registering one name is a load error naming both; the first registration is kept.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from velollm_core.contract import deadline
from velollm_core.contract.errors import UserInputError
from velollm_core.contract.options import SEPARATOR, dict_value_type, place

if TYPE_CHECKING:
    import click

    from velollm_core.contract.schemas import (
        BackendInfo,
        BenchmarkContext,
        GenerationRequest,
        GenerationTiming,
    )



class BackendOptions(BaseModel):
    """What every backend accepts through ``--option KEY=VALUE``; a backend subclasses it with its own.

    Fields are None (or empty) unless given, so ``model_dump(exclude_unset=True)`` is what the user
    asked for. Unknown keys are refused (``extra="forbid"``) with one sentence naming the known ones.
    """

    model_config = ConfigDict(extra="forbid")

    first_token_timeout_s: float | None = Field(
        None, description="Seconds a streamed request may wait for its first token (default 300).")
    timeout_s: float | None = Field(None, description="Seconds one whole request may take (default 600).")
    request: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"placeholder": "<field>"},
        description="Fields set in every generation request body, over the backend's own: "
                    "values as JSON (request.stop='[\"\\n\"]'), dotted keys nest (request.a.b=1).")

    @field_validator("first_token_timeout_s", "timeout_s", mode="before")
    @classmethod
    def _positive_seconds(cls, value: Any, info) -> Any:
        return None if value is None else deadline.seconds_option(info.field_name, value)


@runtime_checkable
class Backend(Protocol):
    """A benchmark backend: one runtime VeloLLM can measure. See docs/PLUGINS.md, "Write a backend plugin".

    Required: ``name``, ``Options`` (a ``BackendOptions`` subclass), ``generate`` and ``describe``.
    Optional (looked up with ``getattr``; ``BackendBase`` provides defaults): ``cli_options`` (click
    options this backend adds to ``velollm benchmark``; each option's name is a field of ``Options``),
    ``check(context, requests)`` (refuse, before anything starts, what the backend cannot hold: raise
    ``UserInputError``), ``speculative()`` (an object running target+draft speculative decoding) and
    ``verify_config(proposal, model, hardware, progress)`` (``velollm optimize --verify``).
    ``context.settings`` holds the validated ``Options`` in every call.
    """

    name: str
    Options: type[BackendOptions]

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        """Run one generation and return its timings; raise ``BackendError`` when the runtime fails."""
        ...

    def describe(self, context: BenchmarkContext) -> BackendInfo | None:
        """Version, model facts and server flags, called once after the first measured run."""
        ...


class BackendBase:
    """Defaults for the optional parts of ``Backend``: subclass it, or write every part yourself."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    cli_options: ClassVar[tuple[click.Option, ...]] = ()

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        """Nothing is refused beyond what the options model refuses."""

    def describe(self, context: BenchmarkContext) -> BackendInfo | None:
        return None

    def metrics_url(self, context: BenchmarkContext) -> str | None:
        """The server's Prometheus endpoint for the benchmark's telemetry; None: it has none."""
        return None


# The hooks the bridge answers for a backend, by the capability it needs (None: every backend).
BRIDGED_HOOKS: dict[str, str | None] = {
    "benchmark_backends": None,
    "check_benchmark": None,
    "run_benchmark": None,
    "describe_backend": None,
    "speculative_backend": "speculative",
    "verify_config": "verify_config",
}


def bridged_hooks(backend: Backend) -> list[str]:
    """The hook names the bridge answers on ``backend``'s behalf."""
    return [hook for hook, needs in BRIDGED_HOOKS.items() if needs is None or callable(getattr(backend, needs, None))]


@dataclass
class Registration:
    backend: Backend
    plugin: str  # the plugin that registered it


@dataclass
class Registry:
    """The registered backends by name, and which plugin registered each."""

    entries: dict[str, Registration] = field(default_factory=dict)

    def get(self, name: str | None) -> Backend | None:
        entry = self.entries.get(name) if name is not None else None
        return entry.backend if entry else None

    def names(self) -> list[str]:
        return sorted(self.entries)

    def owned_by(self, plugin: str) -> list[Backend]:
        return [entry.backend for entry in self.entries.values() if entry.plugin == plugin]

    def all(self) -> list[Backend]:
        return [entry.backend for entry in self.entries.values()]


BRIDGE = "velollm_core.contract.backend_bridge"
_lock = threading.RLock()  # a backend's own hooks may ask the registry while it is being built
_cache: tuple[tuple[int, ...], Registry] | None = None


def _check(backend: Any) -> str | None:
    """Why ``backend`` cannot be registered, or None."""
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name:
        return f"{backend!r} has no name"
    options = getattr(backend, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BackendOptions)):
        return f"backend {backend.name!r}: Options must subclass velollm_core.api.BackendOptions"
    for method in ("generate", "describe"):
        if not callable(getattr(backend, method, None)):
            return f"backend {backend.name!r} has no {method}()"
    for option in getattr(backend, "cli_options", ()) or ():
        if option.name not in options.model_fields:
            return f"backend {backend.name!r}: its flag {option.opts[0]} is no field of its Options"
    return None


def build_registry() -> Registry:
    """Ask every plugin's ``register_backends``; duplicates and bad backends become load errors."""
    from velollm_core.contract import plugins

    registry = Registry()
    for plugin_name, call in plugins.implementations("register_backends"):  # load order: first wins
        def register(backend: Backend, _plugin: str = plugin_name) -> None:
            problem = _check(backend)
            if problem:
                plugins.record_error(_plugin, f"register_backends: {problem}")
                return
            taken = registry.entries.get(backend.name)
            if taken is not None:
                plugins.record_error(_plugin, f"register_backends: backend {backend.name!r} is already "
                                              f"registered by plugin {taken.plugin}; the first one is kept")
                return
            registry.entries[backend.name] = Registration(backend, _plugin)

        try:
            call(register=register)
        except Exception as exc:  # noqa: BLE001 - one plugin's bug must not cost the others' backends
            plugins.record_error(plugin_name, f"register_backends: {plugins.describe_error(exc)}")
    _claims_by_name(registry)
    return registry


def _claims_by_name(registry: Registry) -> None:
    """Plugins that claim a backend name through ``benchmark_backends`` that another already owns."""
    from velollm_core.contract import plugins

    owners = {name: entry.plugin for name, entry in registry.entries.items()}
    for plugin_name, call in plugins.implementations("benchmark_backends"):
        if plugin_name == BRIDGE:
            continue  # it answers from the registry being built
        try:
            names = call()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug costs only its own claims
            plugins.warn(f"plugin {plugin_name} failed in benchmark_backends: {plugins.describe_error(exc)}")
            continue
        for name in names or []:
            if name in owners and owners[name] != plugin_name:
                plugins.record_error(plugin_name, f"benchmark_backends: backend {name!r} is already "
                                                  f"claimed by plugin {owners[name]}; the first one is kept")
            else:
                owners.setdefault(name, plugin_name)


def registry() -> Registry:
    """The registry, built once per set of registered plugins (a test registering a fake rebuilds it)."""
    global _cache
    from velollm_core.contract import plugins

    plugins.load_plugins()
    # The plugins themselves, not their id()s: the cache holds them, so a plugin unregistered and a new
    # one created at the same address cannot pass for it (a stale registry answered with the old backend).
    key = frozenset(plugins.pm.get_plugins())
    with _lock:
        if _cache is None or _cache[0] != key:
            _cache = (key, build_registry())
        return _cache[1]


def get(name: str | None) -> Backend | None:
    """The registered backend called ``name``, or None."""
    return registry().get(name)


def describe_plugins() -> list[dict]:
    """``plugins.describe_plugins()`` with each plugin's ``backends``, and among its ``hooks`` those the
    core's bridge answers for them (``run_benchmark``, ...): what ``velollm plugins`` shows."""
    from velollm_core.contract import plugins

    listing = plugins.describe_plugins()
    current = registry()
    for item in listing:
        owned = current.owned_by(item["name"])
        item["hooks"] = sorted({*item["hooks"], *(hook for backend in owned for hook in bridged_hooks(backend))})
        item["backends"] = [backend.name for backend in owned]
    return listing


# --- options -----------------------------------------------------------------------------------------


def _label(options_model: type[BackendOptions], name: str) -> str:
    info = options_model.model_fields[name]
    if _is_dict_field(options_model, name):
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        return f"{name}{SEPARATOR}{extra.get('placeholder', '<KEY>')}"
    return name


def _is_dict_field(options_model: type[BackendOptions], name: str) -> bool:
    return dict_value_type(options_model, name) is not None


def known_options(options_model: type[BackendOptions]) -> list[str]:
    """The option keys a model accepts, as the user types them (``env.<VAR>`` for a dict field)."""
    return [_label(options_model, name) for name in options_model.model_fields]


def nest(options_model: type[BackendOptions], flat: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Flat ``--option`` keys as the model's shape (``request.x=1`` -> ``{"request": {"x": 1}}``,
    ``request.a.b=1`` -> ``{"request": {"a": {"b": 1}}}``), and the keys that name no field (only where
    the model forbids extra keys). A key that is both a value and a table of fields is a UserInputError."""
    fields = options_model.model_fields
    forbid = options_model.model_config.get("extra") == "forbid"
    nested: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in flat.items():
        head, sep, rest = key.partition(SEPARATOR)
        if sep and head in fields and _is_dict_field(options_model, head):
            place(options_model, nested.setdefault(head, {}), head, rest, value)
        elif key in fields or not forbid:
            nested[key] = value
        else:
            unknown.append(key)
    return nested, unknown


def validate_options(backend: Backend, flat: Mapping[str, Any]) -> BackendOptions:
    """``backend.Options`` from the flat ``--option`` dict; any problem is one ``UserInputError``."""
    nested, unknown = nest(backend.Options, flat)
    if unknown:
        keys = ", ".join(repr(key) for key in unknown)
        known = ", ".join(known_options(backend.Options))
        word = "option" if len(unknown) == 1 else "options"
        raise UserInputError(f"unknown {backend.name} {word} {keys}; known: {known}")
    try:
        return backend.Options.model_validate(nested)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = SEPARATOR.join(str(part) for part in error["loc"])
            given = flat.get(key, error.get("input"))
            problems.append(f"--option {key}={given!r}: {error['msg']}")
        raise UserInputError("; ".join(problems)) from None


def settings(backend: Backend, context: BenchmarkContext) -> BackendOptions:
    """The validated options of this benchmark, made once and kept on ``context.settings``."""
    if not isinstance(context.settings, backend.Options):
        context.settings = validate_options(backend, context.options)
    return context.settings


# --- CLI flags -----------------------------------------------------------------------------------------


def cli_flags(backends: list[Backend]) -> dict[str, tuple[click.Option, list[str]]]:
    """Every backend's own ``velollm benchmark`` flags by parameter name: the option and its backends.

    Two backends may declare the same flag (the first declaration is parsed); it is theirs together.
    """
    flags: dict[str, tuple[click.Option, list[str]]] = {}
    for backend in backends:
        for option in getattr(backend, "cli_options", ()) or ():
            flags.setdefault(option.name, (option, []))[1].append(backend.name)
    return flags


def flag_options(backend_name: str, given: Mapping[str, Any],
                 flags: Mapping[str, tuple[click.Option, list[str]]]) -> dict[str, Any]:
    """The backend flags the user gave, as options of ``backend_name``; another backend's flag is refused."""
    options: dict[str, Any] = {}
    for name, value in given.items():
        option, owners = flags[name]
        if backend_name not in owners:
            raise UserInputError(f"{option.opts[0]} is an option of the {', '.join(owners)} backend, "
                                 f"not of {backend_name}")
        options[name] = value
    return options

