"""http_body.read_body: raw and decoded caps, bounded decoding of unasked Content-Encodings, the deadline."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Iterator

import httpx
import pytest
import zstandard

from cocoguest.errors import ProtocolError, TransportError
from cocoguest.registry.http_body import Deadline, read_body

MiB = 1024 * 1024


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks


def _response(body: bytes | list[bytes], headers: dict[str, str] | None = None) -> httpx.Response:
    chunks = body if isinstance(body, list) else [body[i : i + 16384] for i in range(0, len(body), 16384)]
    return httpx.Response(200, headers=headers or {}, stream=_Chunks(chunks))


def _zeros_gzip(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MiB)
    parts = [compressor.compress(block) for _ in range(size // MiB)]
    return b"".join([*parts, compressor.flush()])


def test_identity_body_is_returned_and_capped() -> None:
    assert read_body(_response(b"x" * 1000), cap=1000, what="doc", deadline=None) == b"x" * 1000
    with pytest.raises(ProtocolError, match="doc: answer exceeds the 999-byte limit"):
        read_body(_response(b"x" * 1000), cap=999, what="doc", deadline=None)


def test_declared_length_over_cap_is_refused_before_reading() -> None:
    response = _response([b"x"], {"Content-Length": "5000000000"})
    with pytest.raises(ProtocolError, match="5000000000 bytes exceeds the 1000-byte limit"):
        read_body(response, cap=1000, what="doc", deadline=None)
    assert not response.is_stream_consumed


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
    ],
)
def test_unasked_encodings_are_decoded(encoding: str, encode: object) -> None:
    plain = b'{"token": "abc"}' * 100
    body = encode(plain)  # type: ignore[operator]
    assert read_body(_response(body, {"Content-Encoding": encoding}), cap=10_000, what="t", deadline=None) == plain


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compression_bomb_stops_at_the_decoded_cap_with_bounded_memory(encoding: str) -> None:
    size = 256 * MiB
    if encoding == "gzip":
        bomb = _zeros_gzip(size)
    else:
        compressor = zstandard.ZstdCompressor(level=3).compressobj()
        bomb = b"".join([compressor.compress(bytes(MiB)) for _ in range(size // MiB)]) + compressor.flush()
    assert len(bomb) < 1 * MiB  # small on the wire, under the raw cap
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=r"exceeds the 1048576-byte limit \(decoded\)"):
            read_body(_response(bomb, {"Content-Encoding": encoding}), cap=1 * MiB, what="tok", deadline=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB


def test_unknown_or_stacked_encoding_is_refused() -> None:
    with pytest.raises(ProtocolError, match="unsupported Content-Encoding 'br'"):
        read_body(_response(b"x", {"Content-Encoding": "br"}), cap=10, what="d", deadline=None)
    with pytest.raises(ProtocolError, match="unsupported Content-Encoding"):
        read_body(_response(b"x", {"Content-Encoding": "gzip, gzip"}), cap=10, what="d", deadline=None)


def test_corrupt_encoded_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="corrupt gzip body"):
        read_body(_response(b"not gzip at all", {"Content-Encoding": "gzip"}), cap=100, what="d", deadline=None)


def test_deadline_passed_between_chunks_names_the_limit() -> None:
    deadline = Deadline(0.0)
    with pytest.raises(TransportError, match=r"doc: no complete answer within 0 s \(registry_request_deadline_s\)"):
        read_body(_response([b"a", b"b"]), cap=10, what="doc", deadline=deadline)


def test_deadline_clips_every_timeout() -> None:
    clipped = Deadline(5.0).timeout(httpx.Timeout(60.0, connect=30.0))
    assert clipped.read == pytest.approx(5.0, abs=0.5)
    assert clipped.connect == pytest.approx(5.0, abs=0.5)
