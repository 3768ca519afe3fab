"""Sealing layer-key options under a KEK: the encrypting half of AnnotationPacket wrap types (guest-components.md §7.2).

``A256GCM``: AES-256-GCM, 12-byte IV, no AAD, output ``ciphertext || 16-byte tag``. ``A256CTR``: AES-256-CTR,
16-byte IV, NOT authenticated (kept for upstream compatibility; the decrypting side warns on every use).
The decrypting half is :mod:`cocoguest.crypto.tee_crypto` (``aes256_gcm_decrypt``, ``aes256_ctr_decrypt``).

Invariants:
    * The KEK is exactly 32 bytes and the IV exactly the wrap type's length, else :class:`ProtocolError`.
    * IVs come from :func:`random_iv` (the OS CSPRNG) unless a caller passes one (sample mode: all zero).
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.errors import ProtocolError, UnsupportedError

KEK_BYTES: Final = 32
IV_BYTES: Final = {"A256GCM": 12, "A256CTR": 16}
"""Wrap type -> IV length in bytes."""


def random_kek() -> bytes:
    """A fresh 32-byte KEK from the OS CSPRNG."""
    return os.urandom(KEK_BYTES)


def random_iv(wrap_type: str) -> bytes:
    """A fresh IV of the length ``wrap_type`` needs.

    Raises:
        UnsupportedError: an unknown wrap type.
    """
    return os.urandom(_iv_length(wrap_type))


def _iv_length(wrap_type: str) -> int:
    length = IV_BYTES.get(wrap_type)
    if length is None:
        msg = f"wrap type {wrap_type[:32]!r} is not supported (A256GCM, A256CTR)"
        raise UnsupportedError(msg)
    return length


def seal(wrap_type: str, kek: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """``plaintext`` encrypted under ``kek`` with ``iv`` as ``wrap_type`` prescribes.

    Raises:
        UnsupportedError: an unknown wrap type.
        ProtocolError: a KEK that is not 32 bytes, or an IV of the wrong length.
    """
    length = _iv_length(wrap_type)
    if len(kek) != KEK_BYTES or len(iv) != length:
        msg = f"{wrap_type} needs a {KEK_BYTES}-byte KEK and a {length}-byte iv (got {len(kek)}, {len(iv)})"
        raise ProtocolError(msg)
    if wrap_type == "A256GCM":
        return AESGCM(kek).encrypt(iv, plaintext, None)
    # SECURITY: A256CTR has no integrity; offered only because upstream and its users ask for it by name.
    encryptor = Cipher(algorithms.AES(kek), modes.CTR(iv)).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()
