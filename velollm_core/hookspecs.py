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
def detect_gpu_links(gpus, warn):
    """Return a list of ``velollm_core.contract.schemas.GpuLink``: how pairs of ``gpus`` reach each other.

    Called only when the merged report holds two GPUs or more; ``gpus`` are its merged ``GpuInfo``
    records. A vendor plugin answers for pairs of its own cards, naming each card by its PCI bus id
    (NVLink / PCIe switch / host bridge / across CPU sockets, as its tools tell); the core keeps one
    link per pair, the fastest when two plugins disagree. Never raises for a missing tool: ``warn``.
    """


@hookspec
def register_backends(register):
    """Register this plugin's backend objects: call ``register(backend)`` once per backend.

    A backend implements ``velollm_core.api.Backend`` (``BackendBase`` gives the defaults): ``name``,
    typed ``Options``, declared ``capabilities``, and the lifecycle the engine calls in order:
    ``check`` -> ``start`` -> ``generate`` / ``stream`` / ``tokenize`` (as declared), ``describe`` once
    -> ``close``. The core reaches it through the two doors below (``run_benchmark``,
    ``speculative_backend``), whose defaults answer for every registered backend, so this is the one
    hook a backend plugin needs. A name registered twice is a load error naming both plugins; the
    first registration is kept.
    """


@hookspec(firstresult=True)
def run_benchmark(backend, plan, context, runner):
    """Run a whole benchmark of the registered backend named ``backend``; return its ``BenchmarkResult``.

    ``plan`` is the ``BenchmarkPlan`` (suites, workloads, datasets, load levels, iterations, warm-up),
    ``context`` the ``BenchmarkContext`` of the run (options validated, ``context.resources`` closed by
    the core after the run), ``runner`` the engine's ``BenchmarkRunner`` (``result``, ``save()``,
    ``on_run``). The core's own implementation is registered ``trylast``: it drives the registered
    ``Backend`` object through its lifecycle, with warm-up, iterations, load levels, statistics and the
    result file shared by every backend. A plugin may answer for its own backend name to take over
    the whole run (and return None for every other name); no backend needs to.
    """


@hookspec
def propose_config(hardware, model, backend, concurrency):
    """Return a list of ``ConfigProposal``: one per backend this plugin can configure.

    ``hardware`` is the ``HardwareReport``; ``model`` a model name/path or None; ``backend`` the
    backend the user asked about, or None for all (``ConfigProposal.runtime`` names the backend);
    ``concurrency`` the requests served at once the settings are for (``--for-concurrency``; None:
    the runtime's usual). Every ``ConfigChange`` carries its reason.
    Plugins that do not configure the asked backend return an empty list.
    """


@hookspec(firstresult=True)
def speculative_backend(backend):
    """Return the speculative object of the backend named ``backend`` (``velollm_core.api.Speculative``),
    or None where it has none.

    ``velollm speculative check | bench | pairs`` ask it for ``--backend`` (default: the one registered
    backend that has one; among several, the one whose object ``handles`` the target) and leave every
    runtime rule to it: types, flags, costs, acceptance. The core's
    own answer is ``trylast``: the registered ``Backend``'s ``speculative()`` where it declares
    ``capabilities.speculative``. firstresult: a plugin may answer for its own backend name first.
    """


@hookspec(firstresult=True)
def resolve_model(name):
    """Turn a model name into a local GGUF path (``pathlib.Path``), or return None.

    firstresult: the Ollama plugin resolves ``llama3.2:1b`` through its model store; the llamacpp
    plugin the bundled test models (``gemma3-270m``, ``smollm2-135m``). A plain file path never
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


@hookspec
def register_result_importers(register):
    """Teach ``velollm history import`` another tool's result files: call ``register(ResultImporter(...))``.

    A ``velollm_core.api.ResultImporter`` holds ``name`` (the tool, e.g. a benchmark CLI), ``sniff(path,
    head)`` (True when the file, whose first bytes are ``head``, is that tool's output; never True for
    a VeloLLM result) and ``load(path)`` returning the file's results as VeloLLM benchmark documents
    (``BenchmarkResult``'s fields, ``imported`` set, None for every figure the tool does not measure,
    never 0; ``UserInputError`` for a file it cannot read). The core validates each document against the
    published benchmark schema before it is stored. All plugins are called; the first that sniffs a file
    reads it.
    """
