"""The mock LLM server in its own process: ``mock_llm(**config)`` starts ``python -m
velollm_testkit.mock`` on 127.0.0.1 and a free port and stops it after; ``MockLLM`` is its handle.

Its own process, so that a load generator under test and the mock do not share one event loop or GIL.
``mock_llm(processes=N)`` runs N such processes on one port (SO_REUSEPORT: the kernel deals the
connections out), so that a load generator's capacity is measured against a mock that is not the
limit; ``stats()`` then merges their accounts (counters summed, lateness histograms merged exactly).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from velollm_testkit.mock.config import MockConfig

MOCK_START_TIMEOUT_S = 30.0


class MockLLM:
    """A running ``python -m velollm_testkit.mock``: ``url``, ``config``, ``stats()``, ``reset()``;
    ``procs`` and ``accounts`` (each process's own URL) where several share the port."""

    def __init__(self, proc: subprocess.Popen, url: str, config: dict[str, Any], log: Path,
                 procs: list[subprocess.Popen] | None = None, accounts: list[str] | None = None) -> None:
        self.proc, self.url, self.config, self.log = proc, url, config, log
        self.procs = procs or [proc]
        self.accounts = accounts or [url]

    def _call(self, method: str, path: str, base: str | None = None) -> dict[str, Any]:
        import urllib.request

        request = urllib.request.Request(f"{base or self.url}{path}", method=method,
                                         data=b"{}" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The mock's own account (/mock/stats): tokens sent, how late, its CPU seconds, counters;
        of every process together where several share the port."""
        if len(self.accounts) == 1:
            return self._call("GET", "/mock/stats")
        return merge_stats([self._call("GET", "/mock/stats", base) for base in self.accounts])

    def reset(self) -> None:
        """Clear the mock's counters (between load levels)."""
        for base in self.accounts:
            self._call("POST", "/mock/reset", base)


_SUMMED = ("tokens", "started", "completed", "cancelled", "failed", "active", "waiting", "queued_max", "active_max",
           "connections", "accepted", "cpu_s")


def merge_stats(accounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several mock processes' ``/mock/stats`` as one: counters and CPU summed (the most at once: the sum
    of each process's most, an upper bound), lateness and gap quantiles from the merged histograms."""
    merged: dict[str, Any] = {"config": accounts[0]["config"], "processes": len(accounts)}
    for key in _SUMMED:
        merged[key] = sum(account[key] for account in accounts)
    merged["wall_s"] = max(account["wall_s"] for account in accounts)
    merged["cpu_per_token_ms"] = merged["cpu_s"] / merged["tokens"] * 1000 if merged["tokens"] else None
    for name in ("lag", "gap"):
        merged[f"{name}_ms"] = _merged_quantiles([account[f"{name}_histogram"] for account in accounts])
    return merged


def _merged_quantiles(histograms: list[dict[str, Any]]) -> dict[str, float]:
    """Mean, p50, p99 and max of several processes' histograms added bucket by bucket (quantiles as
    each mock's own: the upper edge of the bucket that holds it)."""
    bucket_ms = histograms[0]["bucket_ms"]
    counts: dict[int, int] = {}
    for histogram in histograms:
        for index, count in histogram["counts"].items():
            counts[int(index)] = counts.get(int(index), 0) + count
    n = sum(counts.values())
    top = max(histogram["max_ms"] for histogram in histograms)

    def quantile(q: float) -> float:
        seen = 0
        for index in sorted(counts):
            seen += counts[index]
            if seen >= q * n:
                return (index + 1) * bucket_ms
        return top

    return {"mean": sum(h["sum_ms"] for h in histograms) / n if n else 0.0,
            "p50": quantile(0.5) if n else 0.0, "p99": quantile(0.99) if n else 0.0, "max": top}


def _mock_args(config: dict[str, Any]) -> list[str]:
    known = set(MockConfig.__dataclass_fields__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"unknown mock server setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [arg for key, value in config.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def _first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The first stdout line of ``proc`` within ``timeout_s`` ('' when it exits or stays silent)."""
    import select

    deadline = time.monotonic() + timeout_s
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        byte = os.read(fd, 1)
        if not byte:
            return ""
        line += byte
    return line.decode().strip()


def _start(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """One mock process with ``args``, and the first line it printed (its URL or URLs)."""
    from velollm_core.contract import interrupt

    with log.open("a") as log_handle:
        proc = interrupt.spawn([sys.executable, "-m", "velollm_testkit.mock", *args],
                               stdout=subprocess.PIPE, stderr=log_handle, stdin=subprocess.DEVNULL)
    line = _first_line(proc, MOCK_START_TIMEOUT_S)
    if not line.startswith("http://"):
        proc.poll()
        tail = " ".join(log.read_text(errors="replace").split()[-40:])
        interrupt.stop(proc)
        proc.stdout.close()
        raise RuntimeError(f"the mock server did not start (exit code {proc.returncode}): {tail}")
    return proc, line


@contextlib.contextmanager
def mock_llm(processes: int = 1, **config: Any) -> Iterator[MockLLM]:
    """The mock LLM server in a subprocess on 127.0.0.1 and a free port, with ``config`` (the fields of
    ``MockConfig``: ``ttft_ms=50, itl_ms=20, output_tokens=128, slots=0, ...``); stopped after.
    ``processes`` > 1: that many processes share the port (each with its own slots and counters).
    Usable outside pytest (the capacity benchmark starts it so); a failed start raises RuntimeError."""
    import tempfile
    from urllib.parse import urlsplit

    from velollm_core.contract import interrupt

    fd, log_name = tempfile.mkstemp(prefix="velollm-mockserver-", suffix=".log")
    os.close(fd)
    log = Path(log_name)
    shared = ["--reuse-port"] if processes > 1 else []
    procs: list[subprocess.Popen] = []
    try:
        proc, line = _start(["--port", "0", *shared, *_mock_args(config)], log)
        procs.append(proc)
        url, *private = line.split()
        accounts = list(private)
        for _ in range(processes - 1):
            other, line = _start(["--port", str(urlsplit(url).port), *shared, *_mock_args(config)], log)
            procs.append(other)
            accounts.append(line.split()[1])
        yield MockLLM(procs[0], url, config, log, procs, accounts or None)
    finally:
        for proc in procs:
            interrupt.stop(proc)
            proc.stdout.close()

