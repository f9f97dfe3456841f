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
from velollm_core.contract import interrupt
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


# A program that starts a child through interrupt.spawn from a short-lived worker thread (as a
# benchmark's first concurrency level does), then waits to be signalled.
SPAWNER = """
import sys, threading, time
from velollm_core.contract import interrupt
interrupt.install()
box = []
worker = threading.Thread(target=lambda: box.append(interrupt.spawn([sys.executable, "-c", "import time; time.sleep(120)"])))
worker.start(); worker.join()  # the thread that asked for the child is gone
try:
    print(box[0].pid, flush=True)  # inside the try: the test signals as soon as it reads this
    time.sleep(120)
except KeyboardInterrupt as exc:
    box[0].kill(); box[0].wait()
    sys.exit(interrupt.exit_code(exc))
"""


def _start_spawner() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", SPAWNER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, int(proc.stdout.readline())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_spawned_child_outlives_its_thread_but_not_a_sigkilled_parent():
    proc, child = _start_spawner()
    time.sleep(0.3)
    assert psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _gone(child), "a child started through spawn() outlived a SIGKILLed parent"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_terminating_signals_raise_like_ctrl_c_with_their_exit_code(name, code):
    proc, child = _start_spawner()
    proc.send_signal(getattr(signal, name))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code and "Traceback" not in stderr, stderr
    assert _gone(child)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_sigterm_forces_the_exit_with_its_code():
    proc, child = _start(grace_s=60.0)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "second SIGTERM" in stderr
    assert _gone(child)


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_orphans_of_a_dead_velollm_are_reaped(tmp_path, monkeypatch):
    """Where the kernel cannot kill children with their parent, the next run kills what is left."""
    import json
    import os

    from velollm_core.contract import interrupt

    monkeypatch.setenv("VELOLLM_CACHE_DIR", str(tmp_path))
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()  # a VeloLLM that is gone
    folder = tmp_path / "children"
    folder.mkdir()
    record = {"pid": orphan.pid, "created": psutil.Process(orphan.pid).create_time(), "owner": owner.pid,
              "owner_created": 0.0}
    (folder / f"{orphan.pid}.json").write_text(json.dumps(record))
    ours = {"pid": os.getpid(), "created": psutil.Process().create_time(), "owner": os.getpid(),
            "owner_created": psutil.Process().create_time()}
    (folder / "mine.json").write_text(json.dumps(ours))  # its owner (this test) is alive: kept
    assert interrupt.reap_orphans() == [orphan.pid]
    assert orphan.wait(timeout=10) == -signal.SIGKILL
    assert [p.name for p in folder.iterdir()] == ["mine.json"]


LAST_WORDS = """
import sys, time
from velollm_core.contract import interrupt
interrupt.install()
with interrupt.last_words(lambda why: open(sys.argv[1], "w").write(why)):
    try:
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        time.sleep(120)  # a cleanup that a second Ctrl-C cuts short
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_forced_exit_has_its_last_words_written(tmp_path):
    """No finally runs after os._exit: what must be on disk (the result's status) is written first."""
    said = tmp_path / "said"
    proc = subprocess.Popen([sys.executable, "-c", LAST_WORDS, str(said)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert said.read_text() == "interrupted by the user (Ctrl-C); second Ctrl-C; servers killed"
