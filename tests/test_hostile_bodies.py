"""Bodies from a server are bounded, on the wire and after decompression (a gzip bomb is one error)."""

from __future__ import annotations

import tracemalloc

import httpx
import pytest

from velollm_core.contract import deadline
from velollm_core.contract.errors import BackendError
from velollm_core.contract.streamclient import ProtocolError, StreamClient

MODELS = {"/v1/models": {"object": "list", "data": [{"id": "m", "object": "model"}]}}


def test_a_gzip_bomb_is_one_error_not_gigabytes(hostile_server):
    server = hostile_server("decompression_bomb", MODELS)  # 256 MiB of zeros in ~260 KB of gzip
    tracemalloc.start()
    try:
        with httpx.Client() as http, pytest.raises(BackendError) as caught:
            deadline.plain_request(http, "GET", server.url + "/v1/models", deadline.Deadlines().plain(),
                                   server="Mock")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * deadline.MAX_BODY_BYTES, peak
    message = str(caught.value)
    assert "Mock at http://127.0.0.1" in message and "MiB" in message and "\n" not in message


def test_a_plain_answer_still_reads_whole_and_decoded(hostile_server):
    server = hostile_server("escapes", MODELS)
    with httpx.Client() as http:
        response = deadline.plain_request(http, "GET", server.url + "/v1/models", deadline.Deadlines().plain(),
                                          server="Mock")
    assert response.status_code == 200 and response.json()["data"][0]["object"].startswith("model")


def test_a_gzip_answer_is_decoded(hostile_server):
    server = hostile_server("decompression_bomb", MODELS, bomb_bytes=1 << 20)
    with httpx.Client() as http:
        response = deadline.plain_request(http, "GET", server.url + "/v1/models", deadline.Deadlines().plain(),
                                          server="Mock")
    assert response.content == bytes(1 << 20) and "content-encoding" not in response.headers


def test_read_bounded_reads_an_error_body_of_a_stream(hostile_server):
    server = hostile_server("decompression_bomb", MODELS)
    with (httpx.Client() as http, http.stream("GET", server.url + "/x") as response,
          pytest.raises(BackendError, match="over 8 MiB")):
        deadline.read_bounded(response, server="Mock")


async def _stream_body(url: str) -> bytes:
    client = StreamClient()
    try:
        async with client.post_json(url, {}) as response:
            return await response.read()
    finally:
        await client.aclose()


def test_the_stream_client_bounds_a_body_and_a_chunk():
    import asyncio

    async def serve(body: bytes):
        async def answer(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(body)
            await writer.drain()
            writer.close()

        return await asyncio.start_server(answer, "127.0.0.1", 0)

    async def fetch(body: bytes) -> bytes:
        server = await serve(body)
        port = server.sockets[0].getsockname()[1]
        try:
            return await _stream_body(f"http://127.0.0.1:{port}/")
        finally:
            server.close()

    huge_chunk = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n"
    with pytest.raises(ProtocolError, match="chunk"):
        asyncio.run(fetch(huge_chunk))
    too_long = b"HTTP/1.1 500 Oops\r\nContent-Length: 99999999999\r\n\r\n" + b"x" * 1000
    with pytest.raises(ProtocolError, match="MiB"):
        asyncio.run(fetch(too_long))


def test_a_compressed_stream_is_inflated_in_small_steps(hostile_server):
    server = hostile_server("decompression_bomb", MODELS)
    limits = deadline.Deadlines(first_token_s=60.0, total_s=60.0)
    tracemalloc.start()
    try:
        with (httpx.Client() as http, http.stream("GET", server.url + "/stream") as response,
              deadline.RequestWatch(limits, server="Mock", url=server.url) as watch,
              pytest.raises(BackendError, match="line longer than")):
            for _ in watch.lines(response):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The longest line allowed (16 Mi characters) is held, never a whole network chunk's inflation.
    assert peak < 4 * deadline.MAX_LINE_CHARS + 8 * deadline.INFLATE_STEP, peak


def test_a_compressed_stream_still_reads_as_lines():
    import gzip

    class Gzipped:
        encoding = "utf-8"

        def __init__(self) -> None:
            self.headers = {"content-encoding": "gzip"}

        def iter_raw(self):
            body = gzip.compress("data: é\r\n\ndata: b\n".encode())
            return (body[i:i + 3] for i in range(0, len(body), 3))

    limits = deadline.Deadlines(first_token_s=60.0, total_s=60.0)
    with deadline.RequestWatch(limits, server="Mock", url="http://x") as watch:
        assert list(watch.lines(Gzipped())) == ["data: é", "", "data: b"]


def test_a_header_that_is_not_ascii_passes_through(hostile_server):
    from velollm_testkit.hostile import Reply

    server = hostile_server("escapes", {"/x": Reply({}, 429, {"Retry-After": "5\u202e"})})
    with httpx.Client() as http:
        response = deadline.plain_request(http, "GET", server.url + "/x", deadline.Deadlines().plain(), server="Mock")
    assert response.status_code == 429 and response.headers["retry-after"] == "5\u202e"
