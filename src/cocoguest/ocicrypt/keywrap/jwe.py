"""The ``jwe`` key wrapper: private options encrypted to RSA/EC public keys as JWE (ocicrypt.md §5.1).

A thin adapter from the :class:`KeyWrapper` / :class:`KeyUnwrapper` protocols to
:mod:`cocoguest.crypto.jwe`, which holds the cryptography.

Invariants:
    * :class:`JweWrapper` writes exactly what Go ocicrypt 1.0.3 writes (flattened JSON for one recipient,
      general JSON for several; A256GCM; RSA-OAEP or ECDH-ES+A256KW).
    * :class:`JweUnwrapper` handles only ``org.opencontainers.image.enc.keys.jwe`` and never tries a key
      on a JWE whose algorithms are outside the go-jose v4 whitelist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cocoguest.crypto import jwe
from cocoguest.crypto.keys import PrivateKeyMaterial, PublicKeyMaterial
from cocoguest.limits import DEFAULT_LIMITS, Limits
from cocoguest.ocicrypt.annotations import keys_annotation

SCHEME: Final = "jwe"
ANNOTATION_KEY: Final = keys_annotation(SCHEME)


class JweWrapper:
    """Wraps private options for JWE recipients (RSA or EC P-256/384/521 public keys)."""

    def __init__(self, recipients: Sequence[PublicKeyMaterial]) -> None:
        """Create a wrapper.

        Args:
            recipients: The public keys; at least one.

        Raises:
            ValueError: ``recipients`` is empty.
        """
        if not recipients:
            msg = "JweWrapper needs at least one recipient"
            raise ValueError(msg)
        self._recipients = tuple(recipients)

    @property
    def annotation_key(self) -> str:
        """``org.opencontainers.image.enc.keys.jwe``."""
        return ANNOTATION_KEY

    def wrap(self, private_options: bytes) -> bytes:
        """Encrypt ``private_options`` to every recipient; one JWE JSON serialization (UTF-8 bytes)."""
        return jwe.encrypt(private_options, self._recipients)


class JweUnwrapper:
    """Unwraps JWE entries with RSA or EC private keys."""

    def __init__(self, private_keys: Sequence[PrivateKeyMaterial], *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Create an unwrapper that tries ``private_keys`` in order, within ``limits`` (``max_key_recipients``)."""
        self._private_keys = tuple(private_keys)
        self._limits = limits

    @property
    def scheme(self) -> str:
        """``jwe``."""
        return SCHEME

    def handles(self, annotation_key: str) -> bool:
        """True only for ``org.opencontainers.image.enc.keys.jwe``."""
        return annotation_key == ANNOTATION_KEY

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """Recover the private options from one base64-decoded JWE entry.

        Raises:
            KeyUnwrapError: the entry is malformed, uses a disallowed algorithm, or none of the keys fits.
            ValueError: ``annotation_key`` is not the JWE annotation (programmer error).
        """
        if not self.handles(annotation_key):
            msg = f"JweUnwrapper cannot unwrap {annotation_key}"
            raise ValueError(msg)
        return jwe.decrypt(entry, self._private_keys, f"an entry of {annotation_key}", limits=self._limits)
