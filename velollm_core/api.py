"""The plugin API: every name a plugin may import from the core, and nothing else.

``from velollm_core.api import hookimpl, Backend, GenerationTiming`` works for each name in
``__all__``; plugins import nothing else from ``velollm_core`` (``tests/test_dependency_rules.py``
reads every plugin's imports and holds them to this list), apart from the test kit
(``velollm_testkit``, its own distribution) in their tests. Names are imported on first use, as
``velollm_core.contract.schemas`` does, so that a plugin module importing only ``hookimpl`` keeps the
CLI's start-up fast. What is not here may change without notice; what is here changes with a deprecation.

Groups: the hook marker; errors; the models a plugin returns or receives (docs/PLUGINS.md has a field
reference); backend objects and their typed options; deadlines, URLs and wire-format checks for
clients; model files; hardware probing helpers
for GPU plugins; process control (``interrupt``); output helpers for commands.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    # the hook marker
    "hookimpl": "velollm_core.hookspecs",
    # errors: UserInputError exits 2, the others 1; the CLI prints the message without a traceback
    "VeloError": "velollm_core.contract.errors",
    "UserInputError": "velollm_core.contract.errors",
    "BackendError": "velollm_core.contract.errors",
    "ServerGone": "velollm_core.contract.errors",  # a BackendError that ends a load level: the server is gone
    # models
    **dict.fromkeys(
        ("BackendInfo", "BenchmarkContext", "ConfigChange", "ConfigProposal", "GenerationRequest",
         "GenerationTiming", "GpuInfo", "GpuLink", "GpuVendor", "HardwareReport", "ModelFacts", "DecodeTraffic"),
        "velollm_core.contract.schemas",
    ),
    # backend objects
    **dict.fromkeys(("Backend", "BackendBase", "BackendOptions", "Capabilities"), "velollm_core.contract.backends"),
    # the engine alone at a load level's shape (Backend.engine_ceiling)
    **dict.fromkeys(("EngineShape", "EngineCeiling"), "velollm_core.contract.ceiling"),
    # tuning for a load: where to start and what to try (Backend.tune_for_load), measured by the core
    **dict.fromkeys(("LoadStep", "LoadTuning"), "velollm_core.contract.loadtune"),
    # the speculative_backend door's answer
    "Speculative": "velollm_core.contract.speculation",
    # typed options: an Options model declares its fields with these (pydantic's own)
    **dict.fromkeys(("Field", "field_validator", "ConfigDict"), "velollm_core.contract.options"),
    **dict.fromkeys(("MetricNames", "COUNTER_KEYS", "GAUGE_KEYS"), "velollm_core.contract.metricnames"),
    # streamed generations for the load generator (Backend.stream), and the one wording of a cut stream
    **dict.fromkeys(("StreamCall", "Accumulator", "stream_cut"), "velollm_core.contract.streamclient"),
    # the generated part of an OpenAI-style stream (chat deltas, tool-call fragments), for its accumulators
    **dict.fromkeys(("ChatDeltas", "CHAT_CHOICE"), "velollm_core.contract.chatstream"),
    # clients: deadlines, URLs, wire format, statistics
    **dict.fromkeys(("Deadlines", "RequestWatch", "plain_request", "read_bounded", "seconds_option", "FIRST_TOKEN_TIMEOUT_S",
                     "REQUEST_TIMEOUT_S", "PLAIN_TIMEOUT_S", "CONNECT_TIMEOUT_S"), "velollm_core.contract.deadline"),
    **dict.fromkeys(("ServerURL", "check_server_url", "join_url", "redact_url", "scrub", "split_server_url"),
                    "velollm_core.contract.urls"),
    **dict.fromkeys(("NUMBER", "conform", "stream_event", "check_timing"), "velollm_core.contract.wire"),
    "percentile": "velollm_core.contract.stats",
    "dig": "velollm_core.contract.jsontext",
    "json_number": "velollm_core.contract.jsontext",
    # model files: a GGUF path or a name the resolve_model hook knows
    **dict.fromkeys(("resolve_model_path", "check_gguf"), "velollm_core.contract.modelfiles"),
    # files: --output checked and locked before work starts, then replaced atomically
    **dict.fromkeys(("prepare_output", "atomic_write_text"), "velollm_core.contract.files"),
    "cache_dir": "velollm_core.contract.cachedir",
    # the installed plugins (entry points, built-ins first), none imported: a plugin's test checks its own
    "installed_plugins": "velollm_core.contract.plugins",
    # configuration
    "verify_proposal": "velollm_core.tune.verify",
    "read_unit_environment": "velollm_core.tune.systemd",
    "unit_installed": "velollm_core.tune.systemd",
    # hardware probing
    **dict.fromkeys(("gpu_from_pci", "normalize_pci_bus_id", "pci_device_name", "read_amdgpu_vram",
                     "scan_display_devices", "vendor_seen_on_pci"), "velollm_core.contract.probing.pci"),
    **dict.fromkeys(("DEFAULT_TIMEOUT_S", "ProbeError", "ProbeTimeout", "run_tool"),
                    "velollm_core.contract.probing.tools"),
    "OptionalCalls": "velollm_core.contract.probing.bindings",
    "usable_cpus": "velollm_core.contract.probing.load",
    "memory_bytes": "velollm_core.contract.probing.units",
    "MEMORY_UNIT_BYTES": "velollm_core.contract.probing.units",
    "detect_hardware": "velollm_core.hardware.report",
    # output formats (the register_report_formats and register_config_formats hooks)
    **dict.fromkeys(("ReportFormat", "ReportSource", "ConfigFormat"), "velollm_core.contract.formats"),
    # other tools' result files for the history (the register_result_importers hook)
    "ResultImporter": "velollm_core.contract.importers",
    # hardware telemetry sources (the telemetry_sources hook)
    **dict.fromkeys(("DeviceReading", "SensorUnavailable", "TelemetrySource"), "velollm_core.contract.telemetry"),
    # process control: interrupt.spawn / interrupt.run keep Ctrl-C and SIGTERM orderly
    "interrupt": "velollm_core.contract",
    # output of commands
    **dict.fromkeys(("print_json", "stdout_console", "stderr_console"), "velollm_core.contract.output"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    try:
        module = importlib.import_module(_EXPORTS[name])
    except KeyError:
        raise AttributeError(f"velollm_core.api has no {name!r}: plugins may use only {', '.join(sorted(__all__))}") from None
    # Looked up at each import, not cached here: a test that monkeypatches the defining module is obeyed.
    return importlib.import_module(f"velollm_core.contract.{name}") if name == "interrupt" else getattr(module, name)
