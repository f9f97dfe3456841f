"""The hostile server answers each hostility as its docstring says (the kit's own check)."""

from __future__ import annotations

import json
import socket
import zlib

import httpx
import pytest
from velollm_testkit.hostile import ABSURD_NUMBERS, ESCAPES, HOSTILITIES, Reply, Stream

ROUTES = {"/v1/models": {"data": [{"id": "m", "created": 1}]},
          "/stream": Stream([{"n": 1, "text": "a"}, {"n": 2, "text": "b"}, "[DONE]"])}


def test_non_finite_and_absurd_numbers(hostile_server):
    text = httpx.get(hostile_server("non_finite", ROUTES).url + "/v1/models").text
    assert json.loads(text)["data"][0]["created"] == float("inf")
    doc = httpx.get(hostile_server("absurd_numbers", ROUTES).url + "/v1/models").json()
    assert doc["data"][0]["created"] in ABSURD_NUMBERS


def test_escapes_in_every_string_and_stream(hostile_server):
    server = hostile_server("escapes", ROUTES)
    assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "m" + ESCAPES
    body = httpx.get(server.url + "/stream").text
    assert body.count("data: ") == 3 and body.endswith("data: [DONE]\n\n") and "\\u001b" in body


def test_bomb_html_redirect(hostile_server):
    raw = httpx.get(hostile_server("decompression_bomb", bomb_bytes=4 << 20).url + "/x",
                    headers={"Accept-Encoding": "identity"})
    with httpx.stream("GET", hostile_server("decompression_bomb", bomb_bytes=4 << 20).url + "/x") as response:
        wire = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip" and len(wire) < 64 << 10
    assert len(zlib.decompress(wire, 31)) == 4 << 20 and raw.status_code == 200
    page = httpx.get(hostile_server("html_page", ROUTES).url + "/v1/models")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    hop = httpx.get(hostile_server("redirect", ROUTES).url + "/v1/models")
    assert hop.status_code == 302 and hop.headers["location"].endswith("/v1/models?hop=1")


def test_reset_mid_stream(hostile_server):
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(hostile_server("reset_mid_stream", ROUTES).url + "/stream")


def test_every_hostility_is_served(hostile_server):
    for hostility in HOSTILITIES:
        server = hostile_server(hostility, ROUTES, bomb_bytes=1 << 20)
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(12).startswith(b"HTTP/1.1 "), hostility


def test_a_reply_has_its_own_status_and_headers(hostile_server):
    server = hostile_server("escapes", {"/x": Reply({"error": "slow down"}, 429, {"Retry-After": "5\u202e"})})
    response = httpx.get(server.url + "/x")
    assert response.status_code == 429 and response.headers["retry-after"] == "5\u202e"
    assert response.json()["error"] == "slow down" + ESCAPES
