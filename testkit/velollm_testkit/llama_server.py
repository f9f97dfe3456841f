"""The real llama-server for tests: where the llamacpp plugin found its build, and a running server.

``llamacpp_where()`` asks the plugin in-process, through the command it registers (``velollm llamacpp
where --json``, found by the ``register_commands`` hook), so the kit needs neither the plugin's
modules nor a second Python process. ``llama_server(binary, model, args)`` runs the binary for one
test: started through ``interrupt.spawn`` (it dies with the test process), ready once ``/health``
answers 200, its log kept in a temporary file that a failure names. The plugin's own server class is
not part of the API, so this small lifecycle is the kit's, written for pytest (a start that fails
fails the test).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from velollm_testkit.real import missing

LLAMA_SERVER_HEALTH_TIMEOUT_S = 120.0


def llamacpp_where() -> dict[str, Any]:
    """What ``velollm llamacpp where --json`` answers (``programs``: {name: path or None}, ...), or
    ``{"error": why}`` where no plugin registers that command or it fails."""
    import click
    from click.testing import CliRunner

    from velollm_core.contract.plugins import call_each

    group = click.Group("velollm")
    call_each("register_commands", cli=group)
    if "llamacpp" not in group.commands:
        return {"error": "no plugin registers the `llamacpp` command: is velollm-llamacpp installed?"}
    result = CliRunner().invoke(group, ["llamacpp", "where", "--json"])
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        lines = (result.output or str(result.exception or "")).strip().splitlines()
        return {"error": (lines or ["no output"])[-1]}


def find_llama_server() -> Path:
    """The llama-server the llamacpp plugin finds, else skip the test (fail it where CI requires it)."""
    found = llamacpp_where()
    path = (found.get("programs") or {}).get("llama-server")
    if not path:
        why = found.get("error") or "run `velollm llamacpp install` to build it"
        missing("llama-server", f"`velollm llamacpp where` finds none ({why})")
    return Path(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-6:])
            pytest.fail(f"llama-server exited with code {code} before it became ready; log {log}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # 503 while the model loads, refused before it listens
            pass
        time.sleep(0.2)
    pytest.fail(f"llama-server did not become healthy within {timeout_s:g} s; log {log}")


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, args: list[str] | tuple[str, ...] = (),
                 health_timeout_s: float = LLAMA_SERVER_HEALTH_TIMEOUT_S) -> Iterator[str]:
    """``binary`` serving ``model`` on 127.0.0.1 and a free port, with ``args``: yields its URL once
    /health answers 200, then stops it (terminate, then kill)."""
    import tempfile

    from velollm_core.contract import interrupt

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    fd, log_name = tempfile.mkstemp(prefix="velollm-test-llama-server-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "w") as log_handle:
        proc = interrupt.spawn([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *args],
                               stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_healthy(proc, url, log, health_timeout_s)
            yield url
        finally:
            interrupt.stop(proc)
