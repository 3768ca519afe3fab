"""JWE encryption and decryption of small secrets (ocicrypt's ``keys.jwe`` wrapper, ocicrypt.md §5.1).

Encryption reproduces Go ocicrypt 1.0.3 / go-jose byte layout with :mod:`cryptography` directly (jwcrypto
cannot put ``epk`` into the protected header): ``enc`` A256GCM; RSA recipients get RSA-OAEP (SHA-1),
EC P-256/384/521 recipients ECDH-ES+A256KW. One recipient gives the flattened JSON serialization with
``alg``/``enc``/``epk``/``kid`` in the protected header; two or more give the general JSON serialization
with protected ``{"enc":"A256GCM"}`` and each recipient's ``alg``/``epk``/``kid`` in its unprotected
``header``. Header JSON has sorted keys and no blanks, like Go's ``json.Marshal`` of a map.

Decryption accepts the compact, flattened and general serializations. It first parses the JOSE
structure itself and checks every recipient's effective header against the go-jose v4 whitelist, then
lets jwcrypto (with the same whitelist) decrypt with each private key in turn.

Invariants:
    * No key is tried on a JWE that names an algorithm outside :data:`ALLOWED_ALGS` /
      :data:`ALLOWED_ENCS`, uses compression, or has more than the caller's ``Limits.max_key_recipients`` recipients.
    * :func:`decrypt` returns only AEAD-authenticated plaintext, or raises :class:`KeyUnwrapError`.
    * The caller caps the size of the serialized JWE (``Limits.max_annotation_bytes``); this module
      parses it in memory.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from cocoguest.crypto.keys import PrivateKeyMaterial, PublicKeyMaterial
from cocoguest.errors import CocoError, KeyUnwrapError
from cocoguest.jsonutil import loads
from cocoguest.limits import DEFAULT_LIMITS, Limits

ALLOWED_ALGS: Final = frozenset({"RSA-OAEP", "RSA-OAEP-256", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW"})
"""Key management algorithms accepted on decryption (go-jose v4 whitelist of ocicrypt ≥ v1.2.0)."""
ALLOWED_ENCS: Final = frozenset({"A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512", "A128GCM", "A192GCM", "A256GCM"})
"""Content encryption algorithms accepted on decryption (same whitelist)."""

_ENC: Final = "A256GCM"
_ECDH_ALG: Final = "ECDH-ES+A256KW"
_RSA_ALG: Final = "RSA-OAEP"
_CEK_BYTES: Final = 32  # A256GCM key
_GCM_IV_BYTES: Final = 12  # RFC 7518 §5.3: 96-bit IV
_GCM_TAG_BYTES: Final = 16  # 128-bit tag
_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2); raises ``ValueError``."""
    if not _B64URL.fullmatch(text):
        msg = "not base64url"
        raise ValueError(msg)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _header_json(header: Mapping[str, object]) -> bytes:
    # go-jose marshals a map: sorted keys, no blanks.
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------------------- encryption


def _concat_kdf_otherinfo(alg: str, key_bits: int) -> bytes:
    # RFC 7518 §4.6.2: AlgorithmID || PartyUInfo (empty) || PartyVInfo (empty) || SuppPubInfo.
    alg_id = alg.encode("ascii")
    return struct.pack(">I", len(alg_id)) + alg_id + struct.pack(">I", 0) * 2 + struct.pack(">I", key_bits)


def _wrap_ecdh_es_a256kw(cek: bytes, recipient: ec.EllipticCurvePublicKey) -> tuple[dict[str, object], bytes]:
    ephemeral = ec.generate_private_key(recipient.curve)
    shared = ephemeral.exchange(ec.ECDH(), recipient)
    kek = ConcatKDFHash(
        hashes.SHA256(), length=_CEK_BYTES, otherinfo=_concat_kdf_otherinfo(_ECDH_ALG, _CEK_BYTES * 8)
    ).derive(shared)
    numbers = ephemeral.public_key().public_numbers()
    size = (recipient.curve.key_size + 7) // 8  # RFC 7518 §6.2.1.2: full-length coordinates
    epk = {
        "kty": "EC",
        "crv": _CURVE_NAMES[recipient.curve.name],
        "x": _b64u(numbers.x.to_bytes(size, "big")),
        "y": _b64u(numbers.y.to_bytes(size, "big")),
    }
    return {"alg": _ECDH_ALG, "epk": epk}, aes_key_wrap(kek, cek)


def _wrap_cek(cek: bytes, recipient: PublicKeyMaterial) -> tuple[dict[str, object], bytes]:
    """The recipient's header members and its encrypted key."""
    key = recipient.key
    header: dict[str, object]
    if isinstance(key, rsa.RSAPublicKey):
        # SECURITY: "RSA-OAEP" is OAEP with SHA-1 and MGF1-SHA-1 by definition (RFC 7518 §4.3); SHA-1's
        # collision weakness does not affect OAEP. Go ocicrypt writes it, and ocicrypt-rs reads only it.
        sha1 = hashes.SHA1()  # noqa: S303
        oaep = padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
        header, encrypted_key = {"alg": _RSA_ALG}, key.encrypt(cek, oaep)
    else:
        header, encrypted_key = _wrap_ecdh_es_a256kw(cek, key)
    if recipient.kid is not None:
        header["kid"] = recipient.kid
    return header, encrypted_key


def encrypt(plaintext: bytes, recipients: Sequence[PublicKeyMaterial]) -> bytes:
    """Encrypt ``plaintext`` to every recipient as one JWE JSON serialization (UTF-8 bytes).

    Args:
        plaintext: The secret (ocicrypt's private options JSON).
        recipients: RSA or EC P-256/384/521 public keys; at least one.

    Returns:
        Flattened JSON for one recipient, general JSON for several (ocicrypt.md §5.1).

    Raises:
        ValueError: ``recipients`` is empty.
    """
    if not recipients:
        msg = "JWE encryption needs at least one recipient"
        raise ValueError(msg)
    cek = AESGCM.generate_key(bit_length=_CEK_BYTES * 8)
    wrapped = [_wrap_cek(cek, recipient) for recipient in recipients]
    out: dict[str, object]
    if len(wrapped) == 1:
        header, encrypted_key = wrapped[0]
        protected = _b64u(_header_json({"enc": _ENC, **header}))
        out = {"protected": protected, "encrypted_key": _b64u(encrypted_key)}
    else:
        protected = _b64u(_header_json({"enc": _ENC}))
        out = {
            "protected": protected,
            "recipients": [{"header": h, "encrypted_key": _b64u(ek)} for h, ek in wrapped],
        }
    iv = os.urandom(_GCM_IV_BYTES)
    # RFC 7516 §5.1 step 14: AAD is the ASCII of the base64url protected header (no `aad` member).
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    out["iv"] = _b64u(iv)
    out["ciphertext"] = _b64u(sealed[:-_GCM_TAG_BYTES])
    out["tag"] = _b64u(sealed[-_GCM_TAG_BYTES:])
    return json.dumps(out, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------------------- decryption


class _MalformedError(ValueError):
    """The JOSE structure is not a JWE; the message says what is wrong."""


def _json_object(value: object, member: str) -> dict[str, object]:
    if not isinstance(value, dict):
        msg = f"{member} is not a JSON object"
        raise _MalformedError(msg)
    return value


def _protected_header(encoded: object) -> dict[str, object]:
    if not isinstance(encoded, str):
        msg = "protected is not a string"
        raise _MalformedError(msg)
    try:
        return _json_object(loads(_b64u_decode(encoded), "protected header"), "protected header")
    except (ValueError, CocoError) as e:  # json and base64 errors are ValueErrors
        msg = f"protected header is not base64url JSON ({e})"
        raise _MalformedError(msg) from e


def _merge(*headers: Mapping[str, object]) -> dict[str, object]:
    # RFC 7516 §7.2.1: the header parameter names of the three headers must be disjoint.
    merged: dict[str, object] = {}
    for header in headers:
        for name, value in header.items():
            if name in merged:
                msg = f"header parameter {name!r} appears twice"
                raise _MalformedError(msg)
            merged[name] = value
    return merged


def _parse(text: str, limits: Limits) -> tuple[str, list[dict[str, object]]]:
    """Parse a JWE: (the text to hand to jwcrypto, the effective header of each recipient).

    More than ``limits.max_key_recipients`` recipients is malformed (Go has no cap).
    """
    text = text.strip()
    if not text.startswith("{"):
        parts = text.split(".")
        if len(parts) != 5:
            msg = f"compact serialization has {len(parts)} parts, not 5"
            raise _MalformedError(msg)
        return text, [_protected_header(parts[0])]
    try:
        obj = _json_object(loads(text, "JWE"), "JWE")
    except (ValueError, CocoError) as e:
        msg = f"not JSON ({e})"
        raise _MalformedError(msg) from e
    for member in ("iv", "ciphertext", "tag"):
        if not isinstance(obj.get(member), str):
            msg = f"member {member!r} is missing or not a string"
            raise _MalformedError(msg)
    protected = _protected_header(obj["protected"]) if "protected" in obj else {}
    shared = _json_object(obj.get("unprotected", {}), "unprotected")
    if "recipients" in obj:
        # go-jose writes a stray top-level copy of recipients[0].encrypted_key; RFC 7516 §7.2.1 has no
        # such member in the general syntax. Ignore it (ocicrypt.md §5.1).
        obj.pop("encrypted_key", None)
        recipients = obj["recipients"]
        if not isinstance(recipients, list) or not recipients:
            msg = "recipients is not a non-empty array"
            raise _MalformedError(msg)
        if len(recipients) > limits.max_key_recipients:
            # SECURITY: each recipient costs a private-key operation per key; cap the work.
            msg = (
                f"{len(recipients)} recipients, more than the {limits.max_key_recipients} accepted (max_key_recipients)"
            )
            raise _MalformedError(msg)
        per_recipient = [_json_object(_json_object(r, "recipient").get("header", {}), "header") for r in recipients]
    else:
        per_recipient = [_json_object(obj.get("header", {}), "header")]
    headers = [_merge(protected, shared, own) for own in per_recipient]
    return json.dumps(obj), headers


def _check_algorithms(headers: Sequence[Mapping[str, object]], what: str) -> None:
    # SECURITY: refuse anything outside the go-jose v4 whitelist before any key is tried: no `dir`
    # (an attacker-chosen CEK), no RSA1_5 (padding oracles), no `none`, no PBES2 (unbounded iterations),
    # no compression (ocicrypt never compresses; avoids decompression bombs).
    for header in headers:
        alg, enc = header.get("alg"), header.get("enc")
        if alg not in ALLOWED_ALGS:
            msg = f"jwe: {what}: key management algorithm {alg!r} is not allowed"
            raise KeyUnwrapError(msg)
        if enc not in ALLOWED_ENCS:
            msg = f"jwe: {what}: content encryption algorithm {enc!r} is not allowed"
            raise KeyUnwrapError(msg)
        if "zip" in header:
            msg = f"jwe: {what}: compressed JWE (zip {header['zip']!r}) is not allowed"
            raise KeyUnwrapError(msg)


def _decrypt_with(text: str, key: PrivateKeyMaterial) -> bytes | None:
    token = jwcrypto_jwe.JWE()
    # SECURITY: jwcrypto enforces the same whitelist again (defence in depth).
    token.allowed_algs = sorted(ALLOWED_ALGS | ALLOWED_ENCS)
    try:
        token.deserialize(text)
        token.decrypt(jwcrypto_jwk.JWK.from_pyca(key.key))
    except Exception:  # noqa: BLE001  (jwcrypto raises many types for "this key does not fit")
        return None
    payload = token.plaintext
    return payload if isinstance(payload, bytes) else None


def decrypt(
    serialized: bytes, private_keys: Sequence[PrivateKeyMaterial], what: str, *, limits: Limits = DEFAULT_LIMITS
) -> bytes:
    """Decrypt a JWE (compact, flattened or general JSON) with the first private key that fits.

    Args:
        serialized: The JWE serialization (UTF-8), size-capped by the caller.
        private_keys: Keys to try in order.
        what: Names the JWE in error messages (e.g. the annotation it came from).
        limits: The caller's limits (``max_key_recipients``).

    Returns:
        The authenticated plaintext.

    Raises:
        KeyUnwrapError: the JWE is malformed, names a disallowed algorithm, or no key decrypts it.
    """
    try:
        text, headers = _parse(serialized.decode("utf-8"), limits)
    except (UnicodeDecodeError, _MalformedError) as e:
        msg = f"jwe: {what}: malformed JWE: {e}"
        raise KeyUnwrapError(msg) from e
    _check_algorithms(headers, what)
    for key in private_keys:
        plaintext = _decrypt_with(text, key)
        if plaintext is not None:
            return plaintext
    files = ", ".join(key.source for key in private_keys) or "none"
    msg = (
        f"jwe: none of the {len(private_keys)} private keys (files: {files}) can decrypt {what} "
        f"(wrong key, or the JWE was altered)"
    )
    raise KeyUnwrapError(msg)
