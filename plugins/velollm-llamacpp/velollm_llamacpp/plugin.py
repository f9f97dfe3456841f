"""Hook implementations of velollm-llamacpp."""

from __future__ import annotations

from velollm_core.api import hookimpl


@hookimpl
def register_backends(register):
    from velollm_llamacpp.backend import LlamaCppBackend

    register(LlamaCppBackend())


@hookimpl
def register_commands(cli):
    from velollm_llamacpp.commands import llamacpp_group
    from velollm_llamacpp.estimate_command import estimate_command

    cli.add_command(llamacpp_group)
    cli.add_command(estimate_command)


@hookimpl
def resolve_model(name):
    """The bundled test models (gemma3-270m, smollm2-135m) and those derived from them."""
    from velollm_llamacpp.derived import DERIVED, make_derived
    from velollm_llamacpp.testmodels import TEST_MODELS

    if name in TEST_MODELS:
        return TEST_MODELS[name]()
    return make_derived(name) if name in DERIVED else None


@hookimpl
def local_models():
    from velollm_llamacpp.derived import DERIVED, derived_path
    from velollm_llamacpp.testmodels import installed_test_models

    paths = {name: derived_path(name) for name in DERIVED}
    derived = [{"name": n, "path": str(p), "size_bytes": p.stat().st_size} for n, p in paths.items() if p.is_file()]
    return [*installed_test_models(), *derived]


@hookimpl
def propose_config(hardware, model, backend, concurrency):
    """The llama.cpp proposal, sized for ``concurrency`` slots; the tuning rules are imported only when
    asked (every command loads this module, `velollm detect --json` too). verify_config and tune_for_load
    are the backend object's (backend.py)."""
    from velollm_llamacpp import tune

    return tune.propose_config(hardware=hardware, model=model, backend=backend, concurrency=concurrency)
