"""Run an external probe tool with a deadline; a missing, failing or hung tool becomes a ProbeError."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

DEFAULT_TIMEOUT_S = 10.0


class ProbeError(Exception):
    """A probe tool is missing, failed, or hung; the message is one line for ``warnings``."""


class ProbeTimeout(ProbeError):
    """The tool hung: retrying it with other arguments would only wait once more."""


def run_tool(args: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Return the tool's stdout; raise ProbeError when it is missing, exits non-zero or times out."""
    exe = shutil.which(args[0])
    if exe is None:
        raise ProbeError(f"{args[0]} not found on PATH")
    try:
        proc = subprocess.run(
            [exe, *args[1:]],
            check=False, capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ProbeTimeout(f"{args[0]} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(f"{args[0]} could not be run: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        tail = detail[-1] if detail else "no output"
        raise ProbeError(f"{args[0]} exited with code {proc.returncode}: {tail}")
    return proc.stdout
