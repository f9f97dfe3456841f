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

    cli.add_command(llamacpp_group)


@hookimpl
def resolve_model(name):
    from velollm_llamacpp.derived import DERIVED, make_derived

    return make_derived(name) if name in DERIVED else None


@hookimpl
def local_models():
    from velollm_llamacpp.derived import DERIVED, derived_path

    paths = {name: derived_path(name) for name in DERIVED}
    return [{"name": n, "path": str(p), "size_bytes": p.stat().st_size} for n, p in paths.items() if p.is_file()]


# propose_config lives with the tuning rules; importing it here registers it (the module imports
# nothing heavy at load time). verify_config is the backend object's (backend.py).
from velollm_llamacpp.tune import propose_config  # noqa: F401
