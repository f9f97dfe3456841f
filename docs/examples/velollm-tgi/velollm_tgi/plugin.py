"""The plugin's one hook: register the backend object (imported only when VeloLLM asks for backends)."""

from velollm_core.api import hookimpl


@hookimpl
def register_backends(register):
    from velollm_tgi.backend import TGIBackend

    register(TGIBackend())
