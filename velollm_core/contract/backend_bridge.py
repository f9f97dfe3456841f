"""The built-in plugin that answers the ``speculative_backend`` door for every registered backend object.

Its implementation is ``trylast``: a plugin answering the hook itself for its own backend is asked
first, whatever the order plugins were registered in. Imports only the hook marker: the registry
(``velollm_core.contract.backends``) is built on the first call.
"""

from __future__ import annotations

from velollm_core.hookspecs import hookimpl


@hookimpl(trylast=True)
def speculative_backend(backend):
    """The registered backend's ``speculative()`` where it declares ``capabilities.speculative``."""
    from velollm_core.contract import backends

    found = backends.get(backend)
    return found.speculative() if found is not None and found.capabilities.speculative else None
