"""Ctrl-C, SIGTERM and SIGHUP always end VeloLLM, and never leave a server behind.

The first SIGINT raises KeyboardInterrupt as Python does by default; SIGTERM (``timeout``, systemd,
``docker stop``, CI runners) and SIGHUP (a closed terminal) raise :class:`Terminated`, a
KeyboardInterrupt too, so every path that handles Ctrl-C handles them: runs stop, servers are
stopped, the result file gets its final status, and the exit code is 128 + the signal's number.
Cleanup is bounded: if the process is still alive ``GRACE_S`` later (a cleanup step stuck, e.g. on a
lock the interrupted thread held), or a second signal arrives, every child process registered here
is killed and the process exits. The result file then holds what the last finished run wrote (it is
rewritten atomically after each run). Set ``VELOLLM_DEBUG=1`` to have the stuck threads' stacks
printed before that forced exit.

Even SIGKILL, which no handler sees, leaves no server behind: on Linux every child started through
:func:`spawn` asks the kernel to kill it when VeloLLM dies (``PR_SET_PDEATHSIG``); elsewhere it gets
a process group of its own and a record in the cache, and the next :func:`spawn` kills the groups
whose owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # every command installs the handler: keep subprocess off the start-up path
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

GRACE_S = 20.0
HANDLED = ("SIGINT", "SIGTERM", "SIGHUP")

_children: set[subprocess.Popen] = set()
_lock = threading.Lock()
_first_at: float | None = None
_first_signum: int = signal.SIGINT


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled exactly as Ctrl-C, with the signal's own exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def exit_code(exc: BaseException | None) -> int:
    """128 + the signal that ended us (130 for Ctrl-C), as shells report it."""
    while exc is not None and not isinstance(exc, Terminated):
        exc = exc.__cause__ or exc.__context__
    return 128 + (exc.signum if exc is not None else signal.SIGINT)


def signal_name(code: int) -> str:
    """'SIGTERM' for exit code 143."""
    return signal.Signals(code - 128).name


def describe(exc: BaseException | None) -> str:
    """What stopped the run, for result files: 'interrupted by the user (Ctrl-C)' or the signal."""
    return _describe_code(exit_code(exc))


def _describe_code(code: int) -> str:
    if code == 128 + signal.SIGINT:
        return "interrupted by the user (Ctrl-C)"
    return f"terminated by {signal_name(code)}"


_last_words: list[Callable[[str], None]] = []


@contextlib.contextmanager
def last_words(write: Callable[[str], None]) -> Iterator[None]:
    """While inside, a forced exit first calls ``write(why)`` (e.g. to mark the result file
    'interrupted'), since no ``finally`` runs after ``os._exit``."""
    _last_words.append(write)
    try:
        yield
    finally:
        _last_words.remove(write)


def track(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if VeloLLM has to force its exit."""
    with _lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen) -> None:
    with _lock:
        _children.discard(proc)
    _forget(proc.pid)


def _force_exit(reason: str) -> None:
    if os.environ.get("VELOLLM_DEBUG"):
        import faulthandler

        faulthandler.dump_traceback(all_threads=True)
    for proc in list(_children):
        try:
            proc.kill()
        except OSError:
            pass
    for write in _last_words[:]:  # a copy: the main thread may leave its block meanwhile
        try:
            write(f"{_describe_code(128 + _first_signum)}; {reason}")
        except BaseException:  # noqa: BLE001, S110 - the exit must happen whatever the last words do
            pass
    try:
        sys.stderr.write(f"Interrupted ({reason}).\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + _first_signum)


def _watchdog(grace_s: float) -> None:
    time.sleep(grace_s)
    _force_exit(f"cleanup did not finish within {grace_s:g} s; servers killed")


def _on_signal(signum, frame) -> None:
    global _first_at, _first_signum
    if _first_at is not None:
        _force_exit(f"second {'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name}; "
                    "servers killed")
    _first_at, _first_signum = time.monotonic(), signum
    threading.Thread(target=_watchdog, args=(GRACE_S,), name="velollm-interrupt", daemon=True).start()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through this module (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in HANDLED:
        if hasattr(signal, name):  # no SIGHUP on Windows
            signal.signal(getattr(signal, name), _on_signal)


# --- children that die with us -------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_spawner: ThreadPoolExecutor | None = None


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _die_with(parent: int, libc: Any):
    def preexec() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _spawn_thread() -> ThreadPoolExecutor:
    # The kernel sends PDEATHSIG when the *thread* that forked the child ends, so children are
    # forked from one thread that lives as long as the process, never from a pool worker that
    # exits after a concurrency level.
    global _spawner
    with _lock:
        if _spawner is None:
            from concurrent.futures import ThreadPoolExecutor

            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="velollm-spawn")
        return _spawner


def spawn(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd, ...)`` for a child that must not outlive VeloLLM (a server, a bench)."""
    import subprocess

    if sys.platform.startswith("linux"):
        popen_kwargs["preexec_fn"] = _die_with(os.getpid(), _libc())
        proc = _spawn_thread().submit(subprocess.Popen, cmd, **popen_kwargs).result()
    else:
        reap_orphans()
        popen_kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(cmd, **popen_kwargs)
        _remember(proc.pid)
    track(proc)
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Terminate ``proc``, wait ``grace_s``, then kill it; it is no longer ours to kill after."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    untrack(proc)


def run(cmd: list[str], *, timeout: float | None = None, **popen_kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` through :func:`spawn`: output captured as text, killed on timeout."""
    import subprocess

    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    popen_kwargs.setdefault("text", True)
    proc = spawn(cmd, **popen_kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        untrack(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _registry() -> Any:

    from velollm_core.contract.cachedir import cache_dir

    return cache_dir() / "children"


def _remember(pid: int) -> None:
    import json

    import psutil

    try:
        folder = _registry()
        folder.mkdir(parents=True, exist_ok=True)
        record = {"pid": pid, "created": psutil.Process(pid).create_time(), "owner": os.getpid(),
                  "owner_created": psutil.Process().create_time()}
        (folder / f"{pid}.json").write_text(json.dumps(record))
    except (OSError, psutil.Error):
        pass  # best effort: the record only helps the next run clean up after a SIGKILL


def _forget(pid: int) -> None:
    if not sys.platform.startswith("linux"):
        try:
            (_registry() / f"{pid}.json").unlink(missing_ok=True)
        except OSError:
            pass


def _same(pid: int, created: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - created) < 0.01
    except psutil.Error:
        return False


def reap_orphans() -> list[int]:
    """Kill the process groups of children whose VeloLLM is gone; return their pids."""
    import json

    reaped = []
    try:
        records = list(_registry().glob("*.json"))
    except OSError:
        return reaped
    for path in records:
        try:
            record = json.loads(path.read_text())
            if _same(record["owner"], record["owner_created"]):
                continue  # its VeloLLM still runs
            if _same(record["pid"], record["created"]):
                os.killpg(record["pid"], signal.SIGKILL)
                reaped.append(record["pid"])
            path.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return reaped
