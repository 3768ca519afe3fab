"""The TEE key of the KBS protocol and the primitives behind KBS resource JWEs (kbs-protocol.md §3, §5).

Key kinds: EC P-256 (the default), EC P-521 and RSA (2048-bit, as guest-components). Decryption of a KBS
resource response, given its already-parsed members:

* ``ECDH-ES+A256KW`` (RFC 7518 §4.6): Z = ECDH(our key, ``epk``), KEK = Concat KDF SHA-256 with AlgorithmID
  ``"ECDH-ES+A256KW"``, empty PartyU/VInfo, 256 bits; CEK = AES-256-KW unwrap(KEK, ``encrypted_key``);
* ``RSA-OAEP-256``: RSAES-OAEP, SHA-256, MGF1-SHA-256, empty label;
* ``RSA1_5``: RSAES-PKCS1-v1_5 (deprecated; only when the guest chose an RSA1_5 key);
* content: AES-256-GCM with AAD = the ASCII bytes of the raw ``protected`` string (RFC 7516 §5.1 step 14).

Invariants:
    * Plaintext is returned only after the AES-GCM tag verified under a CEK that only this key could recover.
    * Every failure is a :class:`DecryptionIntegrityError` (or :class:`ProtocolError` for members of the wrong
      size) naming ``what``; no padding-oracle distinction is exposed for RSA1_5 (RFC 7516 §11.5).
    * The ``epk`` point is checked to be on the curve of our own key before any exchange.
"""

from __future__ import annotations

import os
import struct
from typing import Final

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from cocoguest.errors import ConfigError, DecryptionIntegrityError, ProtocolError

TeePrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""An opaque TEE private key; only this module looks inside."""

CURVES: Final = {"P-256": ec.SECP256R1(), "P-521": ec.SECP521R1()}
"""The EC curves of the KBS protocol, by JWK ``crv`` name."""
RSA_BITS: Final = 2048
"""guest-components' RSA TEE key size."""
_RSA_PUBLIC_EXPONENT: Final = 65537
_CEK_BYTES: Final = 32
_GCM_IV_BYTES: Final = 12
_GCM_TAG_BYTES: Final = 16
_CTR_IV_BYTES: Final = 16
_ECDH_ALG: Final = "ECDH-ES+A256KW"


def generate(kind: str) -> TeePrivateKey:
    """A fresh private key: ``"P-256"``, ``"P-521"`` or ``"RSA"``.

    Raises:
        ValueError: unknown ``kind`` (programmer error).
    """
    if kind in CURVES:
        return ec.generate_private_key(CURVES[kind])
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=RSA_BITS)
    msg = f"unknown TEE key kind {kind!r}"
    raise ValueError(msg)


def kind_of(key: TeePrivateKey) -> str:
    """``"P-256"``, ``"P-521"`` or ``"RSA"``.

    Raises:
        ConfigError: an EC key on another curve.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    for name, curve in CURVES.items():
        if key.curve.name == curve.name:
            return name
    msg = f"TEE key: EC curve {key.curve.name} is not supported (use P-256 or P-521)"
    raise ConfigError(msg)


def _coordinate_bytes(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def public_members(key: TeePrivateKey) -> dict[str, bytes]:
    """The raw public members: ``{"x","y"}`` (fixed-length big-endian, RFC 7518 §6.2.1.2) or ``{"n","e"}``."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {
            "n": numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
            "e": numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
        }
    size = _coordinate_bytes(key.curve)
    point = key.public_key().public_numbers()
    return {"x": point.x.to_bytes(size, "big"), "y": point.y.to_bytes(size, "big")}


def to_pem(key: TeePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the AA hands the key to CDH over a local socket, as upstream)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def from_pem(data: bytes, source: str) -> TeePrivateKey:
    """A TEE private key from PEM (PKCS#8, PKCS#1 RSA or SEC1 EC), as ``TeeKeyPair::from_pem`` accepts.

    Raises:
        ConfigError: not an unencrypted PEM private key, or not RSA / EC P-256 / P-521 (names ``source``).
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        msg = f"{source}: not an unencrypted PEM private key"
        raise ConfigError(msg) from e
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        kind_of(key)
        return key
    msg = f"{source}: TEE key must be RSA or EC P-256/P-521, not {type(key).__name__}"
    raise ConfigError(msg)


def _concat_kdf(shared: bytes) -> bytes:
    # RFC 7518 §4.6.2: AlgorithmID || PartyUInfo (empty) || PartyVInfo (empty) || SuppPubInfo (keydatalen).
    alg_id = _ECDH_ALG.encode("ascii")
    other_info = struct.pack(">I", len(alg_id)) + alg_id + struct.pack(">II", 0, 0) + struct.pack(">I", _CEK_BYTES * 8)
    return ConcatKDFHash(hashes.SHA256(), length=_CEK_BYTES, otherinfo=other_info).derive(shared)


def _ecdh_cek(
    key: TeePrivateKey, untrusted_crv: str, untrusted_x: bytes, untrusted_y: bytes, encrypted_key: bytes, what: str
) -> bytes:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        msg = f"{what}: ECDH-ES+A256KW JWE, but this guest's TEE key is RSA (not encrypted to this guest's key)"
        raise DecryptionIntegrityError(msg)
    curve = CURVES.get(untrusted_crv)
    if curve is None or curve.name != key.curve.name:
        msg = f"{what}: epk curve {untrusted_crv[:16]!r} is not this guest's TEE key curve (not encrypted to it)"
        raise DecryptionIntegrityError(msg)
    size = _coordinate_bytes(curve)
    if len(untrusted_x) != size or len(untrusted_y) != size:
        msg = f"{what}: epk coordinates must be {size} bytes each"
        raise ProtocolError(msg)
    try:
        # SECURITY: from_encoded_point checks that the point is on our curve (no invalid-curve attack).
        epk = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + untrusted_x + untrusted_y)
        shared = key.exchange(ec.ECDH(), epk)
    except ValueError as e:
        msg = f"{what}: epk is not a point on {untrusted_crv}"
        raise DecryptionIntegrityError(msg) from e
    try:
        return aes_key_unwrap(_concat_kdf(shared), encrypted_key)
    except (InvalidUnwrap, ValueError) as e:
        # SECURITY: the AES key wrap integrity check fails unless the KBS wrapped for OUR public key.
        msg = f"{what}: key unwrap failed: the resource is not encrypted to this guest's TEE key (or was altered)"
        raise DecryptionIntegrityError(msg) from e


def _rsa_cek(key: TeePrivateKey, alg: str, encrypted_key: bytes, what: str) -> bytes:
    if not isinstance(key, rsa.RSAPrivateKey):
        msg = f"{what}: {alg} JWE, but this guest's TEE key is EC (not encrypted to this guest's key)"
        raise DecryptionIntegrityError(msg)
    if alg == "RSA-OAEP-256":
        sha256 = hashes.SHA256()
        try:
            return key.decrypt(encrypted_key, padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None))
        except ValueError as e:
            msg = f"{what}: RSA-OAEP-256 decryption failed: not encrypted to this guest's TEE key (or altered)"
            raise DecryptionIntegrityError(msg) from e
    try:
        return key.decrypt(encrypted_key, padding.PKCS1v15())
    except ValueError:
        # SECURITY: RFC 7516 §11.5 / RFC 3218: on a PKCS#1 v1.5 failure continue with a random CEK so that the
        # failure surfaces as a GCM tag failure, indistinguishable from a bad ciphertext (no padding oracle).
        return os.urandom(_CEK_BYTES)


def decrypt_response(
    key: TeePrivateKey,
    *,
    alg: str,
    untrusted_protected: str,
    untrusted_epk: tuple[str, bytes, bytes] | None,
    encrypted_key: bytes,
    iv: bytes,
    ciphertext: bytes,
    tag: bytes,
    what: str,
) -> bytes:
    """Decrypt a KBS resource JWE with this guest's TEE key.

    Args:
        key: this guest's TEE private key.
        alg: ``ECDH-ES+A256KW``, ``RSA-OAEP-256`` or ``RSA1_5`` (the caller checked the header).
        untrusted_protected: the raw ``protected`` member (base64url text): the AAD.
        untrusted_epk: ``(crv, x, y)`` of the ephemeral key, for ECDH-ES.
        encrypted_key, iv, ciphertext, tag: decoded JWE members.
        what: names the resource in messages.

    Returns:
        The authenticated plaintext.

    Raises:
        DecryptionIntegrityError: not encrypted to this key, or the JWE was altered.
        ProtocolError: a member has the wrong size or the header is inconsistent.
    """
    if len(iv) != _GCM_IV_BYTES or len(tag) != _GCM_TAG_BYTES:
        msg = f"{what}: A256GCM needs a {_GCM_IV_BYTES}-byte iv and a {_GCM_TAG_BYTES}-byte tag"
        raise ProtocolError(msg)
    if alg == _ECDH_ALG:
        if untrusted_epk is None:
            msg = f"{what}: ECDH-ES+A256KW JWE without an epk"
            raise ProtocolError(msg)
        cek = _ecdh_cek(key, *untrusted_epk, encrypted_key, what)
    elif alg in ("RSA-OAEP-256", "RSA1_5"):
        cek = _rsa_cek(key, alg, encrypted_key, what)
    else:
        msg = f"{what}: key management algorithm {alg[:32]!r} is not supported"
        raise ProtocolError(msg)
    if len(cek) != _CEK_BYTES:
        # RSA1_5 may decrypt to a wrong length: same path as a bad tag (no oracle).
        cek = os.urandom(_CEK_BYTES)
    try:
        return AESGCM(cek).decrypt(iv, ciphertext + tag, untrusted_protected.encode("ascii"))
    except InvalidTag as e:
        msg = f"{what}: AES-GCM tag check failed: the resource was altered or not encrypted to this guest's TEE key"
        raise DecryptionIntegrityError(msg) from e


def aes256_gcm_decrypt(key: bytes, iv: bytes, ciphertext_and_tag: bytes, what: str) -> bytes:
    """AES-256-GCM decryption without AAD; the 16-byte tag is the end of ``ciphertext_and_tag``.

    Raises:
        ProtocolError: key not 32 bytes, IV not 12 bytes, or input shorter than a tag.
        DecryptionIntegrityError: the tag does not verify (wrong key or altered data).
    """
    if len(key) != _CEK_BYTES or len(iv) != _GCM_IV_BYTES or len(ciphertext_and_tag) < _GCM_TAG_BYTES:
        msg = (
            f"{what}: A256GCM needs a 32-byte key, a 12-byte iv and at least 16 bytes of data "
            f"(got {len(key)}, {len(iv)}, {len(ciphertext_and_tag)})"
        )
        raise ProtocolError(msg)
    try:
        return AESGCM(key).decrypt(iv, ciphertext_and_tag, None)
    except InvalidTag as e:
        msg = f"{what}: AES-GCM tag check failed (wrong key, or the wrapped data was altered)"
        raise DecryptionIntegrityError(msg) from e


def aes256_ctr_decrypt(key: bytes, iv: bytes, ciphertext: bytes, what: str) -> bytes:
    """AES-256-CTR decryption (NOT authenticated; the caller warns).

    Raises:
        ProtocolError: key not 32 bytes or IV not 16 bytes.
    """
    if len(key) != _CEK_BYTES or len(iv) != _CTR_IV_BYTES:
        msg = f"{what}: A256CTR needs a 32-byte key and a 16-byte iv (got {len(key)}, {len(iv)})"
        raise ProtocolError(msg)
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()
