"""A hostile HTTP server for tests: it answers every route as a well-behaved server would, spoiled in
one way (its ``hostility``), so that every backend's tests can run the same attacks through its client.

A test gives the honest answers (``routes``: a path's JSON document, a ``Stream`` of events, or a
``Reply`` with its own status and headers) and one of ``HOSTILITIES``:

- ``non_finite``: every number in an answer becomes ``1e999``, ``NaN``, ``-Infinity`` (as raw JSON
  text, which Python's json reads as floats);
- ``absurd_numbers``: every number becomes one of ``ABSURD_NUMBERS`` (10^30, -1, 2^63, ±1.7e308);
- ``escapes``: every string value gets ``ESCAPES`` appended (a screen clear, hidden text, an OSC title
  change, a C1 CSI, a right-to-left override); keys stay, so parsers still find their fields;
- ``decompression_bomb``: every answer is ``Content-Encoding: gzip`` of ``BOMB_BYTES`` zeros (about
  ``BOMB_BYTES / 1000`` on the wire);
- ``html_page``: every answer is a 200 HTML page (a captive portal, a proxy's login page);
- ``redirect``: every answer is a 302 to the same path with a counter, a redirect loop;
- ``reset_mid_stream``: the answer's headers and half its body, then a TCP reset.

``hostile_server(hostility, routes)`` is a context manager giving a running ``HostileServer`` (its
``url``; ``requests`` lists the paths asked for). A path without a route answers 404 with a JSON error
that is itself spoiled. The pytest fixture ``hostile_server`` (in the kit's plugin) is the same
factory, each server stopped after the test.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import socket
import socketserver
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

HOSTILITIES = ("non_finite", "absurd_numbers", "escapes", "decompression_bomb", "html_page", "redirect",
               "reset_mid_stream")
NON_FINITE = ("1e999", "NaN", "-Infinity")
ABSURD_NUMBERS = (10**30, -1, 2**63, 1.7e308, -1.7e308)
# ESC [2J clears the screen, ESC [8m hides what follows, ESC ]0;...BEL retitles the window, U+009B is
# the one-byte C1 CSI, U+202E turns the rest of the line right to left, U+2066 isolates it.
ESCAPES = "\x1b[2J\x1b[8mhidden\x1b[0m\x1b]0;pwned\x07\x9b31m\u202eevil\u2066x\u2069"
BOMB_BYTES = 256 << 20
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
             b"<body><h1>Please sign in to continue</h1><form action=\"/login\"></form></body></html>\n")


@dataclass(frozen=True)
class Stream:
    """A streamed answer: ``events`` (JSON documents, or raw strings such as ``[DONE]``) as ``sse``
    (``data:`` lines) or ``ndjson``."""

    events: list[Any]
    framing: Literal["sse", "ndjson"] = "sse"


@dataclass(frozen=True)
class Reply:
    """A JSON answer with its own ``status`` and ``headers`` (sent as UTF-8, so a header may carry a bidi
    override or a C1 control, as httpx reads it back)."""

    document: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Answer = Any  # a JSON document, a Stream or a Reply


def _json_text(node: Any, number: Any) -> str:
    """``node`` as JSON text, each number (not a bool) replaced by ``number(value)``: raw text or a value."""
    if isinstance(node, bool) or node is None:
        return json.dumps(node)
    if isinstance(node, (int, float)):
        replaced = number(node)
        return replaced if isinstance(replaced, str) else json.dumps(replaced)
    if isinstance(node, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_json_text(v, number)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(_json_text(v, number) for v in node) + "]"
    return json.dumps(node)


def _with_escapes(node: Any) -> Any:
    if isinstance(node, str):
        return node + ESCAPES
    if isinstance(node, dict):
        return {k: _with_escapes(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_escapes(v) for v in node]
    return node


def spoil(document: Any, hostility: str) -> str:
    """``document`` as the JSON text a server of this ``hostility`` sends (unchanged for the kinds
    that spoil the transport rather than the content)."""
    if hostility == "non_finite":
        cycle = itertools.cycle(NON_FINITE)
        return _json_text(document, lambda _: next(cycle))
    if hostility == "absurd_numbers":
        cycle = itertools.cycle(ABSURD_NUMBERS)
        return _json_text(document, lambda _: next(cycle))
    if hostility == "escapes":
        document = _with_escapes(document)
    return _json_text(document, lambda value: value)


def _stream_body(stream: Stream, hostility: str) -> bytes:
    lines = []
    for event in stream.events:
        text = event if isinstance(event, str) else spoil(event, hostility)
        lines.append(f"data: {text}\n\n" if stream.framing == "sse" else f"{text}\n")
    return "".join(lines).encode()


@functools.lru_cache(maxsize=4)
def bomb(size: int = BOMB_BYTES) -> bytes:
    """``size`` zero bytes, gzip-compressed (built once per size: about a second per 256 MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    parts.append(packer.compress(bytes(size & ((1 << 20) - 1))))
    parts.append(packer.flush())
    return b"".join(parts)


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class HostileServer:
    """A running hostile server (see the module docstring)."""

    hostility: str
    routes: dict[str, Answer]
    bomb_bytes: int = BOMB_BYTES
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, target: str, sock: socket.socket) -> None:
        """Send the spoiled answer to a request for ``target`` (path and query) on ``sock``."""
        path = target.split("?", 1)[0]
        self.requests.append(path)
        hostility = self.hostility
        if hostility == "redirect":
            hops = int(target.rpartition("hop=")[2]) + 1 if "hop=" in target else 1
            sock.sendall(_head("302 Found", {"Location": f"{self.url}{path}?hop={hops}", "Content-Length": "0"}))
            return
        if hostility == "html_page":
            sock.sendall(_head("200 OK", {"Content-Type": "text/html; charset=utf-8",
                                          "Content-Length": str(len(HTML_PAGE))}) + HTML_PAGE)
            return
        if hostility == "decompression_bomb":
            body = bomb(self.bomb_bytes)
            sock.sendall(_head("200 OK", {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                          "Content-Length": str(len(body))}) + body)
            return
        route = self.routes.get(path)
        status = "200 OK" if route is not None else "404 Not Found"
        extra: dict[str, str] = {}
        if route is None:
            route = {"error": f"no route {path}"}
        if isinstance(route, Reply):
            status, extra, route = f"{route.status} Hostile", route.headers, route.document
        if isinstance(route, Stream):
            kind = "text/event-stream" if route.framing == "sse" else "application/x-ndjson"
            body = _stream_body(route, hostility)
        else:
            kind = "application/json"
            body = spoil(route, hostility).encode()
        head = _head(status, {**extra, "Content-Type": kind, "Content-Length": str(len(body))})
        if hostility == "reset_mid_stream":
            sock.sendall(head + body[: len(body) // 2])
            # SO_LINGER with a zero timeout: close sends a RST, not a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        sock.sendall(head + body)


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        reader = sock.makefile("rb")
        request_line = reader.readline(65536).decode("latin-1")
        length = 0
        while (line := reader.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        reader.read(length)
        parts = request_line.split()
        if len(parts) >= 2:
            with contextlib.suppress(OSError):
                self.server.hostile.answer(parts[1], sock)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    hostile: HostileServer


@contextlib.contextmanager
def hostile_server(hostility: str, routes: dict[str, Answer] | None = None, *,
                   bomb_bytes: int = BOMB_BYTES) -> Iterator[HostileServer]:
    """A ``HostileServer`` of ``hostility`` on 127.0.0.1 answering ``routes``, stopped on exit."""
    if hostility not in HOSTILITIES:
        raise ValueError(f"unknown hostility {hostility!r}; one of {', '.join(HOSTILITIES)}")
    hostile = HostileServer(hostility, dict(routes or {}), bomb_bytes)
    with _TCPServer(("127.0.0.1", 0), _Handler) as server:
        server.hostile = hostile
        hostile.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="hostile-server",
                                  daemon=True)
        thread.start()
        try:
            yield hostile
        finally:
            server.shutdown()
            thread.join()

