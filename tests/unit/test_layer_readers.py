"""The layer chain readers: decompression (gzip multi-member, zstd, none), decryption at EOF, diff_id hashing."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import random

import pytest
import zstandard

from cocoguest.crypto.layer_cipher import CtrHmacEncryptor
from cocoguest.digest import Digest, VerifyingReader
from cocoguest.errors import (
    DecryptionIntegrityError,
    DigestMismatchError,
    ProtocolError,
    SizeMismatchError,
    UnsupportedError,
)
from cocoguest.image.layer.readers import DecryptingReader, HashingReader, decompressing_reader, drain
from cocoguest.oci import media_types as mt

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)
KEY, NONCE = bytes(range(32)), bytes(16)


def _read_all(reader: object, chunk: int = 65536) -> bytes:
    out = bytearray()
    while data := reader.read(chunk):  # type: ignore[attr-defined]
        out += data
    return bytes(out)


@pytest.mark.parametrize(
    ("media_type", "encode"),
    [
        (mt.OCI_LAYER_GZIP, lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:])),  # multi-member
        (mt.OCI_LAYER_GZIP, gzip.compress),
        (mt.DOCKER_LAYER_GZIP, gzip.compress),
        (mt.OCI_LAYER_ZSTD, lambda d: zstandard.ZstdCompressor().compress(d)),
        (mt.OCI_LAYER, lambda d: d),
        (mt.OCI_LAYER_ND, lambda d: d),
    ],
)
def test_decompression(media_type: str, encode: object) -> None:
    data = encode(PAYLOAD)  # type: ignore[operator]
    assert _read_all(decompressing_reader(io.BytesIO(data), media_type, "layer x")) == PAYLOAD


@pytest.mark.parametrize("read_size", [1000, 65536, 300_000, 1 << 20])
def test_gzip_compressible_members_across_input_blocks(read_size: int) -> None:
    # Text-like data (ratio well above 1) in uneven members: the inflater gets the 1 MiB input blocks in
    # pieces, and member ends fall inside pieces and blocks.
    words = [os.urandom(4).hex().encode() for _ in range(4096)]
    text = b" ".join(random.Random(1).choices(words, k=800_000))
    cuts = [0, 5, 70_000, 1_500_000, 1_500_001, 5_000_000, len(text)]
    data = b"".join(gzip.compress(text[a:b], compresslevel=1) for a, b in itertools.pairwise(cuts))
    assert 1.5 * 1024 * 1024 < len(data) < len(text) / 2  # compressible, several 1 MiB input blocks
    reader = decompressing_reader(io.BytesIO(data), mt.OCI_LAYER_GZIP, "layer x")
    assert _read_all(reader, read_size) == text
    junk = decompressing_reader(io.BytesIO(data + b"junk"), mt.OCI_LAYER_GZIP, "layer x")
    with pytest.raises(ProtocolError, match="layer x: corrupt gzip data"):
        _read_all(junk, read_size)


def test_truncated_gzip_stream() -> None:
    data = gzip.compress(PAYLOAD)
    with pytest.raises(ProtocolError, match="layer x: gzip stream is truncated"):
        drain(decompressing_reader(io.BytesIO(data[:-100]), mt.OCI_LAYER_GZIP, "layer x"), 1 << 20)


def test_truncated_zstd_stream_is_caught_by_the_diff_id() -> None:
    """zstandard's bounded stream reader ends quietly on a cut frame; the diff_id check is what catches it."""
    data = zstandard.ZstdCompressor().compress(PAYLOAD)
    reader = HashingReader(
        decompressing_reader(io.BytesIO(data[:-100]), mt.OCI_LAYER_ZSTD, "layer x"), Digest.of_bytes(PAYLOAD), "l"
    )
    drain(reader, 1 << 20)
    with pytest.raises(DigestMismatchError):
        reader.verify()


def test_trailing_garbage_after_gzip_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="corrupt gzip"):
        drain(decompressing_reader(io.BytesIO(gzip.compress(b"x") + b"junk"), mt.OCI_LAYER_GZIP, "l"), 1 << 20)


def test_unknown_media_type() -> None:
    with pytest.raises(UnsupportedError, match="unsupported layer media type"):
        decompressing_reader(io.BytesIO(b""), "application/x-rar", "layer x")


def _encrypt(data: bytes) -> tuple[bytes, bytes]:
    enc = CtrHmacEncryptor(KEY, NONCE)
    ciphertext = enc.update(data)
    return ciphertext, enc.finalize()


def test_decrypting_reader_round_trip_and_tamper() -> None:
    ciphertext, mac = _encrypt(PAYLOAD)
    assert _read_all(DecryptingReader(io.BytesIO(ciphertext), KEY, NONCE, mac, "l")) == PAYLOAD
    tampered = bytearray(ciphertext)
    tampered[len(tampered) // 3] ^= 0x80
    with pytest.raises(DecryptionIntegrityError, match="HMAC"):
        _read_all(DecryptingReader(io.BytesIO(bytes(tampered)), KEY, NONCE, mac, "l"))


def test_chain_checks_fire_innermost_first() -> None:
    """A truncated blob fails on size before the HMAC or the decompressor can complain."""
    ciphertext, mac = _encrypt(gzip.compress(PAYLOAD))
    digest = Digest.of_bytes(ciphertext)
    truncated = io.BytesIO(ciphertext[:-10])
    chain = decompressing_reader(
        DecryptingReader(VerifyingReader(truncated, digest, len(ciphertext), "l"), KEY, NONCE, mac, "l"),
        mt.OCI_LAYER_GZIP,
        "l",
    )
    with pytest.raises((SizeMismatchError, ProtocolError)):
        drain(chain, 1 << 20)


def test_hashing_reader_checks_diff_id() -> None:
    good = HashingReader(io.BytesIO(PAYLOAD), Digest.of_bytes(PAYLOAD), "layer 0")
    drain(good, 1 << 20)
    good.verify()
    assert good.size == len(PAYLOAD)
    bad = HashingReader(io.BytesIO(PAYLOAD + b"x"), Digest.of_bytes(PAYLOAD), "layer 0")
    drain(bad, 1 << 20)
    with pytest.raises(DigestMismatchError, match="diff_id"):
        bad.verify()


def test_ratio_guard_refuses_a_decompression_bomb() -> None:
    from cocoguest.image.layer.readers import RatioGuard  # noqa: PLC0415
    from cocoguest.limits import Limits  # noqa: PLC0415

    bomb = gzip.compress(bytes(8 * 1024 * 1024))  # 8 MiB of zeros -> ~8 KiB
    limits = Limits(max_decompression_ratio=100, decompression_ratio_allowance_bytes=1024 * 1024)
    counted = VerifyingReader(io.BytesIO(bomb), Digest.of_bytes(bomb), len(bomb), "blob")
    guard = RatioGuard(decompressing_reader(counted, mt.OCI_LAYER_GZIP, "l"), lambda: counted.bytes_read, "l", limits)
    with pytest.raises(ProtocolError, match="decompression bomb"):
        drain(guard, 65536)
    # the same data is fine under the default limits, and so is incompressible data under the strict ones
    counted = VerifyingReader(io.BytesIO(bomb), Digest.of_bytes(bomb), len(bomb), "blob")
    assert drain(RatioGuard(decompressing_reader(counted, mt.OCI_LAYER_GZIP, "l"), lambda: counted.bytes_read, "l"),
                 65536) == 8 * 1024 * 1024  # fmt: skip
    random_blob = gzip.compress(PAYLOAD)
    counted = VerifyingReader(io.BytesIO(random_blob), Digest.of_bytes(random_blob), len(random_blob), "blob")
    guard = RatioGuard(decompressing_reader(counted, mt.OCI_LAYER_GZIP, "l"), lambda: counted.bytes_read, "l", limits)
    assert drain(guard, 65536) == len(PAYLOAD)
