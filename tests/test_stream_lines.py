"""Line splitting of streamed bodies: exact, linear in the body's length, and bounded per line."""

from __future__ import annotations

import time

import pytest

from velollm_core.contract import deadline
from velollm_core.contract.errors import BackendError


class Body:
    def __init__(self, chunks):
        self.chunks = chunks

    def iter_text(self):
        yield from self.chunks


def lines(chunks) -> list[str]:
    limits = deadline.Deadlines(first_token_s=60.0, total_s=60.0)
    with deadline.RequestWatch(limits, server="test", url="http://127.0.0.1:1") as watch:
        return list(watch.lines(Body(chunks)))


def test_lines_across_chunks_and_crlf():
    assert lines(["da", "ta: 1\r\n", "\ndata: 2\nda", "ta: 3"]) == ["data: 1", "", "data: 2", "data: 3"]
    assert lines(["a\nb\n"]) == ["a", "b"]
    assert lines([]) == []


def test_an_endless_line_costs_linear_time_and_is_cut(monkeypatch):
    monkeypatch.setattr(deadline, "MAX_LINE_CHARS", 4 << 20)
    started = time.monotonic()
    with pytest.raises(BackendError, match="sent a line longer than"):
        lines(["x" * 64 for _ in range(200_000)])  # 12.8 MB in 64-byte chunks, no newline
    # Re-splitting everything at every chunk took minutes here; joining once takes milliseconds.
    assert time.monotonic() - started < 10
