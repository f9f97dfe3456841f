"""Backends as objects: the ``Backend`` protocol, its declared ``Capabilities``, its typed options, and
the registry plugins fill.

A backend plugin implements ``register_backends(register)`` and calls ``register(MyBackend())``. The
engine reaches a registered backend only through the methods below, in the order the protocol gives,
and only those its ``capabilities`` declare: nothing is looked up with ``getattr``. Two plugins
registering one name is a load error naming both; the first registration is kept (load order is the
order of the entry points, but one backend per name makes it matter only for that error).
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

    from velollm_core.contract.ceiling import EngineCeiling, EngineShape
    from velollm_core.contract.loadtune import LoadTuning
    from velollm_core.contract.metricnames import MetricNames
    from velollm_core.contract.schemas import (
        BackendInfo,
        BenchmarkContext,
        ConfigProposal,
        GenerationRequest,
        GenerationTiming,
        HardwareReport,
    )
    from velollm_core.contract.streamclient import StreamCall


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


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared once on the class; the engine reads it and never probes.

    - ``stream``: ``stream(request, context)`` returns a ``StreamCall``, so load levels run on the
      core's asyncio load generator (one connection per stream, tokens stamped on arrival). False: load
      levels call ``generate`` on one thread per stream (at most 1024 streams).
    - ``tokenize``: ``tokenize(text, context)`` counts tokens as the server does, so ``ppN/tgM`` prompts
      are exact. False: the engine calibrates tokens per word from two probe generations' reported
      ``prompt_tokens`` and marks the workload calibrated.
    - ``ignore_eos``: the runtime honours ``GenerationRequest.ignore_eos`` (generates exactly
      ``max_tokens``). False: it answers naturally; the engine says so once on the console and flags
      every run shorter than asked (``short_output``; ``short_outputs`` per level).
    - ``metrics``: the server's Prometheus metric names (``MetricNames``) for the generic keys;
      ``metrics_url(context)`` then gives the endpoint. None: the server has no metrics endpoint, and
      the telemetry says nothing about server metrics.
    - ``speculative``: ``speculative()`` returns the object running target+draft speculative decoding.
    - ``verify_config``: ``verify_config(proposal, model, hardware, progress)`` measures an optimize
      proposal against the defaults (``velollm optimize --verify``).
    - ``engine_ceiling``: ``engine_ceiling(shapes, context)`` measures the inference engine alone (no
      server) at each load level's shape (``velollm_core.contract.ceiling``), for the levels' server
      efficiency (``velollm benchmark --engine-ceiling``).
    - ``tune_for_load``: ``tune_for_load(proposal, model, concurrency, workload)`` gives the flags to
      start from and the single changes worth trying at N streams (``velollm_core.contract.loadtune``);
      the core measures each A/B at that load (``velollm optimize --for-concurrency N --verify``).
    """

    stream: bool = False
    tokenize: bool = False
    ignore_eos: bool = False
    metrics: MetricNames | None = None
    speculative: bool = False
    verify_config: bool = False
    engine_ceiling: bool = False
    tune_for_load: bool = False


@runtime_checkable
class Backend(Protocol):
    """A benchmark backend: one runtime VeloLLM can measure. ``BackendBase`` gives every default.

    Attributes: ``name`` (``--backend NAME``), ``Options`` (a ``BackendOptions`` subclass: the
    ``--option`` keys), ``capabilities`` (``Capabilities``), ``cli_options`` (click options this
    backend adds to ``velollm benchmark``; each one's name is a field of ``Options``).

    Lifecycle, in the order the engine calls it for one benchmark (one ``BenchmarkContext``):

    1. ``check(context, requests)``: before anything starts, refuse what the backend cannot hold by
       raising ``UserInputError`` (one sentence: the limit and why). ``requests`` holds one request of
       every suite, workload and dataset with its real ``max_tokens`` (a workload's also carries
       ``prompt_tokens_target``: depth plus prompt). It may read files and the options; it may NOT
       make network calls (no server runs yet; a limit only the server knows is checked in
       ``start``, which never sees the requests: keep what ``start`` needs of them in
       ``context.state`` here). Anything it put on ``context.resources`` is closed when it refuses.
    2. ``start(context)``: start the server or connect to it; keep whatever must be closed on
       ``context.resources`` (an ExitStack the engine closes after ``close``). It may raise
       ``UserInputError`` for a limit the running server reveals, or ``BackendError``.
    3. ``generate(request, context)`` (always), ``stream(request, context)`` (``capabilities.stream``),
       ``tokenize(text, context)`` (``capabilities.tokenize``), ``metrics_url(context)``
       (``capabilities.metrics``): any number of times, from several threads at a load level.
       ``describe(context)`` is called once, after the first generation has finished (a runtime that
       loads its model on the first request can then report it loaded).
    4. ``close(context)``: always, once, after the last call (also after a failure or Ctrl-C) when
       ``start`` was called; then ``context.resources`` closes.

    Errors: ``UserInputError`` (exit 2) for what the user asked that cannot run; ``BackendError``
    (exit 1) for a runtime that fails. A ``generate`` error in a sequential level (warm-up or
    iteration) ends the benchmark, the runs finished so far kept in the file with ``status: failed``;
    at a load level it is one failed request, counted in the level's ``failed``/``failures``, and the
    level goes on. ``ServerGone`` (a ``BackendError``) from ``generate`` or from a stream's connection
    ends the level and the benchmark: the server is gone. Any other exception is a bug: named in the
    result, exit 1.

    State: ``context.state`` is one dict for every call of one benchmark (``check``, ``start``,
    ``generate``, ``stream``, ``tokenize``, ``describe``, ``metrics_url``, ``close``); calls at a load
    level run on several threads at once, so take ``context.lock`` (an ``RLock``) to create shared
    things once. ``context.settings`` holds the validated ``Options`` in every call; ``context.options``
    the flat ``--option`` dict as given.
    """

    name: str
    Options: type[BackendOptions]
    capabilities: Capabilities
    cli_options: tuple[click.Option, ...]

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        """Refuse what cannot run (``UserInputError``); no network calls. Keep what ``start`` must
        check against a limit only the server knows in ``context.state`` (``start`` sees no requests)."""
        ...

    def start(self, context: BenchmarkContext) -> None:
        """Start or connect to the server; resources on ``context.resources``; ``UserInputError`` for
        a server limit that what ``check`` kept in ``context.state`` exceeds."""
        ...

    def describe(self, context: BenchmarkContext) -> BackendInfo | None:
        """Version, model facts, server flags and ``warnings`` (shown on the console), once."""
        ...

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        """Run one generation and return its timings; raise ``BackendError`` when the runtime fails."""
        ...

    def stream(self, request: GenerationRequest, context: BenchmarkContext) -> StreamCall:
        """``capabilities.stream``: the generation as a ``StreamCall`` for the load generator."""
        ...

    def tokenize(self, text: str, context: BenchmarkContext) -> list[int] | None:
        """``capabilities.tokenize``: the server's tokens of ``text`` (BOS included); None: it cannot."""
        ...

    def metrics_url(self, context: BenchmarkContext) -> str | None:
        """``capabilities.metrics``: the server's Prometheus endpoint (after ``start``); None where this
        server has its endpoint off (the telemetry then warns once that server metrics are unknown)."""
        ...

    def speculative(self) -> Any:
        """``capabilities.speculative``: the object running speculative decoding for this runtime."""
        ...

    def verify_config(self, proposal: ConfigProposal, model: str | None, hardware: HardwareReport,
                      progress) -> Any:
        """``capabilities.verify_config``: measure ``proposal`` against the defaults; a ``VerifyReport``."""
        ...

    def engine_ceiling(self, shapes: list[EngineShape], context: BenchmarkContext) -> list[EngineCeiling]:
        """``capabilities.engine_ceiling``: the engine alone at each of ``shapes`` (those it cannot
        measure left out). Called after ``close`` (the server is gone; ``context.state`` and
        ``context.settings`` still hold what the benchmark knew), only when the user asked for it;
        ``BackendError`` when the measuring program fails, ``UserInputError`` when it cannot run here."""
        ...

    def tune_for_load(self, proposal: ConfigProposal, model: str | None, concurrency: int,
                      workload: Any) -> LoadTuning:
        """``capabilities.tune_for_load``: where to start and what to try for ``concurrency`` streams of
        ``workload`` (a ``Workload``: ``prompt_tokens``, ``output_tokens``, ``depth``); no server starts here."""
        ...

    def close(self, context: BenchmarkContext) -> None:
        """End what ``start`` began that ``context.resources`` does not hold."""
        ...


class BackendBase:
    """Defaults for every part of ``Backend`` but ``name`` and ``generate``: subclass it and override.

    A method whose capability is not declared raises ``NotImplementedError`` (the engine never calls it).
    """

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    capabilities: ClassVar[Capabilities] = Capabilities()
    cli_options: ClassVar[tuple[click.Option, ...]] = ()

    def check(self, context: BenchmarkContext, requests: list[GenerationRequest]) -> None:
        """Nothing is refused beyond what the options model refuses."""

    def start(self, context: BenchmarkContext) -> None:
        """Nothing to start: ``generate`` reaches the runtime itself."""

    def describe(self, context: BenchmarkContext) -> BackendInfo | None:
        return None

    def generate(self, request: GenerationRequest, context: BenchmarkContext) -> GenerationTiming:
        raise NotImplementedError(f"backend {self.name!r} has no generate()")

    def stream(self, request: GenerationRequest, context: BenchmarkContext) -> StreamCall:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.stream")

    def tokenize(self, text: str, context: BenchmarkContext) -> list[int] | None:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.tokenize")

    def metrics_url(self, context: BenchmarkContext) -> str | None:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.metrics")

    def speculative(self) -> Any:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.speculative")

    def verify_config(self, proposal: ConfigProposal, model: str | None, hardware: HardwareReport,
                      progress) -> Any:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.verify_config")

    def engine_ceiling(self, shapes: list[EngineShape], context: BenchmarkContext) -> list[EngineCeiling]:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.engine_ceiling")

    def tune_for_load(self, proposal: ConfigProposal, model: str | None, concurrency: int,
                      workload: Any) -> LoadTuning:
        raise NotImplementedError(f"backend {self.name!r} does not declare capabilities.tune_for_load")

    def close(self, context: BenchmarkContext) -> None:
        """Nothing beyond ``context.resources``, which the engine closes."""


# The methods a capability needs: a backend declaring one without its method is a load error.
CAPABILITY_METHODS = {"stream": "stream", "tokenize": "tokenize", "metrics": "metrics_url",
                      "speculative": "speculative", "verify_config": "verify_config",
                      "engine_ceiling": "engine_ceiling", "tune_for_load": "tune_for_load"}
LIFECYCLE_METHODS = ("check", "start", "describe", "generate", "close")


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


_lock = threading.RLock()  # a backend's own hooks may ask the registry while it is being built
_cache: tuple[frozenset, Registry] | None = None


def _check(backend: Any) -> str | None:
    """Why ``backend`` cannot be registered, or None."""
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name:
        return f"{backend!r} has no name"
    options = getattr(backend, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BackendOptions)):
        return f"backend {name!r}: Options must subclass velollm_core.api.BackendOptions"
    capabilities = getattr(backend, "capabilities", None)
    if not isinstance(capabilities, Capabilities):
        return f"backend {name!r}: capabilities must be a velollm_core.api.Capabilities"
    for method in LIFECYCLE_METHODS:
        if not callable(getattr(backend, method, None)):
            return f"backend {name!r} has no {method}() (subclass velollm_core.api.BackendBase for the defaults)"
    for capability, method in CAPABILITY_METHODS.items():
        if getattr(capabilities, capability) and not callable(getattr(backend, method, None)):
            return f"backend {name!r} declares capabilities.{capability} but has no {method}()"
    for option in getattr(backend, "cli_options", ()) or ():
        if option.name not in options.model_fields:
            return f"backend {name!r}: its flag {option.opts[0]} is no field of its Options"
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
            if taken is not None and plugins.is_shipped(_plugin) and not plugins.is_shipped(taken.plugin):
                # A name a plugin shipped with VeloLLM registers is its own: the other one is the error.
                plugins.record_error(taken.plugin, f"register_backends: backend {backend.name!r} belongs to "
                                                   f"plugin {_plugin}, shipped with VeloLLM; this one is not used")
            elif taken is not None:
                plugins.record_error(_plugin, f"register_backends: backend {backend.name!r} is already "
                                              f"registered by plugin {taken.plugin}; the first one is kept")
                return
            registry.entries[backend.name] = Registration(backend, _plugin)

        try:
            call(register=register)
        except Exception as exc:  # noqa: BLE001 - one plugin's bug must not cost the others' backends
            plugins.record_error(plugin_name, f"register_backends: {plugins.describe_error(exc)}")
    return registry


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


def doors(backend: Backend) -> list[str]:
    """The design card's hooks the core answers for ``backend`` (``run_benchmark``, and
    ``speculative_backend`` where it declares speculative decoding): what ``velollm plugins`` lists."""
    return ["run_benchmark", *(["speculative_backend"] if backend.capabilities.speculative else [])]


def describe_plugins() -> list[dict]:
    """``plugins.describe_plugins()`` with each plugin's ``backends``, and among its ``hooks`` the doors
    the core answers for them: what ``velollm plugins`` shows."""
    from velollm_core.contract import plugins

    listing = plugins.describe_plugins()
    current = registry()
    for item in listing:
        owned = current.owned_by(item["name"])
        item["hooks"] = sorted({*item["hooks"], *(hook for backend in owned for hook in doors(backend))})
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
        for option in backend.cli_options:
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

