"""The dev KBS's sans-IO HTTP/1.1 request parser: framing, caps and refusals, byte by byte."""

from __future__ import annotations

import pytest

from cocoguest.devkbs.http11 import Refusal, Request, RequestParser, render_response


def _parser(max_header: int = 1024, max_body: int = 100) -> RequestParser:
    return RequestParser(max_header_bytes=max_header, max_body_bytes=max_body)


def test_pipelined_requests_fed_one_byte_at_a_time() -> None:
    wire = (
        b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: 1\r\nx-a:  2 \r\n\r\nhello"
        b"GET /healthz?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    parser = _parser()
    seen: list[Request | Refusal] = []
    for i in range(len(wire)):
        parser.feed(wire[i : i + 1])
        while (item := parser.next()) is not None:
            seen.append(item)
    assert seen == [
        Request("POST", "/kbs/v0/auth", {"host": "x", "content-length": "5", "x-a": "2"}, b"hello", keep_alive=True),
        Request("GET", "/healthz?q=1", {"connection": "close"}, b"", keep_alive=False),
    ]
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", "", True),
        ("1.1", "Connection: close\r\n", False),
        ("1.0", "", False),
        ("1.0", "Connection: Keep-Alive\r\n", True),
    ],
)
def test_keep_alive_rules(version: str, connection: str, keep_alive: bool) -> None:
    parser = _parser()
    parser.feed(f"GET / HTTP/{version}\r\n{connection}\r\n".encode())
    item = parser.next()
    assert isinstance(item, Request)
    assert item.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"\x16\x03\x01garbage\r\n\r\n", 400),
        (b"get / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET /  HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 431),  # no end of headers yet, already over the cap
    ],
)
def test_refusals_kill_the_parser(wire: bytes, status: int) -> None:
    parser = _parser()
    parser.feed(wire)
    item = parser.next()
    assert isinstance(item, Refusal)
    assert item.status == status
    parser.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert parser.next() is None  # dead: the rest of the stream is never interpreted
    assert parser.buffered == 0


def test_a_body_at_the_cap_is_accepted_and_repeated_equal_lengths_are_fine() -> None:
    parser = _parser()
    parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 100\r\ncontent-length: 100\r\n\r\n" + b"b" * 99)
    assert parser.next() is None
    parser.feed(b"b")
    item = parser.next()
    assert isinstance(item, Request)
    assert item.body == b"b" * 100


def test_expect_100_continue_is_offered_once_per_request() -> None:
    parser = _parser()
    parser.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert parser.next() is None
    assert parser.wants_continue() is True
    assert parser.wants_continue() is False
    parser.feed(b"ok")
    assert isinstance(parser.next(), Request)
    assert parser.wants_continue() is False


def test_render_response() -> None:
    wire = render_response(
        401, b"{}", content_type="application/json", headers=(("Set-Cookie", "a=b"),), date="D", close=True
    )
    assert wire == (
        b"HTTP/1.1 401 Unauthorized\r\nServer: cocoguest-devkbs\r\nDate: D\r\nContent-Type: application/json\r\n"
        b"Set-Cookie: a=b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
