"""The ocicrypt layer cipher ``AES_256_CTR_HMAC_SHA256`` (ocicrypt.md §4.2), as incremental objects.

AES-256-CTR with the whole 16-byte nonce as the initial 128-bit big-endian counter block, and
HMAC-SHA256 keyed with the same 32-byte key over the entire ciphertext (encrypt-then-MAC).

Invariants:
    * Keys are exactly 32 bytes and nonces exactly 16 bytes; anything else is refused.
    * :meth:`CtrHmacDecryptor.finalize` raises :class:`DecryptionIntegrityError` unless the HMAC over all
      ciphertext fed so far equals the expected one (constant-time comparison). Callers must not release
      plaintext before it returns.
"""

from __future__ import annotations

import hmac
import os
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cocoguest.errors import DecryptionIntegrityError

CIPHER_NAME: Final = "AES_256_CTR_HMAC_SHA256"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 16
HMAC_BYTES: Final = 32


def new_key() -> bytes:
    """A fresh random 32-byte layer key."""
    return os.urandom(KEY_BYTES)


def new_nonce() -> bytes:
    """A fresh random 16-byte nonce."""
    return os.urandom(NONCE_BYTES)


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_BYTES:
        msg = f"layer key must be {KEY_BYTES} bytes, got {len(key)}"
        raise ValueError(msg)
    if len(nonce) != NONCE_BYTES:
        msg = f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}"
        raise ValueError(msg)


class _CtrHmac:
    def __init__(self, key: bytes, nonce: bytes) -> None:
        _check(key, nonce)
        # The CTR keystream is symmetric: the same context encrypts and decrypts.
        self._ctr = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        self._mac = hmac.new(key, digestmod="sha256")

    def keystream_xor(self, data: bytes | memoryview) -> bytes:
        """Apply the keystream to ``data``."""
        return self._ctr.update(data)

    def keystream_xor_into(self, data: bytes | memoryview, out: bytearray | memoryview) -> int:
        """Apply the keystream to ``data`` into ``out`` (at least ``len(data)`` bytes); returns the count."""
        return self._ctr.update_into(data, out)


class CtrHmacEncryptor(_CtrHmac):
    """Encrypts a layer incrementally; :meth:`finalize` returns the HMAC for the public options."""

    def update(self, plaintext: bytes | memoryview) -> bytes:
        """Encrypt the next piece; returns ciphertext of the same length."""
        ciphertext = self._ctr.update(plaintext)
        self._mac.update(ciphertext)
        return ciphertext

    def mac_update(self, ciphertext: bytes | memoryview) -> None:
        """Feed ciphertext produced by :meth:`keystream_xor` to the HMAC (pipelined use)."""
        self._mac.update(ciphertext)

    def finalize(self) -> bytes:
        """The 32-byte HMAC over all ciphertext."""
        self._ctr.finalize()
        return self._mac.digest()


class CtrHmacDecryptor(_CtrHmac):
    """Decrypts a layer incrementally and authenticates it at :meth:`finalize`.

    ``what`` names the layer in the error message.
    """

    def __init__(self, key: bytes, nonce: bytes, expected_hmac: bytes, what: str) -> None:
        super().__init__(key, nonce)
        if len(expected_hmac) != HMAC_BYTES:
            msg = f"{what}: the HMAC in the public options is {len(expected_hmac)} bytes, expected {HMAC_BYTES}"
            raise DecryptionIntegrityError(msg)
        self._expected = expected_hmac
        self._what = what

    def update(self, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt the next piece. The plaintext is NOT authenticated until :meth:`finalize`."""
        self._mac.update(ciphertext)
        return self._ctr.update(ciphertext)

    def mac_update(self, ciphertext: bytes | memoryview) -> None:
        """Feed ciphertext to the HMAC only (pipelined use with :meth:`keystream_xor`)."""
        self._mac.update(ciphertext)

    def finalize(self) -> None:
        """Check the HMAC.

        Raises:
            DecryptionIntegrityError: the ciphertext, key or HMAC was changed.
        """
        self._ctr.finalize()
        # SECURITY: constant-time comparison; a mismatch means tampering or a wrong key.
        if not hmac.compare_digest(self._mac.digest(), self._expected):
            msg = f"{self._what}: HMAC mismatch, the encrypted layer or its metadata was modified"
            raise DecryptionIntegrityError(msg)
