"""Content digests and verifying readers.

Invariants:
    * A :class:`Digest` is always a syntactically valid ``algorithm:hex`` of a supported algorithm.
    * A :class:`VerifyingReader` raises at EOF (or as soon as too many bytes arrive) unless the bytes read
      hash to the expected digest and have exactly the expected size; callers must read to EOF.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final, Protocol

from cocoguest.errors import DigestMismatchError, SizeMismatchError

_HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}
_HEX_RE: Final = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """An OCI content digest such as ``sha256:4f...``."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        expected = _HEX_LENGTH.get(self.algorithm)
        if expected is None:
            msg = f"unsupported digest algorithm {self.algorithm!r}"
            raise ValueError(msg)
        if len(self.hex) != expected or not _HEX_RE.fullmatch(self.hex):
            msg = f"malformed {self.algorithm} digest {self.hex!r}"
            raise ValueError(msg)

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``.

        Raises:
            ValueError: the text is not a valid digest.
        """
        algorithm, sep, hex_ = text.partition(":")
        if not sep:
            msg = f"malformed digest {text!r}"
            raise ValueError(msg)
        return cls(algorithm, hex_)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """Digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        """A new hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    @property
    def encoded(self) -> str:
        """The hex part (OCI calls it "encoded")."""
        return self.hex

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class Readable(Protocol):
    """Anything with ``read(n)`` (files, HTTP bodies, the readers of the layer chain)."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; ``b""`` at EOF."""
        ...


class VerifyingReader:
    """Wrap a binary stream; check digest and exact size when EOF is reached.

    ``what`` names the content in error messages (e.g. ``"layer sha256:ab.. of oci:img"``).
    """

    def __init__(self, stream: Readable, expected: Digest, size: int | None, what: str) -> None:
        self._stream = stream
        self._expected = expected
        self._size = size
        self._what = what
        self._hasher = expected.hasher()
        self._read = 0
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        """Read up to ``n`` bytes; raises on a size or digest mismatch."""
        if self._done:
            return b""
        if self._size is not None:
            # Read one byte past the declared size so that an overlong blob is detected.
            remaining = self._size - self._read + 1
            n = remaining if n < 0 else min(n, remaining)
        data = self._stream.read(n)
        self._read += len(data)
        if self._size is not None and self._read > self._size:
            msg = f"{self._what}: longer than the {self._size} bytes its descriptor declares"
            raise SizeMismatchError(msg)
        if data:
            self._hasher.update(data)
            return data
        self._done = True
        self._check()
        return b""

    def _check(self) -> None:
        if self._size is not None and self._read != self._size:
            msg = f"{self._what}: {self._read} bytes, its descriptor declares {self._size}"
            raise SizeMismatchError(msg)
        actual = Digest(self._expected.algorithm, self._hasher.hexdigest())
        if actual != self._expected:
            msg = f"{self._what}: content has digest {actual}, expected {self._expected}"
            raise DigestMismatchError(msg)

    @property
    def bytes_read(self) -> int:
        """Bytes read so far."""
        return self._read
