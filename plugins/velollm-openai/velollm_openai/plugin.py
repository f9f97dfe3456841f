"""Hook implementations of velollm-openai (imports only the hook markers: the CLI starts fast)."""

from __future__ import annotations

from velollm_core.hookspecs import hookimpl

BACKEND = "openai"


@hookimpl
def benchmark_backends():
    return [BACKEND]


@hookimpl
def run_benchmark(backend, request, context):
    if backend != BACKEND:
        return None
    from velollm_openai.backend import run_generation

    return run_generation(request, context)


@hookimpl
def describe_backend(backend, context):
    if backend != BACKEND:
        return None
    from velollm_openai.backend import describe

    return describe(context)
