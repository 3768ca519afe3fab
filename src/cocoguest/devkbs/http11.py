"""A sans-IO HTTP/1.1 request parser and response writer for the dev KBS (no sockets, no clock).

Feed received bytes to :meth:`RequestParser.feed`; take complete requests or refusals with :meth:`next`.

Invariants:
    * The request line plus headers may be at most ``max_header_bytes`` (``Limits.devkbs_max_header_bytes``);
      beyond that the parser answers 431 and stops.
    * A body is read only when its ``Content-Length`` is at most ``max_body_bytes`` (Trustee's
      ``payload_request_size``); a larger one is refused 413 before a byte of it is buffered.
    * Any ``Transfer-Encoding`` is refused 411 (no KBS client sends one; refusing it closes the door to request
      smuggling); a malformed request line, header line or ``Content-Length`` (or two that differ) is 400.
    * After a :class:`Refusal` the parser is dead: the connection must be closed, since the framing of the rest
      of the stream is unknown.
    * Keep-alive: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

_METHOD: Final = re.compile(rb"[A-Z]{1,16}")
_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSIONS: Final = (b"HTTP/1.1", b"HTTP/1.0")


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request. ``headers`` has lower-case names (the last of repeated names wins)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the parser refuses; answer ``status`` with ``detail`` and close."""

    status: int
    detail: bytes


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    headers: dict[str, str]
    length: int
    keep_alive: bool
    expects_continue: bool


class RequestParser:
    """The request framing of one connection."""

    def __init__(self, *, max_header_bytes: int, max_body_bytes: int) -> None:
        """An empty parser with the given caps."""
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._continue_sent = False
        self._dead = False
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buffer)

    def feed(self, untrusted_data: bytes) -> None:
        """Append received bytes (ignored once the parser refused)."""
        if not self._dead:
            self._buffer += untrusted_data

    def next(self) -> Request | Refusal | None:
        """The next complete request, a refusal (the parser is then dead), or ``None`` (need more bytes)."""
        if self._dead:
            return None
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max_header:
                    return self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request headers too large")
                return None
            if end + 4 > self._max_header:
                return self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request headers too large")
            head = self._parse_head(bytes(self._buffer[:end]))
            if isinstance(head, Refusal):
                return head
            del self._buffer[: end + 4]
            self._head = head
        head = self._head
        if len(self._buffer) < head.length:
            return None
        body = bytes(self._buffer[: head.length])
        del self._buffer[: head.length]
        self._head = None
        self._continue_sent = False
        return Request(head.method, head.target, head.headers, body, head.keep_alive)

    def wants_continue(self) -> bool:
        """Whether a ``100 Continue`` should be sent now (once per request that asked and has a body to come)."""
        head = self._head
        if head is None or not head.expects_continue or self._continue_sent or len(self._buffer) >= head.length:
            return False
        self._continue_sent = True
        return True

    def _refuse(self, status: int, detail: bytes) -> Refusal:
        self._dead = True
        self._buffer.clear()
        return Refusal(status, detail)

    def _parse_head(self, untrusted_head: bytes) -> _Head | Refusal:
        lines = untrusted_head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1] or parts[2] not in _VERSIONS:
            return self._refuse(HTTPStatus.BAD_REQUEST, b"bad request line")
        headers: dict[str, str] = {}
        lengths: set[bytes] = set()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                return self._refuse(HTTPStatus.BAD_REQUEST, b"bad header line")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t")
            if key == "content-length":
                lengths.add(text)
            headers[key] = text.decode("latin-1")
        if "transfer-encoding" in headers:
            return self._refuse(HTTPStatus.LENGTH_REQUIRED, b"chunked request bodies are not supported")
        length = 0
        if lengths:
            text = lengths.pop()
            if lengths or not text.isdigit() or len(text) > 18:
                return self._refuse(HTTPStatus.BAD_REQUEST, b"bad Content-Length")
            length = int(text)
        if length > self._max_body:
            # SECURITY: never buffer an oversized body; the caller closes the connection.
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"A payload reached size limit.")
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if parts[2] == b"HTTP/1.1" else "keep-alive" in connection
        expects = headers.get("expect", "").lower() == "100-continue"
        return _Head(parts[0].decode("ascii"), parts[1].decode("latin-1"), headers, length, keep_alive, expects)


def render_response(
    status: int,
    body: bytes,
    *,
    content_type: str | None,
    headers: tuple[tuple[str, str], ...],
    date: str,
    close: bool,
) -> bytes:
    """One HTTP/1.1 response, head and body in one buffer (one write, no Nagle delay between them)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {status} {phrase}", "Server: cocoguest-devkbs", f"Date: {date}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
