"""Calls into a vendor's Python binding (pynvml, amdsmi) where one missing fact must not stop the rest."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


class OptionalCalls:
    """Calls functions of one binding module; the binding's own error or a missing function -> None.

    Old bindings lack newer calls and consumer GPUs answer "not supported" to datacenter ones; both
    mean "this fact is unknown", never "the probe failed".
    """

    def __init__(self, module: ModuleType, error_name: str) -> None:
        self.module = module
        self.error: type[BaseException] = getattr(module, error_name, None) or Exception

    def get(self, function: str, *args: Any) -> Any:
        """``module.function(*args)``, or None when the binding lacks it or raises its error."""
        call: Callable[..., Any] | None = getattr(self.module, function, None)
        if call is None:
            return None
        try:
            return call(*args)
        except self.error:
            return None

    def constant(self, path: str, default: Any = None) -> Any:
        """A dotted constant of the module (``"AmdSmiMemoryType.VRAM"``), or ``default``."""
        value: Any = self.module
        for part in path.split("."):
            value = getattr(value, part, None)
            if value is None:
                return default
        return value
