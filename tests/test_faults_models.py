"""Fault suite: the real CLI on hostile and damaged model files fails fast, small and in one sentence.

Also a script: ``python tests/test_faults_models.py DIR`` writes the hostile files into DIR, for
measuring the commands by hand (``/usr/bin/time -v velollm estimate DIR/huge-array.gguf``).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from velollm_testkit.real import missing

GGUF_STRING = 8
GGUF_ARRAY = 9
HUGE_ARRAY_ENTRIES = 5_500_000  # one-letter strings: 9 bytes each, a 50 MB file

TIME_LIMIT_S = 10.0
RSS_LIMIT_MB = 300


def _gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def write_huge_array_gguf(path: Path, entries: int = HUGE_ARRAY_ENTRIES) -> Path:
    """A header-only GGUF whose one metadata key is a vocabulary of ``entries`` strings."""
    # Written by hand: GGUFWriter would pack millions of Python strings one by one.
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    key = _gguf_string(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", GGUF_ARRAY, GGUF_STRING, entries)
    path.write_bytes(header + key + _gguf_string(b"a") * entries)
    return path


def write_cut_gguf(source: Path, path: Path) -> Path:
    """The first half of ``source``."""
    with source.open("rb") as src, path.open("wb") as dst:
        left = source.stat().st_size // 2
        while left:
            chunk = src.read(min(left, 1 << 22))
            dst.write(chunk)
            left -= len(chunk)
    return path


def write_magic_only(path: Path) -> Path:
    path.write_bytes(b"GGUF")
    return path


def write_hostile_files(directory: Path, gemma: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "huge-array": write_huge_array_gguf(directory / "huge-array.gguf"),
        "cut-in-half": write_cut_gguf(gemma, directory / "gemma-cut-in-half.gguf"),
        "magic-only": write_magic_only(directory / "magic-only.gguf"),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    from velollm_core.api import resolve_model_path
    from velollm_core.contract.errors import UserInputError

    try:
        gemma = resolve_model_path("gemma3-270m")
    except UserInputError as exc:
        missing("the bundled Gemma 3 270M", str(exc))
    return write_hostile_files(tmp_path_factory.mktemp("hostile"), gemma)


def _run_cli(args: list[str], cache_dir: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """(result, wall seconds, max RSS in MB) of ``python -m velollm_core ARGS`` in a child process."""
    env = {**os.environ, "VELOLLM_CACHE_DIR": str(cache_dir), "NO_COLOR": "1"}
    started = time.monotonic()
    # A helper child runs the CLI and reports its own child's peak RSS, so earlier children of this
    # test process (ru_maxrss of RUSAGE_CHILDREN is a maximum over all of them) cannot mask it.
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run([sys.executable, '-m', 'velollm_core', *sys.argv[1:]], capture_output=True, text=True); "
        "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
        "sys.stderr.write('\\nMAXRSS_KB=%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.exit(r.returncode)"
    )
    result = subprocess.run([sys.executable, "-c", probe, *args], check=False, capture_output=True, text=True,
                            env=env, timeout=60)
    wall = time.monotonic() - started
    stderr, _, rss = result.stderr.rpartition("\nMAXRSS_KB=")
    rss_kb = int(rss)
    if sys.platform == "darwin":
        rss_kb //= 1024  # macOS reports bytes
    result.stderr = stderr
    return result, wall, rss_kb / 1024


COMMANDS = {
    "estimate": lambda path: ["estimate", str(path)],
    "speculative-check": lambda path: ["speculative", "check", str(path), str(path)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", ["huge-array", "cut-in-half", "magic-only"])
def test_hostile_model_file_fails_fast_in_one_sentence(hostile, tmp_path, case, command):
    result, wall, rss_mb = _run_cli(COMMANDS[command](hostile[case]), tmp_path / "cache")
    message = result.stderr.strip()
    assert result.returncode == 2, message
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert str(hostile[case]) in message
    if case != "huge-array":
        assert "truncated" in message
    assert wall < TIME_LIMIT_S, f"{wall:.1f} s"
    assert rss_mb < RSS_LIMIT_MB, f"{rss_mb:.0f} MB"


if __name__ == "__main__":
    from velollm_core.api import resolve_model_path

    for name, written in write_hostile_files(Path(sys.argv[1]), resolve_model_path("gemma3-270m")).items():
        print(f"{name}: {written} ({written.stat().st_size:,} bytes)")
