"""Software RSA-OAEP as ocicrypt's PKCS#11 wrapper uses it (ocicrypt.md §5.4).

OAEP with SHA-1 or SHA-256, MGF1 with the same hash, and an empty label: Go ocicrypt's
``rsaPublicEncryptOAEP``. A PKCS#11 recipient given as a plain SubjectPublicKeyInfo is encrypted here;
token keys use the same parameters inside the token (:mod:`cocoguest.crypto.pkcs11_token`).

Invariants:
    * Only the hash names ``sha1`` and ``sha256`` are accepted; the MGF1 hash always equals the OAEP hash.
    * A plaintext longer than the OAEP capacity of the key (``k - 2*hLen - 2`` bytes, RFC 8017 §7.1.1) is
      refused with a :class:`ConfigError` naming the key, its size and the hash, before any encryption.
    * Decryption failures are reported as :class:`KeyUnwrapError` without saying why OAEP decoding failed
      (no padding oracle detail).
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cocoguest.errors import ConfigError, KeyUnwrapError

OAEP_HASHES: Final = ("sha1", "sha256")
"""The OAEP hash names ocicrypt writes into the ``hash`` field of a PKCS#11 recipient."""

_DIGEST_BYTES: Final = {"sha1": 20, "sha256": 32}


def _check_hash(hash_name: str) -> None:
    if hash_name not in _DIGEST_BYTES:
        msg = f"unsupported OAEP hash {hash_name!r} (use {' or '.join(OAEP_HASHES)})"
        raise ValueError(msg)


def _padding(hash_name: str) -> padding.OAEP:
    _check_hash(hash_name)
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if hash_name == "sha1" else hashes.SHA256()  # noqa: S303  (OAEP-SHA1 is what ocicrypt writes; not used as a signature hash)
    return padding.OAEP(mgf=padding.MGF1(algorithm=algorithm), algorithm=algorithm, label=None)


def oaep_capacity(key_bits: int, hash_name: str) -> int:
    """The largest plaintext, in bytes, that RSA-OAEP with ``hash_name`` can encrypt under a ``key_bits`` key.

    Raises:
        ValueError: ``hash_name`` is not ``sha1`` or ``sha256`` (programmer error).
    """
    _check_hash(hash_name)
    # RFC 8017 §7.1.1: mLen <= k - 2*hLen - 2, with k the modulus length in octets.
    return (key_bits + 7) // 8 - 2 * _DIGEST_BYTES[hash_name] - 2


def check_capacity(key_bits: int, hash_name: str, length: int, key_name: str) -> None:
    """Refuse a plaintext of ``length`` bytes that does not fit one OAEP block.

    Raises:
        ConfigError: the plaintext is too long for this key and hash; the message names ``key_name``.
    """
    capacity = oaep_capacity(key_bits, hash_name)
    if length > capacity:
        msg = (
            f"{key_name}: an RSA-{key_bits} key with OAEP-{hash_name} holds at most {max(capacity, 0)} bytes,"
            f" the layer key options are {length} bytes; use an RSA key of 3072 bits or more"
            + (" or OCICRYPT_OAEP_HASHALG=sha1" if hash_name != "sha1" else "")
        )
        raise ConfigError(msg)


def oaep_encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes, hash_name: str, key_name: str) -> bytes:
    """RSA-OAEP encrypt ``plaintext`` (MGF1 with the same hash, empty label).

    Raises:
        ConfigError: the plaintext exceeds the OAEP capacity of the key (names ``key_name``).
        ValueError: ``hash_name`` is not ``sha1`` or ``sha256`` (programmer error).
    """
    check_capacity(public_key.key_size, hash_name, len(plaintext), key_name)
    return public_key.encrypt(plaintext, _padding(hash_name))


def oaep_decrypt(private_key: rsa.RSAPrivateKey, ciphertext: bytes, hash_name: str, key_name: str) -> bytes:
    """RSA-OAEP decrypt ``ciphertext`` with a software key.

    Raises:
        KeyUnwrapError: the ciphertext was not made for this key and hash, or is corrupt.
        ValueError: ``hash_name`` is not ``sha1`` or ``sha256`` (programmer error).
    """
    oaep = _padding(hash_name)
    try:
        return private_key.decrypt(ciphertext, oaep)
    except ValueError as e:
        # SECURITY: one generic message for every OAEP failure (no padding-oracle detail).
        msg = f"{key_name}: RSA-OAEP-{hash_name} decryption failed (wrong key or corrupt data)"
        raise KeyUnwrapError(msg) from e
