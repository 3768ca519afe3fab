"""Just enough HTTP/1.1 for api-server-rest: read one request, write one answer (RFC 9112 subset).

Invariants:
    * SECURITY: bounded: the request line plus headers at most ``Limits.rest_max_head_bytes`` (else 431), a body
      at most ``Limits.rest_max_body_bytes`` (else 413), announced only by ``Content-Length``; chunked bodies
      are refused (501) rather than parsed. The caller bounds the time (``Limits.rest_read_timeout_s``).
    * Malformed requests raise :class:`HttpRequestError` carrying the status to answer; nothing is guessed.
    * The path is kept as sent (not percent-decoded), like hyper's ``uri().path()``; query parameters are
      form-decoded and the last value of a repeated name wins (as upstream's ``HashMap`` collect).
    * Every answer carries ``Content-Length`` and ``Connection: close``: one request per connection.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from cocoguest.errors import HttpRequestError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_HEAD_END: Final = b"\r\n\r\n"
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(r"/[\x21-\x7e]*")
_VERSIONS: Final = ("HTTP/1.0", "HTTP/1.1")


@dataclass(frozen=True)
class HttpRequest:
    """One parsed request; every field is untrusted client input."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased names; a repeated header keeps its last value (none of ours repeats meaningfully)."""
    body: bytes = b""


@dataclass(frozen=True)
class HttpResponse:
    """One answer."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def parse_head(untrusted_head: bytes) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """``(method, path, query, headers)`` of a request head (without the final blank line).

    Raises:
        HttpRequestError: 400 for anything that is not a well-formed HTTP/1.0 or 1.1 origin-form request.
    """
    try:
        text = untrusted_head.decode("ascii")
    except UnicodeDecodeError as e:
        msg = "the request head is not ASCII"
        raise HttpRequestError(msg, status=400) from e
    line, *header_lines = text.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in _VERSIONS:
        msg = f"malformed request line {line[:80]!r}"
        raise HttpRequestError(msg, status=400)
    method, target, _ = parts
    if not _TARGET.fullmatch(target):
        msg = f"the request target {target[:80]!r} is not an absolute path"
        raise HttpRequestError(msg, status=400)
    headers: dict[str, str] = {}
    for header_line in header_lines:
        name, sep, value = header_line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses obs-fold (a leading space)
            msg = f"malformed header line {header_line[:80]!r}"
            raise HttpRequestError(msg, status=400)
        key = name.lower()
        value = value.strip(" \t")
        if key == "content-length" and key in headers and headers[key] != value:
            msg = "conflicting Content-Length headers"
            raise HttpRequestError(msg, status=400)
        headers[key] = value
    split = urlsplit(target)
    query = dict(parse_qsl(split.query, keep_blank_values=True, errors="replace"))
    return method, split.path, query, headers


async def read_request(reader: asyncio.StreamReader, limits: Limits = DEFAULT_LIMITS) -> HttpRequest | None:
    """Read one request from ``reader``; ``None`` when the client closed before sending a byte.

    ``reader`` must have been created with a buffer limit of at least ``limits.rest_max_head_bytes``.

    Raises:
        HttpRequestError: the status to answer (400 malformed, 413 body too large, 431 head too large,
            501 Transfer-Encoding).
    """
    try:
        head = await reader.readuntil(_HEAD_END)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        msg = "the connection ended inside the request head"
        raise HttpRequestError(msg, status=400) from e
    except asyncio.LimitOverrunError as e:
        msg = f"request head over {limits.rest_max_head_bytes} bytes (rest_max_head_bytes)"
        raise HttpRequestError(msg, status=431) from e
    if len(head) > limits.rest_max_head_bytes:
        msg = f"request head over {limits.rest_max_head_bytes} bytes (rest_max_head_bytes)"
        raise HttpRequestError(msg, status=431)
    method, path, query, headers = parse_head(head[: -len(_HEAD_END)])
    if "transfer-encoding" in headers:
        msg = "Transfer-Encoding is not supported; send Content-Length"
        raise HttpRequestError(msg, status=501)
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or not length_text.isascii():
        msg = f"malformed Content-Length {length_text[:40]!r}"
        raise HttpRequestError(msg, status=400)
    length = int(length_text)
    if length > limits.rest_max_body_bytes:
        msg = f"request body of {length} bytes (at most {limits.rest_max_body_bytes}, rest_max_body_bytes)"
        raise HttpRequestError(msg, status=413)
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as e:
        msg = f"the connection ended after {len(e.partial)} of {length} body bytes"
        raise HttpRequestError(msg, status=400) from e
    return HttpRequest(method, path, query, headers, body)


def encode_response(response: HttpResponse) -> bytes:
    """The bytes of ``response`` (status line, headers, body), closing the connection afterwards."""
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    if response.content_type is not None:
        lines.append(f"Content-Type: {response.content_type}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"Content-Length: {len(response.body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + response.body
