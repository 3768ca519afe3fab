"""Tests of the streaming layer cipher engine (cocoguest.ocicrypt.stream)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cocoguest.crypto.layer_cipher import CtrHmacDecryptor, CtrHmacEncryptor
from cocoguest.digest import Digest
from cocoguest.errors import DecryptionIntegrityError, DigestMismatchError, SizeMismatchError
from cocoguest.limits import Limits
from cocoguest.ocicrypt.stream import DecryptResult, EncryptResult, decrypt_stream, encrypt_stream

# ocicrypt.md §4.3
VECTOR_KEY = bytes(range(0x20))
VECTOR_NONCE = bytes(range(0xF0, 0x100))
VECTOR_PLAINTEXT = b"ocicrypt test vector: AES_256_CTR_HMAC_SHA256\n"
VECTOR_CIPHERTEXT = bytes.fromhex(
    "fd63a4ee51eff0bf7a1d832734121571a92b1432cb0a75843df867147c28c5dacb336916555baacb30c41225a35e"
)
VECTOR_HMAC = base64.b64decode("iUZt1haAk/cj8rYBzXCW5W7oT3dbl0eU5ioB6qeyCkI=")

CHUNK = 4096
SMALL = Limits(stream_chunk_bytes=CHUNK, stream_queue_chunks=2)


def _keystream_xor_into(self: Any, data: bytes | memoryview, out: bytearray) -> int:
    return int(self._ctr.update_into(data, out))


@pytest.fixture(autouse=True, params=["pooled", "allocating"])
def keystream_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on both keystream paths of the engine.

    "pooled": the cipher writes into the engine's reused output buffers (``keystream_xor_into``, installed
    here while crypto/layer_cipher.py lacks it); "allocating": a cipher without it (a new bytes per chunk).
    """
    for cls in (CtrHmacEncryptor, CtrHmacDecryptor):
        if request.param == "allocating":
            monkeypatch.setattr(cls, "keystream_xor_into", None, raising=False)
        elif not hasattr(cls, "keystream_xor_into"):
            monkeypatch.setattr(cls, "keystream_xor_into", _keystream_xor_into, raising=False)
    return str(request.param)


def _sha256(data: bytes) -> Digest:
    return Digest.of_bytes(data)


def _encrypt(
    plaintext: bytes, key: bytes = VECTOR_KEY, nonce: bytes = VECTOR_NONCE, limits: Limits = SMALL
) -> tuple[bytes, EncryptResult]:
    dst = io.BytesIO()
    result = encrypt_stream(
        io.BytesIO(plaintext),
        dst,
        key,
        nonce,
        source_digest=_sha256(plaintext),
        source_size=len(plaintext),
        what="layer test",
        limits=limits,
    )
    return dst.getvalue(), result


def _decrypt(
    ciphertext: bytes,
    mac: bytes,
    *,
    digest: Digest | None = None,
    size: int | None = None,
    limits: Limits = SMALL,
) -> tuple[bytes, DecryptResult]:
    dst = io.BytesIO()
    result = decrypt_stream(
        io.BytesIO(ciphertext),
        dst,
        VECTOR_KEY,
        VECTOR_NONCE,
        mac,
        source_digest=digest if digest is not None else _sha256(ciphertext),
        source_size=size if size is not None else len(ciphertext),
        what="layer test",
        limits=limits,
    )
    return dst.getvalue(), result


def test_vector_encrypt() -> None:
    ciphertext, result = _encrypt(VECTOR_PLAINTEXT)
    assert ciphertext == VECTOR_CIPHERTEXT
    assert result.hmac == VECTOR_HMAC
    assert result.ciphertext_digest == _sha256(VECTOR_CIPHERTEXT)
    assert result.size == len(VECTOR_PLAINTEXT)


def test_vector_decrypt() -> None:
    plaintext, result = _decrypt(VECTOR_CIPHERTEXT, VECTOR_HMAC)
    assert plaintext == VECTOR_PLAINTEXT
    assert result.plaintext_digest == _sha256(VECTOR_PLAINTEXT)
    assert result.size == len(VECTOR_PLAINTEXT)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17, 16 * CHUNK])
def test_round_trip_chunk_boundaries(size: int) -> None:
    plaintext = os.urandom(size)
    ciphertext, enc = _encrypt(plaintext)
    # An independent one-shot reference.
    reference = Cipher(algorithms.AES(VECTOR_KEY), modes.CTR(VECTOR_NONCE)).encryptor().update(plaintext)
    assert ciphertext == reference
    assert enc.hmac == hmac.digest(VECTOR_KEY, reference, "sha256")
    assert enc.ciphertext_digest == _sha256(reference)
    assert enc.size == size
    decrypted, dec = _decrypt(ciphertext, enc.hmac)
    assert decrypted == plaintext
    assert dec.plaintext_digest == _sha256(plaintext)
    assert dec.size == size


def test_unknown_size_round_trip() -> None:
    plaintext = os.urandom(3 * CHUNK + 5)
    dst = io.BytesIO()
    enc = encrypt_stream(
        io.BytesIO(plaintext),
        dst,
        VECTOR_KEY,
        VECTOR_NONCE,
        source_digest=_sha256(plaintext),
        source_size=None,
        what="layer test",
        limits=SMALL,
    )
    assert enc.size == len(plaintext)
    out = io.BytesIO()
    dec = decrypt_stream(
        io.BytesIO(dst.getvalue()),
        out,
        VECTOR_KEY,
        VECTOR_NONCE,
        enc.hmac,
        source_digest=enc.ciphertext_digest,
        source_size=None,
        what="layer test",
        limits=SMALL,
    )
    assert out.getvalue() == plaintext
    assert dec.size == len(plaintext)


def test_sha512_source_digest() -> None:
    plaintext = os.urandom(2 * CHUNK)
    dst = io.BytesIO()
    encrypt_stream(
        io.BytesIO(plaintext),
        dst,
        VECTOR_KEY,
        VECTOR_NONCE,
        source_digest=Digest("sha512", hashlib.sha512(plaintext).hexdigest()),
        source_size=len(plaintext),
        what="layer test",
        limits=SMALL,
    )
    assert len(dst.getvalue()) == len(plaintext)


def test_nonce_counter_carry() -> None:
    # ocicrypt.md §4.2: the counter is the whole 128-bit block, carrying across the low 64 bits.
    nonce = bytes.fromhex("0011223344556677fffffffffffffffe")
    plaintext = os.urandom(16 * 5 + 3)
    dst = io.BytesIO()
    enc = encrypt_stream(
        io.BytesIO(plaintext),
        dst,
        VECTOR_KEY,
        nonce,
        source_digest=_sha256(plaintext),
        source_size=len(plaintext),
        what="layer test",
        limits=Limits(stream_chunk_bytes=32, stream_queue_chunks=2),
    )
    reference = Cipher(algorithms.AES(VECTOR_KEY), modes.CTR(nonce)).encryptor().update(plaintext)
    assert dst.getvalue() == reference
    # And spelled out per block: counter i is nonce + i mod 2**128, big-endian.
    base = int.from_bytes(nonce, "big")
    ecb = Cipher(algorithms.AES(VECTOR_KEY), modes.ECB()).encryptor()  # noqa: S305 — CTR reference
    stream = b"".join(ecb.update(((base + i) % (1 << 128)).to_bytes(16, "big")) for i in range(6))
    assert dst.getvalue() == bytes(p ^ k for p, k in zip(plaintext, stream, strict=False))
    assert enc.hmac == hmac.digest(VECTOR_KEY, reference, "sha256")


# Trios (STYLE.md §8.8): one bit flipped, truncated, one byte appended, plus a wrong digest.


@pytest.fixture(scope="module")
def sealed() -> tuple[bytes, bytes, bytes]:
    plaintext = os.urandom(7 * CHUNK + 3)
    ciphertext, enc = _encrypt(plaintext)
    return plaintext, ciphertext, enc.hmac


@pytest.mark.parametrize("position", [0, CHUNK, 7 * CHUNK + 2])
def test_flipped_bit_fails_hmac(sealed: tuple[bytes, bytes, bytes], position: int) -> None:
    _, ciphertext, mac = sealed
    tampered = bytearray(ciphertext)
    tampered[position] ^= 0x01
    # The descriptor names the tampered bytes (an attacker rewrote the manifest): the HMAC must catch it.
    with pytest.raises(DecryptionIntegrityError, match="layer test"):
        _decrypt(bytes(tampered), mac)


def test_flipped_bit_fails_digest(sealed: tuple[bytes, bytes, bytes]) -> None:
    _, ciphertext, mac = sealed
    tampered = bytearray(ciphertext)
    tampered[5] ^= 0x80
    with pytest.raises(DigestMismatchError, match="layer test"):
        _decrypt(bytes(tampered), mac, digest=_sha256(ciphertext))


def test_wrong_hmac(sealed: tuple[bytes, bytes, bytes]) -> None:
    _, ciphertext, mac = sealed
    with pytest.raises(DecryptionIntegrityError, match="layer test"):
        _decrypt(ciphertext, mac[:-1] + bytes([mac[-1] ^ 1]))


def test_truncated(sealed: tuple[bytes, bytes, bytes]) -> None:
    _, ciphertext, mac = sealed
    with pytest.raises(SizeMismatchError, match="layer test"):
        _decrypt(ciphertext[:-1], mac, digest=_sha256(ciphertext), size=len(ciphertext))


def test_appended(sealed: tuple[bytes, bytes, bytes]) -> None:
    _, ciphertext, mac = sealed
    with pytest.raises(SizeMismatchError, match="layer test"):
        _decrypt(ciphertext + b"\0", mac, digest=_sha256(ciphertext), size=len(ciphertext))


def test_encrypt_truncated_and_appended(sealed: tuple[bytes, bytes, bytes]) -> None:
    plaintext, _, _ = sealed
    for data in (plaintext[:-1], plaintext + b"x"):
        with pytest.raises(SizeMismatchError, match="layer test"):
            encrypt_stream(
                io.BytesIO(data),
                io.BytesIO(),
                VECTOR_KEY,
                VECTOR_NONCE,
                source_digest=_sha256(plaintext),
                source_size=len(plaintext),
                what="layer test",
                limits=SMALL,
            )


def test_encrypt_wrong_source_digest(sealed: tuple[bytes, bytes, bytes]) -> None:
    plaintext, _, _ = sealed
    with pytest.raises(DigestMismatchError, match="layer test"):
        encrypt_stream(
            io.BytesIO(plaintext),
            io.BytesIO(),
            VECTOR_KEY,
            VECTOR_NONCE,
            source_digest=_sha256(plaintext + b"x"),
            source_size=len(plaintext),
            what="layer test",
            limits=SMALL,
        )


def test_decrypt_wrong_source_digest(sealed: tuple[bytes, bytes, bytes]) -> None:
    _, ciphertext, mac = sealed
    with pytest.raises(DigestMismatchError, match="layer test"):
        _decrypt(ciphertext, mac, digest=_sha256(b"something else"))


def test_unknown_size_capped_by_blob_limit() -> None:
    data = os.urandom(3 * CHUNK)
    limits = Limits(stream_chunk_bytes=CHUNK, stream_queue_chunks=2, max_blob_bytes=2 * CHUNK)
    with pytest.raises(SizeMismatchError, match="layer test"):
        encrypt_stream(
            io.BytesIO(data),
            io.BytesIO(),
            VECTOR_KEY,
            VECTOR_NONCE,
            source_digest=_sha256(data),
            source_size=None,
            what="layer test",
            limits=limits,
        )


def test_progress_reports_every_byte() -> None:
    plaintext = os.urandom(4 * CHUNK + 9)
    seen: list[int] = []
    encrypt_stream(
        io.BytesIO(plaintext),
        io.BytesIO(),
        VECTOR_KEY,
        VECTOR_NONCE,
        source_digest=_sha256(plaintext),
        source_size=len(plaintext),
        what="layer test",
        limits=SMALL,
        progress=seen.append,
    )
    assert sum(seen) == len(plaintext)


def test_file_to_file_round_trip(tmp_path: Any) -> None:
    plaintext = os.urandom(9 * CHUNK + 1)
    (tmp_path / "plain").write_bytes(plaintext)
    with (tmp_path / "plain").open("rb") as src, (tmp_path / "enc").open("wb") as dst:
        enc = encrypt_stream(
            src,
            dst,
            VECTOR_KEY,
            VECTOR_NONCE,
            source_digest=_sha256(plaintext),
            source_size=len(plaintext),
            what="layer test",
            limits=SMALL,
        )
    with (tmp_path / "enc").open("rb") as src, (tmp_path / "dec").open("wb") as dst:
        decrypt_stream(
            src,
            dst,
            VECTOR_KEY,
            VECTOR_NONCE,
            enc.hmac,
            source_digest=enc.ciphertext_digest,
            source_size=enc.size,
            what="layer test",
            limits=SMALL,
        )
    assert (tmp_path / "dec").read_bytes() == plaintext


def _assert_no_leak(baseline: int) -> None:
    # "<=": a thread of some other test may end meanwhile; the engine's own workers must all be gone.
    assert threading.active_count() <= baseline
    assert not [t for t in threading.enumerate() if t.name == "ocicrypt-stream"]


class _FailingWriter(io.RawIOBase):
    """A destination whose write raises after ``good`` successful writes."""

    def __init__(self, good: int) -> None:
        self.good = good

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.good <= 0:
            msg = "disk full"
            raise OSError(msg)
        self.good -= 1
        return len(b)


class _FailingReader(io.RawIOBase):
    """A source whose read raises after ``good`` chunks."""

    def __init__(self, good: int) -> None:
        self.good = good

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.good <= 0:
            msg = "read error"
            raise OSError(msg)
        self.good -= 1
        b[:] = bytes(len(b))
        return len(b)


@pytest.mark.parametrize("good", [0, 3])
def test_failing_dst_propagates_and_joins_threads(good: int) -> None:
    baseline = threading.active_count()
    plaintext = os.urandom(64 * CHUNK)
    ciphertext, enc = _encrypt(plaintext)
    with pytest.raises(OSError, match="disk full"):
        encrypt_stream(
            io.BytesIO(plaintext),
            _FailingWriter(good),  # type: ignore[arg-type]
            VECTOR_KEY,
            VECTOR_NONCE,
            source_digest=_sha256(plaintext),
            source_size=len(plaintext),
            what="layer test",
            limits=SMALL,
        )
    _assert_no_leak(baseline)
    with pytest.raises(OSError, match="disk full"):
        decrypt_stream(
            io.BytesIO(ciphertext),
            _FailingWriter(good),  # type: ignore[arg-type]
            VECTOR_KEY,
            VECTOR_NONCE,
            enc.hmac,
            source_digest=enc.ciphertext_digest,
            source_size=enc.size,
            what="layer test",
            limits=SMALL,
        )
    _assert_no_leak(baseline)


def test_failing_src_propagates_and_joins_threads() -> None:
    baseline = threading.active_count()
    with pytest.raises(OSError, match="read error"):
        encrypt_stream(
            _FailingReader(5),  # type: ignore[arg-type]
            io.BytesIO(),
            VECTOR_KEY,
            VECTOR_NONCE,
            source_digest=_sha256(b""),
            source_size=None,
            what="layer test",
            limits=SMALL,
        )
    _assert_no_leak(baseline)


def test_verification_failure_joins_threads(sealed: tuple[bytes, bytes, bytes]) -> None:
    baseline = threading.active_count()
    _, ciphertext, mac = sealed
    with pytest.raises(SizeMismatchError):
        _decrypt(ciphertext + b"\0" * CHUNK * 3, mac, digest=_sha256(ciphertext), size=len(ciphertext))
    _assert_no_leak(baseline)


class _BlockedWriter(io.RawIOBase):
    """A destination whose writes wait until ``go`` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.out = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.go.wait()
        self.out += b
        return len(b)


def test_slow_dst_bounds_read_ahead() -> None:
    # Back-pressure: with the writer stuck, only a few chunks may be read ahead, never the whole source.
    plaintext = os.urandom(256 * CHUNK)
    src, dst = io.BytesIO(plaintext), _BlockedWriter()
    results: list[EncryptResult] = []

    def run() -> None:
        results.append(
            encrypt_stream(
                src,
                dst,  # type: ignore[arg-type]
                VECTOR_KEY,
                VECTOR_NONCE,
                source_digest=_sha256(plaintext),
                source_size=len(plaintext),
                what="layer test",
                limits=SMALL,
            )
        )

    worker = threading.Thread(target=run)
    worker.start()
    try:
        threading.Event().wait(0.3)
        assert src.tell() <= (SMALL.stream_queue_chunks + 3) * CHUNK
    finally:
        dst.go.set()
        worker.join()
    assert bytes(dst.out) == _encrypt(plaintext)[0]
    assert results[0].size == len(plaintext)


class _SlowRecordingWriter(io.RawIOBase):
    """Copies each write in two halves with a pause between, and keeps the object behind every buffer."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.owners: list[object] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b)
        self.owners.append(view.obj)
        half = len(view) // 2
        self.out += view[:half]
        threading.Event().wait(0.001)  # a reused-too-early buffer would change under us here
        self.out += view[half:]
        return len(view)


def test_output_buffers_reused_only_after_write(keystream_path: str) -> None:
    plaintext = os.urandom(48 * CHUNK + 7)
    reference = Cipher(algorithms.AES(VECTOR_KEY), modes.CTR(VECTOR_NONCE)).encryptor().update(plaintext)
    enc_dst = _SlowRecordingWriter()
    enc = encrypt_stream(
        io.BytesIO(plaintext),
        enc_dst,  # type: ignore[arg-type]
        VECTOR_KEY,
        VECTOR_NONCE,
        source_digest=_sha256(plaintext),
        source_size=len(plaintext),
        what="layer test",
        limits=SMALL,
    )
    assert bytes(enc_dst.out) == reference
    assert enc.ciphertext_digest == _sha256(reference)
    dec_dst = _SlowRecordingWriter()
    dec = decrypt_stream(
        io.BytesIO(reference),
        dec_dst,  # type: ignore[arg-type]
        VECTOR_KEY,
        VECTOR_NONCE,
        enc.hmac,
        source_digest=enc.ciphertext_digest,
        source_size=enc.size,
        what="layer test",
        limits=SMALL,
    )
    assert bytes(dec_dst.out) == plaintext
    assert dec.plaintext_digest == _sha256(plaintext)
    for dst in (enc_dst, dec_dst):
        distinct = len({id(owner) for owner in dst.owners})
        if keystream_path == "pooled":
            # Bounded memory: the keystream goes into a fixed pool of output buffers.
            assert distinct <= SMALL.stream_queue_chunks + 1
        else:
            assert distinct == len(dst.owners)
