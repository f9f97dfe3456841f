"""The VeloLLM plugin contract: every hook a plugin may implement.

Hooks are called with keyword arguments only; an implementation may accept fewer arguments than
the spec lists, so specs can grow without breaking plugins. Read this file first.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("velollm")
hookimpl = pluggy.HookimplMarker("velollm")


@hookspec
def detect_gpu(warn):
    """Return a list of ``velollm_core.contract.schemas.GpuInfo``, one per GPU this probe sees.

    Every vendor plugin answers (an empty list when it sees nothing). The core merges the answers:
    one record per physical GPU keyed by PCI bus id, and a vendor probe's record replaces the core's
    generic PCI record for the same device. A probe never raises for a missing tool or a failed
    command: it returns what it knows and reports the failure through ``warn(message)``, the callable
    it may accept as the keyword argument ``warn``.
    """


@hookspec
def register_backends(register):
    """Register this plugin's backend objects: call ``register(backend)`` once per backend.

    A backend implements ``velollm_core.api.Backend`` (name, a typed ``Options`` model, ``generate``,
    ``describe``; optionally ``cli_options``, ``check``, ``speculative``, ``verify_config``). The core
    answers the backend hooks below (``run_benchmark``, ``describe_backend``, ``check_benchmark``,
    ``speculative_backend``, ``verify_config``, ``benchmark_backends``) for every registered backend,
    so this is the one hook a backend plugin needs. A name registered twice is a load error naming both
    plugins; the first registration is kept.
    """


@hookspec
def benchmark_backends():
    """Return the names of the benchmark backends this plugin owns, e.g. ``["llamacpp"]``.

    All plugins answer; the CLI offers the union as ``velollm benchmark --backend`` choices.
    """


@hookspec(firstresult=True)
def run_benchmark(backend, request, context):
    """Run one generation on ``backend`` and return a ``velollm_core.contract.schemas.GenerationTiming``.

    ``request`` is a ``GenerationRequest`` (prompt, max_tokens, temperature, seed, options);
    ``context`` is the ``BenchmarkContext`` of the whole benchmark (host, model, parallel slots,
    server options, and ``context.resources``, an ExitStack the core closes at the end: a plugin
    that starts a server keeps it there, so it starts once and always stops). firstresult: the plugin
    that owns ``backend`` answers, every other returns None. Suites, warm-up, iterations, statistics
    and files stay in the core. Raise ``velollm_core.contract.errors.BackendError`` with a readable message
    when the runtime fails.
    """


@hookspec
def check_benchmark(backend, context, requests):
    """Refuse, before anything starts, a benchmark ``backend`` cannot hold: raise ``UserInputError``.

    ``requests`` are the ``GenerationRequest`` of every suite, ``context.parallel`` the most
    concurrent streams. The plugin that owns ``backend`` checks what it knows (the model's trained
    context, the server's slots, the memory the slots would need) and says the limit and why; every
    other plugin returns None. Called once, before the first generation and before any server starts.
    """


@hookspec(firstresult=True)
def describe_backend(backend, context):
    """Return a ``BackendInfo`` (name, version, model facts, server flags) for ``backend``.

    firstresult: called once after the first run, when any server the plugin started is up; the core
    records it in the result file's ``environment.backend``.
    """


@hookspec
def propose_config(hardware, model, backend):
    """Return a list of ``ConfigProposal``: one per backend this plugin can configure.

    ``hardware`` is the ``HardwareReport``; ``model`` a model name/path or None; ``backend`` the
    backend the user asked about, or None for all (``ConfigProposal.runtime`` names the backend). Every ``ConfigChange`` carries its reason.
    Plugins that do not configure the asked backend return an empty list.
    """


@hookspec(firstresult=True)
def verify_config(proposal, model, hardware, progress):
    """Measure ``proposal`` against the backend's defaults; return a ``velollm_core.tune.verify.VerifyReport``.

    firstresult: the plugin that owns backend ``proposal.runtime`` and can start it with any flags answers
    (``velollm optimize --verify``): defaults, proposal and the proposal without each speed change,
    interleaved. ``progress(line)`` reports each measurement. Others return None, and the core
    falls back to measuring before and after a restart of the user's own service.
    """


@hookspec(firstresult=True)
def speculative_backend(backend, kind):
    """Return an object able to run target+draft speculative decoding, or None.

    ``backend`` is the backend name (``"llamacpp"``); ``kind`` is its older name, passed too, with the
    same value. firstresult: the first plugin able to answer wins.
    """


@hookspec(firstresult=True)
def resolve_model(name):
    """Turn a model name into a local GGUF path (``pathlib.Path``), or return None.

    firstresult: the Ollama plugin resolves ``llama3.2:1b`` through its model store; the core
    resolves the bundled test models (``gemma3-270m``, ``smollm2-135m``). A plain file path never
    reaches this hook.
    """


@hookspec
def local_models():
    """Return the models this plugin knows on this machine: a list of dicts ``{name, path, size_bytes}``.

    All plugins answer (the Ollama store, the bundled test models); ``velollm speculative pairs``
    scans them for target/draft pairs.
    """


@hookspec
def telemetry_sources():
    """Return a list of hardware telemetry sources (``velollm_core.api.TelemetrySource``) for this machine.

    All plugins answer (the NVIDIA plugin NVML, the core RAPL). A source is cheap to create: nothing is
    opened until the benchmark's telemetry calls ``open()``, which says what it cannot read (or raises
    ``SensorUnavailable``); ``read()`` then returns one ``DeviceReading`` per device about ten times a
    second, with None (never 0) for what a device does not report.
    """


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``velollm`` CLI group ``cli``. All plugins are called."""


@hookspec
def register_report_formats(register):
    """Add ``velollm report --format`` choices: call ``register(ReportFormat(...))`` once per format.

    A ``velollm_core.api.ReportFormat`` holds ``name`` (the ``--format`` value), ``render(sources)``
    returning the whole report as text (``sources``: the ``ReportSource`` inputs, each with ``name``,
    ``kind``, ``label`` and the result document ``data``), the ``suffixes`` that choose it for
    ``--output FILE`` without ``--format``, the ``marker`` its text starts with (a report of its own is
    replaced without ``--force``) and ``file_only`` (never printed to the terminal). All plugins are
    called; the built-ins (html, csv, md, jsonl) register ``tryfirst``, and a name registered twice keeps
    its first registration.
    """


@hookspec
def register_config_formats(register):
    """Add ``velollm optimize --format`` choices: call ``register(ConfigFormat(...))`` once per format.

    A ``velollm_core.api.ConfigFormat`` holds ``name`` (the ``--format`` value), ``render(proposals)``
    returning the ``ConfigProposal`` list as text (raise ``UserInputError`` for proposals the format
    cannot express), and the ``suffixes`` that choose it for ``--output FILE`` without ``--format``. All
    plugins are called; the built-ins (shell, systemd, launchctl, powershell, json) register ``tryfirst``,
    and a name registered twice keeps its first registration.
    """
