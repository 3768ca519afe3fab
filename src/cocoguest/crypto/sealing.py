"""Primitives of CDH sealed secrets (guest-components.md §8.3): ES256 over P-256 JWKs, AES-256-GCM/CTR envelopes.

Invariants:
    * Signatures are JWS ES256: the raw 64-byte ``r || s`` over the signing input, never DER.
    * Only EC P-256 JWKs (``kty`` ``EC``, ``crv`` ``P-256``) are accepted as verification keys.
    * AES-GCM plaintext is returned only after the tag verified; A256CTR (upstream accepts it) has no tag.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cocoguest.errors import ConfigError, DecryptionIntegrityError, ProtocolError

_COORD_BYTES: Final = 32
GCM_IV_BYTES: Final = 12
CTR_IV_BYTES: Final = 16
DEK_BYTES: Final = 32


def b64u(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str, what: str) -> bytes:
    """Decode base64url with or without padding.

    Raises:
        ProtocolError: not base64url (names ``what``).
    """
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        msg = f"{what}: not base64url"
        raise ProtocolError(msg) from e


def generate_p256_jwk_pair(kid: str) -> tuple[dict[str, str], dict[str, str]]:
    """A new P-256 key as (private JWK, public JWK), both carrying ``kid`` and ``alg: ES256``."""
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()
    public = {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "kid": kid,
        "x": b64u(numbers.public_numbers.x.to_bytes(_COORD_BYTES, "big")),
        "y": b64u(numbers.public_numbers.y.to_bytes(_COORD_BYTES, "big")),
    }
    return {**public, "d": b64u(numbers.private_value.to_bytes(_COORD_BYTES, "big"))}, public


def _coordinate(jwk: Mapping[str, object], name: str, source: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        msg = f"{source}: JWK member {name!r} missing or not a string"
        raise ConfigError(msg)
    raw = b64u_decode(value, f"{source}: JWK member {name!r}")
    if len(raw) != _COORD_BYTES:
        msg = f"{source}: JWK member {name!r} is not 32 bytes"
        raise ConfigError(msg)
    return int.from_bytes(raw, "big")


def _check_p256(jwk: Mapping[str, object], source: str) -> None:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        msg = f"{source}: not an EC P-256 JWK (kty {str(jwk.get('kty'))[:16]!r}, crv {str(jwk.get('crv'))[:16]!r})"
        raise ConfigError(msg)


def _public_key(jwk: Mapping[str, object], source: str) -> ec.EllipticCurvePublicKey:
    _check_p256(jwk, source)
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            _coordinate(jwk, "x", source), _coordinate(jwk, "y", source), ec.SECP256R1()
        )
        return numbers.public_key()
    except ValueError as e:
        msg = f"{source}: the JWK's point is not on P-256"
        raise ConfigError(msg) from e


def es256_sign(private_jwk: Mapping[str, object], signing_input: bytes, source: str) -> bytes:
    """The raw ``r || s`` ES256 signature of ``signing_input`` with a private P-256 JWK.

    Raises:
        ConfigError: not a private P-256 JWK.
    """
    public = _public_key(private_jwk, source)
    try:
        key = ec.EllipticCurvePrivateNumbers(_coordinate(private_jwk, "d", source), public.public_numbers())
        private = key.private_key()
    except ValueError as e:
        msg = f"{source}: the JWK's private value does not match its public point"
        raise ConfigError(msg) from e
    r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_COORD_BYTES, "big") + s.to_bytes(_COORD_BYTES, "big")


def es256_verify(public_jwk: Mapping[str, object], signing_input: bytes, signature: bytes, source: str) -> bool:
    """Whether ``signature`` (raw ``r || s``) is a valid ES256 signature of ``signing_input``.

    Raises:
        ConfigError: ``public_jwk`` is not an EC P-256 JWK.
    """
    key = _public_key(public_jwk, source)
    if len(signature) != 2 * _COORD_BYTES:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:_COORD_BYTES], "big"), int.from_bytes(signature[_COORD_BYTES:], "big")
    )
    try:
        key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def new_dek() -> tuple[bytes, bytes]:
    """A random 32-byte data key and 12-byte GCM IV (as upstream's sealing tool)."""
    return os.urandom(DEK_BYTES), os.urandom(GCM_IV_BYTES)


def a256gcm_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """``ciphertext || tag`` with no AAD (as upstream's envelopes)."""
    return AESGCM(key).encrypt(iv, plaintext, None)


def envelope_decrypt(wrap_type: str, key: bytes, iv: bytes, untrusted_data: bytes, what: str) -> bytes:
    """Open an envelope secret's data: ``A256GCM`` (12-byte IV, tag appended, no AAD) or ``A256CTR`` (16-byte IV).

    Raises:
        ProtocolError: unknown wrap type, wrong key or IV length.
        DecryptionIntegrityError: the GCM tag does not verify.
    """
    if len(key) != DEK_BYTES:
        msg = f"{what}: the data key is {len(key)} bytes, not 32"
        raise ProtocolError(msg)
    if wrap_type == "A256GCM":
        if len(iv) != GCM_IV_BYTES:
            msg = f"{what}: A256GCM needs a 12-byte iv, got {len(iv)}"
            raise ProtocolError(msg)
        try:
            return AESGCM(key).decrypt(iv, untrusted_data, None)
        except InvalidTag as e:
            msg = f"{what}: the data does not authenticate under its key (altered or wrong key)"
            raise DecryptionIntegrityError(msg) from e
    if wrap_type == "A256CTR":
        if len(iv) != CTR_IV_BYTES:
            msg = f"{what}: A256CTR needs a 16-byte iv, got {len(iv)}"
            raise ProtocolError(msg)
        decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
        return decryptor.update(untrusted_data) + decryptor.finalize()
    msg = f"{what}: unknown wrap_type {wrap_type[:32]!r} (known: A256GCM, A256CTR)"
    raise ProtocolError(msg)
