"""The load generator's HTTP/1.1 client against a real asyncio server on a loopback socket: chunked,
length-delimited and read-to-close bodies, keep-alive reuse, a kept-alive connection the server
closed meanwhile, refusal and headers that would add a line."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from velollm_core.contract.streamclient import ConnectFailed, ProtocolError, StreamClient


async def serve(handler):
    connections = []

    async def on_client(reader, writer):
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = json.loads(await reader.readexactly(length))
                if not await handler(head, body, writer):
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def run(coro):
    return asyncio.run(coro)


def sse_handler(events, gaps):
    """A handler answering every request with a chunked stream: each of ``events`` (bytes, or a function
    of the request's body giving them) in its own chunk, each followed by its gap in ``gaps`` (seconds;
    one number: the same after each)."""
    async def handler(head, body, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunks = events(body) if callable(events) else events
        for event, gap in zip(chunks, [gaps] * len(chunks) if isinstance(gaps, float) else gaps, strict=True):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")
        return True

    return handler


def test_chunked_stream_arrives_in_pieces_and_the_connection_is_reused():
    async def main():
        handler = sse_handler(lambda body: [b"data: %d\n\n" % i for i in range(body["n"])], 0.01)
        server, url, connections = await serve(handler)
        client = StreamClient()
        got = []
        for n in (3, 4):
            async with client.post_json(f"{url}/completion?x=1", {"n": n}) as response:
                assert response.status == 200
                got.append([(data, stamp) async for data, stamp in response.chunks()])
        await client.aclose()
        server.close()
        return got, len(connections)

    got, connections = run(main())
    assert [len(stream) for stream in got] == [3, 4] and got[0][0][0] == b"data: 0\n\n"
    stamps = [stamp for _, stamp in got[1]]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 0.02  # stamped as they came
    assert connections == 1  # kept alive


def test_length_and_close_delimited_bodies_and_a_stale_kept_alive_connection():
    async def main():
        calls = []

        async def handler(head, body, writer):
            calls.append(body)
            if body["kind"] == "length":
                writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
                return True
            if body["kind"] == "stale":  # answer, then close the kept-alive connection
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                return False
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
            return False

        server, url, _ = await serve(handler)
        client = StreamClient()
        async with client.post_json(url, {"kind": "length"}) as response:
            first = (response.status, await response.read())
        async with client.post_json(url, {"kind": "stale"}) as response:
            second = await response.read()
        await asyncio.sleep(0.05)
        async with client.post_json(url, {"kind": "close"}) as response:  # retried on a fresh connection
            third = await response.read()
        await client.aclose()
        server.close()
        return first, second, third

    assert run(main()) == ((503, b"busy"), b"ok", b"until close")


def test_refused_connection_and_header_injection():
    async def main():
        client = StreamClient(connect_timeout_s=2)
        with pytest.raises(ConnectFailed):
            async with client.post_json("http://127.0.0.1:9/", {}):
                pass
        server, url, _ = await serve(lambda *a: asyncio.sleep(0, False))
        with pytest.raises(ProtocolError, match="line break"):
            async with client.post_json(url, {}, headers={"X-A": "1\r\nX-Injected: 2"}):
                pass
        server.close()

    run(main())


def test_a_chunk_is_stamped_when_the_loop_read_it_not_when_its_task_got_to_it():
    """A stream's task busy elsewhere (here: asleep 0.3 s) while its next chunk arrives still gets
    the chunk's arrival time, as the event loop read it off the socket."""
    async def main():
        server, url, _ = await serve(sse_handler([b"data: 0\n\n", b"data: 1\n\n"], [0.05, 0.05]))
        client = StreamClient()
        seen = []
        async with client.post_json(f"{url}/completion", {}) as response:
            async for data, stamp in response.chunks():
                seen.append((data, stamp, time.perf_counter()))
                if len(seen) == 1:
                    await asyncio.sleep(0.3)  # the second chunk arrives meanwhile
        await client.aclose()
        server.close()
        return seen

    (first, stamp0, _), (second, stamp1, taken1) = run(main())
    assert (first, second) == (b"data: 0\n\n", b"data: 1\n\n")
    assert 0.03 <= stamp1 - stamp0 <= 0.2  # its arrival, ~50 ms after the first
    assert taken1 - stamp1 >= 0.2  # handed over after the task's 0.3 s sleep, stamped before it


class _Events:
    """An accumulator that only counts events (the stream's timing is not what is under test)."""

    def __init__(self) -> None:
        self.token_times: list[float] = []

    def feed(self, event, arrived):
        self.token_times.append(arrived)
        return False

    def finish(self, start, end):
        from velollm_core.contract.schemas import GenerationTiming

        return GenerationTiming(completion_tokens=len(self.token_times))


@pytest.mark.parametrize("gaps, cut", [((0.15,) * 8, False), ((0.1, 0.1, 1.5), True)])
def test_a_level_stream_is_cut_by_silence_not_by_its_length(gaps, cut):
    """Events 0.15 s apart for 1.2 s pass a 0.5 s silence limit (each one restarts it); 1.5 s of
    silence after two events is cut near 0.5 s, in the one sentence naming the option."""
    from velollm_core.bench.loadgen import _stream
    from velollm_core.contract.deadline import Deadlines
    from velollm_core.contract.errors import BackendError
    from velollm_core.contract.streamclient import StreamCall

    async def main():
        server, url, _ = await serve(sse_handler([b'data: {"n": %d}\n\n' % i for i in range(len(gaps))], gaps))
        client = StreamClient()
        call = StreamCall(url=f"{url}/completion", body={}, accumulator=_Events(), server="test server")
        began = time.perf_counter()
        try:
            timing, _, _ = await _stream(client, call, Deadlines(first_token_s=0.5, total_s=30))
            outcome = timing.completion_tokens
        except BackendError as exc:
            outcome = str(exc)
        await client.aclose()
        server.close()
        return outcome, time.perf_counter() - began

    outcome, took = run(main())
    if cut:
        assert outcome == "test server sent nothing for 0.5 s (--option first_token_timeout_s=SECONDS)"
        assert 0.65 <= took < 1.3  # two events 0.1 s apart, then 0.5 s of silence
    else:
        assert outcome == len(gaps) and took >= 1.2


def _threaded_server(answer_parts: list[tuple[float, bytes]]):
    """A server on its own thread (so it runs while the client's loop is blocked): after the request
    it sends each part after its delay, then closes; returns (url, thread)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for delay, part in answer_parts:
                time.sleep(delay)
                conn.sendall(part)
        listener.close()

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel receive times are Linux's (SO_TIMESTAMPNS)")
def test_on_linux_a_chunk_keeps_the_kernels_receive_time_while_the_whole_loop_is_blocked():
    """Even a loop blocked outright (0.3 s of work in one callback) does not move a chunk's stamp:
    on plain HTTP the time is the kernel's, taken when the bytes reached the socket."""
    parts = [(0.0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"2\r\nA\n\r\n"),
             (0.05, b"2\r\nB\n\r\n"), (0.01, b"0\r\n\r\n")]

    async def main(kernel_stamps):
        url, thread = _threaded_server(parts)
        client = StreamClient(kernel_stamps=kernel_stamps)
        stamps = []
        async with client.post_json(f"{url}/completion", {}) as response:
            async for _, stamp in response.chunks():
                stamps.append(stamp)
                if len(stamps) == 1:
                    time.sleep(0.3)  # noqa: ASYNC251 - blocks the event loop itself: nothing is read meanwhile
        await client.aclose()
        thread.join(5)
        return stamps[1] - stamps[0], client.stamps

    apart, counted = run(main(True))
    assert 0.03 <= apart <= 0.2 and counted["read"] == 0 < counted["kernel"]  # the kernel's times: ~50 ms apart
    apart, counted = run(main(False))
    assert apart >= 0.25 and counted["kernel"] == 0 < counted["read"]  # read after the block: the stamp moved


def test_a_name_is_tried_at_each_address_it_resolves_to(monkeypatch):
    """``localhost`` may resolve to ::1 before 127.0.0.1 (the resolver's answer is set here, the
    connections are real): a server on 127.0.0.1 alone is still reached, as the second address."""
    import socket

    async def main():
        server, url, _ = await serve(sse_handler([b"data: 0\n\n"], 0.0))
        port = int(url.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()

        async def resolve(host, port_, **kwargs):
            assert host == "localhost" and port_ == port
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

        monkeypatch.setattr(loop, "getaddrinfo", resolve)
        client = StreamClient()
        async with client.post_json(f"http://localhost:{port}/completion", {}) as response:
            got = [data async for data, _ in response.chunks()]
        await client.aclose()
        server.close()
        return got, client.stamps

    got, stamps = run(main())
    assert got == [b"data: 0\n\n"] and sum(stamps.values()) > 0
