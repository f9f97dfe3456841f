"""Deadlines for HTTP requests to model servers, which neither silence nor a trickle can extend.

httpx's read timeout limits each socket read: a server that accepts and never answers holds the
client for the whole timeout without a word, and one that sends a byte every few seconds resets it
for ever. A ``RequestWatch`` times the request as a whole instead:

- every socket read is bounded by the first-token limit (httpx's read timeout, set per request), so
  a server that sends nothing at all, not even its response headers, is given up on time;
- every network chunk of the body checks the first-token and whole-request deadlines, so a trickle
  cannot outlive them;
- a watchdog thread prints a throttled "waiting ..." line on stderr while the server is silent, and
  at a deadline shuts the connection's socket down, which ends a read blocked mid-stream at once.

The ollama, openai and llamacpp backends all stream through it, with the same two options:
``first_token_timeout_s`` and ``timeout_s`` (the whole request).
"""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from velollm_core.contract.errors import BackendError, UserInputError
from velollm_core.contract.urls import redact_url

if TYPE_CHECKING:
    from velollm_core.contract.backends import BackendOptions

FIRST_TOKEN_OPTION = "first_token_timeout_s"
TOTAL_OPTION = "timeout_s"
OPTIONS = (FIRST_TOKEN_OPTION, TOTAL_OPTION)

# Before its first token a local server may load the model (a big one takes minutes from a slow
# disk) and must process the whole prompt: the long_prompt suite is ~1.5k tokens, which a 7B model
# on a laptop CPU prefills at 10-20 tokens/s. 300 s covers both; the "waiting" line keeps the user
# informed long before that, and a hung server is still named within five minutes, not ten.
FIRST_TOKEN_TIMEOUT_S = 300.0
# The whole request: the default suites generate at most 192 tokens, ~100 s at 2 tokens/s (a big
# model on a CPU), after a first token that may itself take FIRST_TOKEN_TIMEOUT_S. Runs with a large
# --max-tokens on slow hardware raise it with --option timeout_s=SECONDS.
REQUEST_TIMEOUT_S = 600.0
# Metadata requests (model lists, versions, health) answer in milliseconds on any healthy server.
PLAIN_TIMEOUT_S = 30.0
# Opening a TCP connection to a server on this machine or this network: a listening server accepts in
# milliseconds, so 10 s only ever passes for a host that drops packets (a firewall, a wrong address).
CONNECT_TIMEOUT_S = 10.0
# The "waiting" line: after this much silence, then again at this interval while it lasts.
NOTICE_AFTER_S = 5.0
# One event line of a stream: a token's JSON is under a kilobyte; 16 MiB is past any real server.
MAX_LINE_CHARS = 16 << 20
# A whole answer that is not a stream (a model list, llama-server's /props with its chat template, an
# error body): kilobytes on any real server, about a megabyte for the largest hosted model lists.
# Counted on the wire and again after decompression, so a gzip bomb stops here.
MAX_BODY_BYTES = 8 << 20
# How much one step of decompression may produce: memory stays this small whatever the ratio.
INFLATE_STEP = 1 << 20
# The encodings read_bounded inflates itself (zlib, bounded); plain_request asks for these only.
ENCODINGS = "gzip, deflate"
NOTICE_EVERY_S = 15.0


def seconds_option(name: str, value: Any) -> float:
    """``value`` of option ``name`` as a positive, finite number of seconds, or a UserInputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise UserInputError(f"option {name} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Deadlines:
    """How long one request may take: to its first token (None: not a stream) and as a whole."""

    first_token_s: float | None = FIRST_TOKEN_TIMEOUT_S
    total_s: float = REQUEST_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: BackendOptions | None) -> Deadlines:
        """From a backend's validated options (``context.settings``): its ``first_token_timeout_s`` and
        ``timeout_s``, each default where not given; None (no options) gives the defaults."""
        if settings is None:
            return cls()
        return cls(
            first_token_s=settings.first_token_timeout_s or FIRST_TOKEN_TIMEOUT_S,
            total_s=settings.timeout_s or REQUEST_TIMEOUT_S,
        )

    def plain(self, seconds: float = PLAIN_TIMEOUT_S) -> Deadlines:
        """For a request that is not a stream (a model list, a version): one deadline for the whole
        answer, ``seconds`` or the silence limit where that is shorter (no request outwaits it)."""
        return Deadlines(first_token_s=None, total_s=min(seconds, self.silence_s()))

    def silence_s(self) -> float:
        """The longest a single read may wait: a healthy server is never silent longer than before
        its first token (model load and prefill), so that limit also bounds every later silence."""
        return min(self.first_token_s or math.inf, self.total_s)

    def httpx_timeout(self, connect_s: float):
        """httpx's per-operation timeout for a request under these deadlines."""
        import httpx

        return httpx.Timeout(self.silence_s(), connect=min(connect_s, self.total_s))


def _stderr_line(text: str) -> None:
    # sys.stderr is looked up at each call: rich's live progress display swaps in a proxy that
    # prints above the progress bar.
    print(text, file=sys.stderr, flush=True)


class RequestWatch:
    """The deadlines of one HTTP request (httpx), as a context manager around it.

    ``deadlines`` is ``Deadlines.from_settings(context.settings)`` (a first-token and a whole-request
    limit). Build the request with ``timeout=deadlines.httpx_timeout(CONNECT_TIMEOUT_S)``: each socket
    read then waits at most the first-token limit, and a connection at most ``CONNECT_TIMEOUT_S``.

    ``server`` is the software's name only ("llama-server"); ``url`` is the request's URL. Messages
    name ``who``, which is ``f"{server} at {url}"`` with the URL redacted: do not pass a label that
    already holds a URL, or it is named twice. (``read_bounded``, ``StreamCall``, ``stream_cut``,
    ``stream_event`` and ``check_timing`` take the whole label instead, e.g. ``watch.who``.)

    Inside ``with watch:`` (a watchdog thread runs while the block does; at a passed deadline it shuts
    the connection down, and while the server is silent it prints a "waiting ..." line on stderr):

    1. ``response = http.send(request, stream=True)``, then ``watch.attach(response)`` once headers are
       in, before anything else (it lets the watchdog cut the connection, and raises ``BackendError``
       for a 2xx HTML page);
    2. check the status; read a refused request's error body with ``read_bounded(response,
       server=watch.who)`` (bounded in size, still under the deadlines);
    3. ``for line in watch.lines(response)``: the body's lines, the deadlines checked per network
       chunk; call ``watch.event()`` once per parsed stream event (per event, not per token: it only
       ends the first-token wait and marks the server as talking). A plain answer is read with
       ``read_bounded`` instead.

    Around the block, ``except httpx.HTTPError as exc``: ``watch.error(exc)`` is the ``BackendError``
    of a passed deadline (or of httpx's own read timeout) to raise; it is None for a refused or
    timed-out connection (``httpx.ConnectError``, ``httpx.ConnectTimeout``: nothing listens; raise your
    own one-line "not reachable" error, a ``ServerGone``) and for any other transport failure (a
    connection cut mid-answer: raise ``stream_cut(who, tokens)`` for a stream).
    """

    def __init__(
        self,
        deadlines: Deadlines,
        *,
        server: str,
        url: str,
        notify: Callable[[str], None] = _stderr_line,
        clock: Callable[[], float] = time.monotonic,
        notice_after_s: float = NOTICE_AFTER_S,
        notice_every_s: float = NOTICE_EVERY_S,
    ) -> None:
        self.deadlines = deadlines
        self.url = redact_url(url)
        self.who = f"{server} at {self.url}"
        self._notify, self._clock = notify, clock
        self._notice_after, self._notice_every = notice_after_s, notice_every_s
        self.start = self.last = clock()
        self.events = 0
        self.expired: str | None = None  # which deadline the watchdog saw pass
        self._socket: socket.socket | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="velollm-deadline", daemon=True)

    def __enter__(self) -> RequestWatch:  # noqa: PYI034 - returns self
        self.start = self.last = self._clock()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    # --- what the client reports ----------------------------------------------------------------

    def attach(self, response: Any) -> None:
        """Let the watchdog cut ``response``'s connection at a deadline (httpx's documented
        ``network_stream`` extension; without it only the per-chunk checks apply); a 2xx HTML page is
        refused here (``contract.pages``)."""
        stream = getattr(response, "extensions", {}).get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        self._socket = sock if isinstance(sock, socket.socket) else None
        self._refuse_a_page(response)

    def _refuse_a_page(self, response: Any) -> None:
        """A successful answer that is an HTML page (a login page, a wrong port) is named as one here,
        before any caller reads it as a stream or as JSON."""
        from velollm_core.contract.pages import html_answer, is_html

        headers = getattr(response, "headers", {})
        if not 200 <= getattr(response, "status_code", 0) < 300 or not is_html(headers.get("content-type")):
            return
        plain = headers.get("content-encoding", "identity").strip().lower() in ("", "identity")
        head = next(response.iter_raw(), b"") if plain else b""  # one network chunk, for the title
        raise html_answer(self.who, headers.get("content-type"), head)

    def event(self) -> None:
        """One stream event (a token, as near as the wire format tells) has arrived."""
        self.events += 1
        self.last = self._clock()

    def lines(self, response: Any) -> Iterator[str]:
        """``response``'s body split into lines (``\\n`` or ``\\r\\n``), deadlines checked per chunk.

        httpx's ``iter_lines`` waits for a whole line: a trickle without newlines would never give
        control back, so the split is done here, chunk by chunk.
        """
        # The unfinished line is kept in pieces and joined once it ends: a server that streams one
        # endless line costs linear time, not a re-split of everything so far at every chunk.
        pieces: list[str] = []
        size = 0
        for text in self._texts(response):
            self.check()
            if "\n" not in text:
                pieces.append(text)
                size += len(text)
                if size > MAX_LINE_CHARS:
                    raise BackendError(f"{self.who} sent a line longer than {MAX_LINE_CHARS:,} characters; "
                                       "that is not a stream of events")
                continue
            head, *middle, tail = text.split("\n")
            pieces.append(head)
            yield "".join(pieces).removesuffix("\r")
            for line in middle:
                yield line.removesuffix("\r")
            pieces, size = [tail], len(tail)
        rest = "".join(pieces)
        if rest:
            yield rest.removesuffix("\r")

    def _texts(self, response: Any) -> Iterator[str]:
        """``response``'s body as text, piece by piece: httpx's ``iter_text`` inflates a whole network
        chunk at once (64 MiB from 64 KiB of a gzip bomb), so a compressed body is inflated here, at
        most ``INFLATE_STEP`` bytes at a time."""
        encoding = getattr(response, "headers", {}).get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            yield from response.iter_text()
            return
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise BackendError(f"{self.who} sent its stream in the {encoding[:40]!r} encoding, which VeloLLM "
                               f"does not read (it accepts {ENCODINGS})")
        import codecs

        inflate = _Inflater(encoding, self.who)
        decoder = codecs.getincrementaldecoder(response.encoding or "utf-8")(errors="replace")
        for chunk in response.iter_raw():
            for piece in inflate.feed(chunk, math.inf):
                yield decoder.decode(piece)
        yield decoder.decode(b"", final=True)

    # --- deadlines ------------------------------------------------------------------------------

    def _due(self) -> tuple[str, float]:
        """The deadline that applies now: (which, when)."""
        first = self.deadlines.first_token_s
        if self.events == 0 and first is not None and first < self.deadlines.total_s:
            return "first_token", self.start + first
        return "total", self.start + self.deadlines.total_s

    def passed(self) -> str | None:
        """The deadline that has passed, if one has."""
        if self.expired:
            return self.expired
        which, when = self._due()
        return which if self._clock() >= when else None

    def check(self) -> None:
        """Raise the deadline's error once one has passed."""
        which = self.passed()
        if which:
            raise self._message(which)

    def error(self, exc: Exception) -> BackendError | None:
        """The error to raise for httpx's ``exc``: a passed deadline, or (for a read that timed out
        before any deadline) the silence limit; None for other failures, which the client names."""
        import httpx

        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return None  # nothing listens: the client's "not reachable" says it better
        which = self.passed()
        if which:
            return self._message(which)
        if isinstance(exc, httpx.TimeoutException):
            return self._message("silence" if self.events else "first_token")
        return None

    def _message(self, which: str) -> BackendError:
        limits = self.deadlines
        if limits.first_token_s is None:
            return BackendError(
                f"{self.who} did not answer within {limits.total_s:g} s: is the server hung? (this wait "
                f"is the shorter of {PLAIN_TIMEOUT_S:g} s and --option {FIRST_TOKEN_OPTION})"
            )
        if which == "first_token":
            return BackendError(
                f"{self.who} sent no token within {limits.first_token_s:g} s (the first-token deadline); "
                "a model loading from disk or a long prompt on a CPU can take longer: raise it with "
                f"--option {FIRST_TOKEN_OPTION}=SECONDS"
            )
        if which == "silence":
            return BackendError(
                f"{self.who} sent nothing for {limits.silence_s():g} s in the middle of its answer "
                f"({FIRST_TOKEN_OPTION} limits every silence): raise it with --option {FIRST_TOKEN_OPTION}=SECONDS"
            )
        answered = "did not finish its answer" if self.events else "did not answer"
        return BackendError(
            f"{self.who} {answered} within {limits.total_s:g} s (the whole-request deadline): "
            f"raise it with --option {TOTAL_OPTION}=SECONDS"
        )

    # --- watchdog -------------------------------------------------------------------------------

    def _watch(self) -> None:
        next_notice = self.start + self._notice_after
        while True:
            _, when = self._due()
            next_notice = max(next_notice, self.last + self._notice_after)
            if self._done.wait(max(0.0, min(when, next_notice) - self._clock())):
                return
            now = self._clock()
            which, when = self._due()
            if now >= when:
                self.expired = which
                self._cut()
                return
            # Tokens may have come while we slept: only a silence that is still going on is noticed.
            if now >= max(next_notice, self.last + self._notice_after):
                self._notice(now)
                next_notice = now + self._notice_every

    def _notice(self, now: float) -> None:
        if self.deadlines.first_token_s is None:
            self._notify(f"waiting for an answer from {self.url} ({now - self.start:.0f} s)")
        elif self.events == 0:
            self._notify(f"waiting for the first token from {self.url} ({now - self.start:.0f} s)")
        else:
            self._notify(f"waiting for the next token from {self.url} ({now - self.last:.0f} s since the last)")

    def _cut(self) -> None:
        # shutdown, not close: it wakes a recv blocked in another thread, which then sees the end
        # of the stream; the client turns that into this deadline's error.
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the request ended on its own


def plain_request(http: Any, method: str, url: str, limits: Deadlines, *, server: str,
                  connect_s: float = CONNECT_TIMEOUT_S, auth: tuple[str, str] | None = None, **kwargs: Any) -> Any:
    """One request that is not a stream (``limits`` from ``Deadlines.plain``), its answer read whole.

    ``auth`` is HTTP basic auth, as ``ServerURL.auth`` holds it for a ``--host user:password@...``; it
    goes into the request's header only (``url`` should be the URL's safe ``base``; messages redact
    it anyway). ``kwargs`` go to httpx's ``build_request`` (``json=``, ``params=``, ``headers=``).
    ``server`` is the software's name only ("llama-server"): messages say ``f"{server} at {url}"``,
    the URL redacted, as ``RequestWatch`` does. The request's timeouts come from ``limits``
    (``httpx_timeout(connect_s)``). Returns the read httpx response, whatever its status (check
    ``status_code``); a passed deadline or an answer over 8 MiB raises BackendError, and any other
    httpx error passes through for the client to name (not reachable, connection reset).
    """
    import httpx

    headers = {"Accept-Encoding": ENCODINGS, **kwargs.pop("headers", {})}
    request = http.build_request(method, url, timeout=limits.httpx_timeout(connect_s), headers=headers, **kwargs)
    watch = RequestWatch(limits, server=server, url=str(request.url))
    try:
        with watch:
            response = http.send(request, stream=True, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT)
            try:
                watch.attach(response)
                return read_bounded(response, server=watch.who)
            finally:
                response.close()
    except httpx.HTTPError as exc:
        passed = watch.error(exc)
        if passed is None:
            raise
        raise passed from None


def read_bounded(response: Any, *, server: str, limit: int = MAX_BODY_BYTES) -> Any:
    """``response`` (httpx, opened with ``stream=True``) read whole, at most ``limit`` bytes on the wire
    and ``limit`` after decompression (gzip or deflate, inflated here step by step); over either, or in
    another encoding, a BackendError naming ``server``. ``server`` is the whole label, used as it is:
    "llama-server at http://h:8080" (``RequestWatch.who``), unlike ``RequestWatch`` and
    ``plain_request``, which take the name and add the URL themselves. Returns an httpx response holding
    the decoded body (``content``, ``text``, ``json()`` read it); one already read is returned as it
    is. Backends read a refused stream's error body with it too, inside the request's ``RequestWatch``.
    """
    import httpx

    if response.is_stream_consumed:
        return response
    too_big = BackendError(f"{server} sent an answer over {limit >> 20} MiB (on the wire or decompressed); "
                           "no model server's metadata is that large, so it is refused")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        inflate = None
    elif encoding in ("gzip", "x-gzip", "deflate"):
        inflate = _Inflater(encoding, server)
    else:
        raise BackendError(f"{server} sent its answer in the {encoding[:40]!r} encoding, which VeloLLM did "
                           f"not ask for (it accepts {ENCODINGS})")
    wire = 0
    pieces: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        wire += len(chunk)
        if wire > limit:
            raise too_big
        for piece in (inflate.feed(chunk, limit - size + 1) if inflate else (chunk,)):
            size += len(piece)
            if size > limit:
                raise too_big
            pieces.append(piece)
    if inflate:
        inflate.check_end()
    dropped = (b"content-encoding", b"content-length", b"transfer-encoding")
    return httpx.Response(
        response.status_code,
        # The raw bytes: a header that is not ASCII (a server's UTF-8) is passed on as the server sent it.
        headers=[(name, value) for name, value in response.headers.raw if name.lower() not in dropped],
        content=b"".join(pieces), request=response.request, extensions=response.extensions,
    )


class _Inflater:
    """gzip or deflate, decompressed in steps of at most ``INFLATE_STEP`` bytes."""

    def __init__(self, encoding: str, server: str) -> None:
        import zlib

        self._zlib, self._server = zlib, server
        # 32+15 reads a gzip or zlib header; a "deflate" answer may also be raw deflate (retried below).
        self._deflate = encoding == "deflate"
        self._decompressor = zlib.decompressobj(47 if not self._deflate else 15)
        self._started = False

    def feed(self, data: bytes, room: float) -> Iterator[bytes]:
        """The decompressed pieces of ``data``, stopping once more than ``room`` bytes came."""
        zlib = self._zlib
        while room > 0 and not self._decompressor.eof:
            step = int(min(room, INFLATE_STEP))
            try:
                piece = self._decompressor.decompress(data, step)
            except zlib.error:
                if self._deflate and not self._started:  # raw deflate, without the zlib header
                    self._decompressor, self._started = zlib.decompressobj(-15), True
                    continue
                kind = "deflate" if self._deflate else "gzip"
                raise BackendError(f"{self._server} sent a corrupt {kind} answer") from None
            self._started = True
            room -= len(piece)
            yield piece
            data = self._decompressor.unconsumed_tail
            if not data and len(piece) < step:
                return  # all input used and no output held back (a full step may leave some: ask again)

    def check_end(self) -> None:
        if self._started and not self._decompressor.eof:
            raise BackendError(f"{self._server} sent a compressed answer that ends mid-way")
