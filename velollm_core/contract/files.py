"""Files VeloLLM writes: checked before any work starts, replaced atomically, never lost.

A result file (``--output``) is rewritten after every finished run through a temporary file and an
atomic rename, so a crash, Ctrl-C or a full disk leaves either the previous version or the new one,
never half of one. Before anything runs, :func:`prepare_output` refuses what must not be replaced:
a device, FIFO or socket (a rename would destroy the node), the model being measured, a read-only
file, a file that is not VeloLLM's (unless ``--force``), and a file another VeloLLM is writing now
(a lock held for the whole run).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from velollm_core.contract.errors import UserInputError, VeloError

# Top-level keys that mark a JSON document as one of ours (benchmark, detect, speculative, optimize).
_OUR_KEYS = ({"runs", "settings"}, {"os", "cpu", "gpus"}, {"vanilla", "speculative"}, {"proposals"})
_SNIFF_BYTES = 1 << 16


class OutputError(VeloError):
    """A result could not be written (full disk, read-only directory): exit 1, the old file kept."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename.

    A symlink is followed (its target is replaced, the link stays); the file keeps its mode, and a new
    file gets the usual 0666 & ~umask (mkstemp's 0600 would hide results from other users).
    """
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    # allow_nan=False: a NaN would make the file something no JSON reader accepts.
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def looks_like_ours(path: Path, markers: tuple[bytes, ...] = ()) -> bool:
    """Whether an existing file is one VeloLLM wrote (or empty), so replacing it loses nothing foreign.

    ``markers``: the first bytes of other files the command writes (a report format's)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    if not head.strip():
        return True
    if head.lstrip().startswith(b"# VeloLLM"):  # the header of rendered settings (shell, systemd, ...)
        return True
    if markers and head.startswith(markers):
        return True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and any(keys <= data.keys() for keys in _OUR_KEYS)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class OutputFile:
    """An ``--output`` path, checked and locked; write with :meth:`write_text` / :meth:`write_json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0  # successful writes: what the file holds is the last of them
        self._lock_fd: int | None = None
        self._lock_path: Path | None = None

    def write_text(self, text: str) -> None:
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            kept = "its previous content is unchanged" if self.path.exists() else "nothing was written"
            raise OutputError(f"could not write {self.path}: {exc.strerror or exc}; {kept}") from None
        self.writes += 1

    def write_json(self, data: Any) -> None:
        self.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")

    def lock(self) -> None:
        """Hold ``.NAME.lock`` beside the file for this process's life: a second writer is refused."""
        if os.name != "posix":
            return
        import fcntl

        lock_path = Path(os.path.realpath(self.path)).with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only or full directory: said now, before any work
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc} ({lock_path.parent})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserInputError(
                f"{self.path} is being written by another velollm (pid {owner}); wait for it or pick "
                "another --output"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:  # a full disk
            os.close(fd)
            lock_path.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._lock_fd, self._lock_path = fd, lock_path
        import atexit

        atexit.register(self.release)  # a command that fails after the check leaves no lock file

    def release(self) -> None:
        if self._lock_fd is not None:
            if self._lock_path is not None:
                self._lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = self._lock_path = None

    def __enter__(self) -> OutputFile:  # noqa: PYI034 - returns self
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def prepare_output(
    path: Path | str | None, *, force: bool = False, protect: tuple[Path | str, ...] = (), lock: bool = True,
    markers: tuple[bytes, ...] = (),
) -> OutputFile | None:
    """Check ``--output`` before any work and lock it; a UserInputError (exit 2) says why it cannot be.

    Every command that writes a file goes through here, so one policy holds for all of them.
    ``protect``: files the command reads (the model) that the output must never replace. ``markers``:
    the first bytes of files the command writes besides results (a report format's), which it may
    replace as its own; a file is read only once it is known to be a regular one (a FIFO would block).
    """
    if path is None:
        return None
    path = Path(path)
    try:
        info = path.stat()  # follows a symlink: what the write would replace
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise UserInputError(f"--output {_short(path)}: {exc.strerror or exc}") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise UserInputError(f"--output {path} is a directory; name a file")
        if not stat.S_ISREG(info.st_mode):
            kind = "FIFO" if stat.S_ISFIFO(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode) else "device"
            raise UserInputError(f"--output {path} is a {kind}, not a regular file; results go to a regular file")
        for other in protect:
            if other and _same_file(path, Path(other)):
                raise UserInputError(f"--output {path} is the model file itself; name another file")
        if not info.st_mode & stat.S_IWUSR:
            raise UserInputError(f"--output {path} is read-only; make it writable or name another file")
        if not force and not looks_like_ours(path, markers):
            raise UserInputError(
                f"--output {path} exists and is not a VeloLLM file; pass --force to replace it, or name another"
            )
    else:
        parent = Path(os.path.realpath(path)).parent
        if parent.exists() and not parent.is_dir():
            raise UserInputError(f"--output {path}: {parent} is not a directory")
        if not parent.exists():
            try:
                parent.mkdir(parents=True)
            except OSError as exc:
                raise UserInputError(f"--output {path}: cannot create {parent}: {exc.strerror or exc}") from None
            import sys

            print(f"created directory {parent} for --output", file=sys.stderr)
    out = OutputFile(path)
    if lock:
        out.lock()
    return out


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 80 else text[:60] + "..." + text[-17:]
