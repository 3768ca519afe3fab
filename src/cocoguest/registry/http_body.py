"""Reading untrusted HTTP bodies of small documents: capped raw and decoded size, and a total deadline.

Used for every registry answer we keep in memory: the ``/v2/`` probe (discarded), token responses, manifests,
signatures, signature lists and error bodies. Blobs are streamed raw by the blob reader instead.

Invariants:
    * The body is read from the wire with ``iter_raw`` (httpx's own decoders expand a whole network chunk at
      once: a 64 KiB zstd chunk can become gigabytes). A declared ``Content-Length`` over the cap is refused
      before reading; the raw bytes read never exceed ``cap + one network chunk``.
    * SECURITY: a ``Content-Encoding`` we did not ask for (we send ``Accept-Encoding: identity``) is decoded
      here, by decoders whose output per step is bounded, and the DECODED size is counted as it is produced
      and stops at the same cap: a compression bomb costs at most ``cap`` bytes of memory. Unknown or stacked
      encodings are refused.
    * The :class:`Deadline` is checked between chunks; the per-read timeout of the request is clipped to the
      deadline by the caller (:meth:`Deadline.timeout`). While the status line and headers arrive, the
      deadline is enforced inside the connection (``registry.http_deadline``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Final, cast

import httpx
import zstandard

from cocoguest.errors import ProtocolError, TransportError

_DECODE_STEP_BYTES: Final = 64 * 1024
"""Output of one decoder step (a buffer size, not a limit: every limit is the caller's cap)."""


@dataclass(slots=True)
class Deadline:
    """A total time allowance for one request, named in its error (``limit`` is the Limits field)."""

    seconds: float
    limit: str = "registry_request_deadline_s"
    started: float = field(default_factory=time.monotonic)
    expired: bool = False
    """Set by :meth:`expire` when a wait was cut short by this deadline (``check`` then fails for sure)."""

    def remaining(self) -> float:
        """Seconds left (may be negative)."""
        return self.started + self.seconds - time.monotonic()

    def expire(self) -> None:
        """Mark the deadline as passed (a network wait clipped to it ran out; see ``registry.http_deadline``)."""
        self.expired = True

    def check(self, what: str) -> None:
        """Raise if the deadline passed.

        Raises:
            TransportError: not retryable (a slow registry stays slow).
        """
        if self.expired or self.remaining() <= 0:
            msg = f"{what}: no complete answer within {self.seconds:g} s ({self.limit})"
            raise TransportError(msg, retryable=False)

    def timeout(self, base: httpx.Timeout) -> httpx.Timeout:
        """``base`` with every phase clipped to the time left (at least 1 ms, so httpx raises, not waits)."""
        left = max(0.001, self.remaining())

        def clip(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=clip(base.connect), read=clip(base.read), write=clip(base.write), pool=clip(base.pool)
        )


class _ChunkReader:
    """A file-like ``read`` over an iterator of chunks (the source of zstandard's ``read_to_iter``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def read(self, n: int = -1) -> bytes:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        take = len(self._pending) if n < 0 else n
        out, self._pending = self._pending[:take], self._pending[take:]
        return out


def _zlib_decode(chunks: Iterator[bytes], wbits: int) -> Iterator[bytes]:
    """gzip (``wbits=31``) or zlib deflate (``wbits=15``); each piece at most one decode step."""
    decompressor = zlib.decompressobj(wbits)
    for chunk in chunks:
        data = chunk
        while True:
            out = decompressor.decompress(data, _DECODE_STEP_BYTES)
            if out:
                yield out
            data = decompressor.unconsumed_tail
            if not data and len(out) < _DECODE_STEP_BYTES:
                break
    yield decompressor.flush()


def _zstd_decode(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """zstd; each piece at most one decode step."""
    source = cast("IO[bytes]", _ChunkReader(chunks))
    yield from zstandard.ZstdDecompressor().read_to_iter(source, write_size=_DECODE_STEP_BYTES)


def _decoded(response: httpx.Response, chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return chunks
    if encoding in ("gzip", "x-gzip"):
        return _zlib_decode(chunks, 31)
    if encoding == "deflate":
        return _zlib_decode(chunks, 15)
    if encoding == "zstd":
        return _zstd_decode(chunks)
    msg = f"{what}: unsupported Content-Encoding {encoding[:40]!r} (we asked for identity)"
    raise ProtocolError(msg)


def _raw_chunks(response: httpx.Response, cap: int, what: str, deadline: Deadline | None) -> Iterator[bytes]:
    raw = 0
    for chunk in response.iter_raw():
        raw += len(chunk)
        if raw > cap:
            msg = f"{what}: answer exceeds the {cap}-byte limit"
            raise ProtocolError(msg)
        if deadline is not None:
            deadline.check(what)
        yield chunk


def read_body(response: httpx.Response, *, cap: int, what: str, deadline: Deadline | None) -> bytes:
    """The decoded body of ``response``, at most ``cap`` bytes both raw and decoded.

    Raises:
        ProtocolError: over the cap (declared, raw or decoded), or a bad/unsupported encoding.
        TransportError: the deadline passed (not retryable).
        httpx.HTTPError: the connection failed (the caller maps it).
    """
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        msg = f"{what}: answer of {int(declared)} bytes exceeds the {cap}-byte limit"
        raise ProtocolError(msg)
    untrusted = bytearray()
    try:
        for piece in _decoded(response, _raw_chunks(response, cap, what, deadline), what):
            untrusted += piece
            if len(untrusted) > cap:
                # SECURITY: counted while decoding, so a compression bomb stops at the cap.
                msg = f"{what}: answer exceeds the {cap}-byte limit (decoded)"
                raise ProtocolError(msg)
    except (zlib.error, zstandard.ZstdError) as e:
        msg = f"{what}: corrupt {response.headers.get('Content-Encoding', '')[:40]} body ({e})"
        raise ProtocolError(msg) from e
    return bytes(untrusted)
