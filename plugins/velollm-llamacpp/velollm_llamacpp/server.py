"""llama-server's lifecycle: start on 127.0.0.1 and a free port, wait for /health with a deadline,
keep its log, stop it cleanly (terminate, then kill) whatever happens."""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import time
from pathlib import Path

from velollm_core.api import BackendError, UserInputError, interrupt

HEALTH_TIMEOUT_S = 120.0


# One flag spelling, its optional metavar, then a comma (more spellings) or the description.
_HELP_FLAG = re.compile(r"\s*(-{1,2}[A-Za-z][\w-]*)(?:\s(?!-)\S+?)?(,\s+|\s{2,}|$)")


def _split_help_line(line: str) -> tuple[list[str], str]:
    """The flag spellings at the start of a help line, and the description after them."""
    names, pos = [], 0
    while True:
        match = _HELP_FLAG.match(line, pos)
        if not match:
            break
        names.append(match.group(1))
        pos = match.end()
        if not match.group(2).startswith(","):
            break
    return names, line[pos:]


@functools.lru_cache(maxsize=8)
def help_text(binary: Path) -> str:
    """``llama-server --help``, once per binary."""
    try:
        return subprocess.run(
            [str(binary), "--help"], check=False, capture_output=True, text=True, timeout=30, errors="replace"
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"{binary} --help failed: {exc}") from None


@functools.lru_cache(maxsize=8)
def server_flags(binary: Path) -> frozenset[str]:
    """Every flag spelling ``llama-server --help`` lists: names changed across releases."""
    flags = set()
    for line in help_text(binary).splitlines():
        names, description = _split_help_line(line)
        if "has been removed" in description:
            continue  # still listed, but passing it aborts the server (e.g. --draft-max)
        flags.update(names)
    return frozenset(flags)


@functools.lru_cache(maxsize=8)
def server_version(binary: Path) -> str | None:
    """The build's version line, e.g. '0.5.0-dev (build 0, commit unknown)'."""
    try:
        proc = subprocess.run([str(binary), "--version"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version:\s*(.+)", proc.stdout + proc.stderr)
    return match.group(1).strip() if match else None


def pick_flag(binary: Path, *spellings: str) -> str:
    """The first spelling this build accepts (e.g. --spec-draft-n-max before --draft-max)."""
    flags = server_flags(binary)
    for spelling in spellings:
        if spelling in flags:
            return spelling
    raise BackendError(f"this llama-server build accepts none of {', '.join(spellings)}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class LlamaServer:
    """A llama-server process we own; use as a context manager so it always stops."""

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        args: list[str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        health_timeout_s: float = HEALTH_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.model = model
        self.extra_args = list(args or [])
        self.port = port
        self.log_path = log_path
        self.health_timeout_s = health_timeout_s
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self._log_handle = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [
            str(self.binary), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
            *self.extra_args,
        ]

    def start(self) -> LlamaServer:
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise UserInputError(f"port {self.port} on 127.0.0.1 is already in use; pick another or omit it")
        if self.log_path is None:
            import tempfile

            self.log_path = Path(tempfile.mkstemp(prefix="velollm-llama-server-", suffix=".log")[1])
        self._log_handle = self.log_path.open("w", encoding="utf-8")
        try:
            import os

            # spawn(): the server dies with us, even when we are SIGKILLed.
            self.process = interrupt.spawn(
                self.command, stdout=self._log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env} if self.env else None,
            )
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise BackendError(
                    f"llama-server exited with code {code} before it became ready; log {self.log_path}:\n"
                    + _log_tail(self.log_path)
                )
            try:
                response = httpx.get(f"{self.url}/health", timeout=2.0)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BackendError(
            f"llama-server did not become healthy within {self.health_timeout_s:g} s; log {self.log_path}:\n"
            + _log_tail(self.log_path)
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate, wait, then kill: never leave a server behind."""
        proc, self.process = self.process, None
        if proc is not None:
            interrupt.stop(proc, grace_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""

    def __enter__(self) -> LlamaServer:  # noqa: PYI034 - start() returns self
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
