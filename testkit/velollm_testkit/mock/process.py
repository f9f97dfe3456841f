"""The mock LLM server in its own process: ``mock_llm(**config)`` starts ``python -m
velollm_testkit.mock`` on 127.0.0.1 and a free port and stops it after; ``MockLLM`` is its handle.

Its own process, so that a load generator under test and the mock do not share one event loop or GIL.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from velollm_testkit.mock.config import MockConfig

MOCK_START_TIMEOUT_S = 30.0


class MockLLM:
    """A running ``python -m velollm_testkit.mock``: ``url``, ``config``, ``stats()``, ``reset()``."""

    def __init__(self, proc: subprocess.Popen, url: str, config: dict[str, Any], log: Path) -> None:
        self.proc, self.url, self.config, self.log = proc, url, config, log

    def _call(self, method: str, path: str) -> dict[str, Any]:
        import urllib.request

        request = urllib.request.Request(f"{self.url}{path}", method=method, data=b"{}" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The mock's own account (/mock/stats): tokens sent, how late, its CPU seconds, counters."""
        return self._call("GET", "/mock/stats")

    def reset(self) -> None:
        """Clear the mock's counters (between load levels)."""
        self._call("POST", "/mock/reset")


def _mock_args(config: dict[str, Any]) -> list[str]:
    known = set(MockConfig.__dataclass_fields__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"unknown mock server setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [arg for key, value in config.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def _first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The first stdout line of ``proc`` within ``timeout_s`` ('' when it exits or stays silent)."""
    import select

    deadline = time.monotonic() + timeout_s
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        byte = os.read(fd, 1)
        if not byte:
            return ""
        line += byte
    return line.decode().strip()


@contextlib.contextmanager
def mock_llm(**config: Any) -> Iterator[MockLLM]:
    """The mock LLM server in a subprocess on 127.0.0.1 and a free port, with ``config`` (the fields of
    ``MockConfig``: ``ttft_ms=50, itl_ms=20, output_tokens=128, slots=0, ...``); stopped after.
    Usable outside pytest (the capacity benchmark starts it so); a failed start raises RuntimeError."""
    import tempfile

    from velollm_core.contract import interrupt

    fd, log_name = tempfile.mkstemp(prefix="velollm-mockserver-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "w") as log_handle:
        proc = interrupt.spawn([sys.executable, "-m", "velollm_testkit.mock", "--port", "0", *_mock_args(config)],
                               stdout=subprocess.PIPE, stderr=log_handle, stdin=subprocess.DEVNULL)
    try:
        url = _first_line(proc, MOCK_START_TIMEOUT_S)
        if not url.startswith("http://"):
            proc.poll()
            tail = " ".join(log.read_text(errors="replace").split()[-40:])
            raise RuntimeError(f"the mock server did not start (exit code {proc.returncode}): {tail}")
        yield MockLLM(proc, url, config, log)
    finally:
        interrupt.stop(proc)
        proc.stdout.close()

