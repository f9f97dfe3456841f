"""Hook implementations of velollm-llamacpp."""

from __future__ import annotations

from velollm_core.hookspecs import hookimpl

BACKEND = "llamacpp"


@hookimpl
def benchmark_backends():
    return [BACKEND]


@hookimpl
def run_benchmark(backend, request, context):
    if backend != BACKEND:
        return None
    from velollm_llamacpp.backend import run_generation

    return run_generation(request, context)


@hookimpl
def describe_backend(backend, context):
    if backend != BACKEND:
        return None
    from velollm_llamacpp.backend import describe

    return describe(context)


@hookimpl
def register_commands(cli):
    from velollm_llamacpp.commands import llamacpp_group

    cli.add_command(llamacpp_group)
