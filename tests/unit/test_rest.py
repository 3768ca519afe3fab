"""api-server-rest pieces without processes: the loopback check, HTTP parsing, runtime-data decoding, the
OpenAPI document (parses, lists every route with its method), the router's feature gating."""

from __future__ import annotations

import asyncio
import json

import pytest

from cocoguest.errors import HttpRequestError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.rest.http import HttpResponse, encode_response, parse_head, read_request
from cocoguest.rest.openapi import openapi_document
from cocoguest.rest.peer import is_loopback_peer
from cocoguest.rest.router import ROUTES, Feature, Router, decode_runtime_data


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "::1%lo"])
def test_loopback_peers_are_allowed(host: str) -> None:
    assert is_loopback_peer(host)


@pytest.mark.parametrize(
    "host",
    ["10.0.0.1", "192.168.1.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "fe80::1", "203.0.113.9", "", "localhost"],  # noqa: S104
)
def test_other_peers_are_refused(host: str) -> None:
    assert not is_loopback_peer(host)


def test_parse_head_keeps_path_raw_and_last_query_value() -> None:
    method, path, query, headers = parse_head(b"GET /cdh/resource/a%2Fb/c/d?x=1&x=2&e= HTTP/1.1\r\nHost: h\r\nX-A:  v ")
    assert (method, path) == ("GET", "/cdh/resource/a%2Fb/c/d")
    assert query == {"x": "2", "e": ""}
    assert headers == {"host": "h", "x-a": "v"}


@pytest.mark.parametrize(
    "head",
    [
        b"GET /info",
        b"GET /info HTTP/2.0",
        b"GET http://evil/info HTTP/1.1",
        b"GET /in fo HTTP/1.1",
        b"GET /info HTTP/1.1\r\n folded: x",
        b"GET /info HTTP/1.1\r\nno colon",
        b"GET /info HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
        "GET /caf\u00e9 HTTP/1.1".encode(),
    ],
)
def test_malformed_heads_are_400(head: bytes) -> None:
    with pytest.raises(HttpRequestError) as info:
        parse_head(head)
    assert info.value.status == 400


def _read(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> object:
    async def run() -> object:
        reader = asyncio.StreamReader(limit=limits.rest_max_head_bytes)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_request(reader, limits)

    return asyncio.run(run())


def test_read_request_reads_the_body_by_content_length() -> None:
    request = _read(b"POST /aa/aael HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyEXTRA")
    assert getattr(request, "body", None) == b"body"
    assert _read(b"") is None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 200 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 400),
        (b"GET / HTTP/1.1\r\n", 400),
    ],
)
def test_read_request_refusals(raw: bytes, status: int) -> None:
    with pytest.raises(HttpRequestError) as info:
        _read(raw, Limits(rest_max_head_bytes=100, rest_max_body_bytes=10))
    assert info.value.status == status


def test_encode_response() -> None:
    raw = encode_response(HttpResponse(405, b"no", "text/plain", (("Allow", "GET"),)))
    assert raw == (
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nAllow: GET\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\nno"
    )


@pytest.mark.parametrize(
    ("value", "encoding", "expected"),
    [("hello", None, b"hello"), ("cmVwb3J0", "base64", b"report"), ("", "base64", b""), ("_-8", "base64", b"\xff\xef")],
)
def test_decode_runtime_data(value: str, encoding: str | None, expected: bytes) -> None:
    assert decode_runtime_data(value, encoding) == expected


@pytest.mark.parametrize(
    ("value", "encoding"),
    [("data", "hex"), ("!!!", "base64"), ("cmVwb3J0==", "base64"), ("a", "base64"), ("cmVwb3K", "base64")],
)
def test_decode_runtime_data_refusals(value: str, encoding: str) -> None:
    with pytest.raises(ProtocolError):
        decode_runtime_data(value, encoding)


def test_openapi_document_parses_and_lists_every_route() -> None:
    document = json.loads(openapi_document())
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert {(r.method.lower(), r.template) for r in ROUTES} == {
        (method, path) for path, item in paths.items() for method in item
    }
    for path, item in paths.items():
        for operation in item.values():
            assert {"200", "403"} <= set(operation["responses"]), path
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_router_requires_the_backends_of_its_feature() -> None:
    with pytest.raises(ValueError, match="attestation agent"):
        Router(feature=Feature.ALL, aa=None, cdh=None)
    with pytest.raises(ValueError, match="confidential data hub"):
        Router(feature=Feature.RESOURCE, aa=None, cdh=None)
