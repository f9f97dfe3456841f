"""The engine as a built-in plugin: the ``trylast`` implementation of the ``run_benchmark`` door.

It answers for every backend registered with ``register_backends``, driving the Backend object
through its lifecycle (``velollm_core.bench.runner``). A plugin that answers ``run_benchmark`` for its
own backend name is asked first and takes the whole run over. Imports only the hook marker: the CLI
starts without the engine.
"""

from __future__ import annotations

from velollm_core.hookspecs import hookimpl


@hookimpl(trylast=True)
def run_benchmark(backend, runner):
    """Measure the plan through the registered backend called ``backend`` (the engine's own path)."""
    from velollm_core.contract import backends

    found = backends.get(backend)
    return None if found is None else runner.drive(found)
