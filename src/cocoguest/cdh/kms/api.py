"""The KMS plugin capabilities (guest-components.md §8.4 ``Decrypter``, ``Encrypter``, ``Getter``, ``Setter``).

``ProviderSettings`` and ``Annotations`` are JSON objects (str keys, JSON values).

Invariants:
    * A plugin never falls back to another plugin; every failure is a :class:`~cocoguest.errors.CocoError` naming
      the key or secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

Annotations = Mapping[str, object]
ProviderSettings = Mapping[str, object]


class Getter(Protocol):
    """Releases a named secret (vault sealed secrets)."""

    def get_secret(self, name: str, annotations: Annotations) -> bytes:
        """The secret ``name``."""
        ...


class Decrypter(Protocol):
    """Decrypts a data key (envelope sealed secrets)."""

    def decrypt(self, ciphertext: bytes, key_id: str, crypto_context: Annotations) -> bytes:
        """The plaintext of ``ciphertext`` under ``key_id``."""
        ...


class Encrypter(Protocol):
    """Encrypts a data key (the sealing tool)."""

    def encrypt(self, data: bytes, key_id: str) -> tuple[bytes, dict[str, object]]:
        """``(ciphertext, annotations)`` of ``data`` under ``key_id``."""
        ...
