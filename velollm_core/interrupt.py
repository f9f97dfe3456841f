"""Ctrl-C always ends VeloLLM, and never leaves a server behind.

The first SIGINT raises KeyboardInterrupt as Python does by default: runs stop, servers are stopped,
the result file gets its final status. Cleanup is bounded: if the process is still alive
``GRACE_S`` later (a cleanup step stuck, e.g. on a lock the interrupted thread held), or the user
presses Ctrl-C again, every child process registered here is killed and the process exits 130. The
result file then holds what the last finished run wrote (it is rewritten atomically after each run).
Set ``VELOLLM_DEBUG=1`` to have the stuck threads' stacks printed before that forced exit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # every command installs the handler: keep subprocess off the start-up path
    import subprocess

GRACE_S = 20.0

_children: set[subprocess.Popen] = set()
_lock = threading.Lock()
_first_at: float | None = None


def track(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if VeloLLM has to force its exit."""
    with _lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen) -> None:
    with _lock:
        _children.discard(proc)


def _force_exit(reason: str) -> None:
    if os.environ.get("VELOLLM_DEBUG"):
        import faulthandler

        faulthandler.dump_traceback(all_threads=True)
    for proc in list(_children):
        try:
            proc.kill()
        except OSError:
            pass
    try:
        sys.stderr.write(f"Interrupted ({reason}).\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def _watchdog(grace_s: float) -> None:
    time.sleep(grace_s)
    _force_exit(f"cleanup did not finish within {grace_s:g} s; servers killed")


def _on_sigint(signum, frame) -> None:
    global _first_at
    if _first_at is not None:
        _force_exit("second Ctrl-C; servers killed")
    _first_at = time.monotonic()
    threading.Thread(target=_watchdog, args=(GRACE_S,), name="velollm-interrupt", daemon=True).start()
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through this module (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
