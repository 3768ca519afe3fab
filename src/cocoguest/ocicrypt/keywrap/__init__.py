"""Key wrappers: they encrypt the private options of a layer to recipients, and decrypt them back.

One :class:`KeyWrapper` per scheme holds all recipients of that scheme and produces ONE annotation entry
for all of them (ocicrypt.md §3). A :class:`KeyUnwrapper` holds private key material of one scheme and
recovers the private options from one entry.

Invariants:
    * ``wrap`` returns raw bytes (the caller base64s them into the comma list).
    * ``unwrap`` receives one already base64-decoded entry and either returns the private options bytes or
      raises :class:`~cocoguest.errors.KeyUnwrapError` (none of its keys fits, or the entry is corrupt).
      It never returns partial or unauthenticated data.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class KeyWrapper(Protocol):
    """Wraps private options for all recipients of one scheme."""

    @property
    def annotation_key(self) -> str:
        """The annotation this wrapper writes, e.g. ``org.opencontainers.image.enc.keys.jwe``."""
        ...

    def wrap(self, private_options: bytes) -> bytes:
        """Encrypt ``private_options`` to every recipient; one annotation entry (raw bytes)."""
        ...


@runtime_checkable
class KeyUnwrapper(Protocol):
    """Unwraps private options with the private keys of one scheme."""

    @property
    def scheme(self) -> str:
        """Human-readable scheme name for messages (``jwe``, ``pkcs7``, ``provider.attestation-agent``)."""
        ...

    def handles(self, annotation_key: str) -> bool:
        """True if this unwrapper can try entries of ``annotation_key``."""
        ...

    def unwrap(self, annotation_key: str, entry: bytes) -> bytes:
        """Recover the private options from one entry.

        Raises:
            KeyUnwrapError: none of the keys fits or the entry is malformed.
        """
        ...
