"""The plugin's one hook: register the backend object (imported only when VeloLLM asks for backends)."""

from velollm_core.api import hookimpl


@hookimpl
def register_backends(register):
    from velollm_echo.backend import EchoBackend

    register(EchoBackend())
