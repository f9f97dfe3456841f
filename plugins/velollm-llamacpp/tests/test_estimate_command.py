"""``velollm estimate`` (registered by this plugin): user errors are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys


def velollm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    proc = velollm("estimate", str(tmp_path / "missing.gguf"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    proc = velollm("estimate", str(bad), "--json")
    assert proc.returncode == 2 and "not a GGUF" in proc.stderr and proc.stdout == ""
