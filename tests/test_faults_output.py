"""Fault suite: what ``--output`` may and may not replace, for real, through the CLI.

Each case runs the real ``velollm`` process. Benchmarks are refused before any server starts, so
these tests need no llama-server; the mid-run cases (a disk that fills, two writers) are in the
llama.cpp plugin's integration tests.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from velollm_testkit.plugin import fill_filesystem
from velollm_testkit.real import missing

VELOLLM = [sys.executable, "-m", "velollm_core"]
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX files")
ROOT_ONLY = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")


def velollm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*VELOLLM, *args], check=False, capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def optimize_to(path: Path | str, *extra: str) -> subprocess.CompletedProcess:
    return velollm("optimize", "--backend", "llamacpp", "--model", "gemma3-270m", "--format", "shell",
                   "--output", str(path), *extra)


def benchmark_to(path: Path | str, *extra: str, model: str = "gemma3-270m") -> subprocess.CompletedProcess:
    return velollm("benchmark", "--backend", "llamacpp", "--model", model, "--output", str(path), *extra)


def _one_sentence(proc: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@POSIX
@pytest.mark.parametrize("run", [optimize_to, benchmark_to], ids=["optimize", "benchmark"])
def test_a_device_is_refused_and_left_a_device(run):
    proc = run("/dev/full")
    _one_sentence(proc, 2, "is a device, not a regular file")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full must still be the device node"


@POSIX
def test_a_fifo_is_refused_and_left_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _one_sentence(benchmark_to(fifo), 2, "is a FIFO")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_foreign_file_is_never_replaced_without_force(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    _one_sentence(benchmark_to(notes, model="nosuch"), 2, "is not a VeloLLM file; pass --force")
    _one_sentence(optimize_to(notes), 2, "is not a VeloLLM file")
    assert notes.read_text() == "my notes\n"


def test_bad_input_leaves_the_output_untouched_even_with_force(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    _one_sentence(benchmark_to(notes, "--force", model="nosuch"), 2, "unknown model 'nosuch'")
    assert notes.read_text() == "my notes\n"
    fresh = tmp_path / "fresh.json"
    _one_sentence(benchmark_to(fresh, model="nosuch"), 2, "unknown model")
    assert not fresh.exists(), "nothing was measured: no result file"
    assert not list(tmp_path.glob(".*.lock")), "the lock file is removed"


def test_force_replaces_a_foreign_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    proc = optimize_to(notes, "--force")
    assert proc.returncode == 0, proc.stderr
    assert notes.read_text().startswith("# VeloLLM proposal")


@POSIX
def test_the_model_file_itself_is_refused(tmp_path):
    from velollm_core.api import UserInputError, resolve_model_path

    try:
        source = resolve_model_path("smollm2-135m")
    except UserInputError as exc:
        missing("SmolLM2 135M", str(exc))
    model = tmp_path / "model.gguf"
    os.link(source, model)  # the same file under the name the benchmark is asked to write
    before = model.stat().st_size
    _one_sentence(benchmark_to(model, "--force", model=str(model)), 2, "is the model file itself")
    _one_sentence(optimize_to(model, "--force", "--model", str(model)), 2, "is the model file itself")
    assert model.stat().st_size == before and model.read_bytes()[:4] == b"GGUF"


@POSIX
def test_a_symlink_is_followed_and_kept(tmp_path):
    target = tmp_path / "real.sh"
    link = tmp_path / "link.sh"
    link.symlink_to(target)
    proc = optimize_to(link)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and target.read_text().startswith("# VeloLLM proposal")


@POSIX
def test_a_read_only_file_is_refused(tmp_path):
    out = tmp_path / "r.sh"
    assert optimize_to(out).returncode == 0
    out.chmod(0o444)
    before = out.read_text()
    _one_sentence(optimize_to(out), 2, "is read-only")
    assert out.read_text() == before


@POSIX
def test_a_new_file_gets_the_usual_mode_and_a_rewrite_keeps_it(tmp_path):
    out = tmp_path / "r.sh"
    proc = subprocess.run(["sh", "-c", "umask 022 && exec \"$@\"", "sh", *VELOLLM, "optimize", "--backend",
                           "llamacpp", "--model", "gemma3-270m", "--format", "shell", "--output", str(out)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    out.chmod(0o640)
    assert optimize_to(out).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_missing_parent_directories_are_created_and_said(tmp_path):
    out = tmp_path / "a" / "b" / "r.sh"
    proc = optimize_to(out)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"created directory {out.parent}" in proc.stderr


def test_a_directory_is_refused(tmp_path):
    _one_sentence(benchmark_to(tmp_path), 2, "is a directory")


@pytest.fixture
def tmpfs(tmp_path):
    """A small real filesystem of our own, to fill up or make read-only."""
    mounts = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


@ROOT_ONLY
def test_a_read_only_directory_is_an_error_before_any_work(tmpfs):
    ro = tmpfs("ro,size=64k")
    proc = benchmark_to(ro / "r.json")
    _one_sentence(proc, 1, "Read-only file system")
    assert not (ro / "r.json").exists()


@ROOT_ONLY
def test_a_full_disk_is_an_error_and_the_previous_file_is_kept(tmpfs):
    full = tmpfs("size=16k")
    out = full / "r.sh"
    assert optimize_to(out).returncode == 0
    before = out.read_text()
    fill_filesystem(full)
    proc = optimize_to(out)
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr and "written to" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_text() == before, "the previous file must survive a full disk"


HOLD_LOCK = """
import sys, time
from pathlib import Path
from velollm_core.contract.files import prepare_output
prepare_output(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_a_file_that_another_velollm_writes_is_refused(tmp_path):
    """Two writers of one --output: the second is told, and the first one's file is not touched."""
    out = tmp_path / "r.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = benchmark_to(out)
        _one_sentence(proc, 2, f"is being written by another velollm (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()


def test_a_result_file_is_ours_and_may_be_replaced(tmp_path):
    """A previous VeloLLM result (or an empty file) is replaced without --force."""
    from velollm_core.contract.files import prepare_output

    result = tmp_path / "old.json"
    result.write_text(json.dumps({"status": "complete", "settings": {}, "runs": []}))
    empty = tmp_path / "empty.json"
    empty.touch()
    for path in (result, empty):
        out = prepare_output(path)
        out.write_json({"runs": [], "settings": {}})
        out.release()
        assert json.loads(path.read_text()) == {"runs": [], "settings": {}}


# --- one output policy for every command that writes a file ------------------------------------------

CLOSED_PORT = "http://127.0.0.1:9"
# Every command with an --output option, with arguments that reach its output check before any work.
# A command that gains --output joins this table, or test_every_output_option_is_in_the_table fails.
OUTPUT_COMMANDS = {
    "benchmark": ("benchmark", "--backend", "llamacpp", "--model", "gemma3-270m"),
    "detect": ("detect",),
    "history export": ("history", "export", "1"),
    "optimize": ("optimize", "--backend", "llamacpp", "--model", "gemma3-270m", "--format", "shell"),
    "report": ("report", "nosuch.json", "--format", "md"),
    "share": ("share", "nosuch.json"),
    "speculative bench": ("speculative", "bench", "--target", "gemma3-270m", "--spec-type", "ngram-simple"),
    "speculative search": ("speculative", "search", "--target", "gemma3-270m", "--spec-type", "ngram-simple"),
    "ollama draft-bench": ("ollama", "draft-bench", "--model", "m", "--draft", "d", "--host", CLOSED_PORT),
}


def test_every_output_option_is_in_the_table():
    import click

    from velollm_core import cli
    from velollm_core.contract.plugins import load_plugins

    load_plugins()
    context = click.Context(cli.cli)
    found = set()

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(context):
                walk(command.get_command(context, name), [*path, name])
        elif any(param.name == "output" for param in command.params):
            found.add(" ".join(path))

    walk(cli.cli, [])
    assert found == set(OUTPUT_COMMANDS)


@pytest.fixture
def one_result_history(tmp_path, monkeypatch):
    """A history holding one result (#1), for ``history export 1``."""
    db = tmp_path / "history.db"
    monkeypatch.setenv("VELOLLM_HISTORY_DB", str(db))
    doc = tmp_path / "r.json"
    doc.write_text(json.dumps({"settings": {"backend": "fake", "model": "m"}, "runs": [], "summary": {},
                               "status": "complete", "started_at": "2026-12-01T10:00:00+00:00",
                               "environment": {"backend": {"name": "fake"}}}))
    imported = velollm("history", "import", str(doc))
    assert imported.returncode == 0, imported.stderr
    return db


@POSIX
@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_every_command_refuses_a_fifo_and_leaves_it(command, tmp_path, one_result_history):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = subprocess.run([*VELOLLM, *OUTPUT_COMMANDS[command], "--output", str(fifo)], check=False,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    _one_sentence(proc, 2, "is a FIFO, not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("command", ["detect", "report", "history export"])
def test_every_command_keeps_a_foreign_file_without_force(command, tmp_path, one_result_history):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    args = OUTPUT_COMMANDS[command]
    _one_sentence(velollm(*args, "--output", str(notes), cwd=tmp_path), 2, "is not a VeloLLM file; pass --force")
    assert notes.read_text() == "my notes\n"


def test_detect_writes_through_the_policy_and_replaces_its_own_file(tmp_path):
    out = tmp_path / "hw.json"
    for _ in range(2):  # the second run replaces the first one's file: it is ours
        proc = velollm("detect", "--json", "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(out.read_text()) == json.loads(proc.stdout)
    assert not list(tmp_path.glob(".*.lock")) and not list(tmp_path.glob(".*.tmp"))
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    proc = velollm("detect", "--output", str(notes), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "cpu" in json.loads(notes.read_text())
