"""Encrypting a KBS resource to a TEE public key, exactly as Trustee emits it (kbs-protocol.md §5).

The decrypting side is :mod:`cocoguest.crypto.tee_crypto`; this is the dev KBS's sending side:

* content: AES-256-GCM, a fresh 32-byte CEK and 12-byte IV per response, AAD = the ASCII bytes of the
  ``protected`` string, a detached 16-byte tag;
* ``ECDH-ES+A256KW`` (P-256, P-521): a fresh ephemeral key on the recipient's curve, Concat KDF SHA-256 with
  AlgorithmID ``"ECDH-ES+A256KW"`` and empty PartyU/VInfo, AES-256-KW of the CEK (40 bytes);
* ``RSA-OAEP-256`` (SHA-256, MGF1-SHA-256, empty label) and ``RSA1_5`` (deprecated, interop only).

Invariants:
    * The protected header is compact JSON with keys in the order ``alg``, ``enc``, ``epk{crv,kty,x,y}``: the
      Rust client re-serializes the header to build its AAD (kbs-protocol.md §5 "header key-ordering trap").
    * The body has the members ``protected, encrypted_key, iv, ciphertext, tag`` in that order, all base64url
      without padding; no ``aad``, no ``unprotected``.
    * The recipient key comes from a verified token; it is still parsed here and checked (curve point, RSA
      size) because a token's claims are only as good as the verifier that issued it. A :class:`TeeRecipient`
      is that parsed key: a caller may keep one per verified token and encrypt many answers to it, since every
      :meth:`TeeRecipient.encrypt` makes a fresh CEK, IV and (ECDH) ephemeral key pair and key agreement.
    * :meth:`TeeRecipient.prepare` may make the next answer's ephemeral key pair and key agreement ahead of time
      (while the server is idle between two requests of a client); each prepared agreement is taken by exactly
      one :meth:`TeeRecipient.encrypt` (an atomic pop), so an ephemeral key is still never used twice.
"""

from __future__ import annotations

import base64
import os
import struct
from collections import deque
from collections.abc import Mapping
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cocoguest.crypto.tee_crypto import CURVES
from cocoguest.errors import ProtocolError

_ECDH_ALG: Final = "ECDH-ES+A256KW"
_CEK_BYTES: Final = 32
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16
_MIN_RSA_BITS: Final = 2048
_MAX_RSA_BITS: Final = 8192
SUPPORTED_ALGS: Final = frozenset({_ECDH_ALG, "RSA-OAEP-256", "RSA1_5"})


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(value: object, member: str) -> bytes:
    if not isinstance(value, str) or len(value) % 4 == 1:
        msg = f"tee-pubkey member {member!r} is not base64url"
        raise ProtocolError(msg)
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError as e:
        msg = f"tee-pubkey member {member!r} is not base64url"
        raise ProtocolError(msg) from e


def _concat_kdf(shared: bytes) -> bytes:
    alg_id = _ECDH_ALG.encode("ascii")
    other_info = struct.pack(">I", len(alg_id)) + alg_id + struct.pack(">III", 0, 0, _CEK_BYTES * 8)
    return ConcatKDFHash(hashes.SHA256(), length=_CEK_BYTES, otherinfo=other_info).derive(shared)


def _ec_recipient(untrusted_jwk: Mapping[str, object]) -> tuple[str, ec.EllipticCurvePublicKey]:
    crv = untrusted_jwk.get("crv")
    curve = CURVES.get(crv) if isinstance(crv, str) else None
    if curve is None or not isinstance(crv, str):
        msg = f"tee-pubkey curve {str(crv)[:16]!r} is not P-256 or P-521"
        raise ProtocolError(msg)
    size = (curve.key_size + 7) // 8
    x, y = _unb64u(untrusted_jwk.get("x"), "x"), _unb64u(untrusted_jwk.get("y"), "y")
    if len(x) != size or len(y) != size:
        msg = f"tee-pubkey {crv} coordinates must be {size} bytes each"
        raise ProtocolError(msg)
    try:
        # SECURITY: from_encoded_point checks the point is on the curve.
        return crv, ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError as e:
        msg = f"tee-pubkey is not a point on {crv}"
        raise ProtocolError(msg) from e


def _rsa_recipient(untrusted_jwk: Mapping[str, object]) -> rsa.RSAPublicKey:
    n = int.from_bytes(_unb64u(untrusted_jwk.get("n"), "n"), "big")
    e = int.from_bytes(_unb64u(untrusted_jwk.get("e"), "e"), "big")
    if not _MIN_RSA_BITS <= n.bit_length() <= _MAX_RSA_BITS or e < 3 or e % 2 == 0:
        msg = f"tee-pubkey RSA key of {n.bit_length()} bits (or exponent) is not usable"
        raise ProtocolError(msg)
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        msg = "tee-pubkey is not a valid RSA public key"
        raise ProtocolError(msg) from err


class TeeRecipient:
    """A checked TEE public key, ready to encrypt any number of responses to it (parse once, encrypt often).

    Holding one costs little secret: the parsed public key, and at most one prepared (unused) ECDH agreement.
    Every :meth:`encrypt` still makes a fresh CEK and IV, and for ECDH uses a fresh ephemeral key pair and key
    agreement: the one :meth:`prepare` made, taken once, or a new one.
    """

    __slots__ = ("_alg", "_crv", "_ec", "_prepared", "_rsa", "_size")

    def __init__(self, untrusted_jwk: Mapping[str, object]) -> None:
        """Parse and check ``untrusted_jwk`` (curve point, RSA size).

        Raises:
            ProtocolError: the key's ``kty``/``alg``/``crv`` is not one the KBS supports (Trustee: ``JweError``),
                or its members are malformed.
        """
        kty, alg = untrusted_jwk.get("kty"), untrusted_jwk.get("alg")
        self._ec: ec.EllipticCurvePublicKey | None = None
        self._rsa: rsa.RSAPublicKey | None = None
        if kty == "EC" and alg == _ECDH_ALG:
            self._crv, self._ec = _ec_recipient(untrusted_jwk)
            self._size = (self._ec.curve.key_size + 7) // 8
        elif kty == "RSA" and alg in ("RSA-OAEP-256", "RSA1_5"):
            self._rsa = _rsa_recipient(untrusted_jwk)
            self._crv, self._size = "", 0
        else:
            msg = f"tee-pubkey kty {str(kty)[:16]!r} with alg {str(alg)[:32]!r} is not supported"
            raise ProtocolError(msg)
        self._alg: str = str(alg)
        self._prepared: deque[tuple[bytes, str]] = deque(maxlen=1)

    def _agreement(self) -> tuple[bytes, str]:
        """A fresh ephemeral key pair on the recipient's curve: (the KEK it agrees with the recipient, its epk)."""
        assert self._ec is not None  # noqa: S101  (ECDH recipients only)
        ephemeral = ec.generate_private_key(self._ec.curve)
        kek = _concat_kdf(ephemeral.exchange(ec.ECDH(), self._ec))
        point = ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        x, y = _b64u(point[1 : 1 + self._size]), _b64u(point[1 + self._size :])
        # Built as text: every value is a fixed name or base64url, so nothing needs escaping, and the member
        # order is the one the Rust client's AAD needs (module docstring).
        return kek, f'{{"crv":"{self._crv}","kty":"EC","x":"{x}","y":"{y}"}}'

    def prepare(self) -> None:
        """Make the next :meth:`encrypt`'s ECDH agreement now (nothing for RSA, or if one is already waiting).

        For idle time: a server calls it after sending an answer, so the next answer to this key costs one key
        agreement less while the client waits.
        """
        if self._ec is not None and not self._prepared:
            self._prepared.append(self._agreement())

    def encrypt(self, plaintext: bytes) -> bytes:
        """The Trustee response body (flattened JWE JSON) of ``plaintext``, with a fresh CEK, IV (and epk)."""
        cek = os.urandom(_CEK_BYTES)
        if self._ec is not None:
            # SECURITY: a fresh ephemeral key and key agreement per response, never reused: a prepared one is
            # popped (atomically, so two threads can never take the same one), else one is made now.
            try:
                kek, epk = self._prepared.popleft()
            except IndexError:
                kek, epk = self._agreement()
            header = f'{{"alg":"{_ECDH_ALG}","enc":"A256GCM","epk":{epk}}}'
            encrypted_key = aes_key_wrap(kek, cek)
        else:
            assert self._rsa is not None  # noqa: S101  (__init__ sets one of the two)
            header = f'{{"alg":"{self._alg}","enc":"A256GCM"}}'
            if self._alg == "RSA-OAEP-256":
                sha256 = hashes.SHA256()
                pad: padding.AsymmetricPadding = padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)
            else:
                pad = padding.PKCS1v15()
            encrypted_key = self._rsa.encrypt(cek, pad)
        protected = _b64u(header.encode("ascii"))
        iv = os.urandom(_IV_BYTES)
        sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
        return (
            f'{{"protected":"{protected}","encrypted_key":"{_b64u(encrypted_key)}","iv":"{_b64u(iv)}",'
            f'"ciphertext":"{_b64u(sealed[:-_TAG_BYTES])}","tag":"{_b64u(sealed[-_TAG_BYTES:])}"}}'
        ).encode("ascii")


def encrypt_to_tee_key(plaintext: bytes, untrusted_jwk: Mapping[str, object]) -> bytes:
    """The Trustee response body (flattened JWE JSON) of ``plaintext`` encrypted to ``untrusted_jwk``.

    Raises:
        ProtocolError: the key's ``kty``/``alg``/``crv`` is not one the KBS supports (Trustee: ``JweError``),
            or its members are malformed.
    """
    return TeeRecipient(untrusted_jwk).encrypt(plaintext)
