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
def check_benchmark(backend, context, requests):
    if backend != BACKEND:
        return None
    from velollm_llamacpp.backend import check

    return check(context, requests)


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


@hookimpl
def speculative_backend(kind):
    if kind not in (None, BACKEND):
        return None
    from velollm_llamacpp.speculative import LlamaCppSpeculative

    return LlamaCppSpeculative()


@hookimpl
def resolve_model(name):
    from velollm_llamacpp.derived import DERIVED, make_derived

    return make_derived(name) if name in DERIVED else None


@hookimpl
def local_models():
    from velollm_llamacpp.derived import DERIVED, derived_path

    paths = {name: derived_path(name) for name in DERIVED}
    return [{"name": n, "path": str(p), "size_bytes": p.stat().st_size} for n, p in paths.items() if p.is_file()]


# propose_config and verify_config live with the tuning rules; importing them here registers them
# (the module imports nothing heavy at load time).
from velollm_llamacpp.tune import propose_config, verify_config  # noqa: F401
