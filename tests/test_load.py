"""The busy-machine check that every benchmark makes before its first run."""

from __future__ import annotations

import os
import subprocess
import sys

from velollm_core.contract.probing.load import busy_warning, cpu_busy


def test_a_busy_process_is_seen_and_named_in_the_warning():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = cpu_busy(sample_s=0.5)
    finally:
        hog.kill()
        hog.wait()
    assert busy is not None
    used, total = busy
    assert total == len(os.sched_getaffinity(0)) and used >= 0.7  # the hog alone keeps one CPU busy
    warning = busy_warning(busy)
    assert warning and f"of this process's {total} CPU(s)" in warning


def test_a_quiet_machine_gets_no_warning():
    assert busy_warning((0.1, 2)) is None
    assert busy_warning(None) is None
    assert "using 1.5 of this process's 2 CPU(s)" in busy_warning((1.5, 2))
