"""Composable readers of the layer chain. Each checks what it is responsible for when EOF is reached.

Chain (outermost last): blob stream -> :class:`~cocoguest.digest.VerifyingReader` (compressed digest and size)
-> :class:`DecryptingReader` (HMAC) -> :func:`decompressing_reader` (gzip incl. multi-member, zstd, none) ->
:class:`HashingReader` (diff_id) -> tar unpack.

Invariants:
    * A reader raises at EOF if its check fails; reading the outermost reader to EOF (drain) fires every check,
      innermost first: size/digest, then HMAC, then decompression integrity.
    * Every reader hands out at most ``n`` bytes per call and holds at most one chunk: memory is bounded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO

import zstandard
from zlib_ng import zlib_ng

from cocoguest.crypto.layer_cipher import CtrHmacDecryptor
from cocoguest.digest import Digest, Readable
from cocoguest.errors import DigestMismatchError, ProtocolError, UnsupportedError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.oci import media_types


class _ChainReader(io.RawIOBase):
    """Base class: a raw, read-only stream that implements ``read`` directly."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def as_binary_io(self) -> BinaryIO:
        """This reader typed as a binary stream."""
        return self  # type: ignore[return-value]


class DecryptingReader(_ChainReader):
    """Decrypts AES-256-CTR; at EOF verifies the HMAC (raises DecryptionIntegrityError)."""

    def __init__(self, source: Readable, key: bytes, nonce: bytes, expected_hmac: bytes, what: str) -> None:
        super().__init__()
        self._source = source
        self._decryptor = CtrHmacDecryptor(key, nonce, expected_hmac, what)
        self._finished = False

    def read(self, n: int = -1, /) -> bytes:
        if self._finished:
            return b""
        data = self._source.read(n)
        if data:
            return self._decryptor.update(data)
        self._finished = True
        # SECURITY: the tag covers the whole ciphertext; until here the plaintext only went to staging.
        self._decryptor.finalize()
        return b""


class HashingReader(_ChainReader):
    """Hashes what passes through; :meth:`verify` compares with the expected digest after EOF."""

    def __init__(self, source: Readable, expected: Digest, what: str) -> None:
        super().__init__()
        self._source = source
        self._expected = expected
        self._hasher = expected.hasher()
        self._what = what
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._source.read(n)
        self._hasher.update(data)
        self.size += len(data)
        return data

    def verify(self) -> None:
        """Raise unless the bytes read hash to the expected digest.

        Raises:
            DigestMismatchError: names the layer, the digest found and the diff_id expected.
        """
        actual = Digest(self._expected.algorithm, self._hasher.hexdigest())
        if actual != self._expected:
            expected = self._expected
            msg = f"{self._what}: uncompressed content has digest {actual}, the image config's diff_id is {expected}"
            raise DigestMismatchError(msg)


_MIN_INFLATE_INPUT = 64 * 1024
"""The least compressed input handed to the inflater per call (more when the read asks for more output)."""


class RatioGuard(_ChainReader):
    """Refuses a decompression bomb: more than ``ratio`` uncompressed bytes per compressed byte consumed.

    ``compressed_so_far`` reports the compressed (blob) bytes read so far; the first ``allowance`` uncompressed
    bytes are always allowed. SECURITY: bounds the disk a small hostile layer can fill before its diff_id fails.
    """

    def __init__(
        self, source: Readable, compressed_so_far: Callable[[], int], what: str, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        super().__init__()
        self._source = source
        self._compressed = compressed_so_far
        self._ratio = limits.max_decompression_ratio
        self._allowance = limits.decompression_ratio_allowance_bytes
        self._what = what
        self._out = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._source.read(n)
        self._out += len(data)
        if self._out > self._allowance and self._out > self._ratio * max(1, self._compressed()):
            msg = (
                f"{self._what}: decompresses to more than {self._ratio} times its compressed size "
                "(a decompression bomb?)"
            )
            raise ProtocolError(msg)
        return data


class GzipReader(_ChainReader):
    """Inflates gzip, including multi-member streams; anything after the last member must be another member."""

    def __init__(self, source: Readable, what: str, limits: Limits) -> None:
        super().__init__()
        self._source = source
        self._what = what
        self._chunk = limits.stream_chunk_bytes
        self._inflater = zlib_ng.decompressobj(wbits=31)
        self._pending = b""
        self._pos = 0  # how much of _pending the inflater consumed
        self._input_done = False
        self._in_member = False

    def read(self, n: int = -1, /) -> bytes:
        limit = self._chunk if n < 0 else n
        while True:
            if self._pos < len(self._pending):
                # At most ``limit`` input bytes per call: the inflater copies what it does not consume (its
                # unconsumed_tail), so handing it a whole 1 MiB block for a 64 KiB read copied most of the
                # block on every call.
                start = self._pos
                piece = memoryview(self._pending)[start : start + max(limit, _MIN_INFLATE_INPUT)]
                data = self._inflater.decompress(piece, limit)
                self._in_member = True
                if self._inflater.eof:
                    # unused_data: what follows the member in this piece (the next member, or trailing junk).
                    self._pos = start + len(piece) - len(self._inflater.unused_data)
                    self._start_next_member()
                else:
                    self._pos = start + len(piece) - len(self._inflater.unconsumed_tail)
                if data:
                    return data
                continue
            if self._input_done:
                if self._in_member and not self._inflater.eof:
                    msg = f"{self._what}: gzip stream is truncated"
                    raise ProtocolError(msg)
                return b""
            block = self._source.read(self._chunk)
            if not block:
                self._input_done = True
                continue
            self._pending = block
            self._pos = 0

    def _start_next_member(self) -> None:
        # The caller moved _pos to the first byte after the member; the rest of _pending is fed to a new one.
        self._inflater = zlib_ng.decompressobj(wbits=31)
        self._in_member = False

    def _decompress_error(self, error: Exception) -> ProtocolError:
        return ProtocolError(f"{self._what}: corrupt gzip data ({error})")


class _SafeGzipReader(GzipReader):
    def read(self, n: int = -1, /) -> bytes:
        try:
            return super().read(n)
        except zlib_ng.error as e:  # type: ignore[misc]  # zlib_ng.error is an exception class without stubs
            raise self._decompress_error(e) from e


class ZstdReader(_ChainReader):
    """Decompresses zstd (all frames) with bounded output per read.

    zstandard's stream reader ends quietly on a cut final frame; a truncated zstd layer is then caught by the
    compressed digest/size check and the diff_id check, which always run after the drain.
    """

    def __init__(self, source: Readable, what: str, limits: Limits) -> None:
        super().__init__()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            source,  # type: ignore[arg-type]  # zstandard only needs read()
            read_size=limits.stream_chunk_bytes,
            read_across_frames=True,
            closefd=False,
        )
        self._what = what

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._reader.read(n)
        except zstandard.ZstdError as e:
            msg = f"{self._what}: corrupt zstd data ({e})"
            raise ProtocolError(msg) from e


class PlainReader(_ChainReader):
    """No compression."""

    def __init__(self, source: Readable) -> None:
        super().__init__()
        self._source = source

    def read(self, n: int = -1, /) -> bytes:
        return self._source.read(n)


def decompressing_reader(source: Readable, media_type: str, what: str, limits: Limits = DEFAULT_LIMITS) -> _ChainReader:
    """The decompressor a (decrypted) layer media type needs.

    Raises:
        UnsupportedError: an unknown compression.
    """
    compression = media_types.compression_of(media_type)
    if compression == "gzip":
        return _SafeGzipReader(source, what, limits)
    if compression == "zstd":
        return ZstdReader(source, what, limits)
    base = media_type.removesuffix(media_types.ENCRYPTED_SUFFIX)
    if base in {media_types.OCI_LAYER, media_types.OCI_LAYER_ND}:
        return PlainReader(source)
    msg = f"{what}: unsupported layer media type {media_type}"
    raise UnsupportedError(msg)


def drain(reader: Readable, chunk: int) -> int:
    """Read to EOF so that every end-of-stream check fires; returns the number of bytes discarded."""
    discarded = 0
    while data := reader.read(chunk):
        discarded += len(data)
    return discarded
