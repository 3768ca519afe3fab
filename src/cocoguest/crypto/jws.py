"""JWS compact tokens for the dev KBS: ES256 attestation tokens and EdDSA (Ed25519) admin tokens.

* ES256 (RFC 7518 §3.4): ECDSA P-256 with SHA-256, the signature is ``r || s`` as two 32-byte big-endian
  integers (not DER). The EAR token broker signs with it; the KBS verifies its own tokens with it.
* EdDSA (RFC 8037): Ed25519, the legacy Trustee admin token (``Authorization: Bearer``), signed by
  ``kbs-client --auth-private-key`` and coco-keyprovider.

Invariants:
    * :func:`verify_compact` checks the header ``alg`` against the one algorithm the key is for before any
      signature work (no ``none``, no algorithm confusion), and returns the header and claims only after the
      signature verified.
    * Every failure is a :class:`SignatureError` (or :class:`ConfigError` for key files) naming ``what``.
    * Untrusted token text is size-capped by the caller; this module parses it with :mod:`cocoguest.jsonutil`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from cocoguest.errors import ConfigError, ProtocolError, SignatureError
from cocoguest.jsonutil import load_object

Ed25519PublicKey = ed25519.Ed25519PublicKey
Ed25519PrivateKey = ed25519.Ed25519PrivateKey
_P256_BYTES: Final = 32
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_ED25519_SIG_BYTES: Final = 64
_ES256_SIG_BYTES: Final = 64


def b64u(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str, what: str) -> bytes:
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        msg = f"{what}: not base64url"
        raise SignatureError(msg)
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # SECURITY: only the canonical spelling (zero trailing bits): otherwise one signed token has several valid
    # spellings, and a token's bytes (which key the dev KBS's verified-token cache) would not identify it.
    if b64u(data) != text:
        msg = f"{what}: not canonical base64url (non-zero trailing bits)"
        raise SignatureError(msg)
    return data


def _load_private_pem(pem: bytes, source: str) -> PrivateKeyTypes:
    """The unencrypted PEM private key in ``pem``, of any type.

    Raises:
        ConfigError: not an unencrypted PEM private key (names ``source``).
    """
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        msg = f"{source}: not an unencrypted PEM private key"
        raise ConfigError(msg) from e


class Es256Key:
    """An ES256 signing key (the EAR token broker's)."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        """Wrap a P-256 private key; use :meth:`generate` or :meth:`from_pem`."""
        if not isinstance(key.curve, ec.SECP256R1):
            msg = f"ES256 needs a P-256 key, not {key.curve.name}"
            raise ConfigError(msg)
        self._key = key

    @classmethod
    def generate(cls) -> Es256Key:
        """A fresh key (Trustee's broker without a configured signer: ephemeral, per process)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes, source: str) -> Es256Key:
        """A P-256 private key from PEM (PKCS#8 or SEC1).

        Raises:
            ConfigError: not an unencrypted P-256 PEM private key (names ``source``).
        """
        key = _load_private_pem(pem, source)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            msg = f"{source}: the token signing key must be EC P-256"
            raise ConfigError(msg)
        return cls(key)

    def public_jwk(self) -> dict[str, str]:
        """``{"kty":"EC","crv":"P-256","x","y","alg":"ES256"}`` (the EAR header's ``jwk``)."""
        point = self._key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64u(point.x.to_bytes(_P256_BYTES, "big")),
            "y": b64u(point.y.to_bytes(_P256_BYTES, "big")),
            "alg": "ES256",
        }

    def sign(self, header: Mapping[str, object], claims: Mapping[str, object]) -> str:
        """A JWS compact token of ``claims`` (``header`` must say ``alg: ES256``)."""
        signing_input = _signing_input(header, claims)
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return signing_input.decode("ascii") + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def verify(self, untrusted_token: str, what: str) -> tuple[dict[str, object], dict[str, object]]:
        """``(header, claims)`` of a token this key signed.

        Raises:
            SignatureError: not a JWS compact token, not ES256, or the signature does not verify.
        """
        header, claims, signing_input, signature = _split(untrusted_token, "ES256", what)
        if len(signature) != _ES256_SIG_BYTES:
            msg = f"{what}: ES256 signature is not 64 bytes"
            raise SignatureError(msg)
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            self._key.public_key().verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as e:
            msg = f"{what}: ES256 signature does not verify"
            raise SignatureError(msg) from e
        return header, claims


def load_ed25519_public_pem(pem: bytes, source: str) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key (SubjectPublicKeyInfo PEM), the KBS's ``[admin] auth_public_key``.

    Raises:
        ConfigError: not an Ed25519 public key PEM.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as e:
        msg = f"{source}: not a PEM public key"
        raise ConfigError(msg) from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        msg = f"{source}: the admin key must be Ed25519"
        raise ConfigError(msg)
    return key


def load_ed25519_private_pem(pem: bytes, source: str) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key (PKCS#8 PEM), kbs-client's ``--auth-private-key``.

    Raises:
        ConfigError: not an unencrypted Ed25519 private key PEM.
    """
    key = _load_private_pem(pem, source)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        msg = f"{source}: the admin key must be Ed25519"
        raise ConfigError(msg)
    return key


def sign_eddsa(key: ed25519.Ed25519PrivateKey, claims: Mapping[str, object]) -> str:
    """A JWS compact token, header ``{"alg":"EdDSA","typ":"JWT"}``."""
    signing_input = _signing_input({"alg": "EdDSA", "typ": "JWT"}, claims)
    return signing_input.decode("ascii") + "." + b64u(key.sign(signing_input))


def verify_eddsa(
    key: ed25519.Ed25519PublicKey, untrusted_token: str, what: str
) -> tuple[dict[str, object], dict[str, object]]:
    """``(header, claims)`` of an EdDSA token signed by ``key``.

    Raises:
        SignatureError: not a JWS compact token, not EdDSA, or the signature does not verify.
    """
    header, claims, signing_input, signature = _split(untrusted_token, "EdDSA", what)
    if len(signature) != _ED25519_SIG_BYTES:
        msg = f"{what}: EdDSA signature is not 64 bytes"
        raise SignatureError(msg)
    try:
        key.verify(signature, signing_input)
    except InvalidSignature as e:
        msg = f"{what}: EdDSA signature does not verify"
        raise SignatureError(msg) from e
    return header, claims


def _signing_input(header: Mapping[str, object], claims: Mapping[str, object]) -> bytes:
    h = b64u(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    c = b64u(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return f"{h}.{c}".encode("ascii")


def _split(untrusted_token: str, alg: str, what: str) -> tuple[dict[str, object], dict[str, object], bytes, bytes]:
    parts = untrusted_token.split(".")
    if len(parts) != 3:
        msg = f"{what}: not a JWS compact token"
        raise SignatureError(msg)
    try:
        header = load_object(_unb64u(parts[0], what), f"{what} header", SignatureError)
        # SECURITY: one algorithm per key, checked before anything else (no "none", no confusion).
        if header.get("alg") != alg:
            msg = f"{what}: algorithm {str(header.get('alg'))[:16]!r} is not {alg}"
            raise SignatureError(msg)
        claims = load_object(_unb64u(parts[1], what), f"{what} claims", SignatureError)
    except ProtocolError as e:
        raise SignatureError(str(e)) from e
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), _unb64u(parts[2], what)
