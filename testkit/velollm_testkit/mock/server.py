"""The mock LLM server: HTTP/1.1 on one asyncio Protocol per connection, the routes of every wire
format (``llamacpp``, ``openai``, ``ollama``, ``tgi``), and the mock's own account.

One asyncio process on real sockets streams tokens on a schedule (time to first token, gap between
tokens, output length; ``scheduler.py``). The mock measures its own lateness (how long after its
scheduled time each token left) and CPU: ``GET /mock/stats`` (JSON) and ``/metrics`` say whether the
mock, rather than the client under test, was the limit. ``POST /mock/reset`` clears the counters
between levels.

Output length follows the request as the real servers do: ``n_predict`` / ``max_tokens`` /
``max_completion_tokens`` / ``options.num_predict`` / ``parameters.max_new_tokens`` limit it; without
``ignore_eos`` the "model" stops after ``--output-tokens`` (its end of sequence), vLLM's ``min_tokens``
raises that, and ``ignore_eos`` generates to the limit (to the end of the context where there is
none). Ollama and TGI have no ``ignore_eos``. A prompt's tokens are counted by the mock's own
tokenizer (``tokenizer.py``), the same one the tokenize endpoints answer with; ``cache_n`` counts the
prefix shared with a recent prompt (llama-server's ``cache_prompt``, default on as in llama-server).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from velollm_testkit.mock import llamacpp, ollama, openai, tgi
from velollm_testkit.mock.config import MOCK_VERSION, MockConfig
from velollm_testkit.mock.scheduler import Generation, Scheduler
from velollm_testkit.mock.tokenizer import Tokenizer
from velollm_testkit.mock.wire import BadRequest, Format, Plan

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

Handler = Callable[["MockServer", "Connection", dict[str, Any]], None]
Planner = Callable[[MockConfig, Tokenizer, dict[str, Any]], Plan]


def tokenize(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    """``POST /tokenize`` of two servers: TGI's body holds ``inputs``, llama-server's ``content``."""
    (tgi.tokenize if "inputs" in body else llamacpp.tokenize)(server, conn, body)


def mock_stats(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    conn.send_json(200, server.snapshot())


def mock_reset(server: MockServer, conn: Connection, body: dict[str, Any]) -> None:
    server.stats.reset()
    conn.send_json(200, {"reset": True})


ROUTES: dict[str, tuple[str, Handler]] = {
    **llamacpp.ROUTES, **openai.ROUTES, **ollama.ROUTES, **tgi.ROUTES,
    "/tokenize": ("POST", tokenize),
    "/mock/stats": ("GET", mock_stats), "/mock/reset": ("POST", mock_reset),
}


class MockServer(Scheduler):
    """The scheduler behind a listening socket: routes each request to its wire format's handler."""

    def __init__(self, config: MockConfig) -> None:
        super().__init__(config)
        self.requests = 0
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.private: asyncio.base_events.Server | None = None

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> str:
        """Listen on ``host:port``; with ``reuse_port`` (SO_REUSEPORT) other mock processes may listen on
        the same port, and the kernel deals the connections out among them."""
        self.server = await self.loop.create_server(lambda: Connection(self), host, port, backlog=4096,
                                                    reuse_address=True, reuse_port=reuse_port or None)
        return _url(self.server)

    async def listen_privately(self, host: str) -> str:
        """A second port of this process alone: where one of several processes sharing a port is asked
        for its own account (/mock/stats, /mock/reset)."""
        self.private = await self.loop.create_server(lambda: Connection(self), host, 0)
        return _url(self.private)

    def handle(self, conn: Connection, method: str, path: str, body: bytes) -> None:
        route = ROUTES.get(path)
        if route is None:
            conn.send_json(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
            return
        wanted, handler = route
        if method != wanted and not (method == "HEAD" and wanted == "GET"):
            conn.send_json(405, {"error": {"code": 405, "message": f"{path} takes {wanted}",
                                           "type": "invalid_request_error"}})
            return
        data: dict[str, Any] = {}
        if wanted == "POST":
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                conn.send_json(400, {"error": {"code": 400, "message": "the request body is not valid JSON",
                                               "type": "invalid_request_error"}})
                return
            if not isinstance(data, dict):
                conn.send_json(400, {"error": {"code": 400, "message": "the request body must be a JSON object",
                                               "type": "invalid_request_error"}})
                return
        handler(self, conn, data)

    def generate(self, conn: Connection, body: dict[str, Any], planner: Planner, format_cls: type[Format]) -> None:
        """Plan the request with its format's rules, then stream or answer it on the schedule."""
        try:
            plan = planner(self.config, self.tokenizer, body)
        except BadRequest as exc:
            conn.send_json(exc.status, format_cls.error(str(exc), exc.status, exc.kind))
            return
        self.requests += 1
        if self.config.fail_every and self.requests % self.config.fail_every == 0:
            self.stats.failed += 1
            message = f"mock: injected failure (every {self.config.fail_every}th request)"
            conn.send_json(503, format_cls.error(message, 503, "unavailable_error"))
            return
        gen = Generation(self, conn, plan, body, format_cls)
        conn.generation = gen
        self.submit(gen)

    def snapshot(self) -> dict[str, Any]:
        """The mock's own account: how late its tokens left, its CPU, its counters."""
        stats = self.stats
        wall = time.monotonic() - stats.wall_start
        cpu = time.process_time() - stats.cpu_start
        return {
            "config": self.config.as_dict(),
            "tokens": stats.tokens, "started": stats.started, "completed": stats.completed,
            "cancelled": stats.cancelled, "failed": stats.failed, "active": len(self.active),
            "waiting": len(self.waiting), "queued_max": stats.queued_max, "active_max": stats.active_max,
            "connections": self.connections, "accepted": stats.accepted,
            **{f"{name}_{part}": value for name, histogram in (("lag", stats.lag), ("gap", stats.gaps))
               for part, value in histogram.account().items()},
            "cpu_s": cpu, "wall_s": wall, "cpu_per_token_ms": cpu / stats.tokens * 1000 if stats.tokens else None,
        }


def _url(server: asyncio.base_events.Server) -> str:
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return f"http://{shown}:{bound_port}"


# --- HTTP/1.1 over one asyncio Protocol per connection -----------------------------------------------------

_REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 422: "Unprocessable Entity", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 503: "Service Unavailable"}


class Connection(asyncio.Protocol):
    """Keep-alive HTTP/1.1: one request at a time (pipelined ones wait in the buffer), chunked streams."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.keep_alive = True
        self.continued = False
        self.head_only = False
        self.generation: Generation | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.stats.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections -= 1
        self.transport = None
        if self.generation is not None:
            self.generation.cancel()
            self.generation = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._refuse(431, "request headers too large")
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = head[0].split(" ", 2)
            except ValueError:
                self._refuse(400, "malformed request line")
                return
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                try:
                    parsed = _dechunk(self.buffer, end + 4)
                except BadRequest as exc:
                    self._refuse(400, str(exc))
                    return
                if parsed is None:
                    self._expect_continue(headers)
                    return
                body, used = parsed
            else:
                try:
                    length = int(headers.get("content-length") or 0)
                except ValueError:
                    self._refuse(400, "bad Content-Length")
                    return
                if length > MAX_BODY_BYTES:
                    self._refuse(413, "request body too large")
                    return
                if len(self.buffer) < end + 4 + length:
                    self._expect_continue(headers)
                    return
                body, used = bytes(self.buffer[end + 4:end + 4 + length]), end + 4 + length
            del self.buffer[:used]
            self.continued = False
            connection = headers.get("connection", "").lower()
            self.keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
            self.busy = True
            self.head_only = method == "HEAD"
            self.server.handle(self, method, urlsplit(target).path, body)

    def _expect_continue(self, headers: dict[str, str]) -> None:
        # curl waits a second for this before sending a body over 1 kB.
        if headers.get("expect", "").lower() == "100-continue" and not self.continued and self.transport:
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, status: int, message: str) -> None:
        self.keep_alive = False
        self.busy = True
        self.send_json(status, {"error": {"code": status, "message": message, "type": "invalid_request_error"}})

    def _head(self, status: int, content_type: str, length: int | None) -> bytes:
        framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
        keep = "keep-alive" if self.keep_alive else "close"
        return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"{framing}\r\nConnection: {keep}\r\nServer: {MOCK_VERSION}\r\n\r\n").encode()

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        if self.transport is not None:
            head = self._head(status, content_type, len(body))
            self.transport.write(head if self.head_only else head + body)
        self._done()

    def send_json(self, status: int, data: Any) -> None:
        self.send_bytes(status, json.dumps(data, separators=(",", ":")).encode(), "application/json; charset=utf-8")

    def start_stream(self, status: int, content_type: str) -> None:
        if self.transport is not None:
            self.transport.write(self._head(status, content_type, None))

    def write_chunk(self, data: bytes) -> None:
        # An empty chunk would end the stream: a format that holds a token back writes nothing.
        if self.transport is not None and data:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self) -> None:
        if self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self._done()

    def _done(self) -> None:
        self.generation = None
        self.busy = False
        if self.transport is None:
            return
        if not self.keep_alive:
            self.transport.close()
            return
        if self.buffer:
            self.server.loop.call_soon(self._next_request)


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked request body: (body, bytes used), or None while it is incomplete."""
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        except ValueError:
            raise BadRequest("malformed chunked body") from None
        if size == 0:
            trailer_end = buffer.find(b"\r\n", line_end + 2)
            return (bytes(body), trailer_end + 2) if trailer_end >= 0 else None
        if len(buffer) < line_end + 2 + size + 2:
            return None
        body += buffer[line_end + 2:line_end + 2 + size]
        position = line_end + 2 + size + 2


async def serve(config: MockConfig, host: str = "127.0.0.1", port: int = 0, ready=None,
                reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; ``ready(url)`` is called once the socket listens. With ``reuse_port``
    the port may be shared with other mock processes, and ``ready`` gets "URL PRIVATE_URL"."""
    mock = MockServer(config)
    url = await mock.listen(host, port, reuse_port)
    if reuse_port:
        url = f"{url} {await mock.listen_privately(host)}"
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            mock.loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    if ready is not None:
        ready(url)
    try:
        await stop.wait()
    finally:
        mock.server.close()
        if mock.private is not None:
            mock.private.close()
        for gen in list(mock.active) + list(mock.waiting):
            gen.cancel()

