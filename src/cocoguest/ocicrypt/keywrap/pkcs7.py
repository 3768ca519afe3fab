"""The ``pkcs7`` key wrapper: CMS EnvelopedData to X.509 certificates (ocicrypt.md §5.2, §7).

Invariants:
    * Recipients are certificates with RSA keys; anything else is a :class:`ConfigError` at construction.
    * One :meth:`Pkcs7Wrapper.wrap` call yields one EnvelopedData with one RecipientInfo per certificate.
    * :meth:`Pkcs7Unwrapper.unwrap` returns only GCM-authenticated bytes; every failure, malformed input
      included, is a :class:`KeyUnwrapError` naming the scheme and the key files tried.
    * Unlike Go, the matching certificate is optional: without it every RSA key is tried on every
      RecipientInfo (with it, the RecipientInfo named by its issuer and serial is tried first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cocoguest.crypto import cms
from cocoguest.crypto.keys import Certificate, PrivateKeyMaterial, RSAPrivateKey, RSAPublicKey
from cocoguest.errors import DecryptionIntegrityError, KeyUnwrapError, ProtocolError
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.annotations import keys_annotation

SCHEME: Final = "pkcs7"
ANNOTATION_KEY: Final = keys_annotation(SCHEME)


class Pkcs7Wrapper:
    """Wraps private options for X.509 certificate recipients (``pkcs7:<file>``)."""

    def __init__(self, certificates: Sequence[tuple[Certificate, str]]) -> None:
        """Build the wrapper.

        Args:
            certificates: ``(certificate, source file)`` pairs; at least one.

        Raises:
            ConfigError: a certificate does not carry an RSA key (names its file).
            ValueError: no certificates.
        """
        if not certificates:
            msg = "Pkcs7Wrapper needs at least one certificate"
            raise ValueError(msg)
        self._recipients = [cms.recipient_from_certificate(cert, source) for cert, source in certificates]

    @property
    def annotation_key(self) -> str:
        """``org.opencontainers.image.enc.keys.pkcs7``."""
        return ANNOTATION_KEY

    def wrap(self, private_options: bytes) -> bytes:
        """Encrypt ``private_options`` to every certificate; DER ContentInfo(EnvelopedData)."""
        return cms.build_enveloped_data(private_options, self._recipients)


def _same_key(private_key: RSAPrivateKey, public_key: RSAPublicKey) -> bool:
    return private_key.public_key().public_numbers() == public_key.public_numbers()


class Pkcs7Unwrapper:
    """Unwraps ``keys.pkcs7`` entries with RSA private keys (and, optionally, their certificates)."""

    def __init__(
        self,
        private_keys: Sequence[PrivateKeyMaterial],
        certificates: Sequence[tuple[Certificate, str]],
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Build the unwrapper.

        Args:
            private_keys: decryption keys; non-RSA keys are ignored (PKCS7 in ocicrypt is RSA only).
            certificates: ``(certificate, source file)`` pairs used to pick the RecipientInfo.
            limits: caps on the entry and on the unwrapped options.

        Raises:
            ConfigError: a certificate's DER cannot be walked (names its file).
        """
        self._limits = limits
        cert_keys = [(cert.public_key(), cert, source) for cert, source in certificates]
        self._keys: list[tuple[RSAPrivateKey, str, cms.IssuerSerial | None]] = []
        for material in private_keys:
            key = material.key
            if not isinstance(key, RSAPrivateKey):
                continue
            rid = next(
                (
                    cms.issuer_serial(cert, source)
                    for public, cert, source in cert_keys
                    if isinstance(public, RSAPublicKey) and _same_key(key, public)
                ),
                None,
            )
            self._keys.append((key, material.source, rid))

    @property
    def scheme(self) -> str:
        """``pkcs7``."""
        return SCHEME

    def handles(self, annotation_key: str) -> bool:
        """True only for ``org.opencontainers.image.enc.keys.pkcs7``."""
        return annotation_key == ANNOTATION_KEY

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """Recover the private options from one EnvelopedData entry.

        Raises:
            KeyUnwrapError: no RSA key opens the entry, it failed its GCM tag, or it is malformed.
        """
        tried = ", ".join(source for _, source, _ in self._keys) or "none"
        if len(entry) > self._limits.max_annotation_bytes:
            msg = f"pkcs7: {annotation_key} entry of {len(entry)} bytes exceeds the annotation limit"
            raise KeyUnwrapError(msg)
        try:
            envelope = cms.parse_enveloped_data(entry, limits=self._limits)
        except ProtocolError as e:
            msg = f"pkcs7: malformed PKCS7 EnvelopedData in {annotation_key}"
            raise KeyUnwrapError(msg) from e
        if len(envelope.encrypted_content) - cms.GCM_TAG_BYTES > self._limits.max_private_options_bytes:
            msg = f"pkcs7: {annotation_key} entry holds more than the private options limit"
            raise KeyUnwrapError(msg)
        last: DecryptionIntegrityError | None = None
        for key, _, rid in self._keys:
            try:
                return cms.decrypt(envelope, key, rid)
            except DecryptionIntegrityError as e:
                # SECURITY: all failures look alike (padding, CEK length, GCM tag): no oracle.
                last = e
        msg = f"pkcs7: no RSA private key (tried: {tried}) unwraps the {annotation_key} entry"
        raise KeyUnwrapError(msg) from last
