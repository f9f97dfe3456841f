"""The built-in plugin that answers the backend hooks for every registered backend object.

Registered first, so pluggy calls it last: a plugin implementing ``run_benchmark`` itself still answers
for its own names, and this bridge answers for the names in the registry
(``velollm_core.contract.backends``). Imports only the hook marker: the registry is built on the first call.
"""

from __future__ import annotations

from velollm_core.hookspecs import hookimpl


def _backend(name):
    from velollm_core.contract import backends

    return backends.get(name)


def _prepared(name, context):
    """The backend called ``name`` with ``context.settings`` validated, or None when none is registered."""
    backend = _backend(name)
    if backend is not None:
        from velollm_core.contract import backends

        backends.settings(backend, context)
    return backend


@hookimpl
def benchmark_backends():
    from velollm_core.contract import backends

    return backends.registry().names()


@hookimpl
def check_benchmark(backend, context, requests):
    found = _prepared(backend, context)
    check = getattr(found, "check", None)
    if callable(check):
        check(context, requests)


@hookimpl
def run_benchmark(backend, request, context):
    found = _prepared(backend, context)
    return None if found is None else found.generate(request, context)


@hookimpl
def describe_backend(backend, context):
    found = _prepared(backend, context)
    return None if found is None else found.describe(context)


@hookimpl
def speculative_backend(backend, kind):
    speculative = getattr(_backend(backend or kind), "speculative", None)
    return speculative() if callable(speculative) else None


@hookimpl
def verify_config(proposal, model, hardware, progress):
    verify = getattr(_backend(proposal.runtime), "verify_config", None)
    if not callable(verify):
        return None
    return verify(proposal=proposal, model=model, hardware=hardware, progress=progress)
