"""Streaming layer encryption and decryption with AES_256_CTR_HMAC_SHA256 (ocicrypt.md §4.2).

Every byte needs three SHA-256-class hashes (the source digest, the HMAC over the ciphertext and the
digest of what is written) plus AES-CTR and the IO. hashlib, hmac (OpenSSL) and pyca/cryptography release
the GIL on large buffers, so the work runs as a small pipeline: the calling thread reads a chunk and applies
the keystream; one worker thread per hash and one for the write consume the chunks from bounded queues.
Encryption and decryption run the same pipeline (one hash on the input side and two on the output side, or
two and one); only which bytes each hash sees differs.

Both input and output chunks live in fixed pools of reused buffers: the keystream is written into a pooled
buffer (when the cipher offers ``keystream_xor_into``) instead of a fresh 1 MiB ``bytes`` per chunk, which
would cost a malloc, a zero-fill and, on a VM whose free memory is handed back to the host, a page fault
per 4 KiB on the pipeline's one serial stage.

Invariants:
    * :func:`encrypt_stream` returns only if the plaintext read from ``src`` has exactly the declared size
      and digest.
    * :func:`decrypt_stream` returns only if the ciphertext read from ``src`` has exactly the declared size
      and digest AND its HMAC verified. Plaintext written to ``dst`` before it returns is
      UNAUTHENTICATED: ``dst`` must be a private staging file that the caller discards on any exception.
    * Memory is bounded: at most ``stream_queue_chunks`` input and ``stream_queue_chunks + 1`` output
      chunks of ``stream_chunk_bytes`` each are alive, whatever the blob size.
    * A pooled buffer is reused only after every sink it was given to has returned (``dst.write`` and
      the hashes must not keep a reference to their argument, as the io contract says).
    * Every worker thread is joined before either function returns or raises; the first exception raised
      in a worker is re-raised in the caller (a verification error of the caller's own thread wins).
    * At most ``source_size + 1`` (or ``max_blob_bytes + 1``) bytes are read from ``src``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from cocoguest.crypto.layer_cipher import CtrHmacDecryptor, CtrHmacEncryptor
from cocoguest.digest import Digest
from cocoguest.errors import DigestMismatchError, SizeMismatchError
from cocoguest.limits import DEFAULT_LIMITS, Limits

_Buffer = bytes | memoryview
_Sink = Callable[[_Buffer], object]
_Cipher = CtrHmacEncryptor | CtrHmacDecryptor
_TransformInto = Callable[[_Buffer, bytearray], int]


@dataclass(frozen=True, slots=True)
class EncryptResult:
    """The outcome of :func:`encrypt_stream`."""

    hmac: bytes
    """HMAC-SHA256 over the ciphertext (for the public options)."""
    ciphertext_digest: Digest
    """sha256 of the ciphertext written to ``dst``."""
    size: int
    """Bytes written (plaintext and ciphertext have the same size)."""


@dataclass(frozen=True, slots=True)
class DecryptResult:
    """The outcome of :func:`decrypt_stream`."""

    plaintext_digest: Digest
    """sha256 of the plaintext written to ``dst``."""
    size: int
    """Bytes written."""


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    nonce: bytes,
    *,
    source_digest: Digest,
    source_size: int | None,
    what: str,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
) -> EncryptResult:
    """Encrypt ``src`` (read to EOF) into ``dst``, verifying the plaintext's digest and size.

    Args:
        src: the plaintext blob.
        dst: receives the ciphertext (same length).
        key: the 32-byte layer key.
        nonce: the 16-byte nonce (initial counter block).
        source_digest: the digest the plaintext must have (any supported algorithm).
        source_size: the exact plaintext size, or None (then capped by ``limits.max_blob_bytes``).
        what: names the layer in error messages.
        limits: chunk size and queue depth of the pipeline, and the blob size cap.
        progress: called from the calling thread with the byte count of each chunk read.

    Returns:
        The HMAC for the public options, the sha256 digest and the size of the ciphertext.

    Raises:
        SizeMismatchError: the plaintext is shorter or longer than ``source_size`` (or the blob limit).
        DigestMismatchError: the plaintext does not hash to ``source_digest``.
        OSError: reading ``src`` or writing ``dst`` failed (any exception of ``src``/``dst`` propagates).
    """
    cipher = CtrHmacEncryptor(key, nonce)
    src_hash = source_digest.hasher()
    dst_hash = hashlib.sha256()
    # Encrypt-then-MAC: the HMAC covers the ciphertext (ocicrypt.md §4.2).
    total = _pump(
        src,
        dst,
        cipher,
        in_sinks=(src_hash.update,),
        out_sinks=(cipher.mac_update, dst_hash.update),
        source_digest=source_digest,
        src_hash=src_hash,
        source_size=source_size,
        what=what,
        limits=limits,
        progress=progress,
    )
    return EncryptResult(cipher.finalize(), Digest("sha256", dst_hash.hexdigest()), total)


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    nonce: bytes,
    expected_hmac: bytes,
    *,
    source_digest: Digest,
    source_size: int | None,
    what: str,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
) -> DecryptResult:
    """Decrypt ``src`` (read to EOF) into ``dst``; verify the ciphertext's digest, size and HMAC.

    SECURITY: the plaintext in ``dst`` is UNAUTHENTICATED until this function returns; ``dst`` must be a
    private staging file that the caller discards on any exception.

    Args:
        src: the encrypted blob.
        dst: a private staging file that receives the plaintext.
        key: the 32-byte layer key.
        nonce: the 16-byte nonce.
        expected_hmac: the 32-byte HMAC from the public options.
        source_digest: the digest the ciphertext must have (the encrypted layer's descriptor).
        source_size: the exact ciphertext size, or None (then capped by ``limits.max_blob_bytes``).
        what: names the layer in error messages.
        limits: chunk size and queue depth of the pipeline, and the blob size cap.
        progress: called from the calling thread with the byte count of each chunk read.

    Returns:
        The sha256 digest and the size of the plaintext.

    Raises:
        SizeMismatchError: the ciphertext is shorter or longer than ``source_size`` (or the blob limit).
        DigestMismatchError: the ciphertext does not hash to ``source_digest``.
        DecryptionIntegrityError: the HMAC does not match (tampered ciphertext, wrong key or wrong HMAC).
        OSError: reading ``src`` or writing ``dst`` failed (any exception of ``src``/``dst`` propagates).
    """
    cipher = CtrHmacDecryptor(key, nonce, expected_hmac, what)
    src_hash = source_digest.hasher()
    dst_hash = hashlib.sha256()
    total = _pump(
        src,
        dst,
        cipher,
        in_sinks=(src_hash.update, cipher.mac_update),
        out_sinks=(dst_hash.update,),
        source_digest=source_digest,
        src_hash=src_hash,
        source_size=source_size,
        what=what,
        limits=limits,
        progress=progress,
    )
    # SECURITY: only after size, digest and HMAC all passed is the plaintext released to the caller.
    cipher.finalize()
    return DecryptResult(Digest("sha256", dst_hash.hexdigest()), total)


class _Chunk:
    """A reusable buffer, returned to its pool when every holder has released it."""

    __slots__ = ("_lock", "_pending", "_pool", "buffer", "view")

    def __init__(self, size: int, pool: queue.SimpleQueue[_Chunk]) -> None:
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self._pool = pool
        self._lock = threading.Lock()
        self._pending = 0

    def hold(self, holders: int) -> None:
        self._pending = holders

    def release(self) -> None:
        with self._lock:
            self._pending -= 1
            done = self._pending == 0
        if done:
            self._pool.put(self)


class _Pipeline:
    """Worker threads, one per sink, each fed by a bounded queue; records the first worker error."""

    def __init__(self, sinks: tuple[_Sink, ...], depth: int) -> None:
        self.error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._queues: list[queue.Queue[tuple[_Buffer, _Chunk | None] | None]] = []
        self._threads: list[threading.Thread] = []
        for sink in sinks:
            q: queue.Queue[tuple[_Buffer, _Chunk | None] | None] = queue.Queue(maxsize=depth)
            thread = threading.Thread(target=self._work, args=(sink, q), name="ocicrypt-stream", daemon=True)
            self._queues.append(q)
            self._threads.append(thread)

    def __enter__(self) -> _Pipeline:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Workers always drain their queue (even after an error), so these puts cannot block forever.
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()

    def feed(self, data: _Buffer, chunk: _Chunk | None) -> None:
        """Give ``data`` to every sink; ``chunk`` (if any) is released once per sink."""
        for q in self._queues:
            q.put((data, chunk))

    @property
    def width(self) -> int:
        return len(self._queues)

    def _work(self, sink: _Sink, q: queue.Queue[tuple[_Buffer, _Chunk | None] | None]) -> None:
        while (item := q.get()) is not None:
            data, chunk = item
            try:
                if self.error is None:
                    sink(data)
            except BaseException as e:  # noqa: BLE001 — re-raised in the calling thread
                with self._error_lock:
                    if self.error is None:
                        self.error = e
            finally:
                if chunk is not None:
                    chunk.release()


class _Keystream:
    """Applies the keystream, into pooled output buffers when the cipher can write in place."""

    def __init__(self, cipher: _Cipher, chunk_bytes: int, buffers: int) -> None:
        self._allocate = cipher.keystream_xor
        self._into: _TransformInto | None = getattr(cipher, "keystream_xor_into", None)
        self._pool: queue.SimpleQueue[_Chunk] = queue.SimpleQueue()
        if self._into is not None:
            for _ in range(buffers):
                self._pool.put(_Chunk(chunk_bytes, self._pool))

    def apply(self, data: _Buffer, holders: int) -> tuple[_Buffer, _Chunk | None]:
        """``data`` with the keystream applied, and the pooled chunk holding it (one release per holder)."""
        if self._into is None:
            return self._allocate(data), None
        chunk = self._pool.get()
        out = chunk.view[: self._into(data, chunk.buffer)]
        chunk.hold(holders)
        return out, chunk


def _write_all(dst: BinaryIO) -> _Sink:
    def write(data: _Buffer) -> None:
        view = memoryview(data)
        while view:
            written = dst.write(view)
            if not written:  # pragma: no cover — defensive: a non-blocking raw stream (None) or a stuck one
                msg = "the destination accepted no bytes"
                raise OSError(msg)
            view = view[written:]

    return write


def _advise_sequential(src: BinaryIO) -> None:
    """Tell the kernel a regular-file source is read once, front to back (bigger readahead)."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        fd = src.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _pump(
    src: BinaryIO,
    dst: BinaryIO,
    cipher: _Cipher,
    *,
    in_sinks: tuple[_Sink, ...],
    out_sinks: tuple[_Sink, ...],
    source_digest: Digest,
    src_hash: hashlib._Hash,
    source_size: int | None,
    what: str,
    limits: Limits,
    progress: Callable[[int], None] | None,
) -> int:
    """Run ``src`` through ``cipher``'s keystream into the sinks and ``dst``; verify size and digest of ``src``."""
    if source_size is not None and not 0 <= source_size <= limits.max_blob_bytes:
        msg = f"{what}: declared size {source_size} is outside 0..{limits.max_blob_bytes}"
        raise SizeMismatchError(msg)
    cap = limits.max_blob_bytes if source_size is None else source_size
    _advise_sequential(src)
    total = _run(
        src,
        dst,
        cipher,
        in_sinks=in_sinks,
        out_sinks=out_sinks,
        cap=cap,
        limits=limits,
        progress=progress,
        what=what,
        source_size=source_size,
    )
    if source_size is not None and total != source_size:
        msg = f"{what}: {total} bytes, its descriptor declares {source_size}"
        raise SizeMismatchError(msg)
    actual = Digest(source_digest.algorithm, src_hash.hexdigest())
    # SECURITY: the source must be exactly the content its descriptor names.
    if actual != source_digest:
        msg = f"{what}: content has digest {actual}, expected {source_digest}"
        raise DigestMismatchError(msg)
    return total


def _run(
    src: BinaryIO,
    dst: BinaryIO,
    cipher: _Cipher,
    *,
    in_sinks: tuple[_Sink, ...],
    out_sinks: tuple[_Sink, ...],
    cap: int,
    limits: Limits,
    progress: Callable[[int], None] | None,
    what: str,
    source_size: int | None,
) -> int:
    """The pipeline proper: returns the bytes read; re-raises the first worker error."""
    chunk_bytes = limits.stream_chunk_bytes
    depth = max(1, limits.stream_queue_chunks)
    readinto: Callable[[memoryview], int | None] | None = getattr(src, "readinto", None)
    pool: queue.SimpleQueue[_Chunk] = queue.SimpleQueue()
    if readinto is not None:
        for _ in range(depth):
            pool.put(_Chunk(chunk_bytes, pool))
    # One buffer more than the output queues hold, so a worker can still be busy with the oldest chunk.
    keystream = _Keystream(cipher, chunk_bytes, depth + 1)
    total = 0
    with _Pipeline(in_sinks, depth) as ins, _Pipeline((*out_sinks, _write_all(dst)), depth) as outs:
        while ins.error is None and outs.error is None:
            # Read at most one byte past the cap, so an overlong source is detected without reading it all.
            want = min(chunk_bytes, cap - total + 1)
            chunk: _Chunk | None = None
            if readinto is not None:
                chunk = pool.get()
                data: _Buffer = chunk.view[: _fill(readinto, chunk.view[:want])]
            else:
                data = src.read(want)
            if not data:
                if chunk is not None:
                    pool.put(chunk)
                break
            total += len(data)
            if total > cap:
                if source_size is None:
                    msg = f"{what}: longer than the {cap}-byte blob limit"
                else:
                    msg = f"{what}: longer than the {cap} bytes its descriptor declares"
                raise SizeMismatchError(msg)
            if chunk is not None:
                # The calling thread holds the chunk too, until the keystream has been applied.
                chunk.hold(ins.width + 1)
            ins.feed(data, chunk)
            try:
                out, out_chunk = keystream.apply(data, outs.width)
            finally:
                if chunk is not None:
                    chunk.release()
            outs.feed(out, out_chunk)
            if progress is not None:
                progress(len(data))
    for error in (ins.error, outs.error):
        if error is not None:
            raise error
    return total


def _fill(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Read until ``view`` is full or EOF; returns the byte count (short reads are retried)."""
    filled = 0
    while filled < len(view):
        n = readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled
