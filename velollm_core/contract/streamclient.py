"""Streamed generations for the load generator: what a backend hands over (``StreamCall``, its
``Accumulator``, the one wording of a cut stream) and the small HTTP/1.1 client that runs them.

Why not httpx's AsyncClient (which the rest of VeloLLM uses): measured here at 128-256 streams it spent
~0.12 ms of CPU per streamed chunk (h11 events, anyio timeouts, a pool scanned per request, an
async-library lookup per call), which on a 2-core machine takes the cores the server under test
needs. A streamed generation needs little of HTTP: one POST with a JSON body, a status line,
headers, a chunked (or length-delimited, or read-to-close) body, keep-alive. This module does that
and nothing else: no redirects, no cookies, no compression (``Accept-Encoding: identity``), no
proxies. Each network chunk is handed over with its arrival time, before any parsing.

The arrival time is when the bytes reached this machine, not when the stream's task got round to
them. When a batched server emits one token on every stream at once, the client handles them one
after another, and a stamp taken in the task put the last of 1,000 streams ~100 ms late (a 2-core
Xeon, 1,000 streams at 100 ms ITL: TTFT p50 175 ms against the mock's 50). On Linux, plain-HTTP
connections read with ``recvmsg`` and take the kernel's receive time of each piece
(``SO_TIMESTAMPNS``), which no amount of work in this process delays (``_KernelConn``); elsewhere,
and over TLS, a piece is stamped when the event loop reads it off the socket (``_StreamConn``).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

from velollm_core import __version__
from velollm_core.contract.deadline import MAX_BODY_BYTES
from velollm_core.contract.errors import BackendError

if TYPE_CHECKING:
    from velollm_core.contract.schemas import GenerationTiming

class Accumulator(Protocol):
    """Turns one stream's events into a ``GenerationTiming``; a backend makes a new one per request.

    Call order: the load generator reads the response and calls ``feed(event, arrived)`` once per
    event, in arrival order (``event`` is one SSE ``data:`` line or one NDJSON line parsed as a JSON
    object; ``arrived`` is ``time.perf_counter()`` when its network chunk arrived), until ``feed``
    returns True or the body ends. Then ``finish(start, end)`` once (``start``: the request was sent;
    ``end``: the last byte read), which returns the timing, or raises ``BackendError`` when what came is
    incomplete (no final event). When the stream fails first (an error status, a timeout, a cut
    connection) ``finish`` is not called. ``token_times`` is read after ``finish``: the arrival time
    of every token-bearing event, for the tokens inside a level's measured window (leave it empty
    where events carry no tokens: the level then counts output tokens from the timings).

    A ``typing.Protocol``: any object with these members is an accumulator; no subclassing needed.
    Feed the same class in the backend's sequential ``generate``, so both paths time and word a
    request alike: error events and events of another API are worded by ``feed`` itself. The load
    generator words the rest: a line that is not JSON, "SERVER sent a malformed stream event:
    LINE" (``LINE`` is the repr of the line's first 120 bytes); JSON that is no object, "SERVER sent a
    stream event that is not an object"; a cut connection, ``stream_cut``. End ``finish`` with
    ``check_timing(timing, server=..., max_tokens=..., streamed=len(self.token_times))`` (give the
    accumulator the request's ``max_tokens`` when you create it): both paths then check the server's
    numbers under your server's name. The engine checks every run it records again, with the
    request's ``max_tokens``.
    """

    token_times: list[float]

    def feed(self, event: dict[str, Any], arrived: float) -> bool:
        """Take one event in; True when the stream is complete. Raise ``BackendError`` on an error event."""
        ...

    def finish(self, start: float, end: float) -> GenerationTiming:
        """The timing of the whole stream (``ttft_ms`` from ``start`` to the first token's arrival)."""
        ...


@dataclass
class StreamCall:
    """One streamed HTTP POST of a generation, as a backend's ``stream(request, context)`` describes it.

    The load generator sends ``body`` as JSON to ``url`` (with ``headers``, basic ``auth`` and query
    ``params``, as a ``--host user:pw@host/?q`` implies) and reads the answer as ``framing``: ``sse``
    (``data:`` lines, ``[DONE]`` ends) or ``ndjson`` (one JSON object per line). ``server`` is the
    whole label that names the server in messages, used as it is: "llama-server at http://h:8080"
    (the name, " at ", the ``--host`` base; not the name alone as ``RequestWatch`` takes it).
    ``status_error(status, body)`` turns a refused request into the exception to record (default:
    "SERVER answered HTTP STATUS: BODY", the body's first 200 bytes).
    """

    url: str
    body: dict[str, Any]
    accumulator: Accumulator
    framing: Literal["sse", "ndjson"] = "sse"
    server: str = "the server"
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    params: Any = None
    status_error: Callable[[int, bytes], Exception] | None = None


def stream_cut(server: str, tokens: int, detail: str | None = None) -> BackendError:
    """The one wording of a stream whose connection broke before its end, with the tokens that arrived.

    The load generator says it this way; a backend's own streaming path should too (raise what this
    returns), so one fault reads the same in every run of a result file. ``server`` is the whole label,
    used as it is ("llama-server at http://h:8080", as in ``StreamCall.server``). ``detail`` is for a
    person (the server's last words), never an exception's class name.
    """
    said = f": {detail}" if detail else ""
    return BackendError(f"the stream from {server} was cut mid-way after {tokens} token(s){said}; "
                        "did the server die?")


MAX_HEADER_BYTES = 64 << 10
READ_SIZE = 64 << 10
# One chunk of a chunked body: servers send an event or a few per chunk; a larger size is not a stream
# but a request for that much memory (readexactly buffers it whole).
MAX_CHUNK_BYTES = 16 << 20


class ConnectFailed(ConnectionError):
    """The server refused or did not accept the connection."""


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class _StampedReader(asyncio.StreamReader):
    """A StreamReader that remembers when each piece was read off the socket (``perf_counter``)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop, counts: dict[str, int]) -> None:
        super().__init__(limit=limit, loop=loop)
        self._counts = counts  # the client's: pieces stamped by the kernel and by the read
        self._fed = 0  # bytes fed in all
        self._stamps: deque[tuple[int, float]] = deque()  # (bytes fed up to and with this piece, its time)

    def feed_data(self, data: bytes, stamp: float | None = None) -> None:
        """``data`` as it arrived; ``stamp`` (``perf_counter`` time) when it reached the machine, where
        the kernel said, else now."""
        if data:
            self._fed += len(data)
            if stamp is None:
                stamp = time.perf_counter()
                self._counts["read"] += 1
            else:
                self._counts["kernel"] += 1
            self._stamps.append((self._fed, stamp))
        super().feed_data(data)

    def arrival(self) -> float:
        """When the last byte consumed so far arrived: the time of the socket read that brought it."""
        consumed = self._fed - len(self._buffer)
        stamps = self._stamps
        while len(stamps) > 1 and stamps[0][0] < consumed:
            stamps.popleft()
        if stamps and stamps[0][0] >= consumed:
            return stamps[0][1]
        return time.perf_counter()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    reader: _StampedReader
    keep_alive: bool
    _left: int | None = None  # Content-Length still to read; None: chunked or to close
    _chunked: bool = False
    done: bool = False

    async def chunks(self) -> AsyncIterator[tuple[bytes, float]]:
        """The body's pieces as they arrive, each with ``perf_counter()`` at arrival."""
        reader = self.reader
        if self._chunked:
            while True:
                size_line = await reader.readline()
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
                if size > MAX_CHUNK_BYTES:
                    raise ProtocolError(f"a chunk of {size:,} bytes announced (over {MAX_CHUNK_BYTES >> 20} MiB)")
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.done = True
                    return
                data = await reader.readexactly(size + 2)  # the chunk and its CRLF: a consumer may stop here
                yield data[:-2], reader.arrival()
        elif self._left is not None:
            while self._left > 0:
                data = await reader.read(min(self._left, READ_SIZE))
                if not data:
                    raise asyncio.IncompleteReadError(b"", self._left)
                self._left -= len(data)
                yield data, reader.arrival()
            self.done = True
        else:
            while data := await reader.read(READ_SIZE):
                yield data, reader.arrival()
            self.done = True
            self.keep_alive = False

    async def read(self, limit: int = MAX_BODY_BYTES) -> bytes:
        """The whole body (an error's, say), or a ProtocolError once it passes ``limit`` bytes."""
        if self._left is not None and self._left > limit:
            raise ProtocolError(f"an answer of {self._left:,} bytes announced (over {limit >> 20} MiB)")
        pieces, size = [], 0
        async for data, _ in self.chunks():
            size += len(data)
            if size > limit:
                raise ProtocolError(f"an answer over {limit >> 20} MiB")
            pieces.append(data)
        return b"".join(pieces)


class _StreamConn:
    """A connection through asyncio's own transport (TLS, or where kernel stamps are not to be had)."""

    def __init__(self, reader: _StampedReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, ssl_context: ssl.SSLContext | None,
                   counts: dict[str, int]) -> _StreamConn:
        loop = asyncio.get_running_loop()  # asyncio.open_connection's steps, with a stamping reader
        reader = _StampedReader(MAX_HEADER_BYTES, loop, counts)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_connection(lambda: protocol, host, port, ssl=ssl_context)
        return cls(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


# Linux's socket option and control message for receive times in nanoseconds (asm-generic values:
# x86, ARM, RISC-V); Python's socket module does not name it. A kernel that does not know it refuses
# the option, and a control message that does not decode to a time near now is not used (_KernelConn).
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


class _KernelConn:
    """A plain-TCP connection read with ``recvmsg``: every piece is stamped with the kernel's receive
    time, turned into ``perf_counter`` time by the wall clock's offset taken at each request.

    Reading is the event loop's ``add_reader`` callback; the reader's own flow control pauses it (the
    StreamReader calls ``pause_reading`` / ``resume_reading`` on its transport, which this is)."""

    def __init__(self, sock: socket.socket, reader: _StampedReader) -> None:
        self.sock, self.reader = sock, reader
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.offset = 0.0
        reader.set_transport(self)  # type: ignore[arg-type]  # pause_reading / resume_reading
        self.loop.add_reader(sock.fileno(), self._readable)

    @staticmethod
    def usable() -> bool:
        return sys.platform.startswith("linux") and _ANCILLARY_SIZE > 0

    @classmethod
    async def open(cls, host: str, port: int, counts: dict[str, int]) -> _KernelConn | None:
        """A connected socket with receive times on, or None where the kernel refuses the option."""
        loop = asyncio.get_running_loop()
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            addresses: list[tuple[int, tuple]] = [(family, (host, port))]
        except ValueError:  # a name: every address it resolves to, in order, as create_connection tries them
            addresses = [(info[0], info[4]) for info in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        error: OSError | None = None
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                sock.close()
                return None
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
            except OSError as exc:  # refused on this address (localhost's ::1, say): the next one
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return cls(sock, _StampedReader(MAX_HEADER_BYTES, loop, counts))
        raise error or OSError(f"{host} resolved to no address")

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, _ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop()
            self.reader.set_exception(exc)
            return
        if not data:
            self._stop()
            self.reader.feed_eof()
            return
        now = time.perf_counter()
        stamp = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                kernel = seconds + nanoseconds * 1e-9 - self.offset
                if now - 5.0 < kernel <= now + 0.001:  # a time near now, or the message is not what we think
                    stamp = min(kernel, now)
        self.reader.feed_data(data, stamp)

    def mark_clock(self) -> None:
        """The wall clock's offset from ``perf_counter``, taken now (a request is about to go)."""
        before = time.perf_counter()
        wall = time.time()
        self.offset = wall - (before + time.perf_counter()) / 2

    async def send(self, data: bytes) -> None:
        self.mark_clock()
        await self.loop.sock_sendall(self.sock, data)

    def pause_reading(self) -> None:
        if not self.closed:
            self.loop.remove_reader(self.sock.fileno())

    def resume_reading(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._readable)

    def _stop(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self._stop()
        self.sock.close()  # a closed socket's close does nothing


_Conn = _StreamConn | _KernelConn


@dataclass
class StreamClient:
    """Keep-alive connections per (scheme, host, port), reused one request at a time."""

    connect_timeout_s: float = 10.0
    kernel_stamps: bool = True  # plain HTTP on Linux: the kernel's receive times (_KernelConn)
    # pieces read, by where their time came from: the kernel's receive time, or the loop's read
    stamps: dict[str, int] = field(default_factory=lambda: {"kernel": 0, "read": 0})
    idle: dict[tuple[str, str, int], list[_Conn]] = field(default_factory=dict)
    _ssl: ssl.SSLContext | None = None

    async def _connect(self, scheme: str, host: str, port: int) -> tuple[_Conn, bool]:
        """A connection to the server, and whether it is a kept-alive one."""
        pool = self.idle.get((scheme, host, port))
        while pool:
            conn = pool.pop()
            if not conn.is_closing() and not conn.reader.at_eof():
                return conn, True
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                conn = None
                if scheme != "https" and self.kernel_stamps and _KernelConn.usable():
                    conn = await _KernelConn.open(host, port, self.stamps)
                if conn is None:
                    conn = await _StreamConn.open(host, port, self._ssl if scheme == "https" else None, self.stamps)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        return conn, False

    def _release(self, key: tuple[str, str, int], conn: _Conn, response: Response | None) -> None:
        if response is not None and response.done and response.keep_alive and not conn.is_closing():
            self.idle.setdefault(key, []).append(conn)
        else:
            conn.close()

    def post_json(self, url: str, body: object, *, headers: dict[str, str] | None = None,
                        auth: tuple[str, str] | None = None,
                        params: Iterable[tuple[str, str]] | None = None):
        """An async context manager: POST ``body`` as JSON and give the Response, headers read."""
        return _Exchange(self, url, body, headers or {}, auth, params)

    async def aclose(self) -> None:
        for pool in self.idle.values():
            for conn in pool:
                conn.close()
        self.idle.clear()


class _Exchange:
    def __init__(self, client: StreamClient, url: str, body: object, headers: dict[str, str],
                 auth: tuple[str, str] | None, params) -> None:
        self.client, self.url, self.body, self.headers, self.auth, self.params = client, url, body, headers, auth, params
        self.conn: _Conn | None = None
        self.response: Response | None = None
        self.key: tuple[str, str, int] | None = None

    async def __aenter__(self) -> Response:
        parts = urlsplit(self.url)
        scheme = parts.scheme or "http"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if scheme == "https" else 80)
        self.key = (scheme, host, port)
        target = parts.path or "/"
        query = "&".join(filter(None, [parts.query, urlencode(list(self.params or ()))]))
        if query:
            target += "?" + query
        payload = json.dumps(self.body).encode()
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}",
                 f"User-Agent: velollm/{__version__}", "Content-Type: application/json",
                 f"Content-Length: {len(payload)}", "Accept-Encoding: identity", "Connection: keep-alive"]
        if self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            lines.append(f"Authorization: Basic {token}")
        for name, value in self.headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ProtocolError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        for _ in (1, 2):  # a kept-alive connection the server closed meanwhile: once more, fresh
            self.conn, reused = await self.client._connect(*self.key)
            try:
                await self.conn.send(request)
                self.response = await _read_head(self.conn.reader)
                return self.response
            except (ConnectionError, asyncio.IncompleteReadError, ProtocolError) as exc:
                self.conn.close()
                if not reused or isinstance(exc, ProtocolError):
                    raise
        raise AssertionError("unreachable")

    async def __aexit__(self, *exc_info) -> None:
        if self.conn is not None:
            self.client._release(self.key, self.conn, self.response if exc_info[0] is None else None)


async def _read_head(reader: _StampedReader) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"response headers over {MAX_HEADER_BYTES >> 10} KiB") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionResetError("the server closed the connection before answering") from None
        raise ProtocolError(f"the answer ended inside its headers: {exc.partial[:60]!r}") from None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:60]!r}")
    try:
        status = int(rest.split(" ", 1)[0])
    except ValueError:
        raise ProtocolError(f"bad status line {status_line[:60]!r}") from None
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and version != "HTTP/1.0"
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = None if chunked else headers.get("content-length")
    try:
        left = int(length) if length is not None else None
    except ValueError:
        raise ProtocolError(f"bad Content-Length {length!r}") from None
    if left is None and not chunked:
        keep_alive = False
    return Response(status, headers, reader, keep_alive, left, chunked)
