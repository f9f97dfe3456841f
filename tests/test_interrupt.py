"""Ctrl-C always ends VeloLLM and kills the servers it started, even when cleanup gets stuck."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

# A program that installs the handler, starts a child "server", then gets stuck in its cleanup.
STUCK = """
import subprocess, sys, time
from velollm_core import interrupt
interrupt.GRACE_S = float(sys.argv[1])
interrupt.install()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
interrupt.track(child)
try:
    print(child.pid, flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    time.sleep(120)  # a cleanup that never ends
"""


def _start(grace_s: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(grace_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    return proc, child


def _gone(pid: int) -> bool:
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_stuck_cleanup_is_ended_after_the_grace_period():
    proc, child = _start(grace_s=1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - started < 15
    assert "cleanup did not finish within 1 s; servers killed" in stderr and "Traceback" not in stderr
    assert _gone(child)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_ctrl_c_forces_the_exit():
    proc, child = _start(grace_s=60.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "second Ctrl-C" in stderr
    assert _gone(child)
